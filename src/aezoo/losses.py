"""Loss functions as pure functions of tensors. Each returns one value per item, shape (B,), summed over
the item's values, in fp32 whatever the autocast precision (log-likelihoods lose too much in bf16)."""

from __future__ import annotations

import math

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


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, logvar: torch.Tensor | float) -> torch.Tensor:
    """-log N(x | mean, exp(logvar)) per item; ``logvar`` is a tensor broadcastable to x or a number."""
    logvar = torch.as_tensor(logvar, dtype=torch.float32, device=x.device)
    d = (x.float() - mean.float()).square() * torch.exp(-logvar)
    return _sum_items(0.5 * (math.log(2 * math.pi) + logvar + d).expand_as(d))


def discretized_logistic_nll(mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor,
                             bins: int = 256) -> torch.Tensor:
    """-log P(x) per item for ``x`` in [0, 1] quantised to ``bins`` levels, under a logistic of the given
    mean and log-scale integrated over each level's bin; the edge bins take the tails (Salimans et al.
    2017, PixelCNN++, sec. 2.1, with one logistic instead of a mixture). In nats."""
    ones = torch.zeros_like(mean, dtype=torch.float32).unsqueeze(1)
    return discretized_mixture_logistic_nll(ones, mean.unsqueeze(1), log_scale.unsqueeze(1), x, bins)


def real_nll(logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) per item for a discriminator's logits (B,): its loss on items it should call real;
    softplus(-l) = -log sigmoid(l), exact where log(sigmoid(l) + eps) is not."""
    return F.softplus(-logits.float())


def fake_nll(logits: torch.Tensor) -> torch.Tensor:
    """-log(1 - D(x)) per item: the discriminator's loss on items it should call generated."""
    return real_nll(-logits)


def discretized_mixture_logistic_nll(logit_probs: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
                                     x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """-log P(x) per item under a mixture of K discretised logistics per value, each integrated over the
    value's bin as :func:`discretized_logistic_nll` (Salimans et al. 2017, PixelCNN++, sec. 2.1, without
    their channel coupling). ``logit_probs``, ``means``, ``log_scales``: (B, K, *x.shape[1:]); the mixture
    weights are softmax(logit_probs) over K, per value. In nats."""
    x, means = x.float().unsqueeze(1), means.float()
    log_scale = log_scales.float().clamp_min(-7.0)
    half = 0.5 / (bins - 1)
    inv_s = torch.exp(-log_scale)
    upper = inv_s * (x - means + half)
    lower = inv_s * (x - means - half)
    log_cdf_upper = F.logsigmoid(upper)
    log_sf_lower = F.logsigmoid(-lower)
    log_mid = log_cdf_upper + torch.log((-torch.expm1(F.logsigmoid(lower) - log_cdf_upper)).clamp_min(1e-12))
    logp = torch.where(x < half, log_cdf_upper, torch.where(x > 1 - half, log_sf_lower, log_mid))  # (B, K, ...)
    mixed = torch.logsumexp(logp + F.log_softmax(logit_probs.float(), dim=1), dim=1)
    return -_sum_items(mixed)
