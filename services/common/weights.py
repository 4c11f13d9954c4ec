"""fwbench's canonical weights file: one model's every tensor, loadable by every framework.

A canonical file is a NumPy .npz: one float32 array per tensor of architectures.tensors(arch),
under its canonical name (`layer1_0.conv2.conv.weight`) in PyTorch's layout, plus META, a JSON
string: the format, the model's name and classes, and where the weights came from. It is what
init 'pretrained' starts from (TrainSpec.model.weights_file, with its sha256) and what a run
saves after training (TrainSpec.save_weights_dir), so one framework's trained model can start
another's fine-tuning: each framework loads and saves it through the same conversion it uses for
the shared initial weights (services/<framework>/models.py).

Why a file under a data root and not arrays in the request: a model's weights are 9 MB
(MobileNetV2) to 160 MB (VGG19), far above what a TrainRequest may carry (the server's
MAX_RECEIVE_BYTES); services already read datasets from data roots, a path that works for local
services and for containers alike (a mounted volume), and its sha256 in the spec makes every
framework load the very same bytes, as meta.json's checksums do for a dataset.

Only NumPy here: the orchestrator converts and checks files with it, never importing a framework.
"""

from __future__ import annotations

import collections
import hashlib
import io
import itertools
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from services.common import architectures, datasets, init

FORMAT = "fwbench-canonical-weights/1"
META = "__fwbench__"
SUFFIX = ".npz"
HEAD_KEPT = "head kept"


class WeightsError(datasets.DataError):
    """A weights file that cannot be read, or does not fit the model: the message names the file,
    the layer and why, and what to do."""


def check_paths(spec, roots) -> None:
    """For a service, before any worker starts (as datasets.check): the spec's weights file and
    save directory resolved inside the data roots (else DataAccessError), and the weights file
    there with the spec's sha256 (else WeightsError); the spec then names the resolved paths."""
    if spec.model.weights_file:
        path = datasets.resolve_data_dir(spec.model.weights_file, roots, "model.weights_file")
        if not path.is_file():
            raise WeightsError(f"model.weights_file: {path} is not a file this service can read")
        found = sha256(path)
        if found != spec.model.weights_sha256:
            raise WeightsError(
                f"model.weights_file {path}: sha256 {found}, the spec says "
                f"{spec.model.weights_sha256}: another file than the one checked; run again to "
                "convert and check it anew"
            )
        spec.model.weights_file = str(path)
    if spec.save_weights_dir:
        path = datasets.resolve_data_dir(spec.save_weights_dir, roots, "save_weights_dir")
        spec.save_weights_dir = str(path)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save(path: Path, model: str, weights: dict[str, np.ndarray], source: str) -> str:
    """Writes a canonical file of `model` (its architecture's tensors, in canonical order) to
    path, whole or not at all; returns its sha256."""
    arch = architectures.get(model, _classes(weights, model))
    check(weights, arch, str(path))
    meta = {"format": FORMAT, "model": model, "num_classes": _classes(weights, model)}
    arrays = {t.name: np.asarray(weights[t.name], np.float32) for t in architectures.tensors(arch)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{META: np.array(json.dumps(meta | {"source": source}))})
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, path)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors by canonical name, the file's META) of a canonical file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise WeightsError(f"{path}: not a NumPy .npz weights file ({e})") from e
    if META not in arrays:
        raise WeightsError(
            f"{path}: a .npz without fwbench's {META!r} entry is not a canonical weights file; "
            "write one with `fwbench run --save-weights`, or give a torchvision .pth or Keras "
            ".weights.h5 file"
        )
    meta = json.loads(str(arrays.pop(META)))
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: format {meta.get('format')!r}, this fwbench reads {FORMAT}")
    return arrays, meta


