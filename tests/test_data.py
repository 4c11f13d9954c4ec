"""Dataset preparation (`fwbench data prepare`, orchestrator/data/preparation.py), the format's
reader and writer (services/common/datasets.py), `fwbench run --dataset` resolution, the
services' refusal of a changed dataset, and training both frameworks on real CIFAR-10 images."""

from __future__ import annotations

import io
import json
import pickle
import socket
import tarfile
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from fwbench.v1 import trainer_pb2 as pb
from orchestrator import cli
from orchestrator.data import preparation as prepare
from orchestrator.errors import UserError
from orchestrator.inputs import options
from services.common import datasets
from tests.conftest import FRAMEWORKS, SHARED_CIFAR, tiny_spec
from tests.conftest import fwbench as fwbench_subprocess

CLASSES = ("cat", "dog", "frog")
# Published CIFAR-10 training-set statistics (per-pixel, [0, 1] scale); JPEG re-encoding moves
# them by a few thousandths.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def fwbench(*argv: str) -> tuple[int, str]:
    """Runs the CLI in-process: (exit code, what it printed)."""
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False)
    args = cli.parser().parse_args(argv)
    try:
        code = args.handler(args, console)
    except UserError as e:
        return 2, f"{out.getvalue()}{e}"
    return code, out.getvalue()


def image_bytes(rng: np.random.Generator, fmt: str, size=(32, 32), mode="RGB") -> bytes:
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def make_image_folder(root: Path, train_per_class=4, test_per_class=2, seed=0) -> dict:
    """A small ImageFolder tree in several formats, sizes and modes, plus files that are not
    samples. Returns {(split, class, file name): exact pixels} of the lossless 32x32 RGB images."""
    rng = np.random.default_rng(seed)
    exact = {}
    variants = [("PNG", (32, 32), "RGB"), ("JPEG", (32, 32), "RGB"), ("BMP", (40, 28), "RGB")]
    variants += [("PNG", (32, 32), "L"), ("GIF", (32, 32), "P"), ("PNG", (64, 64), "RGBA")]
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for c in CLASSES:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(count):
                fmt, size, mode = variants[(i + len(c)) % len(variants)]
                name = f"{i:04d}.{fmt.lower()}"
                data = image_bytes(rng, fmt, size, mode)
                (folder / name).write_bytes(data)
                if (fmt, size, mode) == ("PNG", (32, 32), "RGB"):
                    exact[(split, c, name)] = np.asarray(Image.open(io.BytesIO(data)))
            (folder / ".DS_Store").write_bytes(b"\0junk")
    (root / "README.txt").write_text("not a sample")
    return exact


def make_tar(source: Path, archive: Path, root_name: str | None) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=root_name or ".")
    return archive


