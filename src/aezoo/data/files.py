"""A user's own data: ``folder:PATH`` (images), ``npy:PATH``, ``npz:PATH`` and ``csv:PATH``."""

from __future__ import annotations

import csv
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Dataset, check_finite, make_dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _exists(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{path}: no such {what}")
    return p


def read_image(path, size: tuple[int, int] | None, grey: bool, name: str | None = None) -> np.ndarray:
    """One image (a path or a binary file object, called ``name`` in errors) as (C, H, W) float32 in
    [0, 1], resized to ``size`` (H, W) when given."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if grey else "RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{name or path}: cannot read the image ({e})") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def load_folder(path: str, size: tuple[int, int] | None = None, grey: bool | None = None, lazy: bool | None = None,
                cache: str | None = None) -> Dataset:
    """Every image below ``path``. Images in sub-folders are labelled by the sub-folder's name.

    Without ``size`` all images must share one size. ``grey`` defaults to True when every image is
    single-channel. ``lazy`` (default: when the decoded images would take more than half the memory the
    process may still use): decode the training images per batch. ``cache``: decode them once into this
    ``.npy`` file (reused while the files are unchanged) and read it per batch.
    """
    from PIL import Image

    from .mapped import ArrayRows, FileRows, available_memory, mapped_dataset

    root = _exists(path, "folder")
    if not root.is_dir():
        raise UserError(f"{path}: not a folder (use npy:, npz: or csv: for a file)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    modes, sizes = [], []
    for f in files:  # headers only: nothing is decoded yet
        try:
            with Image.open(f) as im:
                modes.append(im.mode)
                sizes.append(im.size)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UserError(f"{f}: cannot read the image ({e})") from None
    if grey is None:
        grey = all(m in ("L", "1", "I;16", "I", "F", "LA") for m in modes)
    if size is None:
        other = next((i for i, s in enumerate(sizes) if s != sizes[0]), None)
        if other is not None:
            raise UserError(f"{path}: mixed image sizes ({files[0].name} is {sizes[0][0]}x{sizes[0][1]}, "
                            f"{files[other].name} is {sizes[other][0]}x{sizes[other][1]}); "
                            "resize them with ?size=HxW in the spec")
        size = (sizes[0][1], sizes[0][0])
    rel_dirs = [f.parent.relative_to(root).as_posix() for f in files]
    if all(d != "." for d in rel_dirs) and len(set(rel_dirs)) > 1:
        classes = sorted(set(rel_dirs))
        y = np.array([classes.index(d) for d in rel_dirs], np.int64)
    else:
        classes, y = None, None
    spec, meta = f"folder:{path}", {"files": [str(f) for f in files]}
    if cache is not None:
        array = _image_cache(files, size, grey, Path(cache))
        return mapped_dataset(spec, "image", ArrayRows(array, "nhwc", 255.0), y, classes, meta)
    decoded = len(files) * (1 if grey else 3) * size[0] * size[1] * 4
    if lazy is None:
        lazy = decoded > available_memory() // 2
    if lazy:
        return mapped_dataset(spec, "image", FileRows(files, size, grey), y, classes, meta)
    x = np.stack([read_image(f, size, grey) for f in files])
    return make_dataset(spec, "image", x, y, classes=classes, meta=meta)


def _image_cache(files: list[Path], size: tuple[int, int], grey: bool, cache: Path) -> np.ndarray:
    """The images as one (N, H, W, C) uint8 array in ``cache`` (memory-mapped), written once, one image at
    a time; ``cache`` + ``.json`` records the files it was made from, so a changed folder remakes it."""
    import json

    from ..io import atomic_path, write_json

    if cache.suffix != ".npy":
        raise UserError(f"cache={cache}: the cache is an .npy file")
    stamp = {"files": [str(f.resolve()) for f in files], "stat": [[f.stat().st_size, f.stat().st_mtime_ns] for f in files],
             "size": list(size), "grey": grey}
    sidecar = cache.with_name(cache.name + ".json")
    try:
        if cache.is_file() and sidecar.is_file() and json.loads(sidecar.read_text()) == stamp:
            return np.load(cache, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        pass  # an unreadable cache is made again
    channels = 1 if grey else 3
    try:
        with atomic_path(cache) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), *size, channels))
            for i, f in enumerate(files):
                out[i] = (read_image(f, size, grey) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
            out.flush()
            del out
        write_json(sidecar, stamp)
    except OSError as e:
        from ..io import cannot_write

        raise cannot_write(cache, e) from None
    return np.load(cache, mmap_mode="r", allow_pickle=False)


def item_layout(x: np.ndarray, where: str, kind: str | None) -> tuple[str, str]:
    """(layout, kind) of an array of items, by shape and dtype (or ``kind``): ``vector`` (N, D), or images
    ``nhw``, ``nhwc`` (channels last) or ``nchw``. Reads the shape and type only (a mapped array stays on disk)."""
    if x.dtype == object or np.iscomplexobj(x) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise UserError(f"{where}: array of {x.dtype} is not real numbers")
    if x.ndim < 2:
        raise UserError(f"{where}: expected an array of items (N, ...), got shape {x.shape}")
    if x.size == 0:
        raise UserError(f"{where}: the array has no values (shape {x.shape})")
    kind = kind or ("vector" if x.ndim == 2 else "image")
    if kind == "vector":
        return "vector", kind
    if x.ndim == 3:
        return "nhw", kind
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return "nhwc", kind
    if x.ndim == 4:
        return "nchw", kind
    raise UserError(f"{where}: images must be (N, H, W) or (N, H, W, C) or (N, C, H, W), got {x.shape}")


def arrange(x: np.ndarray, layout: str, divisor: float) -> np.ndarray:
    """Raw items of ``layout`` as float32 (N, D) vectors or (N, C, H, W) images, divided by ``divisor``
    (255 for uint8 images)."""
    x = x.astype(np.float32)
    if divisor != 1.0:
        x /= divisor
    if layout == "vector":
        return x.reshape(len(x), -1)
    if layout == "nhw":
        return x[:, None]
    if layout == "nhwc":
        return x.transpose(0, 3, 1, 2)
    return x


def image_range_error(where: str, lo: float, hi: float) -> UserError:
    return UserError(f"{where}: image values must lie in [0, 1] (found {lo:g}..{hi:g}); "
                     "scale them, store uint8, or add ?kind=vector")


def _as_items(x: np.ndarray, where: str, kind: str | None) -> tuple[np.ndarray, str]:
    """Arrays to (N, C, H, W) images in [0, 1] or (N, D) vectors, by shape and dtype (or ``kind``)."""
    layout, kind = item_layout(x, where, kind)
    check_finite(x, where)
    x = arrange(x, layout, 255.0 if kind == "image" and x.dtype == np.uint8 else 1.0)
    if kind == "image" and (x.min() < 0 or x.max() > 1):
        raise image_range_error(where, float(x.min()), float(x.max()))
    return x, kind


def _labels(y, n: int, where: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.shape != (n,):
        raise UserError(f"{where}: labels have shape {y.shape}, expected ({n},)")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            return y.astype(np.int64)
        raise UserError(f"{where}: labels must be integers")
    return y.astype(np.int64)


def load_npy(path: str, kind: str | None = None, mmap: bool | None = None) -> Dataset:
    """An array of items. ``mmap`` (default: when its items as float32 would take more than half the
    memory this process may use): keep the training split on disk, read per batch (:mod:`.mapped`)."""
    from .mapped import ArrayRows, available_memory, mapped_dataset, mapped_layout

    p = _exists(path, "file")
    try:
        try:  # the header alone first: shape and type decide where the items go
            x = np.load(p, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError):  # what numpy cannot map (an empty array, an object array): read it whole
            x = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npy file ({e})") from None
    if not isinstance(x, np.ndarray):  # np.load opens a zip archive as an .npz, whatever the name
        x.close()
        raise UserError(f"{path}: an .npz archive, not an .npy array; use npz:{path}")
    decoded = x.size * 4
    if mmap is None:
        mmap = isinstance(x, np.memmap) and decoded > available_memory() // 2
    if mmap and isinstance(x, np.memmap):
        layout, scale, kind = mapped_layout(x, path, kind)
        return mapped_dataset(f"npy:{path}", kind, ArrayRows(x, layout, scale))
    try:
        x, kind = _as_items(np.array(x), path, kind)
        return make_dataset(f"npy:{path}", kind, x, None)
    except MemoryError:
        raise UserError(f"{path}: the items do not fit in memory ({decoded / 2**30:.1f} GB as float32); train "
                        f"from disk with npy:{path}?mmap=true") from None


_X_KEYS = ("x", "X", "data", "images", "x_train", "arr_0")
_Y_KEYS = ("y", "labels", "y_train", "targets")


def load_npz(path: str, kind: str | None = None) -> Dataset:
    """Items under ``x`` (or data/images/x_train/arr_0), labels under ``y`` (or labels/y_train/targets);
    ``x_test``/``y_test`` when present give the test split."""
    p = _exists(path, "file")
    try:
        z = np.load(p, allow_pickle=False)
        if isinstance(z, np.ndarray):
            raise ValueError("a single array, not an archive; use npy:PATH")
        with z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, KeyError, NotImplementedError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"{path}: not a readable .npz file ({e})") from None
    xkey = next((k for k in _X_KEYS if k in arrays), None)
    if xkey is None:
        raise UserError(f"{path}: no array named one of {', '.join(_X_KEYS)} (found: {', '.join(arrays) or 'none'})")
    x, kind = _as_items(arrays[xkey], f"{path}[{xkey}]", kind)
    ykey = next((k for k in _Y_KEYS if k in arrays), None)
    y = _labels(arrays.get(ykey), len(x), f"{path}[{ykey}]") if ykey else None
    xt = yt = None
    if "x_test" in arrays:
        xt, _ = _as_items(arrays["x_test"], f"{path}[x_test]", kind)
        if xt.shape[1:] != x.shape[1:]:
            raise UserError(f"{path}: x_test items {xt.shape[1:]} differ from training items {x.shape[1:]}")
        yt = _labels(arrays.get("y_test"), len(xt), f"{path}[y_test]") if "y_test" in arrays else None
        if (y is None) != (yt is None):
            raise UserError(f"{path}: give labels for both training and test items, or for neither")
    return make_dataset(f"npz:{path}", kind, x, y, xt, yt)


def load_csv(path: str, label: str | None = None, header: str = "auto") -> Dataset:
    """A numeric table, one item per row. ``label`` names (or numbers, from 0) an integer label column.
    The header row is detected when its cells are not numbers (``header=yes|no`` forces it)."""
    p = _exists(path, "file")
    try:
        with open(p, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read the CSV file ({e})") from None
    if not rows:
        raise UserError(f"{path}: the CSV file is empty")

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    has_header = {"yes": True, "no": False}.get(header, not all(numeric(c) for c in rows[0]))
    names = [c.strip() for c in rows[0]] if has_header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if has_header else rows
    if not body:
        raise UserError(f"{path}: the CSV file has a header but no rows")
    width = len(names)
    label_col = None
    if label is not None:
        if label in names:
            label_col = names.index(label)
        elif label.isdigit() and int(label) < width:
            label_col = int(label)
        else:
            raise UserError(f"{path}: no column {label!r} for the labels (columns: {', '.join(names)})")
    data = np.empty((len(body), width), np.float64)
    for i, row in enumerate(body):
        line = i + 1 + int(has_header)
        if len(row) != width:
            raise UserError(f"{path}:{line}: {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            try:
                data[i, j] = float(cell)
            except ValueError:
                raise UserError(f"{path}:{line}: column {names[j]!r} holds {cell!r}, not a number") from None
    check_finite(data, path)
    y = None
    if label_col is not None:
        y = _labels(data[:, label_col], len(data), f"{path} column {names[label_col]!r}")
        data = np.delete(data, label_col, axis=1)
    if data.shape[1] == 0:
        raise UserError(f"{path}: no feature columns besides the label")
    return make_dataset(f"csv:{path}", "vector", data.astype(np.float32), y)


