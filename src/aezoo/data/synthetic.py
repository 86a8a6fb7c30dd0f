"""Generated and bundled datasets: ``lines`` (ACAI's synthetic benchmark) and ``digits`` (scikit-learn)."""

from __future__ import annotations

import numpy as np

from .base import Dataset, make_dataset


def render_lines(angles: np.ndarray, size: int = 32, width: float = 2.0) -> np.ndarray:
    """Images (N, 1, size, size) in [0, 1] of one anti-aliased line from the centre at each angle.

    As in Berthelot et al. 2019 (ACAI, arXiv:1807.07543, sec. 3.1): the segment runs from the image
    centre to radius ``size/2 - 1`` and is ``width`` pixels wide. Anti-aliasing: a pixel's value falls
    linearly from 1 to 0 over one pixel around the stroke's edge, by the distance from the pixel centre
    to the segment.
    """
    c = size / 2.0
    r = c - 1.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    out = np.empty((len(angles), 1, size, size), np.float32)
    for i in range(0, len(angles), 4096):  # chunks keep memory flat for large N
        a = angles[i : i + 4096, None, None].astype(np.float32)
        dx, dy = np.cos(a), -np.sin(a)  # image rows grow downwards
        px, py = xs[None] - c, ys[None] - c
        t = np.clip(px * dx + py * dy, 0.0, r) if r > 0 else np.zeros_like(px * dx)
        dist = np.hypot(px - t * dx, py - t * dy)
        out[i : i + 4096, 0] = np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)
    return out


def load_lines(n: int = 50000, n_test: int = 5000, size: int = 32, seed: int = 0) -> Dataset:
    """``n`` training+validation images and ``n_test`` test images; labels are 10 angle bins (as ACAI)."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0.0, 2 * np.pi, n + n_test)
    labels = np.minimum((angles / (2 * np.pi) * 10).astype(np.int64), 9)
    x = render_lines(angles, size)
    return make_dataset(
        f"lines?n={n}&size={size}&seed={seed}",
        "image",
        x[:n],
        labels[:n],
        x[n:],
        labels[n:],
        classes=[f"{36 * k}-{36 * (k + 1)} deg" for k in range(10)],
        # "benchmark": the interpolation metrics of aezoo.eval.lines apply to models trained on it
        meta={"angles": angles.tolist() if n + n_test <= 1000 else None, "benchmark": "lines"},
    )


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits, values scaled from 0..16 to [0, 1]; 10% test, 10% validation."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    return make_dataset("digits", "image", x, d.target.astype(np.int64), classes=[str(k) for k in range(10)])