def check(weights: dict[str, np.ndarray], arch: architectures.Architecture, where: str) -> None:
    """Raises WeightsError naming the first tensor of arch that `weights` lacks or holds in
    another shape, or a tensor it holds that arch does not have."""
    expected = architectures.tensors(arch)
    for tensor in expected:
        if tensor.name not in weights:
            raise WeightsError(
                f"{where}: layer {tensor.layer} has no {tensor.module} {tensor.param} "
                f"({tensor.name}, {_shape(tensor.shape)}) for fwbench's canonical {arch.name}"
            )
        found = tuple(np.shape(weights[tensor.name]))
        if found != tensor.shape:
            raise WeightsError(
                f"{where}: layer {tensor.layer}: {tensor.name} is {_shape(found)}, fwbench's "
                f"canonical {arch.name} has {_shape(tensor.shape)} there (PyTorch layout)"
            )
        if not np.all(np.isfinite(weights[tensor.name])):
            raise WeightsError(f"{where}: layer {tensor.layer}: {tensor.name} is not finite")
    extra = sorted(set(weights) - {t.name for t in expected})
    if extra:
        raise WeightsError(
            f"{where}: {extra[0]} (and {len(extra) - 1} more) is no tensor of fwbench's canonical "
            f"{arch.name}: the file is of another model or layout"
        )


def for_model(
    weights: dict[str, np.ndarray], model: str, num_classes: int, seed: int, where: str
) -> tuple[dict[str, np.ndarray], str]:
    """(the canonical weights of `model` with `num_classes` classes, what was done to them): the
    file's own head when its classes match, else a new head, the shared initialiser's
    (init.initial_weights of the seed), identical in every framework. Raises WeightsError naming
    the layer that does not fit."""
    arch = architectures.get(model, num_classes)
    classifier = [t for t in architectures.tensors(arch) if t.layer == _head(arch)]
    file_classes = np.shape(weights.get(classifier[0].name, ()))[:1]
    if file_classes and file_classes[0] != num_classes:
        fresh = init.initial_weights(arch, seed)
        weights = weights | {t.name: fresh[t.name] for t in classifier}
        done = (
            f"head {_head(arch)} replaced: {file_classes[0]} -> {num_classes} classes, "
            f"fwbench's shared initialiser with seed {seed}"
        )
    else:
        done = HEAD_KEPT
    check(weights, arch, where)
    tensors = architectures.tensors(arch)
    return {t.name: np.asarray(weights[t.name], np.float32) for t in tensors}, done


def load_checked(path: str, expected_sha256: str, arch: architectures.Architecture) -> dict:
    """The tensors of the canonical file at path, for a worker: refuses a file whose sha256 is
    not the spec's (another file than the one the orchestrator checked) or that does not fit."""
    found = sha256(Path(path))
    if found != expected_sha256:
        raise WeightsError(
            f"model.weights_file {path}: sha256 {found}, the spec says {expected_sha256}: the "
            "file changed since it was checked; run again to convert and check it anew"
        )
    weights, _ = read(Path(path))
    check(weights, arch, path)
    return weights


def _head(arch: architectures.Architecture) -> str:
    return list(architectures.weight_layers(arch))[-1][0]


def _classes(weights: dict[str, np.ndarray], model: str) -> int:
    arch = architectures.get(model, 1)
    return int(np.shape(weights[f"{_head(arch)}.linear.weight"])[0])


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape)) or "a scalar"


def cached(path: Path, library: str, remedy: str) -> Path:
    """path, where `library` keeps its own pretrained weights once fetched; WeightsError naming
    it when absent: fwbench never downloads at run time (a measured run must not wait on the
    network, and a service may have none)."""
    if not path.is_file():
        raise WeightsError(
            f"model.init: pretrained, with architecture library, needs {library}'s pretrained "
            f"weights in its cache: no file {path}; fwbench never downloads at run time: {remedy}"
        )
    return path


def initial(spec, seed: int) -> dict[str, np.ndarray]:
    """The initial weights of a canonical model spec (pb.ModelSpec) whose init is 'shared' or
    'pretrained', by canonical name in PyTorch's layout: what every framework loads."""
    arch = architectures.get(spec.name, spec.num_classes)
    if spec.init == "pretrained":
        return load_checked(spec.weights_file, spec.weights_sha256, arch)
    return init.initial_weights(arch, seed)