def no_partial_left(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_image_folder_directory_and_archive_prepare_to_the_same_bytes(tmp_path):
    exact = make_image_folder(tmp_path / "src")
    code, printed = fwbench(
        "data", "prepare", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "a")
    )
    assert code == 0, printed
    assert "12 train and 6 test images" in printed
    archive = make_tar(tmp_path / "src", tmp_path / "folder.tar.gz", root_name="folder")
    code, printed = fwbench(
        "data", "prepare", "--source", str(archive), "--out", str(tmp_path / "b")
    )
    assert code == 0, printed

    meta_a = datasets.read_meta(tmp_path / "a")
    meta_b = datasets.read_meta(tmp_path / "b")
    assert meta_a["arrays"] == meta_b["arrays"]  # same checksums: same bytes, same order
    assert meta_b["name"] == "folder"
    assert meta_b["source"]["sha256"] == datasets.sha256_file(archive)
    assert meta_a["classes"] == list(CLASSES)
    assert (meta_a["train_count"], meta_a["test_count"]) == (12, 6)
    pre = meta_a["preprocessing"]
    assert pre["resized_images"] == sum(n for s, n in pre["source_sizes"].items() if s != "32x32")
    assert pre["resized_images"] > 0 and pre["converted_to_rgb_images"] > 0
    assert "stretched to 32x32" in pre["resize"]

    d = datasets.from_directory(tmp_path / "a")
    assert d.train_images.shape == (12, 32, 32, 3) and d.test_images.shape == (6, 32, 32, 3)
    np.testing.assert_allclose(d.mean, datasets.channel_stats(np.asarray(d.train_images))[0])
    # Lossless 32x32 RGB files come through bit-exact, with their class as label.
    for (split, c, _), pixels in exact.items():
        images = np.asarray(getattr(d, f"{split}_images"))
        matches = np.flatnonzero((images == pixels).all(axis=(1, 2, 3)))
        assert len(matches) == 1
        assert getattr(d, f"{split}_labels")[matches[0]] == CLASSES.index(c)
    # Stored shuffled, so that a --train-limit takes a mix of classes.
    assert len(set(d.train_labels[:4].tolist())) > 1
    assert no_partial_left(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b"this is not an image", id="garbage"),
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
    ],
)
@pytest.mark.parametrize("container", ["directory", "archive"])
def test_an_unreadable_image_is_an_error_naming_it_and_leaves_nothing(tmp_path, damage, container):
    make_image_folder(tmp_path / "src")
    bad = tmp_path / "src" / "train" / "dog" / "0001.jpeg"
    bad.write_bytes(damage(image_bytes(np.random.default_rng(1), "JPEG")))
    source = tmp_path / "src"
    if container == "archive":
        source = make_tar(source, tmp_path / "src.tar", root_name=None)
    code, printed = fwbench(
        "data", "prepare", "--source", str(source), "--out", str(tmp_path / "d")
    )
    assert code == 2
    assert "train/dog/0001.jpeg" in printed and "not a readable image" in printed
    assert not (tmp_path / "d").exists()
    assert no_partial_left(tmp_path)


def nest_a_file_too_deep(src: Path) -> None:
    (src / "train" / "cat" / "deeper").mkdir()
    (src / "train" / "cat" / "deeper" / "x.png").write_bytes(b"")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda src: (src / "test").rename(src / "val"), "no images under test/"),
        (lambda src: (src / "test" / "cat").rename(src / "test" / "lion"), "classes that train/"),
        (nest_a_file_too_deep, "expected train/<class>/<image file>"),
    ],
    ids=["no-test-split", "unknown-test-class", "too-deep"],
)
def test_layout_errors_are_explained(tmp_path, change, message):
    make_image_folder(tmp_path / "src")
    change(tmp_path / "src")
    code, printed = fwbench(
        "data", "prepare", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "d")
    )
    assert code == 2 and message in printed
    assert not (tmp_path / "d").exists()


def test_an_existing_dataset_is_kept_unless_forced(tmp_path):
    out = tmp_path / "d"
    args = ("data", "prepare", "--source", "synthetic", "--out", str(out))
    assert fwbench(*args, "--train-count", "64", "--test-count", "16")[0] == 0
    code, printed = fwbench(*args, "--train-count", "32", "--test-count", "16")
    assert code == 2 and "--force" in printed
    assert datasets.read_meta(out)["train_count"] == 64
    assert fwbench(*args, "--train-count", "32", "--test-count", "16", "--force")[0] == 0
    assert datasets.read_meta(out)["train_count"] == 32
    assert no_partial_left(tmp_path)


def test_prepared_synthetic_data_is_the_in_memory_generator(tmp_path):
    code, printed = fwbench(
        *("data", "prepare", "--source", "synthetic", "--out", str(tmp_path / "s")),
        *("--seed", "3", "--train-count", "200", "--test-count", "50"),
    )
    assert code == 0, printed
    prepared = datasets.from_directory(tmp_path / "s")
    generated = datasets.synthetic(3, 200, 50)
    for name in datasets.ARRAYS:
        np.testing.assert_array_equal(getattr(prepared, name), getattr(generated, name))
    assert prepared.mean == pytest.approx(generated.mean)


