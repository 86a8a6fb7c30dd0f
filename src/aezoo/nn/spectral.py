"""Spectral regularisation: a penalty on the largest singular value of each convolution.

Each weight is seen as the matrix W = weight.reshape(out_channels, -1); its largest singular value
sigma(W) = max ||W v|| / ||v|| is estimated by power iteration (Miyato et al., "Spectral normalization
for generative adversarial networks", ICLR 2018, sec. 2.1), with the vectors u, v kept between steps
so that one iteration per step suffices once they have converged. Vahdat & Kautz (NVAE, NeurIPS 2020,
sec. 3.2) add lambda * sum_i sigma(W_i) to the loss to bound the Lipschitz constant of the encoder and
decoder, which keeps a deep hierarchy stable. The vectors are buffers: saved with the model and its
checkpoints, so a resumed run continues the same estimates. Everything here runs in fp32, also under
bf16 autocast: bf16 products (8 bits of mantissa) would keep u and v from converging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpectralPenalty(nn.Module):
    """``forward()``: sum over the given convolutions (or linear layers) of sigma(W), differentiable in
    the weights (d sigma / d W = u v^T at the estimate). The power iteration itself runs without
    gradients, ``iterations`` times per call while training and not at all in eval mode."""

    def __init__(self, layers: list[nn.Module], iterations: int = 1, warmup_iterations: int = 10):
        super().__init__()
        self.layers = layers  # not submodules: the model owns them; this module owns only u and v
        self.iterations = iterations
        for i, layer in enumerate(layers):
            w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
            u = F.normalize(torch.randn(w.shape[0]), dim=0)
            v = F.normalize(w.t().float().cpu() @ u, dim=0)
            self.register_buffer(f"u{i}", u)
            self.register_buffer(f"v{i}", v)
        with torch.no_grad():
            for _ in range(warmup_iterations):
                self._iterate()

    @torch.no_grad()
    def _iterate(self) -> None:
        for i, layer in enumerate(self.layers):
            w = layer.weight.detach().reshape(layer.weight.shape[0], -1).float()
            with _fp32(w):
                v = F.normalize(w.t() @ getattr(self, f"u{i}"), dim=0)
                u = F.normalize(w @ v, dim=0)
            getattr(self, f"v{i}").copy_(v)
            getattr(self, f"u{i}").copy_(u)

    def sigmas(self) -> torch.Tensor:
        """sigma(W_i) for every layer, (L,), differentiable in the weights."""
        out = []
        for i, layer in enumerate(self.layers):
            w = layer.weight.reshape(layer.weight.shape[0], -1).float()
            with _fp32(w):
                out.append(getattr(self, f"u{i}") @ w @ getattr(self, f"v{i}"))
        return torch.stack(out)

    def forward(self) -> torch.Tensor:
        if self.training:
            for _ in range(self.iterations):
                self._iterate()
        return self.sigmas().sum()


def _fp32(t: torch.Tensor):
    """Autocast off on ``t``'s device: the block computes in the fp32 its inputs are cast to."""
    return torch.autocast(device_type=t.device.type, enabled=False)