def convert(
    path: Path, model: str, num_classes: int, seed: int
) -> tuple[dict[str, np.ndarray], str, bool]:
    """(canonical weights of `model` with `num_classes` classes, what was done to the head,
    whether the file already was canonical) of a weights file: fwbench's canonical .npz, a
    PyTorch state_dict (.pth/.pt, torch.save's zip) or a Keras 3 weights file (.weights.h5) of
    a model whose layers are fwbench's canonical ones, in order."""
    where = f"--weights {path}"
    if not path.is_file():
        raise WeightsError(f"{where}: no such file")
    if path.suffix == SUFFIX:
        tensors, meta = read(path)
        if meta.get("model") != model:
            raise WeightsError(
                f"{where}: holds {meta.get('model')!r} weights, not {model!r}; give the model it "
                "holds with --models"
            )
        converted, done = for_model(tensors, model, num_classes, seed, where)
        return converted, done, True
    if path.suffix in (".pth", ".pt"):
        tensors = _in_order(read_state_dict(path), model, where, "PyTorch state_dict")
    elif path.name.endswith(".weights.h5"):
        tensors = _keras_in_order(read_keras_weights(path), model, where)
    else:
        raise WeightsError(
            f"{where}: fwbench reads its canonical {SUFFIX} checkpoints (--save-weights), PyTorch "
            "state_dicts (.pth, .pt) and Keras weights files (.weights.h5)"
        )
    converted, done = for_model(tensors, model, num_classes, seed, where)
    return converted, done, False


# ---- PyTorch: torch.save's zip archive, read with the standard library and NumPy -------------

_TORCH_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a state_dict saved by torch.save (its zip format), in the file's order,
    without PyTorch: only tensors and (ordered) dicts are unpickled, nothing else is run."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise WeightsError(
            f"--weights {path}: not torch.save's zip format ({e}); save it again with torch 1.6 "
            "or newer: torch.save(model.state_dict(), path)"
        ) from e
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise WeightsError(f"--weights {path}: no data.pkl in the archive: not torch.save's")
        prefix = pickles[0].removesuffix("data.pkl")

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return _rebuild_tensor
                if (module, name) == ("collections", "OrderedDict"):
                    return collections.OrderedDict
                if module == "torch" and name in _TORCH_STORAGES:
                    return _TORCH_STORAGES[name]
                raise WeightsError(
                    f"--weights {path}: holds a {module}.{name}, not only tensors: give a "
                    "state_dict (torch.save(model.state_dict(), path)), not a whole model"
                )

            def persistent_load(self, pid):
                _, dtype, key, _location, count = pid
                data = archive.read(f"{prefix}data/{key}")
                return np.frombuffer(data, dtype, count)

        loaded = Unpickler(io.BytesIO(archive.read(pickles[0]))).load()
    if not isinstance(loaded, dict):
        raise WeightsError(f"--weights {path}: holds a {type(loaded).__name__}, not a state_dict")
    return {name: value for name, value in loaded.items() if isinstance(value, np.ndarray)}


def _rebuild_tensor(storage, offset, size, stride, *_):
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    )
    return np.array(view)


def _in_order(found: dict[str, np.ndarray], model: str, where: str, what: str) -> dict:
    """The file's tensors (BatchNorm's step counters left out) as the canonical model's, one to
    one in order: a layout that differs is named at its first layer that does not fit."""
    found = {n: a for n, a in found.items() if not n.endswith("num_batches_tracked")}
    if not found:
        raise WeightsError(f"{where}: the {what} holds no tensors")
    classes = int(np.shape(list(found.values())[-1])[0])
    arch = architectures.get(model, classes)
    expected = architectures.tensors(arch)
    for tensor, (name, array) in zip(expected, found.items(), strict=False):
        if array.shape != tensor.shape:
            raise WeightsError(
                f"{where}: layer {tensor.layer}: the {what}'s {name} is {_shape(array.shape)} "
                f"where fwbench's canonical {model} has {tensor.name} {_shape(tensor.shape)}: "
                "its layout is not the canonical model's (a library model's, e.g. torchvision's "
                "or keras.applications', differs in its layers)"
            )
    if len(found) != len(expected):
        first = expected[len(found)] if len(found) < len(expected) else None
        raise WeightsError(
            f"{where}: the {what} holds {len(found)} tensors, fwbench's canonical {model} "
            f"{len(expected)}"
            + (f": nothing for layer {first.layer} ({first.name})" if first else "")
        )
    return {t.name: array for t, array in zip(expected, found.values(), strict=True)}


# ---- Keras 3: a .weights.h5 of model.save_weights ----------------------------------------------


