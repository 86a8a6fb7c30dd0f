"""Posterior and prior distributions as objects with ``sample``, ``mode``, ``kl`` and ``log_prob``.
Every density is computed in fp32 (log-densities and KL terms lose too much in bf16)."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over the last dimension; ``mean``, ``logvar``: (..., D)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean.float()
        self.logvar = logvar.float().clamp(-30.0, 20.0)  # keeps exp() finite

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, n: int | None = None) -> torch.Tensor:
        """Reparameterised draw(s): ``mean + std * eps`` (Kingma & Welling 2014, eq. 10).
        With ``n``, a leading sample dimension: (n, ..., D)."""
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        eps = torch.randn(shape, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mean, var) summed over D; z may carry leading sample dimensions."""
        z = z.float()
        return -0.5 * (LOG_2PI + self.logvar + (z - self.mean).square() * torch.exp(-self.logvar)).sum(-1)

    def kl(self, other: "DiagonalGaussian | None" = None) -> torch.Tensor:
        """KL(self || other) summed over D, in closed form; ``other`` defaults to N(0, I)."""
        if other is None:
            return 0.5 * (self.mean.square() + torch.exp(self.logvar) - 1.0 - self.logvar).sum(-1)
        return 0.5 * (other.logvar - self.logvar + (torch.exp(self.logvar) + (self.mean - other.mean).square())
                      * torch.exp(-other.logvar) - 1.0).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (LOG_2PI + z.float().square()).sum(-1)
