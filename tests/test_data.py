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
from orchestrator.data import pixels
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
    for (split, c, _), expected in exact.items():
        images = np.asarray(getattr(d, f"{split}_images"))
        matches = np.flatnonzero((images == expected).all(axis=(1, 2, 3)))
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


# --- every Pillow mode to 8-bit RGB, its range kept ---

RAMP = np.arange(256, dtype=np.uint8)  # one row: black to white
WIDE_RAMP = np.linspace(0, 65535, 256).round()  # the same ramp on the 16-bit scale


def raw_image(mode: str, pixels: np.ndarray) -> Image.Image:
    """An image of `mode` from a row of pixels (one value, or a tuple of bands, each), in the
    mode's own raw layout."""
    row = np.ascontiguousarray(pixels)
    return Image.frombytes(mode, (len(row), 1), row.tobytes())


def bands(*channels) -> np.ndarray:
    return np.stack([np.broadcast_to(c, RAMP.shape) for c in channels], axis=-1).astype(np.uint8)


def palette_image(mode: str) -> Image.Image:
    image = raw_image(mode, RAMP if mode == "P" else bands(RAMP, 255))
    image.putpalette(bands(RAMP, 255 - RAMP, RAMP // 2).tobytes())
    return image


COLOURS = bands(RAMP, 255 - RAMP, RAMP // 2)
GREY = bands(RAMP, RAMP, RAMP)
WIDE_GREY = bands(*[np.rint(WIDE_RAMP * 255 / 65535)] * 3)
# Pillow mode: (a one-row image in that mode, the RGB pixels it must become, tolerance).
GRADIENTS = {
    "1": lambda: (
        Image.fromarray(RAMP[None] % 2 == 0),
        bands(*[(RAMP % 2 == 0) * 255] * 3),
        0,
    ),
    "L": lambda: (raw_image("L", RAMP), GREY, 0),
    "LA": lambda: (raw_image("LA", bands(RAMP, 255 - RAMP)), GREY, 0),
    "La": lambda: (raw_image("La", bands(RAMP, 255)), GREY, 0),
    "P": lambda: (palette_image("P"), COLOURS, 0),
    "PA": lambda: (palette_image("PA"), COLOURS, 0),
    "RGB": lambda: (raw_image("RGB", COLOURS), COLOURS, 0),
    "RGBA": lambda: (raw_image("RGBA", bands(RAMP, 255 - RAMP, RAMP // 2, 7)), COLOURS, 0),
    "RGBX": lambda: (raw_image("RGBX", bands(RAMP, 255 - RAMP, RAMP // 2, 7)), COLOURS, 0),
    "RGBa": lambda: (raw_image("RGBa", bands(RAMP, 255 - RAMP, RAMP // 2, 255)), COLOURS, 0),
    # (255 - C)(255 - K) / 255 with K = 0: the complement of each ink.
    "CMYK": lambda: (
        raw_image("CMYK", bands(255 - RAMP, RAMP, 255, 0)),
        bands(RAMP, 255 - RAMP, 0),
        0,
    ),
    "YCbCr": lambda: (raw_image("YCbCr", bands(RAMP, 128, 128)), GREY, 1),
    # Through CIE L*a*b* and back: a grey stays grey, within rounding.
    "LAB": lambda: (raw_image("RGB", GREY).convert("LAB"), GREY, 2),
    "HSV": lambda: (raw_image("HSV", bands(0, 255, RAMP)), bands(RAMP, 0, 0), 0),
    "I;16": lambda: (raw_image("I;16", WIDE_RAMP.astype("<u2")), WIDE_GREY, 0),
    "I;16L": lambda: (raw_image("I;16L", WIDE_RAMP.astype("<u2")), WIDE_GREY, 0),
    "I;16B": lambda: (raw_image("I;16B", WIDE_RAMP.astype(">u2")), WIDE_GREY, 0),
    "I;16N": lambda: (raw_image("I;16N", WIDE_RAMP.astype(np.uint16)), WIDE_GREY, 0),
    "I": lambda: (raw_image("I", WIDE_RAMP.astype(np.int32)), WIDE_GREY, 0),
    "F": lambda: (raw_image("F", (RAMP / 255).astype(np.float32)), GREY, 0),
}


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_pillow_mode_becomes_8_bit_rgb_with_its_range_kept(mode):
    # Parametrised over Pillow's own list: a mode a newer Pillow adds fails here until it has a
    # rule and a case.
    image, expected, tolerance = GRADIENTS[mode]()
    assert image.mode == mode
    rgb, rule = pixels.to_rgb(image)
    assert rgb.mode == "RGB" and rule
    np.testing.assert_allclose(np.asarray(rgb)[0], expected, atol=tolerance)


@pytest.mark.parametrize(
    "mode, values",
    [
        ("I", [-1000, 0, 1000, 3000]),  # a signed 16-bit TIFF
        ("I", [70_000, 140_000, 210_000, 350_000]),  # a 32-bit TIFF
        ("F", [-2.0, 0.0, 2.0, 6.0]),
    ],
    ids=["signed", "32-bit", "float-beyond-1"],
)
def test_wide_pixels_beyond_their_nominal_range_are_stretched_by_their_own(mode, values):
    dtype = np.int32 if mode == "I" else np.float32
    rgb, rule = pixels.to_rgb(raw_image(mode, np.array(values, dtype)))
    assert np.asarray(rgb)[0].tolist() == [[v] * 3 for v in (0, 64, 128, 255)]
    assert "own minimum..maximum" in rule
    constant, rule = pixels.to_rgb(raw_image(mode, np.array([values[0]] * 4, dtype)))
    assert np.asarray(constant).max() == 0 and "own minimum..maximum" in rule


def test_float_pixels_without_an_8_bit_value_are_refused():
    with pytest.raises(pixels.ConversionError, match="NaN or infinity"):
        pixels.to_rgb(raw_image("F", np.array([0.5, np.nan], np.float32)))


def test_a_16_bit_greyscale_png_keeps_its_gradient_and_meta_json_says_how(tmp_path):
    make_image_folder(tmp_path / "src")
    # Every pixel a different 16-bit value, across the whole range.
    wide = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "src" / "train" / "cat" / "wide.png")
    assert Image.open(tmp_path / "src" / "train" / "cat" / "wide.png").mode == "I;16"
    code, printed = fwbench(
        "data", "prepare", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "d")
    )
    assert code == 0, printed
    assert f"1 I;16 image to 8-bit RGB: {pixels.SIXTEEN_BIT_RULE}" in printed

    expected = np.repeat(np.rint(wide / 65535 * 255).astype(np.uint8)[..., None], 3, axis=-1)
    d = datasets.from_directory(tmp_path / "d")
    matches = np.flatnonzero((np.asarray(d.train_images) == expected).all(axis=(1, 2, 3)))
    assert len(matches) == 1 and d.train_labels[matches[0]] == CLASSES.index("cat")
    conversions = datasets.read_meta(tmp_path / "d")["preprocessing"]["rgb_conversion"]
    assert {"mode": "I;16", "images": 1, "rule": pixels.SIXTEEN_BIT_RULE} in conversions
    assert {c["mode"] for c in conversions} == {"RGB", "L", "P", "RGBA", "I;16"}


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


# --- the statistics that normalise every framework's input ---


def test_a_dataset_of_one_colour_is_refused_when_prepared(tmp_path):
    for split, count in (("train", 3), ("test", 1)):
        (tmp_path / "src" / split / "cat").mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (32, 32), "white").save(tmp_path / "src" / split / "cat" / f"{i}.png")
    code, printed = fwbench(
        "data", "prepare", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "d")
    )
    assert code == 2, printed
    assert "src: the training images' statistics: std [0.0, 0.0, 0.0]" in printed
    assert "channel R is not above 0" in printed and "check the source images" in printed
    assert not (tmp_path / "d").exists() and no_partial_left(tmp_path)


def prepared_synthetic(out: Path) -> Path:
    code, printed = fwbench(
        *("data", "prepare", "--source", "synthetic", "--out", str(out)),
        *("--train-count", "64", "--test-count", "32"),
    )
    assert code == 0, printed
    return out


def edit_meta(data_dir: Path, **fields) -> None:
    """Sets meta.json fields by hand, as a person (or a tool) might; json writes NaN as NaN."""
    meta = json.loads((data_dir / "meta.json").read_text())
    (data_dir / "meta.json").write_text(json.dumps(meta | fields))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"std": [0.0, 0.2, 0.2]}, "std [0.0, 0.2, 0.2]: channel R is not above 0"),
        ({"std": [0.2, float("nan"), 0.2]}, "std [0.2, nan, 0.2]: channel G is not finite"),
        ({"std": [0.2, 0.2, 64.0]}, "channel B is above 0.5, the most that values in [0, 1]"),
        ({"mean": [0.5, 120.0, 0.5]}, "channel G is outside the pixel scale [0, 1]"),
        ({"mean": [0.5, 0.5]}, "mean is [0.5, 0.5], not three numbers (R, G, B)"),
        ({"mean": "0.5"}, "mean is '0.5', not three numbers"),
    ],
    ids=["std-0", "std-nan", "std-absurd", "mean-absurd", "mean-two-channels", "mean-text"],
)
def test_implausible_statistics_in_meta_json_are_refused_when_read(tmp_path, fields, message):
    data_dir = prepared_synthetic(tmp_path / "d")
    edit_meta(data_dir, **fields)
    with pytest.raises(datasets.DataError) as refused:
        datasets.read_meta(data_dir)  # what the services and the CLI read a dataset through
    assert str(refused.value).startswith(f"{data_dir / 'meta.json'}: ")
    assert message in str(refused.value)
    remedy = f"prepare the dataset again (`fwbench data prepare --source SOURCE --out {data_dir}"
    assert remedy in str(refused.value)


def test_the_cli_refuses_a_run_on_a_dataset_whose_std_is_0_before_any_service(tmp_path):
    data_dir = prepared_synthetic(tmp_path / "d")
    edit_meta(data_dir, std=[0.0, 0.2, 0.2])
    # A remote address where nothing listens: were the dataset not checked, the run would fail
    # to connect (in 15 s) rather than train.
    result = fwbench_subprocess(
        *("run", "--frameworks", "pytorch", "--models", "mobilenet_v2", "--dataset", data_dir),
        *("--launcher", "remote", "--service", "pytorch=127.0.0.1:9", "--out", tmp_path / "o"),
        timeout_s=120,
    )
    printed = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, printed
    assert "Traceback" not in printed
    assert "std [0.0, 0.2, 0.2]: channel R is not above 0" in printed
    assert "fwbench data prepare" in printed
    assert not (tmp_path / "o").exists()


@pytest.mark.framework
def test_a_service_refuses_a_dataset_whose_std_is_0_rather_than_diverging(tmp_path, stub):
    # The refusal comes before any worker, in code every framework's service shares: one
    # framework proves it.
    data_dir = prepared_synthetic(tmp_path / "d")
    edit_meta(data_dir, std=[0.0, 0.2, 0.2])
    spec = tiny_spec(data__source="directory", data__data_dir=str(data_dir))
    with pytest.raises(grpc.RpcError) as raised:
        list(stub("pytorch").Train(pb.TrainRequest(spec=spec), timeout=300))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "meta.json: std [0.0, 0.2, 0.2]: channel R is not above 0" in raised.value.details()
    assert "prepare the dataset again" in raised.value.details()


# --- real data: the shared CIFAR-10 JPEG archive ---


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


# Slow (~375 steps, 1-2 minutes on 2 cores), so in one framework: every framework's batches are
# byte-identical to it (test_batches), every framework learns in eval mode (test_frameworks) and
# trains a directory dataset (test_service) in `make test`.
@pytest.mark.framework
@pytest.mark.slow
@pytest.mark.parametrize("framework", ["pytorch"])
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
    assert len(accuracies) == 4  # the baseline (epoch 0) and 3 epochs
    # Chance is 0.1; with 1,000 test images its standard deviation is under 0.01.
    assert accuracies[-1] > 0.2, accuracies