def read_keras_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """{the file's layer group (Keras' class-name numbering: conv2d, conv2d_1, ...): its
    variables in order} of a Keras 3 .weights.h5."""
    try:
        # Only a Keras file needs it: imported here, so that the rest reads without it.
        import h5py
    except ImportError as e:
        raise WeightsError(
            f"--weights {path}: reading a Keras .weights.h5 needs h5py in fwbench's environment "
            "(pip install h5py)"
        ) from e
    try:
        with h5py.File(path, "r") as f:
            if "layers" not in f:
                raise WeightsError(f"--weights {path}: no 'layers' group: not Keras 3's format")
            out = {}
            for name, group in f["layers"].items():
                variables = group.get("vars", {})
                out[name] = [np.asarray(variables[k]) for k in sorted(variables, key=int)]
            return out
    except OSError as e:
        raise WeightsError(f"--weights {path}: not an HDF5 file ({e})") from e


# Keras' group name of a canonical module (a convolution by its role).
_KERAS_CLASS = {
    "conv": "conv2d",
    "depthwise_conv": "depthwise_conv2d",
    "bn": "batch_normalization",
    "linear": "dense",
}


def _keras_in_order(groups: dict[str, list[np.ndarray]], model: str, where: str) -> dict:
    """The file's variables as the canonical model's, in PyTorch layouts: Keras names each layer's
    group by its class and rank among that class's layers (conv2d_3: the fourth Conv2D), so the
    canonical layers of each class take the file's groups of that class in order."""

    def numbered(group: str) -> tuple[str, int]:
        base, _, number = group.rpartition("_")
        return (base, int(number)) if number.isdigit() and base else (group, 0)

    by_class: dict[str, list[str]] = collections.defaultdict(list)
    for group in sorted(groups, key=numbered):
        if groups[group]:
            by_class[numbered(group)[0]].append(group)
    flat: dict[str, np.ndarray] = {}
    for (layer, module), tensors in itertools.groupby(
        architectures.tensors(architectures.get(model, 1)), key=lambda t: (t.layer, t.module)
    ):
        tensors = list(tensors)
        kind = _KERAS_CLASS[tensors[0].role if module == "conv" else module]
        if not by_class[kind]:
            raise WeightsError(
                f"{where}: layer {layer}: the Keras file has no {kind} group left for it (of "
                f"{', '.join(sorted(by_class)) or 'none'}): its layers are not fwbench's "
                f"canonical {model}'s"
            )
        group = by_class[kind].pop(0)
        for tensor, value in zip(tensors, groups[group], strict=False):
            flat[f"{group}/{tensor.param}"] = to_torch(value, tensor.role, KERAS_AXES)
    leftover = [g for kind in by_class.values() for g in kind]
    if leftover:
        raise WeightsError(
            f"{where}: the Keras file's {leftover[0]} (and {len(leftover) - 1} more) is no layer "
            f"of fwbench's canonical {model}"
        )
    return _in_order(flat, model, where, "Keras file")


# A channels-last framework's weight layouts, each an axis permutation of PyTorch's (the canonical
# layout) by the tensor's role: framework_array = torch_array.transpose(axes). Keras: conv
# O x I x H x W -> H x W x I x O, depthwise C x 1 x H x W -> H x W x C x 1 (its depth multiplier
# last); Flax: both convs -> H x W x I/groups x O; dense out x in -> in x out in both.
KERAS_AXES = {"conv": (2, 3, 1, 0), "depthwise_conv": (2, 3, 0, 1), "dense": (1, 0)}
FLAX_AXES = {"conv": (2, 3, 1, 0), "depthwise_conv": (2, 3, 1, 0), "dense": (1, 0)}


def _axes(role: str, layout: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    return layout.get("dense" if role == "classifier" else role)


def from_torch(array, role: str, layout: dict[str, tuple[int, ...]]):
    """A PyTorch-layout weight of `role` in `layout` (KERAS_AXES, FLAX_AXES); numpy or JAX."""
    axes = _axes(role, layout)
    return array if axes is None else array.transpose(axes)


def to_torch(array, role: str, layout: dict[str, tuple[int, ...]]):
    """The inverse of from_torch: a weight in `layout` in PyTorch's."""
    axes = _axes(role, layout)
    return array if axes is None else array.transpose(tuple(np.argsort(axes)))
