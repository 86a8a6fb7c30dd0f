"""Metrics of discrete codes: how much of a codebook is used, and a prior's likelihood of code grids."""

from __future__ import annotations

import math

import torch

from ..progress import bar


@torch.no_grad()
def prior_metrics(prior, codes: torch.Tensor, batch_size: int = 500, progress: bool = False) -> dict:
    """The prior's negative log-likelihood of code grids: nats per grid and bits per code."""
    prior.eval()
    total = 0.0
    for i in bar(range(0, len(codes), batch_size), progress=progress, desc="prior NLL"):
        total -= float(prior.log_prob(codes[i : i + batch_size].to(prior.device)).sum())
    per_grid = total / len(codes)
    return {"prior_nll_nats": per_grid, "prior_bits_per_code": per_grid / (codes[0].numel() * math.log(2))}


def codebook_perplexity(indices: torch.Tensor, num_codes: int) -> dict:
    """exp(entropy) of the code usage over a whole split, and the fraction of codes used."""
    counts = torch.bincount(indices.long().flatten(), minlength=num_codes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codebook_perplexity": float(entropy.exp()), "codebook_used": float((counts > 0).double().mean())}


__all__ = ["prior_metrics", "codebook_perplexity"]
