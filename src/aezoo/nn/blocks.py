"""MLPs and strided convolutional encoders/decoders that fit any input size."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UserError

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU, "tanh": nn.Tanh,
                "sigmoid": nn.Sigmoid, "leaky_relu": lambda: nn.LeakyReLU(0.2)}


def activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise UserError(f"unknown activation {name!r}; choose one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


NORMS = ("none", "batch", "layer")


def _norm(kind: str, width: int, conv: bool = False) -> list[nn.Module]:
    if kind == "none":
        return []
    if kind == "batch":
        return [nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width)]
    if kind == "layer":
        return [nn.GroupNorm(1, width) if conv else nn.LayerNorm(width)]
    raise UserError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


class FlatInput(nn.Sequential):
    """An ``nn.Sequential`` that first flattens each item, (B, *shape) -> (B, prod(shape)); its weights are
    named as a plain Sequential's. An MLP encoder then takes items as they are, as a user's encoder does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(1))


def mlp(sizes: list[int], act: str = "relu", final_act: bool = False, norm: str = "none",
        flat_input: bool = False) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``; between each pair (and after the last
    one when ``final_act``) an optional normalisation, then the activation. ``flat_input``: it takes items
    of any shape and flattens them (:class:`FlatInput`)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_act:
            layers += _norm(norm, b) + [activation(act)]
    return FlatInput(*layers) if flat_input else nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions (one per entry of ``channels``), then a linear map of the flattened
    feature map to ``out_dim`` (a vector code), or, when ``spatial``, a 3x3 convolution to ``out_dim``
    channels (a feature-map code of 1/2^len(channels) the input's size). Input (B, C, H, W) of the size
    given at construction."""

    def __init__(self, in_shape: tuple[int, int, int], channels: tuple[int, ...], out_dim: int, act: str = "relu",
                 norm: str = "none", spatial: bool = False):
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        self.sizes = [(h, w)]  # spatial size before each stage; the decoder mirrors it exactly
        for ch in channels:
            if min(h, w) < 2:
                raise UserError(f"input {in_shape} is too small for {len(channels)} stride-2 stages; use fewer channels")
            layers += [nn.Conv2d(c, ch, 4, stride=2, padding=1), *_norm(norm, ch, conv=True), activation(act)]
            c, h, w = ch, h // 2, w // 2
            self.sizes.append((h, w))
        self.features = nn.Sequential(*layers)
        self.feature_shape = (c, h, w)
        self.spatial = spatial
        self.head = nn.Conv2d(c, out_dim, 3, padding=1) if spatial else nn.Linear(c * h * w, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.head(h) if self.spatial else self.head(h.flatten(1))  # (B, out_dim[, h, w])


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: linear map to the encoder's last feature map, then stride-2
    transposed convolutions back to exactly ``sizes[0]`` with ``out_channels`` channels (no activation)."""

    def __init__(self, in_dim: int, feature_shape: tuple[int, int, int], channels: tuple[int, ...],
                 sizes: list[tuple[int, int]], out_channels: int, act: str = "relu", norm: str = "none",
                 spatial: bool = False):
        super().__init__()
        self.feature_shape = feature_shape
        self.sizes = sizes
        first = nn.Conv2d(in_dim, feature_shape[0], 3, padding=1) if spatial else \
            nn.Linear(in_dim, math.prod(feature_shape))
        self.head = nn.Sequential(first, activation(act))
        chans = list(reversed(channels)) + [out_channels]
        self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1) for a, b in zip(chans[:-1], chans[1:]))
        # normalisation and activation after every upsampling but the last (the output layer)
        self.post = nn.ModuleList(nn.Sequential(*_norm(norm, b, conv=True), activation(act)) for b in chans[1:-1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.head(z).view(-1, *self.feature_shape)
        targets = list(reversed(self.sizes[:-1]))
        for i, up in enumerate(self.ups):
            h = up(h, output_size=targets[i])
            if i < len(self.post):
                h = self.post[i](h)
        return h  # (B, out_channels, H, W)


class SkipConvNet(nn.Module):
    """Convolutional encoder-decoder with symmetric skip connections (Mao, Shen & Yang, "Image restoration
    using very deep convolutional encoder-decoder networks with symmetric skip connections", NeurIPS 2016;
    the same shape as a U-Net). Each encoder level is a 3x3 convolution pair; levels after the first start
    with a stride-2 4x4 convolution. The decoder mirrors it with stride-2 transposed convolutions, and
    each level's encoder features are *added* to the decoder's features of the same size, so fine detail
    need not squeeze through the coarsest map. ``encode`` gives the coarsest map (the code) and the skips;
    ``decode`` needs both. Works for any input size: upsampling follows the skips' sizes."""

    def __init__(self, in_channels: int, out_channels: int, channels: tuple[int, ...], act: str = "relu",
                 norm: str = "none"):
        super().__init__()

        def conv(a: int, b: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(a, b, k, stride=stride, padding=1), *_norm(norm, b, conv=True), activation(act)]

        self.down = nn.ModuleList()
        c = in_channels
        for i, ch in enumerate(channels):
            first = conv(c, ch) if i == 0 else conv(c, ch, 4, 2)
            self.down.append(nn.Sequential(*first, *conv(ch, ch)))
            c = ch
        rev = list(reversed(channels))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1) for a, b in zip(rev[:-1], rev[1:]))
        self.post = nn.ModuleList(nn.Sequential(*_norm(norm, b, conv=True), activation(act), *conv(b, b))
                                  for b in rev[1:])
        self.out = nn.Conv2d(channels[0], out_channels, 3, padding=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for level in self.down:
            x = level(x)
            skips.append(x)
        return x, skips[:-1]

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for up, post, skip in zip(self.ups, self.post, reversed(skips)):
            h = post(up(h, output_size=skip.shape[-2:]) + skip)
        return self.out(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(x))
