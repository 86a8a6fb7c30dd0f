"""Corruption processes, usable at training and at test time.

A corruption is named by a spec ``KIND:AMOUNT``:

=====================  ===========================================================================
``gaussian:SIGMA``      additive Gaussian noise of standard deviation SIGMA, clipped to [0, 1]
``salt-pepper:P``       a fraction P of the values set to 0 or 1 (equally likely)
``masking:P``           a fraction P of the values set to 0 (masking noise, Vincent et al. 2008)
``boxes:F``             inpainting: one random box per image covering up to a fraction F of its area
``strokes:N``           inpainting: N random brush strokes per image
=====================  ===========================================================================

Noise kinds return the corrupted items; mask kinds also return the hole mask (B, 1, H, W), 1 = missing.
Randomness comes from torch's global generator on the items' device, so training stays reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError

NOISES = ("gaussian", "salt-pepper", "masking")
MASKS = ("boxes", "strokes")


@dataclass(frozen=True)
class Corruption:
    kind: str
    amount: float

    @property
    def is_mask(self) -> bool:
        return self.kind in MASKS

    def __str__(self) -> str:
        return f"{self.kind}:{self.amount:g}"

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(corrupted x, hole mask or None). Holes are filled with 0."""
        if self.kind == "gaussian":
            return (x + self.amount * torch.randn_like(x)).clamp(0, 1), None
        if self.kind == "salt-pepper":
            hit = torch.rand_like(x) < self.amount
            salt = torch.rand_like(x) < 0.5
            return torch.where(hit, salt.to(x.dtype), x), None
        if self.kind == "masking":
            return x * (torch.rand_like(x) >= self.amount).to(x.dtype), None
        if x.dim() != 4:
            raise UserError(f"corruption {self} needs images (B, C, H, W)")
        b, _, h, w = x.shape
        hole = random_boxes(b, h, w, self.amount, x.device) if self.kind == "boxes" else \
            random_strokes(b, h, w, int(self.amount), x.device)
        return x * (1 - hole), hole


def parse(spec: str) -> Corruption:
    kind, _, raw = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in NOISES + MASKS:
        raise UserError(f"unknown corruption {spec!r}; use one of {', '.join(k + ':AMOUNT' for k in NOISES + MASKS)}")
    try:
        amount = float(raw)
    except ValueError:
        raise UserError(f"corruption {spec!r} needs a number: {kind}:AMOUNT") from None
    limits = {"gaussian": (0, 10), "salt-pepper": (0, 1), "masking": (0, 1), "boxes": (0, 1), "strokes": (1, 100)}
    lo, hi = limits[kind]
    if not (lo < amount <= hi) or (kind == "strokes" and amount != int(amount)):
        raise UserError(f"corruption {spec!r}: amount must be in ({lo}, {hi}]" + (" and whole" if kind == "strokes" else ""))
    return Corruption(kind, amount)


def random_boxes(b: int, h: int, w: int, max_frac: float, device) -> torch.Tensor:
    """One axis-aligned box per image; each side uniform in [1/2, 1] x sqrt(max_frac) of the image's."""
    side = math.sqrt(max_frac)
    bh = (torch.empty(b, device=device).uniform_(0.5, 1.0) * side * h).round().clamp(1, h).long()
    bw = (torch.empty(b, device=device).uniform_(0.5, 1.0) * side * w).round().clamp(1, w).long()
    y0 = (torch.rand(b, device=device) * (h - bh + 1)).long()
    x0 = (torch.rand(b, device=device) * (w - bw + 1)).long()
    rows = torch.arange(h, device=device)[None, :, None]
    cols = torch.arange(w, device=device)[None, None, :]
    inside = ((rows >= y0[:, None, None]) & (rows < (y0 + bh)[:, None, None]) &
              (cols >= x0[:, None, None]) & (cols < (x0 + bw)[:, None, None]))
    return inside[:, None].float()  # (B, 1, H, W)


def random_strokes(b: int, h: int, w: int, n: int, device, steps: int = 6) -> torch.Tensor:
    """``n`` brush strokes per image: polylines of ``steps`` random segments, about h/10 pixels wide."""
    width = max(1.0, min(h, w) / 10)
    pts = torch.rand(b, n, 1, 2, device=device) * torch.tensor([w, h], device=device)
    moves = torch.randn(b, n, steps, 2, device=device) * (min(h, w) / 5)
    path = torch.cat([pts, pts + moves.cumsum(2)], 2)  # (B, n, steps+1, 2)
    a, d = path[:, :, :-1], path[:, :, 1:] - path[:, :, :-1]  # segment starts and directions
    ys, xs = torch.meshgrid(torch.arange(h, device=device) + 0.5, torch.arange(w, device=device) + 0.5, indexing="ij")
    p = torch.stack([xs, ys], -1).view(1, 1, 1, h * w, 2)
    a, d = a[..., None, :], d[..., None, :]
    t = (((p - a) * d).sum(-1) / d.square().sum(-1).clamp_min(1e-9)).clamp(0, 1)
    dist = (p - (a + t[..., None] * d)).norm(dim=-1)  # (B, n, steps, H*W)
    hole = (dist.amin(dim=(1, 2)) <= width / 2).float()
    return hole.view(b, 1, h, w)


def box_mask(h: int, w: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Hole mask (1, 1, H, W) of the box X, Y, W, H (pixels, origin top-left)."""
    x, y, bw, bh = box
    if bw < 1 or bh < 1 or x < 0 or y < 0 or x + bw > w or y + bh > h:
        raise UserError(f"box {x},{y},{bw},{bh} does not fit in the {w}x{h} image")
    m = torch.zeros(1, 1, h, w)
    m[..., y : y + bh, x : x + bw] = 1
    return m


def mask_from_image(path: str, h: int, w: int) -> torch.Tensor:
    """Hole mask from an image file: white (> 50% grey) marks the pixels to fill in."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"{path}: cannot read the mask image ({e})") from None
    if a.shape != (h, w):
        raise UserError(f"{path}: the mask is {a.shape[1]}x{a.shape[0]}, the image {w}x{h}; they must match")
    if a.max() <= 0.5:
        raise UserError(f"{path}: the mask has no white pixels (white marks what to fill in)")
    return torch.from_numpy((a > 0.5).astype(np.float32))[None, None]
