"""The datasets every service reads: one decoded copy, identical bytes for every framework.

Two sources:
- synthetic: seeded, learnable images made in memory (class-dependent colour and pattern plus
  noise), so everything runs before real data exists;
- directory: a dataset prepared once by `fwbench data prepare` (orchestrator/data/preparation.py
  decodes the source; `write` here is the only code that writes the format, `from_directory` the
  only code that reads it).

The directory format, FORMAT:
  train_images.npy, test_images.npy   uint8 N x 32 x 32 x 3 (NHWC, RGB), memory-mapped on load
  train_labels.npy, test_labels.npy   int64 N, indices into `classes`
  meta.json   format, name, classes, train_count, test_count, mean and std (per RGB channel, of
              the training images on the [0, 1] scale; check_stats refuses values that cannot
              be, when written and when read), arrays (file, sha256, shape, dtype of each
              array: checked before every use; files only in the dataset's own directory) and
              provenance (source, preprocessing, order)

A service reads datasets only under its data roots (`--data-root`): `check` resolves a spec's
data_dir (symlinks and `..` followed) and refuses one outside them, before any worker starts.
The class count and the sizes come from the dataset: `check` fills model.num_classes from it and
refuses a spec that disagrees, so every framework's model head follows the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from services.common import schedule
from services.common.spec import SpecError

FORMAT = "fwbench-dataset/1"
IMAGE_SHAPE = (32, 32, 3)
ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
META_KEYS = ("name", "classes", "mean", "std", "arrays")
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 50_000, 10_000
SYNTHETIC_CLASSES = 10
CHANNELS = ("R", "G", "B")
STD_MAX = 0.5  # the largest std of values in [0, 1]: half of them 0, half 1
STATS_ROUNDING = 1e-9  # how far a std computed in float64 may land past STD_MAX


class DataError(Exception):
    """The dataset is missing, unreadable, does not match its checksums or has statistics that
    cannot be its images'. FAILED_PRECONDITION."""


class DataAccessError(DataError):
    """A path lies outside what the service may read. PERMISSION_DENIED."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    train_images: np.ndarray  # N x 32 x 32 x 3 uint8 (may be memory-mapped)
    train_labels: np.ndarray  # N int64
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    # Per-channel mean and std of the training images scaled to [0, 1], used to normalise.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NHWC images on the [0, 1] scale, in float64, in chunks
    so that a memory-mapped array is never copied whole."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for start in range(0, len(images), 10_000):
        chunk = images[start : start + 10_000].astype(np.float64) / 255
        total += chunk.sum(axis=(0, 1, 2))
        total_sq += (chunk**2).sum(axis=(0, 1, 2))
    count = len(images) * IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    mean = total / count
    # Rounding can make a constant channel's variance a hair below 0, whose root is NaN; it is 0.
    return mean.tolist(), np.sqrt(np.maximum(total_sq / count - mean**2, 0)).tolist()


def check_stats(mean, std, where: str, remedy: str) -> None:
    """Raises DataError, naming `where` and ending with `remedy`, unless mean and std could be
    the per-channel statistics of pixels on the [0, 1] scale: three finite numbers each, every
    mean within [0, 1], every std above 0 and at most 0.5. Every framework's first step is
    (x - mean) / std: a std of 0 or NaN makes every input infinite or NaN, and the run would
    "diverge" at step 1, blamed on the framework."""
    for key, values in (("mean", mean), ("std", std)):
        if not (
            isinstance(values, list)
            and len(values) == len(CHANNELS)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ):
            raise DataError(f"{where}: {key} is {values!r}, not three numbers (R, G, B); {remedy}")
        for channel, value in zip(CHANNELS, values, strict=True):
            if problem := _stat_problem(key, value):
                raise DataError(f"{where}: {key} {values}: channel {channel} {problem}; {remedy}")


def _stat_problem(key: str, value: float) -> str | None:
    if not math.isfinite(value):
        return "is not finite"
    if key == "mean" and not 0 <= value <= 1:
        return "is outside the pixel scale [0, 1]"
    if key == "std" and value <= 0:
        return (
            "is not above 0: that channel has one value in every training image, and inputs "
            "divided by it are infinite"
        )
    if key == "std" and value > STD_MAX + STATS_ROUNDING:
        return f"is above {STD_MAX}, the most that values in [0, 1] can spread"
    return None


def synthetic_split(seed: int, split: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images of a synthetic split (1 train, 2 test): colour and a horizontally symmetric
    low-frequency pattern per class (so crop-flip augmentation keeps the class), plus noise."""
    classes = np.random.default_rng([seed, 0])
    colours = classes.uniform(-1, 1, size=(SYNTHETIC_CLASSES, 1, 1, 3))
    patterns = classes.normal(size=(SYNTHETIC_CLASSES, 4, 4, 3))
    patterns = (patterns + patterns[:, :, ::-1]) / 2
    patterns = np.kron(patterns, np.ones((1, 8, 8, 1)))
    rng = np.random.default_rng([seed, split])
    labels = rng.integers(0, SYNTHETIC_CLASSES, size=count)
    noise = rng.normal(size=(count, *IMAGE_SHAPE))
    images = 128 + 45 * colours[labels] + 30 * patterns[labels] + 40 * noise
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def synthetic(seed: int, train_count: int, test_count: int) -> Dataset:
    train_images, train_labels = synthetic_split(seed, 1, train_count)
    test_images, test_labels = synthetic_split(seed, 2, test_count)
    mean, std = channel_stats(train_images)
    return Dataset(
        train_images,
        train_labels,
        test_images,
        test_labels,
        classes=tuple(f"class{i}" for i in range(SYNTHETIC_CLASSES)),
        mean=tuple(mean),
        std=tuple(std),
        description=f"synthetic(seed={seed})",
    )


