"""Datasets on the orchestrator's side: `fwbench data prepare`, and where a prepared dataset lives.

A source is decoded once into the directory format of services/common/datasets.py (uint8 arrays,
labels, class names, meta.json with checksums and the training mean/std), which both services
read. Sources:
- `cifar10`: the official python archive (cifar-10-python.tar.gz), from --archive or downloaded
  into data/downloads/, accepted only when its published md5 matches;
- an ImageFolder directory, or a .tar/.tar.gz/.tgz/.tar.bz2/.tar.xz of one:
  `[ROOT/]train/<class>/<file>` and `[ROOT/]test/<class>/<file>`, in any format Pillow reads;
  files outside train/ and test/ (a README) are ignored, hidden files (.DS_Store, ._*) skipped.
  A compressed archive is checked against its own checksum (gzip's CRC-32, bzip2's, xz's); a
  plain .tar has none;
- `synthetic`: the seeded generator of services/common/datasets.py, written to disk.

ImageFolder images of every Pillow mode are converted to 8-bit RGB with their range kept
(orchestrator/data/pixels.py: a 16-bit image is scaled, not clipped), images that are not 32x32
are resized (RESIZE_POLICY), and samples are stored in a seeded shuffled order, as the official
CIFAR-10 batches are, so that --train-limit/--test-limit take a mix of classes rather than the
first classes in name order. All three are recorded in meta.json.
"""

from __future__ import annotations

import bz2
import collections
import dataclasses
import gzip
import hashlib
import io
import lzma
import pickle
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from orchestrator.data import pixels
from orchestrator.errors import UserError
from services.common import datasets

DEFAULT_DATA_ROOT = Path("data")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published on the CIFAR-10 page
CIFAR10_ARCHIVE = DEFAULT_DATA_ROOT / "downloads" / "cifar-10-python.tar.gz"
DOWNLOAD_TIMEOUT_S = 30
SPLITS = ("train", "test")
SIZE = datasets.IMAGE_SHAPE[:2]
RESIZE_POLICY = (
    "images that are not 32x32 are stretched to 32x32 (aspect ratio not kept) with Pillow's "
    "bilinear filter, which antialiases when downscaling, after their conversion to 8-bit RGB"
)
# Fixed rather than the run's seed: a prepared dataset is one copy, shared by every run.
ORDER_SEED = 0
ORDER_POLICY = (
    f"ImageFolder order (class, then file name) permuted by "
    f"numpy.random.default_rng({ORDER_SEED}).permutation, per split"
)


# (root directories, split, class, file name) of an ImageFolder image.
Sample = tuple[tuple[str, ...], str, str, str]
ProgressNow = Callable[[], dict[str, int]]


@dataclasses.dataclass
class Decoded:
    arrays: dict[str, np.ndarray]  # datasets.ARRAYS
    classes: list[str]
    provenance: dict  # recorded in meta.json: source, preprocessing, order


def prepare(
    source: str,
    out: Path,
    *,
    archive: Path | None = None,
    seed: int = 0,
    train_count: int = datasets.SYNTHETIC_TRAIN,
    test_count: int = datasets.SYNTHETIC_TEST,
    replace: bool = False,
    console: Console | None = None,
) -> dict:
    """Decodes `source` into the dataset directory `out` and returns its meta."""
    console = console or Console(stderr=True, highlight=False)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    if out.exists() and any(out.iterdir()) and not replace:
        raise UserError(f"{out} already exists: choose another --out, or pass --force to replace")
    if source == "cifar10":
        archive = cifar10_archive(archive, console)
    elif archive is not None:
        raise UserError("--archive is for --source cifar10 (the official python archive) only")
    start = time.perf_counter()
    if source == "cifar10":
        decoded = read_cifar10(archive)
        name = "cifar10"
    elif source == "synthetic":
        decoded = synthetic(seed, train_count, test_count)
        name = "synthetic"
    elif Path(source).exists():
        decoded = read_image_folder(Path(source), console)
        name = source_name(Path(source))
    else:
        raise UserError(
            f"--source {source!r} is neither cifar10, synthetic, nor an existing ImageFolder "
            "directory or archive"
        )
    decode_s = time.perf_counter() - start
    try:
        meta = datasets.write(
            out,
            decoded.arrays,
            decoded.classes,
            name,
            # Decoding alone, without a download: what a second host would spend.
            decoded.provenance | {"decode_s": round(decode_s, 2)},
            replace=replace,
        )
    except datasets.DataError as e:
        raise UserError(str(e)) from e
    console.print(summary(out, meta, time.perf_counter() - start))
    return meta


