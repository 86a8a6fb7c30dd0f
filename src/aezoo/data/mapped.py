"""Training items read from disk on demand: an ``.npy`` array memory-mapped and gathered per batch, or
image files decoded per batch (``folder:PATH?lazy=true``, or cached once into an ``.npy`` with
``cache=FILE``).

``npy:PATH?mmap=true`` (the default when the items, as float32, would take more than half the memory the
process may still use) keeps the training split on disk as :class:`MappedItems`: a batch reads only its rows, in file order, and converts them as
the in-memory path does (uint8 to [0, 1], channels first). The validation and test splits (10% each) are
read into memory, so the memory needed is about a fifth of the decoded array plus one batch. The order,
the shares of distributed ranks and resume are those of the in-memory path: :func:`~aezoo.data.batches`
only indexes ``split.x``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError

CHUNK = 1 << 16  # rows per pass when checking a mapped array


class MappedItems:
    """Rows ``rows`` of a memory-mapped array as float32 items; indexing returns tensors."""

    def __init__(self, array: np.ndarray, rows: np.ndarray, layout: str, scale: float,
                 threshold: float | None = None):
        self.array, self.rows, self.layout, self.scale = array, np.asarray(rows, np.int64), layout, scale
        self.threshold = threshold  # binarize=T: values above it become 1, the others 0
        item = array.shape[1:]
        if layout == "vector":
            self.item_shape = (int(np.prod(item)),)
        elif layout == "nhw":
            self.item_shape = (1, *item)
        elif layout == "nhwc":
            self.item_shape = (item[2], item[0], item[1])
        else:
            self.item_shape = tuple(item)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.item_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        from .files import arrange

        order = np.argsort(rows, kind="stable")  # read in file order, then put back in the asked order
        raw = np.asarray(self.array[rows[order]])
        back = np.empty_like(raw)
        back[order] = raw
        x = arrange(back, self.layout, self.scale)  # as the in-memory path: the same float32 values
        if self.threshold is not None:
            x = (x > self.threshold).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(x))

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            return self._read(self.rows[[int(key)]])[0]
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return self._read(self.rows[key])

    def head(self, n: int) -> "MappedItems":
        return MappedItems(self.array, self.rows[:n], self.layout, self.scale, self.threshold)

    def binarized(self, threshold: float) -> "MappedItems":
        return MappedItems(self.array, self.rows, self.layout, self.scale, threshold)

    def _extreme(self, fn) -> torch.Tensor:
        """min or max over the items, a chunk at a time."""
        return torch.tensor(fn([float(fn(self._read(self.rows[i:i + CHUNK]).numpy()))
                                for i in range(0, len(self.rows), CHUNK)]))

    def min(self) -> torch.Tensor:
        return self._extreme(np.min)

    def max(self) -> torch.Tensor:
        return self._extreme(np.max)

    def numpy(self) -> np.ndarray:
        return self._read(self.rows).numpy()

    def __repr__(self) -> str:
        return f"MappedItems({len(self)} items of {self.item_shape}, on disk)"


def mapped_layout(x: np.ndarray, where: str, kind: str | None) -> tuple[str, float, str]:
    """(layout, scale, kind) of a memory-mapped array: :func:`files.item_layout`'s rules, and the values
    checked chunk by chunk as :func:`files._as_items` checks them in memory."""
    from .files import image_range_error, item_layout

    layout, kind = item_layout(x, where, kind)
    scale = 255.0 if kind == "image" and x.dtype == np.uint8 else 1.0  # the divisor of the raw values
    lo, hi = np.inf, -np.inf
    for i in range(0, len(x), CHUNK):
        part = np.asarray(x[i : i + CHUNK])
        if np.issubdtype(part.dtype, np.floating) and not np.isfinite(part).all():
            raise UserError(f"{where}: value(s) are NaN or infinite (rows {i}..{i + len(part) - 1}); clean the data first")
        lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    if kind == "image" and scale == 1.0 and (lo < 0 or hi > 1):
        raise image_range_error(where, lo, hi)
    return layout, scale, kind


def available_memory() -> int:
    """Bytes this process may still allocate: physical memory, or the data limit (RLIMIT_DATA) when it is
    lower, less what the process already holds (Linux; elsewhere, physical memory)."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 1 << 34
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_DATA)[0]
        if soft != resource.RLIM_INFINITY:
            total = min(total, soft)
        with open("/proc/self/status") as fh:
            used = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmData"))
        return max(total - used, 0)
    except (ImportError, OSError, StopIteration, ValueError):
        return total


def mapped_dataset(spec: str, kind: str, items, y: np.ndarray | None = None, classes=None, meta=None):
    """The splits of ``make_dataset`` (same seeds, same items) with the training split left on disk;
    ``items(rows)`` makes the on-disk items of those rows."""
    from .base import Dataset, Split, split_off

    rows = np.arange(len(y) if y is not None else items.total)
    rest, y_rest, test, y_test = split_off(rows, y, 0.1, seed=1)
    train, y_train, val, y_val = split_off(rest, y_rest, 0.1, seed=0)
    label = (lambda v: None if v is None else torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)))
    return Dataset(spec=spec, kind=kind, train=Split(items(train), label(y_train)),
                   val=Split(items(val)[:], label(y_val)), test=Split(items(test)[:], label(y_test)),
                   classes=classes, meta={**(meta or {}), "on_disk": True})


class ArrayRows:
    """``rows -> MappedItems`` of one memory-mapped array."""

    def __init__(self, array: np.ndarray, layout: str, scale: float):
        self.array, self.layout, self.scale, self.total = array, layout, scale, len(array)

    def __call__(self, rows: np.ndarray) -> MappedItems:
        return MappedItems(self.array, rows, self.layout, self.scale)


class FolderItems(MappedItems):
    """Rows of a list of image files, decoded when a batch asks for them (grey or RGB, resized to
    ``size``); the same items as the in-memory folder: source."""

    def __init__(self, files: list, rows: np.ndarray, size: tuple[int, int], grey: bool,
                 threshold: float | None = None):
        self.files, self.size, self.grey = files, size, grey
        self.rows, self.threshold = np.asarray(rows, np.int64), threshold
        self.item_shape = (1 if grey else 3, *size)

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        from .files import read_image

        x = np.stack([read_image(self.files[r], self.size, self.grey) for r in rows]) if len(rows) else \
            np.zeros((0, *self.item_shape), np.float32)
        if self.threshold is not None:
            x = (x > self.threshold).astype(np.float32)
        return torch.from_numpy(x)

    def head(self, n: int) -> "FolderItems":
        return FolderItems(self.files, self.rows[:n], self.size, self.grey, self.threshold)

    def binarized(self, threshold: float) -> "FolderItems":
        return FolderItems(self.files, self.rows, self.size, self.grey, threshold)


class FileRows:
    """``rows -> FolderItems`` of a list of image files."""

    def __init__(self, files: list, size: tuple[int, int], grey: bool):
        self.files, self.size, self.grey, self.total = files, size, grey, len(files)

    def __call__(self, rows: np.ndarray) -> FolderItems:
        return FolderItems(self.files, rows, self.size, self.grey)
