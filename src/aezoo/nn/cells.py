"""Residual cells of a deep hierarchical VAE, as Vahdat & Kautz describe them (NVAE, NeurIPS 2020,
sec. 3.1 and Fig. 3); written from the paper.

- :class:`SqueezeExcite`: channel gating by a sigmoid of the pooled features (Hu et al., CVPR 2018).
- :class:`EncoderCell` (bottom-up): BN, Swish, 3x3 convolution, BN, Swish, 3x3 convolution, SE.
- :class:`DecoderCell` (top-down): BN, 1x1 expansion by ``expand``, BN, Swish, depthwise 5x5
  convolution, BN, Swish, 1x1 projection, BN, SE: a large receptive field at a small cost.

Both add their branch, scaled by ``branch_scale`` (0.1), to the input: each cell starts near the
identity, which keeps a stack of many cells stable at initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 relu(W1 mean_hw(x))), with a bottleneck of channels / ``reduction`` (at least 4)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean((2, 3)))[:, :, None, None]


class EncoderCell(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): x + branch_scale * branch(x)."""

    def __init__(self, channels: int, branch_scale: float = 0.1):
        super().__init__()
        self.branch = nn.Sequential(
            nn.BatchNorm2d(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            SqueezeExcite(channels))
        self.branch_scale = branch_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch_scale * self.branch(x)


class DecoderCell(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): x + branch_scale * branch(x), the branch an inverted residual."""

    def __init__(self, channels: int, expand: int = 6, branch_scale: float = 0.1):
        super().__init__()
        wide = channels * expand
        self.branch = nn.Sequential(
            nn.BatchNorm2d(channels), nn.Conv2d(channels, wide, 1),
            nn.BatchNorm2d(wide), nn.SiLU(), nn.Conv2d(wide, wide, 5, padding=2, groups=wide),
            nn.BatchNorm2d(wide), nn.SiLU(), nn.Conv2d(wide, channels, 1),
            nn.BatchNorm2d(channels), SqueezeExcite(channels))
        self.branch_scale = branch_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch_scale * self.branch(x)