def write_cifar10_python(path: Path, per_batch: int) -> dict[str, np.ndarray]:
    """An archive in the layout of the official cifar-10-python.tar.gz, with random images."""
    rng = np.random.default_rng(0)
    arrays = {}
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, obj: dict) -> None:
            data = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        splits = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        for split, names in splits.items():
            images = rng.integers(0, 256, size=(per_batch * len(names), 32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, 10, size=len(images))
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
            rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # R, G, B planes
            for i, name in enumerate(names):
                part = slice(i * per_batch, (i + 1) * per_batch)
                add(name, {b"data": rows[part], b"labels": labels[part].tolist()})
        add("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return arrays


def test_the_official_python_archive_layout_is_read(tmp_path):
    expected = write_cifar10_python(tmp_path / "c.tar.gz", per_batch=6)
    decoded = prepare.read_cifar10(tmp_path / "c.tar.gz")
    assert decoded.classes == [f"c{i}" for i in range(10)]
    for name, array in expected.items():
        np.testing.assert_array_equal(decoded.arrays[name], array)


def test_an_archive_that_is_not_the_official_one_is_refused_before_unpickling(tmp_path):
    write_cifar10_python(tmp_path / "c.tar.gz", per_batch=2)
    code, printed = fwbench(
        *("data", "prepare", "--source", "cifar10", "--out", str(tmp_path / "d")),
        *("--archive", str(tmp_path / "c.tar.gz")),
    )
    assert code == 2
    assert f"not that of the official cifar-10-python.tar.gz ({prepare.CIFAR10_MD5})" in printed
    assert not (tmp_path / "d").exists()


def has_internet() -> bool:
    try:
        socket.create_connection(("www.cs.toronto.edu", 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_without_internet_the_download_fails_fast_naming_archive(tmp_path, monkeypatch):
    if has_internet():
        pytest.skip("this host reaches www.cs.toronto.edu: the test would download 163 MB")
    monkeypatch.chdir(tmp_path)  # the download cache is data/downloads/ under the working dir
    start = time.monotonic()
    code, printed = fwbench("data", "prepare", "--source", "cifar10", "--out", "data/cifar10")
    assert code == 2 and "--archive PATH" in printed and prepare.CIFAR10_MD5 in printed
    assert time.monotonic() - start < 60
    assert not Path("data/cifar10").exists()
    assert not list(Path("data/downloads").glob("*"))


def test_run_uses_prepared_directories_and_prepares_image_folders_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "pets")
    first = prepare.resolve("pets", None)
    assert first == (tmp_path / "data" / "pets").resolve()
    stamp = (first / "meta.json").stat().st_mtime_ns
    assert prepare.resolve("pets", None) == first  # reused, not prepared again
    assert (first / "meta.json").stat().st_mtime_ns == stamp
    assert prepare.resolve(str(first), None) == first  # a prepared directory, as is

    make_image_folder(tmp_path / "other" / "pets")
    with pytest.raises(UserError, match="was prepared from"):
        prepare.resolve("other/pets", None)
    with pytest.raises(UserError, match="not synthetic, cifar10"):
        prepare.resolve("no/such/dir", None)
    write_cifar10_python(tmp_path / "c.tar.gz", per_batch=2)
    with pytest.raises(UserError, match="not that of the official"):
        prepare.resolve("cifar10", tmp_path / "c10", archive=tmp_path / "c.tar.gz")
    assert not (tmp_path / "c10").exists()

    args = cli.parser().parse_args(
        ["run", "--out", "r", "--dataset", "other/pets", "--data-dir", "elsewhere"]
    )
    spec = options.build_spec(args)
    assert spec.data.source == "directory"
    assert spec.data.data_dir == str((tmp_path / "elsewhere").resolve())


def flip_a_byte(path: Path, offset_from_end: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.framework
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_service_refuses_a_dataset_changed_after_preparing(tmp_path, stub, framework):
    out = tmp_path / "d"
    code, printed = fwbench(
        *("data", "prepare", "--source", "synthetic", "--out", str(out)),
        *("--train-count", "64", "--test-count", "32"),
    )
    assert code == 0, printed
    flip_a_byte(out / "train_images.npy")
    spec = tiny_spec(data__source="directory", data__data_dir=str(out))
    with pytest.raises(grpc.RpcError) as raised:
        list(stub(framework).Train(pb.TrainRequest(spec=spec), timeout=300))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = raised.value.details()
    assert "train_images.npy" in details and "does not match meta.json" in details
    assert "prepare it again" in details


# --- real data: the shared CIFAR-10 JPEG archive ---


@pytest.fixture(scope="session")
def real_cifar(tmp_path_factory) -> Path:
    """The shared archive prepared once per session (about 20 s on 2 cores)."""
    if not SHARED_CIFAR.exists():
        pytest.skip(f"real CIFAR-10 archive not present at {SHARED_CIFAR}")
    out = tmp_path_factory.mktemp("real") / "cifar10-jpeg"
    code, printed = fwbench("data", "prepare", "--source", str(SHARED_CIFAR), "--out", str(out))
    assert code == 0, printed
    return out


@pytest.mark.slow
def test_the_shared_archive_prepares_to_cifar10(real_cifar):
    meta = datasets.read_meta(real_cifar)
    assert (meta["train_count"], meta["test_count"]) == (50_000, 10_000)
    assert meta["classes"] == [
        *("airplane", "automobile", "bird", "cat", "deer"),
        *("dog", "frog", "horse", "ship", "truck"),
    ]
    assert meta["preprocessing"]["source_sizes"] == {"32x32": 60_000}
    d = datasets.from_directory(real_cifar)  # verifies every checksum
    assert np.bincount(d.train_labels).tolist() == [5_000] * 10
    assert np.bincount(d.test_labels).tolist() == [1_000] * 10
    assert d.mean == pytest.approx(CIFAR_MEAN, abs=0.01)
    assert d.std == pytest.approx(CIFAR_STD, abs=0.01)
    recorded = json.loads((real_cifar / "meta.json").read_text())["arrays"]
    for name in datasets.ARRAYS:
        assert recorded[name]["sha256"] == datasets.sha256_file(real_cifar / f"{name}.npy")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_corrupted_archive_is_a_clear_error_with_exit_2(tmp_path, damage):
    if not SHARED_CIFAR.exists():
        pytest.skip(f"real CIFAR-10 archive not present at {SHARED_CIFAR}")
    data = bytearray(SHARED_CIFAR.read_bytes())
    if damage == "truncated":  # an interrupted download; a quarter in, to keep the test short
        data = data[: len(data) // 4]
    else:  # bytes changed in the compressed stream
        data[200_000:200_016] = b"\xa5" * 16
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    archive.write_bytes(bytes(data))
    result = fwbench_subprocess(
        "data", "prepare", "--source", archive, "--out", tmp_path / "d", timeout_s=300
    )
    assert result.returncode == 2, result.stderr
    printed = result.stdout + result.stderr
    assert str(archive) in printed and "corrupt" in printed
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists() and no_partial_left(tmp_path)


# Slow in every framework (~375 steps each, 2-4 minutes on 2 cores); in `make test`, a directory
# dataset trains in test_service and synthetic data learns in test_frameworks.
@pytest.mark.framework
@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_training_on_real_images_beats_chance(real_cifar, stub, framework):
    # The default model (canonical mobilenet_v2, shared initial weights) and augmentation. Adam
    # rather than the default SGD: on CPU the budget is ~375 steps, and SGD at lr 0.01 is then
    # barely past 20 %. Eval-mode BatchNorm needs that many steps for its running statistics.
    spec = tiny_spec(
        "mobilenet_v2",
        data__source="directory",
        data__data_dir=str(real_cifar),
        data__train_limit=4_000,
        data__test_limit=1_000,
        optimizer__name="adam",
        optimizer__learning_rate=1e-3,
        epochs=3,
    )
    accuracies = [
        event.epoch_end.test_accuracy
        for event in stub(framework).Train(pb.TrainRequest(spec=spec), timeout=900)
        if event.WhichOneof("event") == "epoch_end"
    ]
    print(f"{framework} test accuracy per epoch: {accuracies}")
    assert len(accuracies) == 3
    # Chance is 0.1; with 1,000 test images its standard deviation is under 0.01.
    assert accuracies[-1] > 0.2, accuracies
