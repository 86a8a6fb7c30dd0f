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


def soft_clamp(x: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
    """bound * tanh(x / bound): the identity near 0, smoothly limited to (-bound, bound) (NVAE keeps the
    means and log-scales of its normals in range this way, with gradients everywhere)."""
    return bound * torch.tanh(x / bound)


def residual_normal(prior: DiagonalGaussian, delta_mean: torch.Tensor, delta_logvar: torch.Tensor,
                    bound: float = 5.0) -> DiagonalGaussian:
    """The posterior relative to its prior (Vahdat & Kautz 2020, eq. 2): q = N(mu_p + dmu, sigma_p^2 dsigma^2),
    each delta soft-clamped to (-bound, bound). Its KL to the prior depends on the deltas and sigma_p only:
    0.5 (dmu^2 / sigma_p^2 + dsigma^2 - log dsigma^2 - 1) per value."""
    return DiagonalGaussian(prior.mean + soft_clamp(delta_mean.float(), bound),
                            prior.logvar + soft_clamp(delta_logvar.float(), bound), prior.event_dims)
