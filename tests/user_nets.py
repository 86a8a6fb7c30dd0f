"""Tiny networks a user might write, importable by path (``user_nets:Encoder``) from tests/ on the path."""

from __future__ import annotations

import math

import torch
from torch import nn


class Encoder(nn.Module):
    """(B, *shape) -> (B, out): one hidden layer."""

    def __init__(self, shape=(1, 28, 28), out: int = 6, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), width), nn.ReLU(), nn.Linear(width, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, latent) -> (B, *shape)."""

    def __init__(self, latent: int = 3, shape=(1, 28, 28), width: int = 16):
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Sequential(nn.Linear(latent, width), nn.ReLU(), nn.Linear(width, math.prod(shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)


class Discriminator(nn.Module):
    """VAE-GAN's: logits (B,) and features (B, F) of its hidden layer."""

    def __init__(self, shape=(1, 28, 28), width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(shape[0], 4, 4, 2, 1), nn.ReLU(), nn.Flatten())
        self.feat = nn.Linear(4 * (shape[1] // 2) * (shape[2] // 2), width)
        self.head = nn.Linear(width, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feat(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x))).squeeze(1)


class Mapping(nn.Module):
    """ALAE's F: (B, latent) -> (B, latent)."""

    def __init__(self, latent: int = 3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, latent), nn.LeakyReLU(0.2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class WrongEncoder(Encoder):
    """Returns half the numbers a VAE's encoder must."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, : self.net[-1].out_features // 2]