def summary(out: Path, meta: dict, elapsed_s: float) -> str:
    size_mb = sum((out / e["file"]).stat().st_size for e in meta["arrays"].values()) / 1e6
    mean = ", ".join(f"{v:.4f}" for v in meta["mean"])
    std = ", ".join(f"{v:.4f}" for v in meta["std"])
    # Shown, not only recorded: a conversion is what makes a dataset look unlike its files.
    converted = [
        f"\n  {c['images']:,} {c['mode']} image{'s' * (c['images'] != 1)} to 8-bit RGB: {c['rule']}"
        for c in meta.get("preprocessing", {}).get("rgb_conversion", [])
        if c["mode"] != "RGB"
    ]
    return (
        f"Prepared {meta['name']} in {out}: {meta['train_count']:,} train and "
        f"{meta['test_count']:,} test images, {len(meta['classes'])} classes, "
        f"{size_mb:.1f} MB of arrays, {elapsed_s:.1f} s\n"
        f"  train mean (RGB, [0, 1]) {mean} · std {std}" + "".join(converted)
    )


def source_name(path: Path) -> str:
    """The dataset name of an ImageFolder source: its file or directory name without suffixes."""
    name = path.resolve().name
    for suffix in (".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar"):
        name = name.removesuffix(suffix)
    return name


# --- cifar10: the official python archive ---


def cifar10_archive(archive: Path | None, console: Console) -> Path:
    """The official archive, verified: --archive, else the download cache, else downloaded."""
    if archive is None:
        archive = CIFAR10_ARCHIVE
        if not archive.exists():
            download(CIFAR10_URL, archive, console)
    elif not archive.is_file():
        raise UserError(f"--archive {archive} does not exist")
    actual = md5_file(archive)
    if actual != CIFAR10_MD5:
        # Checked before anything is unpickled: only the published archive is ever unpickled.
        raise UserError(
            f"{archive}: md5 {actual} is not that of the official cifar-10-python.tar.gz "
            f"({CIFAR10_MD5}); an ImageFolder archive is a source itself: "
            f"`fwbench data prepare --source {archive}` or `fwbench run --dataset {archive}`"
        )
    return archive