def probe_batch(seed: int, count: int) -> np.ndarray:
    """float32 NHWC images derived from the seed, normalised, for comparing models' logits."""
    images, _ = synthetic_split(seed, 3, count)
    return ((images / 255 - 0.5) / 0.25).astype(np.float32)


def probe_labels(seed: int, count: int, num_classes: int) -> np.ndarray:
    """int64 class labels of probe_batch(seed, count) for a num_classes head, for comparing
    training steps (synthetic's own labels, folded into the head when it has fewer classes)."""
    return synthetic_split(seed, 3, count)[1] % num_classes


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_arrays(arrays: dict[str, np.ndarray], classes_count: int, where: str) -> None:
    """Raises DataError unless the arrays have the format's shapes and dtypes and the labels
    name a class; the writer checks before writing, the reader after loading."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
            raise DataError(
                f"{where}: {split}_images is {images.dtype} {images.shape}, "
                f"expected uint8 N x {' x '.join(map(str, IMAGE_SHAPE))}"
            )
        if labels.dtype != np.int64 or labels.shape != (len(images),):
            raise DataError(
                f"{where}: {split}_labels is {labels.dtype} {labels.shape}, "
                f"expected int64 ({len(images)},) to match {split}_images"
            )
        if len(labels) and not 0 <= labels.min() <= labels.max() < classes_count:
            raise DataError(f"{where}: {split}_labels fall outside 0..{classes_count - 1}")


def write(
    out_dir: Path,
    arrays: dict[str, np.ndarray],
    classes: list[str],
    name: str,
    provenance: dict,
    replace: bool = False,
) -> dict:
    """Writes a dataset directory in FORMAT and returns its meta.

    Everything is written into a temporary sibling directory that is renamed into place at the
    end, so an interrupted or failed preparation never leaves a directory that looks prepared.
    `provenance` (source, preprocessing, order) is recorded in meta.json as is.
    """
    check_arrays(arrays, len(classes), name)
    mean, std = channel_stats(arrays["train_images"])
    check_stats(
        mean,
        std,
        f"{name}: the training images' statistics",
        "check the source images: a dataset whose images are all white, all black or one "
        "colour cannot be normalised (and is often a decoding problem)",
    )
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not replace:
        raise DataError(f"{out_dir} already exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        # mkdtemp makes it private (0700); services may run as another user (containers).
        partial.chmod(0o755)
        entries = {}
        for array_name in ARRAYS:
            path = partial / f"{array_name}.npy"
            np.save(path, np.ascontiguousarray(arrays[array_name]))
            entries[array_name] = {
                "file": path.name,
                "sha256": sha256_file(path),
                "shape": list(arrays[array_name].shape),
                "dtype": str(arrays[array_name].dtype),
            }
        meta = {
            "format": FORMAT,
            "name": name,
            "classes": list(classes),
            "train_count": len(arrays["train_labels"]),
            "test_count": len(arrays["test_labels"]),
            # Per channel (R, G, B), of the training images on the [0, 1] scale.
            "mean": mean,
            "std": std,
            "arrays": entries,
            **provenance,
        }
        (partial / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            # Moved aside rather than deleted first, so a failure here loses nothing.
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            out_dir.rename(old / out_dir.name)
            partial.rename(out_dir)
            shutil.rmtree(old)
        else:
            partial.rename(out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return meta


def read_meta(data_dir: Path) -> dict:
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        raise DataError(
            f"{meta_path} does not exist: prepare the dataset first with "
            f"`fwbench data prepare --source SOURCE --out {data_dir}`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path} is not valid JSON ({e}): prepare the dataset again") from e
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    missing = [k for k in META_KEYS if k not in meta] + [
        f"arrays.{name}" for name in ARRAYS if name not in meta.get("arrays", {})
    ]
    if missing:
        raise DataError(f"{meta_path} lacks {', '.join(missing)}: prepare the dataset again")
    if not (isinstance(meta["classes"], list) and all(isinstance(c, str) for c in meta["classes"])):
        raise DataError(f"{meta_path}: classes must be a list of names: prepare the dataset again")
    source = meta.get("source")
    source_path = source.get("path") if isinstance(source, dict) else None
    check_stats(
        meta["mean"],
        meta["std"],
        str(meta_path),
        "mean and std are the training images' per-channel statistics on the [0, 1] scale, by "
        "which every framework normalises its input: prepare the dataset again (`fwbench data "
        f"prepare --source {source_path or 'SOURCE'} --out {data_dir} --force`)",
    )
    for name in ARRAYS:
        entry = meta["arrays"][name]
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (
            isinstance(entry.get("file"), str)
            and isinstance(shape, list)
            and shape
            and all(isinstance(n, int) and n >= 0 for n in shape)
        ):
            raise DataError(
                f"{meta_path}: arrays.{name} needs a file name and a shape: prepare it again"
            )
        # A tampered meta.json must not make a service read (and hash) files elsewhere.
        if entry["file"] != Path(entry["file"]).name or entry["file"] in ("", ".", ".."):
            raise DataAccessError(
                f"{meta_path}: arrays.{name}.file {entry['file']!r} is not a file name in the "
                "dataset's own directory; meta.json may name only files beside it"
            )
        path = data_dir / entry["file"]
        if path.is_symlink() and path.resolve().parent != data_dir.resolve():
            raise DataAccessError(
                f"{path} links outside the dataset's directory ({path.resolve()}); "
                "meta.json may name only files beside it"
            )
    return meta


def resolve_data_dir(data_dir: str, roots: Sequence[Path], field: str = "data.data_dir") -> Path:
    """data_dir with symlinks and `..` resolved; DataAccessError, naming the spec's `field`,
    unless it lies inside a root."""
    path = Path(data_dir).resolve()
    for root in roots:
        if path.is_relative_to(Path(root).resolve()):
            return path
    allowed = ", ".join(str(Path(root).resolve()) for root in roots) or "(none)"
    raise DataAccessError(
        f"{field}: {data_dir!r} resolves to {path}, outside the data roots this service "
        f"may read ({allowed}); put it under one of them, or start the service with "
        "--data-root naming its parent"
    )


def check(spec, roots: Sequence[Path]) -> None:
    """Checks a defaults-filled TrainSpec against its dataset, before any worker starts, and
    completes it: data_dir becomes the resolved path (the worker reads exactly what was checked)
    and an unset model.num_classes the dataset's class count. Raises DataAccessError outside the
    roots, DataError for a dataset that cannot be read, SpecError when the spec's class count or
    limits do not fit the dataset."""
    if spec.data.source == "synthetic":
        classes, sizes = SYNTHETIC_CLASSES, {"train": SYNTHETIC_TRAIN, "test": SYNTHETIC_TEST}
        where = "synthetic data"
    else:
        data_dir = resolve_data_dir(spec.data.data_dir, roots)
        meta = read_meta(data_dir)
        spec.data.data_dir = str(data_dir)
        classes = len(meta["classes"])
        arrays = meta["arrays"]
        sizes = {split: arrays[f"{split}_labels"]["shape"][0] for split in ("train", "test")}
        where = f"the dataset at {data_dir}"
    _fit(spec, classes, sizes, where)


def _fit(spec, classes: int, sizes: dict[str, int], where: str) -> None:
    if not spec.model.HasField("num_classes"):
        spec.model.num_classes = classes
    elif spec.model.num_classes != classes:
        raise SpecError(
            f"model.num_classes: {spec.model.num_classes} does not match the {classes} classes of "
            f"{where}; leave it unset to follow the dataset"
        )
    for split, size in sizes.items():
        field = f"{split}_limit"
        if spec.data.HasField(field) and getattr(spec.data, field) > size:
            raise SpecError(
                f"data.{field}: {getattr(spec.data, field)} is more than the {size} {split} "
                f"samples of {where}; use at most {size}, or leave it unset for all"
            )
    if "train" in sizes:
        train = spec.data.train_limit if spec.data.HasField("train_limit") else sizes["train"]
        if schedule.last_batch_of_one(train, spec.batch_size):
            raise SpecError(
                f"data.train_limit: {train} training samples in batches of {spec.batch_size} "
                "leave a last batch of 1 sample, on which BatchNorm cannot train; use one "
                "sample more or less"
            )
        if schedule.uneven_last_batch(train, spec.batch_size, spec.gpus):
            last = train % spec.batch_size
            raise SpecError(
                f"data.train_limit: {train} training samples in batches of {spec.batch_size} "
                f"leave a last batch of {last}, which the {spec.gpus} devices (gpus) cannot "
                f"share evenly; use a train_limit whose last batch is a multiple of {spec.gpus}"
            )


def verify(data_dir: Path, meta: dict) -> None:
    """Raises DataError unless every array's sha256 matches meta.json."""
    for name in ARRAYS:
        entry = meta["arrays"][name]
        path = data_dir / entry["file"]
        if not path.is_file():
            raise DataError(f"{path} is missing: prepare the dataset again")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise DataError(
                f"{path}: sha256 {actual[:12]}… does not match meta.json ({entry['sha256'][:12]}…);"
                f" the dataset changed after it was prepared: prepare it again with "
                f"`fwbench data prepare`"
            )


