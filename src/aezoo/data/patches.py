"""``patches:PATH``: random square crops of the photographs below a folder (any sizes and formats).

Each crop is fixed by the seed: a table of (photograph, top, left, one of the 8 flips and quarter turns)
is drawn once, so item ``i`` is always the same pixels and the trainer's seeded order, distributed shares
and resume apply unchanged. Photographs are decoded when a batch first needs them, shrunk so their longer
side is at most ``max_side`` pixels (many wallpapers and camera files are far larger than the photographs
a denoiser is used on, and shrinking also averages away their own sensor noise and JPEG blocks), and kept
as uint8 in a cache of at most ``memory`` MB, least recently used first out. So memory is bounded by that
cache whatever the folder holds; a photograph evicted is decoded again when a crop needs it.

Validation and test crops come from photographs held out of training (every tenth, at least one) when
the folder has five or more, otherwise from other positions in the same photographs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .mapped import MappedItems


class PhotoCache:
    """Decoded, shrunk photographs as uint8 (C, H, W), within ``budget`` bytes (least recently used out)."""

    def __init__(self, files: list[Path], grey: bool, max_side: int, budget: int):
        self.files, self.grey, self.max_side, self.budget = files, grey, max_side, budget
        self._held: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, i: int) -> np.ndarray:
        with self._lock:
            if i in self._held:
                self._held.move_to_end(i)
                return self._held[i]
        a = self._decode(i)
        with self._lock:
            self._held[i] = a
            while sum(v.nbytes for v in self._held.values()) > self.budget and len(self._held) > 1:
                self._held.popitem(last=False)
        return a

    def _decode(self, i: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = self.files[i]
        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.grey else "RGB")
                scale = self.max_side / max(im.size)
                if scale < 1:
                    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                                   Image.Resampling.LANCZOS)
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise UserError(f"{path}: cannot read the image ({e})") from None
        return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


class PatchItems(MappedItems):
    """Crops (C, size, size) in [0, 1]: row ``r`` of ``table`` is (photograph, top, left, transform)."""

    def __init__(self, photos: PhotoCache, table: np.ndarray, size: int, rows: np.ndarray | None = None,
                 threshold: float | None = None):
        self.photos, self.table, self.size = photos, table, size
        self.rows = np.arange(len(table), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        self.threshold = threshold
        self.item_shape = (1 if photos.grey else 3, size, size)

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        out = np.empty((len(rows), *self.item_shape), np.float32)
        s = self.size
        for k in np.argsort(self.table[rows, 0], kind="stable"):  # photograph by photograph
            photo, top, left, turn = self.table[rows[k]]
            crop = self.photos[int(photo)][:, top : top + s, left : left + s]
            if turn >= 4:
                crop = crop[:, :, ::-1]
            out[k] = np.rot90(crop, int(turn) % 4, axes=(1, 2)) / np.float32(255)
        if self.threshold is not None:
            out = (out > self.threshold).astype(np.float32)
        return torch.from_numpy(out)

    def head(self, n: int) -> "PatchItems":
        return PatchItems(self.photos, self.table, self.size, self.rows[:n], self.threshold)

    def binarized(self, threshold: float) -> "PatchItems":
        return PatchItems(self.photos, self.table, self.size, self.rows, threshold)

    def min(self) -> torch.Tensor:
        return torch.tensor(0.0)

    def max(self) -> torch.Tensor:
        return torch.tensor(1.0)

    def __repr__(self) -> str:
        return f"PatchItems({len(self)} crops of {self.item_shape} from {len(self.photos.files)} photographs)"


def _headers(files: list[Path], max_side: int) -> tuple[list[tuple[int, int]], bool]:
    """(H, W) of each photograph after shrinking, and whether all are greyscale, from the headers alone."""
    from PIL import Image

    sizes, grey = [], True
    for f in files:
        try:
            with Image.open(f) as im:
                w, h = im.size
                grey = grey and im.mode in ("L", "1", "LA", "I", "I;16", "F")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UserError(f"{f}: cannot read the image ({e})") from None
        scale = min(1.0, max_side / max(w, h))
        sizes.append((max(1, round(h * scale)), max(1, round(w * scale))) if scale < 1 else (h, w))
    return sizes, grey


def _table(photos: list[int], sizes: list[tuple[int, int]], size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` crops, photographs drawn in proportion to their area."""
    area = np.array([(sizes[p][0] - size + 1) * (sizes[p][1] - size + 1) for p in photos], np.float64)
    pick = np.asarray(photos)[rng.choice(len(photos), n, p=area / area.sum())]
    h = np.array([sizes[p][0] for p in pick])
    w = np.array([sizes[p][1] for p in pick])
    top = (rng.random(n) * (h - size + 1)).astype(np.int64)
    left = (rng.random(n) * (w - size + 1)).astype(np.int64)
    return np.stack([pick, top, left, rng.integers(0, 8, n)], 1).astype(np.int64)


def load_patches(path: str, size: int = 64, n: int = 100_000, val: int = 1000, grey: bool | None = None,
                 max_side: int = 1024, memory_mb: int = 512, seed: int = 0):
    """The ``patches:`` source (see the module docstring): ``n`` training crops and ``val`` validation and
    test crops each, ``size`` pixels square."""
    from .base import Dataset, Split
    from .files import IMAGE_SUFFIXES

    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"{path}: no such folder" if not root.exists() else f"{path}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    if max_side < size:
        raise UserError(f"dataset option max_side={max_side} is smaller than the crop size {size}")
    sizes, all_grey = _headers(files, max_side)
    grey = all_grey if grey is None else grey
    small = [f.name for f, (h, w) in zip(files, sizes) if min(h, w) < size]
    if len(small) == len(files):
        raise UserError(f"{path}: every image is smaller than a {size}x{size} crop; use a smaller size")
    usable = [i for i, (h, w) in enumerate(sizes) if min(h, w) >= size]
    held = usable[::10] if len(usable) >= 5 else []
    train_photos = [i for i in usable if i not in held] if held else usable
    rng = np.random.default_rng(seed)
    cache = PhotoCache(files, grey, max_side, memory_mb << 20)
    tables = [_table(train_photos, sizes, size, n, rng)] + [_table(held or usable, sizes, size, val, rng) for _ in range(2)]
    train, valid, test = (PatchItems(cache, t, size) for t in tables)
    meta = {"on_disk": True, "photographs": len(files), "held_out": [files[i].name for i in held],
            "skipped_small": small}
    return Dataset(spec=path, kind="image", train=Split(train), val=Split(valid[:]), test=Split(test[:]), meta=meta)
