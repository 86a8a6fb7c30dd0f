"""Posterior and prior distributions as objects with ``sample``, ``mode``, ``kl`` and ``log_prob``.
Every density is computed in fp32 (log-densities and KL terms lose too much in bf16)."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def _sum_event(t: torch.Tensor, event_dims: int) -> torch.Tensor:
    return t.sum(tuple(range(-event_dims, 0)))


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over the last ``event_dims`` dimensions of ``mean`` and ``logvar``: 1 for
    vectors (B, D), 3 for latent groups (B, C, H, W). Densities and KL are summed over the event."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor, event_dims: int = 1):
        if not 1 <= event_dims <= mean.dim():
            raise ValueError(f"event_dims must be in 1..{mean.dim()}, got {event_dims}")
        self.mean = mean.float()
        self.logvar = logvar.float().clamp(-30.0, 20.0)  # keeps exp() finite
        self.event_dims = event_dims

    @property
    def event_shape(self) -> torch.Size:
        return self.mean.shape[-self.event_dims:]

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, n: int | None = None) -> torch.Tensor:
        """Reparameterised draw(s): ``mean + std * eps`` (Kingma & Welling 2014, eq. 10).
        With ``n``, a leading sample dimension: (n, *mean.shape)."""
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        eps = torch.randn(shape, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; mean, var) summed over the event; z may carry leading sample dimensions."""
        z = z.float()
        return _sum_event(-0.5 * (LOG_2PI + self.logvar + (z - self.mean).square() * torch.exp(-self.logvar)),
                          self.event_dims)

    def kl(self, other: "DiagonalGaussian | None" = None) -> torch.Tensor:
        """KL(self || other) summed over the event, in closed form; ``other`` defaults to N(0, I)."""
        if other is None:
            per_value = 0.5 * (self.mean.square() + torch.exp(self.logvar) - 1.0 - self.logvar)
        else:
            per_value = 0.5 * (other.logvar - self.logvar + (torch.exp(self.logvar) + (self.mean - other.mean).square())
                               * torch.exp(-other.logvar) - 1.0)
        return _sum_event(per_value, self.event_dims)


def standard_normal_log_prob(z: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """log N(z; 0, I) summed over the last ``event_dims`` dimensions."""
    return _sum_event(-0.5 * (LOG_2PI + z.float().square()), event_dims)