def from_directory(data_dir: Path) -> Dataset:
    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    verify(data_dir, meta)
    arrays = {
        name: np.load(data_dir / meta["arrays"][name]["file"], mmap_mode="r") for name in ARRAYS
    }
    check_arrays(arrays, len(meta["classes"]), str(data_dir))
    return Dataset(
        **arrays,
        classes=tuple(meta["classes"]),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        description=f"{meta['name']} ({data_dir})",
    )


def load(spec) -> Dataset:
    """The dataset of a TrainSpec completed by `check`, limited to its train_limit/test_limit
    first samples. Checked again here, in the worker, against the arrays actually loaded: a head
    of model.num_classes, and every label inside it (check_arrays), before any training."""
    data_spec = spec.data
    train = data_spec.train_limit if data_spec.HasField("train_limit") else None
    test = data_spec.test_limit if data_spec.HasField("test_limit") else None
    if data_spec.source == "synthetic":
        # Checked before the arrays are made: a limit beyond the split is refused, not made.
        sizes = {"train": SYNTHETIC_TRAIN, "test": SYNTHETIC_TEST}
        _fit(spec, SYNTHETIC_CLASSES, sizes, "synthetic data")
        return synthetic(spec.seed, train or SYNTHETIC_TRAIN, test or SYNTHETIC_TEST)
    full = from_directory(Path(data_spec.data_dir))
    _fit(
        spec,
        len(full.classes),
        {"train": len(full.train_labels), "test": len(full.test_labels)},
        f"the dataset at {data_spec.data_dir}",
    )
    return dataclasses.replace(
        full,
        train_images=full.train_images[:train],
        train_labels=full.train_labels[:train],
        test_images=full.test_images[:test],
        test_labels=full.test_labels[:test],
    )