def md5_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def download(url: str, target: Path, console: Console) -> None:
    """Downloads the official archive to target through a partial file, renamed once its md5 is
    right, so that an interrupted or damaged download is never taken for the archive."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            open(partial, "wb") as f,
            Progress(
                TextColumn("download"),
                BarColumn(),
                DownloadColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress,
        ):
            task = progress.add_task("download", total=int(response.headers["Content-Length"]))
            while chunk := response.read(1 << 20):
                f.write(chunk)
                progress.advance(task, len(chunk))
    except (urllib.error.URLError, OSError) as e:
        partial.unlink(missing_ok=True)
        raise UserError(
            f"could not download {url} ({getattr(e, 'reason', e)}); without internet access, "
            f"pass --archive PATH to a copy of cifar-10-python.tar.gz (md5 {CIFAR10_MD5})"
        ) from e
    actual = md5_file(partial)
    if actual != CIFAR10_MD5:
        partial.unlink()
        raise UserError(f"the download of {url} has md5 {actual}, not {CIFAR10_MD5}: try again")
    partial.rename(target)


def read_cifar10(archive: Path) -> Decoded:
    """The arrays of the official python archive: five training batches and the test batch of
    10,000 pickled rows each (3072 bytes: the R, then G, then B plane of a 32x32 image)."""

    def batch(tar: tarfile.TarFile, name: str) -> dict:
        member = tar.extractfile(f"cifar-10-batches-py/{name}")
        return pickle.load(member, encoding="bytes")

    def split(batches: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
        images = rows.reshape(-1, 3, *SIZE).transpose(0, 2, 3, 1)
        labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
        return np.ascontiguousarray(images), labels

    try:
        with tarfile.open(archive, "r:*") as tar:
            train = split([batch(tar, f"data_batch_{i}") for i in range(1, 6)])
            test = split([batch(tar, "test_batch")])
            classes = [c.decode() for c in batch(tar, "batches.meta")[b"label_names"]]
    except (tarfile.TarError, KeyError, EOFError, zlib.error, OSError) as e:
        raise UserError(f"{archive}: not a readable CIFAR-10 python archive ({e})") from e
    return Decoded(
        arrays={
            "train_images": train[0],
            "train_labels": train[1],
            "test_images": test[0],
            "test_labels": test[1],
        },
        classes=classes,
        provenance={
            "source": {
                "kind": "cifar10-python",
                "path": str(archive.resolve()),
                "url": CIFAR10_URL,
                "md5": CIFAR10_MD5,
            },
            "preprocessing": {"resize": "none: the archive holds 32x32 RGB rows"},
            "order": "the archive's order",
        },
    )


# --- ImageFolder directories and archives ---


def read_image_folder(source: Path, console: Console) -> Decoded:
    images: dict[str, dict[tuple[str, str], np.ndarray]] = {s: {} for s in SPLITS}
    sizes: collections.Counter[str] = collections.Counter()
    conversions: collections.Counter[tuple[str, str]] = collections.Counter()
    roots: set[tuple[str, ...]] = set()
    with Progress(
        TextColumn(f"decoding {source.name}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[images]:,} images"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("decode", total=None, images=0)
        for count, (sample, content, progress_now) in enumerate(walk(source), start=1):
            root, split, label, filename = sample
            roots.add(root)
            where = f"{source}:{'/'.join((*root, split, label, filename))}"
            images[split][(label, filename)] = decode(content, where, sizes, conversions)
            if count % 500 == 0:
                progress.update(task, images=count, **progress_now())
        progress.update(task, images=sum(map(len, images.values())), total=1, completed=1)

    if len(roots) > 1:
        listed = ", ".join("/".join(r) or "." for r in sorted(roots))
        raise UserError(f"{source}: train/ and test/ found under several roots ({listed})")
    classes = sorted({label for label, _ in images["train"]})
    check_layout(source, images, classes)
    label_of = {label: i for i, label in enumerate(classes)}
    arrays = {}
    for split in SPLITS:
        keys = sorted(images[split], key=lambda k: (label_of[k[0]], k[1]))
        order = np.random.default_rng(ORDER_SEED).permutation(len(keys))
        arrays[f"{split}_images"] = np.stack([images[split][keys[i]] for i in order])
        arrays[f"{split}_labels"] = np.array([label_of[keys[i][0]] for i in order], np.int64)
    resized = sum(n for size, n in sizes.items() if size != f"{SIZE[1]}x{SIZE[0]}")
    modes: collections.Counter[str] = collections.Counter()
    for (mode, _), n in conversions.items():
        modes[mode] += n
    return Decoded(
        arrays=arrays,
        classes=classes,
        provenance={
            "source": {
                "kind": "imagefolder-archive" if source.is_file() else "imagefolder-directory",
                "path": str(source.resolve()),
                **({"sha256": datasets.sha256_file(source)} if source.is_file() else {}),
            },
            "preprocessing": {
                "resize": RESIZE_POLICY,
                "resized_images": resized,
                "converted_to_rgb_images": sum(n for m, n in modes.items() if m != "RGB"),
                # Per Pillow mode (and, for 32-bit modes, per range), what made it 8-bit RGB.
                "rgb_conversion": [
                    {"mode": mode, "images": n, "rule": rule}
                    for (mode, rule), n in conversions.most_common()
                ],
                # Width x height and Pillow mode of the source images, most common first.
                "source_sizes": dict(sizes.most_common(10)),
                "source_modes": dict(modes.most_common()),
            },
            "order": ORDER_POLICY,
        },
    )


def walk(source: Path) -> Iterator[tuple[Sample, Path | io.BytesIO, ProgressNow]]:
    """(sample, its file or its bytes, a function giving the progress so far as Progress.update
    arguments) for every image file of an ImageFolder directory or tar archive, in the
    source's order; an archive is streamed, front to back, once."""
    if source.is_dir():
        files = sorted(
            p.relative_to(source).parts
            for p in source.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts)
        )
        samples = [(sample, parts) for parts in files if (sample := locate(parts))]
        for done, (sample, parts) in enumerate(samples, start=1):
            yield (
                sample,
                source.joinpath(*parts),
                lambda d=done: {"completed": d, "total": len(samples)},
            )
        return
    archive_bytes = source.stat().st_size
    try:
        with (
            open(source, "rb") as raw,
            decompressed(raw) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or any(part.startswith(".") for part in parts):
                    continue
                if sample := locate(parts):
                    # Read here, so that a corrupt archive fails as one, not as a bad image.
                    content = io.BytesIO(tar.extractfile(member).read())
                    yield sample, content, lambda: {"completed": raw.tell(), "total": archive_bytes}
            # The decompressor checks the archive's checksum only at its end, past the end of
            # the tar stream: without this, a changed byte can decode into a changed image.
            while stream.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
        # OSError: gzip's bad CRC or length, bzip2's invalid data, an unreadable file.
        raise UserError(f"{source}: not a readable tar archive, or it is corrupt ({e})") from e


def decompressed(raw: io.BufferedReader) -> io.BufferedIOBase:
    """The archive's tar stream, through a reader that verifies the compression's checksum
    (gzip's CRC-32, bzip2's block CRCs, xz's check); tarfile's own stream mode skips gzip's."""
    magic = raw.peek(6)[:6]
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


def locate(parts: tuple[str, ...]) -> Sample | None:
    """(root, split, class, file name) of a file at `[ROOT/]split/class/file`, ROOT being at most
    one directory; None for a file outside train/ and test/; an error for one inside them that
    does not fit the layout."""
    for depth in (0, 1):
        if len(parts) > depth and parts[depth] in SPLITS:
            rest = parts[depth:]
            if len(rest) != 3:
                raise UserError(
                    f"{'/'.join(parts)}: expected {rest[0]}/<class>/<image file> "
                    "(ImageFolder layout)"
                )
            return parts[:depth], rest[0], rest[1], rest[2]
    return None


def decode(
    f: Path | io.BytesIO,
    where: str,
    sizes: collections.Counter[str],
    conversions: collections.Counter[tuple[str, str]],
) -> np.ndarray:
    """A 32x32 RGB uint8 image from an open image file, counting source sizes and the
    (source mode, conversion rule) of each image."""
    try:
        with Image.open(f) as image:
            image.load()  # decode now: a truncated or corrupt file fails here, named
            sizes[f"{image.width}x{image.height}"] += 1
            rgb, rule = pixels.to_rgb(image)
            conversions[image.mode, rule] += 1
    except pixels.ConversionError as e:
        raise UserError(f"{where}: {e}") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # OSError covers UnidentifiedImageError and truncation; SyntaxError is what some of
        # Pillow's format plugins raise for malformed headers.
        raise UserError(f"{where}: not a readable image ({e})") from e
    if rgb.size != (SIZE[1], SIZE[0]):
        rgb = rgb.resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def check_layout(source: Path, images: dict, classes: list[str]) -> None:
    for split in SPLITS:
        if not images[split]:
            raise UserError(f"{source}: no images under {split}/<class>/ (ImageFolder layout)")
    extra = sorted({label for label, _ in images["test"]} - set(classes))
    if extra:
        raise UserError(
            f"{source}: test/ has classes that train/ lacks ({', '.join(extra)}); "
            "labels would mean nothing"
        )


# --- synthetic ---


def synthetic(seed: int, train_count: int, test_count: int) -> Decoded:
    if train_count <= 0 or test_count <= 0:
        raise UserError("--train-count and --test-count must be > 0")
    d = datasets.synthetic(seed, train_count, test_count)
    return Decoded(
        arrays={name: getattr(d, name) for name in datasets.ARRAYS},
        classes=list(d.classes),
        provenance={
            "source": {"kind": "synthetic", "seed": seed},
            "preprocessing": {"resize": "none: generated at 32x32"},
            "order": "as generated",
        },
    )


# --- where a run's dataset lives ---


def resolve(dataset: str, data_dir: Path | None, archive: Path | None = None) -> Path:
    """The prepared dataset directory for `fwbench run --dataset/--data-dir/--archive`,
    preparing it on first use:
    - `cifar10`: data/cifar10 (or --data-dir), from --archive or the official download;
    - a prepared directory (it has meta.json): used as is;
    - an ImageFolder directory or archive: data/<its name> (or --data-dir), prepared from it
      once and reused while meta.json names the same source.
    """
    if dataset == "cifar10":
        path = data_dir or DEFAULT_DATA_ROOT / "cifar10"
        if not (path / "meta.json").exists():
            prepare("cifar10", path, archive=archive)
        return path.resolve()
    if archive is not None:
        raise UserError("--archive is for --dataset cifar10 (the official python archive) only")
    source = Path(dataset)
    if (source / "meta.json").exists():
        return source.resolve()
    if not source.exists():
        raise UserError(
            f"--dataset {dataset}: not synthetic, cifar10, a prepared dataset directory or an "
            "ImageFolder directory/archive; prepare one with "
            "`fwbench data prepare --source SOURCE --out DIR`"
        )
    path = data_dir or DEFAULT_DATA_ROOT / source_name(source)
    if not (path / "meta.json").exists():
        prepare(dataset, path)
        return path.resolve()
    try:
        prepared_from = datasets.read_meta(path).get("source", {}).get("path")
    except datasets.DataError as e:
        raise UserError(str(e)) from e
    if prepared_from != str(source.resolve()):
        raise UserError(
            f"{path} was prepared from {prepared_from}, not {source.resolve()}: "
            "pass --data-dir to prepare this source elsewhere"
        )
    return path.resolve()
