"""Reconstruction error, PSNR, and batched encode/reconstruct helpers."""

from __future__ import annotations


import torch

from ..models.base import Autoencoder
from ..progress import bar


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int, device, progress: bool = False, desc: str = "") -> torch.Tensor:
    steps = bar(range(0, len(x), batch_size), progress=progress, desc=desc)
    outs = [fn(x[i : i + batch_size].to(device)).float().cpu() for i in steps]
    return torch.cat(outs) if outs else torch.empty(0)


def reconstruct(model: Autoencoder, x: torch.Tensor, batch_size: int = 1000, progress: bool = False) -> torch.Tensor:
    """Deterministic reconstructions (a stochastic model decodes its posterior's mode)."""
    model.eval()
    return _batched(model, x, batch_size, model.device, progress, "reconstruction")


def embed(model: Autoencoder, x: torch.Tensor, batch_size: int = 1000, progress: bool = False) -> torch.Tensor:
    """Codes ``encode(x).z``, (N, latent...)."""
    model.eval()
    return _batched(lambda b: model.encode(b).z, x, batch_size, model.device, progress, "codes")


def psnr_from_mse(mse: torch.Tensor, data_range: float) -> torch.Tensor:
    """10 log10(range^2 / MSE) per item; an MSE below 1e-10 counts as 1e-10 (100 dB for range 1)."""
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-10))


def reconstruction_metrics(model: Autoencoder, x: torch.Tensor, data_range: float = 1.0,
                           batch_size: int = 1000, progress: bool = False) -> dict:
    """``recon_sse_per_item``: squared error summed over an item's values, averaged over items.
    ``recon_mse``: the same per value. ``psnr``: the mean over items of each item's PSNR in dB, with the
    given data range (1 for images in [0, 1])."""
    rec = reconstruct(model, x, batch_size, progress)
    err = (rec - x.float()).square().flatten(1)
    sse = err.sum(1)
    mse = err.mean(1)
    return {
        "recon_sse_per_item": float(sse.mean()),
        "recon_mse": float(mse.mean()),
        "psnr": float(psnr_from_mse(mse, data_range).mean()),
        "items": len(x),
    }


__all__ = ["reconstruct", "embed", "reconstruction_metrics", "psnr_from_mse"]
