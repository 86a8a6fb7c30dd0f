"""Loss functions as pure functions of tensors. Each returns one value per item, shape (B,), summed over
the item's values, in fp32 whatever the autocast precision (log-likelihoods lose too much in bf16)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _sum_items(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """-log p(x | logits) for Bernoulli pixels; ``x`` may be greyscale in [0, 1] (cross-entropy).
    ``weight`` (broadcastable to x) counts each value, e.g. 1 on the holes of an inpainting mask."""
    nll = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    return _sum_items(nll if weight is None else nll * weight)


def squared_error(pred: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of squared errors per item: -log N(x | pred, 1/2) up to a constant; ``weight`` as above."""
    err = (pred.float() - x.float()).square()
    return _sum_items(err if weight is None else err * weight)
