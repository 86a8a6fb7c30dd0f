"""Image grids with Pillow and NumPy (no torchvision): rows of items, samples, reconstructions."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from ..eval import reconstruct
from ..models.run import check_compatible


def to_images(x: torch.Tensor, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Items (N, *shape) to displayable (N, H, W, C) floats in [0, 1]. Vectors are shown as a near-square
    image of their values, min-max scaled over the whole batch."""
    x = x.detach().float().cpu()
    if kind == "image":
        a = x.clamp(0, 1).numpy()
        return a.transpose(0, 2, 3, 1)
    flat = x.reshape(len(x), -1).numpy()
    d = flat.shape[1]
    w = int(np.ceil(np.sqrt(d)))
    h = int(np.ceil(d / w))
    pad = np.zeros((len(flat), h * w), np.float32)
    pad[:, :d] = flat
    lo, hi = float(flat.min()), float(flat.max())
    pad = (pad - lo) / (hi - lo + 1e-12)
    return pad.reshape(len(flat), h, w, 1)


def image_grid(rows: list[np.ndarray], pad: int = 2, scale: int | None = None, bg: float = 1.0) -> Image.Image:
    """Stack rows of images (each (N, H, W, C) in [0, 1], equal N and size) into one picture.
    ``scale`` enlarges pixels; by default small images grow to about 56 pixels."""
    if not rows or len(rows[0]) == 0:
        raise UserError("nothing to draw")
    n, h, w, c = rows[0].shape
    if scale is None:
        scale = max(1, min(8, 56 // max(h, w)))
    grid = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, c), bg, np.float32)
    for r, row in enumerate(rows):
        for i in range(min(n, len(row))):
            y, x0 = pad + r * (h + pad), pad + i * (w + pad)
            grid[y : y + h, x0 : x0 + w] = row[i]
    img = (grid * 255).round().astype(np.uint8)
    im = Image.fromarray(img[..., 0] if c == 1 else img)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    return im


def grid_of(images: torch.Tensor, shape, kind: str, per_row: int) -> Image.Image:
    """Items in rows of ``per_row``, the last row padded with blanks."""
    rows = [to_images(images[i : i + per_row], shape, kind) for i in range(0, len(images), per_row)]
    if len(rows) > 1 and len(rows[-1]) < per_row:  # pad the last row with blanks
        last = rows[-1]
        rows[-1] = np.concatenate([last, np.ones((per_row - len(last), *last.shape[1:]), last.dtype)])
    return image_grid(rows)


def reconstruction_grid(model, dataset, split: str, n: int) -> Image.Image:
    """The first ``n`` items of a split (top) and their reconstructions (bottom)."""
    check_compatible(model, dataset)
    x = dataset.split(split).x[:n]
    rec = reconstruct(model, x)
    return image_grid([to_images(x, dataset.shape, dataset.kind), to_images(rec, dataset.shape, dataset.kind)])


def validation_pictures(model, dataset) -> dict[str, np.ndarray]:
    """What the trackers of a run (``--log``) show at each validation, as the report would: the first 12
    validation items above their reconstructions and, for a model with a prior, 16 samples.
    ``{name: (H, W, 3) uint8}``; nothing for text or for a model that is not an autoencoder."""
    from ..eval.generate import sample_images
    from ..models.base import Autoencoder

    if not isinstance(model, Autoencoder) or dataset.kind == "text":
        return {}
    out = {"reconstructions": reconstruction_grid(model, dataset, "val", 12)}
    if model.can_sample and dataset.kind == "image":
        out["samples"] = grid_of(sample_images(model, 16), dataset.shape, "image", 8)
    return {name: np.asarray(im.convert("RGB")) for name, im in out.items()}
