"""MNIST-format (IDX) datasets: ``mnist`` and ``fashion-mnist``.

Files are looked up, in order, in ``--data-dir``, ``$AEZOO_DATA``, ``/usr/share/datasets/<name>/`` (where
Debian's ``dataset-fashion-mnist`` puts them) and the user cache; each directory may hold the files
directly or in a ``<name>/`` sub-directory, gzipped or not. When none has them they are downloaded into
the cache, and the SHA-256 of the decompressed bytes is checked (a mirror that re-compresses the files,
as Debian's package does, still verifies).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Dataset, make_dataset

# IDX type codes -> numpy dtypes (big-endian): http://yann.lecun.com/exdb/mnist/ ("THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not), checking its magic number and its length."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise UserError(f"{path}: cannot read the file ({e}); it may be truncated, download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise UserError(f"{path}: not an IDX file (wrong magic number {raw[:4].hex() or 'empty'})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise UserError(f"{path}: IDX file is {what} ({len(raw)} bytes, expected {expected} for shape {dims})")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class IdxSource:
    name: str
    urls: tuple[str, ...]  # base URLs tried in order
    sha256: dict  # file stem -> SHA-256 of the decompressed IDX bytes
    classes: tuple[str, ...]


FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

SOURCES = {
    "fashion-mnist": IdxSource(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "mnist": IdxSource(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        tuple(str(d) for d in range(10)),
    ),
}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aezoo"


def search_dirs(name: str, data_dir: str | None) -> list[Path]:
    roots = [data_dir, os.environ.get("AEZOO_DATA"), f"/usr/share/datasets/{name}", str(cache_dir() / name)]
    out = []
    for root in roots:
        if root:
            out += [Path(root), Path(root) / name]
    return out


def find_files(name: str, data_dir: str | None) -> dict | None:
    """The four files of ``name`` from the first directory that has them all, or None."""
    for d in search_dirs(name, data_dir):
        found = {}
        for stem in FILES:
            for candidate in (d / f"{stem}.gz", d / stem):
                if candidate.is_file():
                    found[stem] = candidate
                    break
        if len(found) == len(FILES):
            return found
    return None


def download(source: IdxSource, dest: Path, progress: bool = True) -> dict:
    """Download the four files into ``dest``, verify them and move them into place one by one."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for stem in FILES:
        target = dest / f"{stem}.gz"
        if target.is_file() and _sha256_idx(target) == source.sha256[stem]:
            out[stem] = target
            continue
        errors = []
        for base in source.urls:
            url = base + stem + ".gz"
            try:
                _fetch(url, target, source.sha256[stem], progress)
                out[stem] = target
                break
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
        else:
            raise UserError(
                f"{source.name} is not installed and could not be downloaded ({'; '.join(errors)}); "
                f"on Debian run 'apt-get install dataset-{source.name}', or put the four IDX files in --data-dir"
            )
    return out


def _fetch(url: str, target: Path, sha256: str, progress: bool) -> None:
    from tqdm import tqdm

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        got = _sha256_idx(Path(tmp))
        if got != sha256:
            raise ValueError(f"checksum mismatch (SHA-256 {got[:12]}..., expected {sha256[:12]}...)")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256_idx(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            return "corrupt"
    return hashlib.sha256(raw).hexdigest()


def load_idx_dataset(name: str, data_dir: str | None = None, progress: bool = True) -> Dataset:
    source = SOURCES[name]
    files = find_files(name, data_dir) or download(source, cache_dir() / name, progress)
    xtr, ytr = read_idx(files["train-images-idx3-ubyte"]), read_idx(files["train-labels-idx1-ubyte"])
    xte, yte = read_idx(files["t10k-images-idx3-ubyte"]), read_idx(files["t10k-labels-idx1-ubyte"])
    for imgs, labels, stem in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if imgs.ndim != 3 or labels.ndim != 1 or len(imgs) != len(labels):
            raise UserError(
                f"{files[stem + '-images-idx3-ubyte']}: images {imgs.shape} and labels {labels.shape} do not match"
            )
    scale = lambda a: (a.astype(np.float32) / 255.0)[:, None]  # (N, 1, H, W) in [0, 1]
    # Validation: a fixed 5,000 of the 60,000 training images (the test split stays the official one).
    return make_dataset(
        name,
        "image",
        scale(xtr),
        ytr.astype(np.int64),
        scale(xte),
        yte.astype(np.int64),
        val_fraction=5000 / len(xtr) if len(xtr) > 10000 else 0.1,
        classes=list(source.classes),
        meta={"files": {k: str(v) for k, v in files.items()}},
    )


