"""Negative log-likelihood by importance sampling (Burda et al. 2016, sec. 5 / app. C).

log p(x) >= log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x), with equality as k -> infinity; with
k = 5000 this is the standard NLL estimate for VAEs. Any model with ``log_importance_weights(x, k)``
can be evaluated.
"""

from __future__ import annotations

import math

import torch

from ..rng import seeded
from ..progress import bar


@torch.no_grad()
def importance_nll(model, x: torch.Tensor, k: int = 1000, batch_size: int = 100, chunk: int = 500,
                   seed: int = 0, progress: bool = False) -> dict:
    """Mean NLL over the items of ``x`` in nats and bits per dimension, with k importance samples
    (drawn ``chunk`` at a time so memory stays flat). The RNG is forked: evaluation draws never change
    a training run."""
    model.eval()
    dev = model.device
    total = 0.0
    with seeded(seed, dev):
        for i in bar(range(0, len(x), batch_size), progress=progress, desc=f"NLL (k={k})"):
            xb = x[i : i + batch_size].to(dev)
            parts = [model.log_importance_weights(xb, min(chunk, k - j)) for j in range(0, k, chunk)]
            log_w = torch.cat(parts, 0)  # (k, B)
            total += float((math.log(k) - torch.logsumexp(log_w, 0)).sum())
    nll = total / len(x)
    dims = math.prod(x.shape[1:])
    return {"nll_nats": nll, "nll_bits_per_dim": nll / (dims * math.log(2)), "nll_k": k, "nll_items": len(x)}


@torch.no_grad()
def elbo(model, x: torch.Tensor, batch_size: int = 500, seed: int = 0, progress: bool = False) -> float:
    """Mean single-sample ELBO (nats) over ``x``: the k = 1 importance bound."""
    model.eval()
    dev = model.device
    total = 0.0
    with seeded(seed, dev):
        for i in bar(range(0, len(x), batch_size), progress=progress, desc="ELBO"):
            total += float(model.log_importance_weights(x[i : i + batch_size].to(dev), 1).sum())
    return total / len(x)
