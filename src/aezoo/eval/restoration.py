"""Restoration quality: PSNR of corrupted and restored items against the clean ones."""

from __future__ import annotations

import torch

from ..corrupt import Corruption
from ..rng import seeded
from ..progress import bar
from .reconstruction import psnr_from_mse


@torch.no_grad()
def corrupt_fixed(x: torch.Tensor, corruption: Corruption, seed: int = 0):
    """The same corruption of ``x`` every time (own RNG stream; the global one is left untouched)."""
    with seeded(seed, x.device):
        return corruption(x)


@torch.no_grad()
def restore_batched(model, x: torch.Tensor, hole: torch.Tensor | None, batch_size: int = 1000,
                    progress: bool = False) -> torch.Tensor:
    model.eval()
    dev = model.device
    outs = []
    for i in bar(range(0, len(x), batch_size), progress=progress, desc="restoration"):
        h = None if hole is None else hole[i : i + batch_size].to(dev)
        outs.append(model.restore(x[i : i + batch_size].to(dev), h).float().clamp(0, 1).cpu())
    return torch.cat(outs)


def restoration_metrics(model, x: torch.Tensor, corruption: Corruption, seed: int = 0, progress: bool = False) -> dict:
    """Mean per-item PSNR (data range 1) of the corrupted input and of the model's restoration."""
    noisy, hole = corrupt_fixed(x, corruption, seed)
    restored = restore_batched(model, noisy, hole, progress=progress)
    mse = lambda a: (a - x).square().flatten(1).mean(1)
    return {
        "corruption": str(corruption),
        "psnr_corrupted": float(psnr_from_mse(mse(noisy), 1.0).mean()),
        "psnr_restored": float(psnr_from_mse(mse(restored), 1.0).mean()),
        "restored_sse_per_item": float((restored - x).square().flatten(1).sum(1).mean()),
    }
