"""Layers of style-based generators and encoders (StyleGAN, Karras et al. CVPR 2019; StyleALAE,
Pidhorskyi et al. CVPR 2020); written from the papers.

- :class:`EqualLinear`, :class:`EqualConv2d`: the equalised learning rate (Karras et al. ICLR 2018,
  sec. 4.1): weights drawn from N(0, 1 / lr_mul) and scaled at run time by gain / sqrt(fan_in) * lr_mul,
  so Adam moves every layer at the same relative speed and ``lr_mul`` slows a whole network down.
- :func:`pixel_norm`: each vector divided by its root mean square (the mapping network's input).
- :class:`StyleLayer` (generator): 3x3 convolution, per-pixel noise with a learned per-channel weight, bias,
  leaky ReLU, instance norm, then the style: x (1 + s) + b with (s, b) an affine map of w (AdaIN).
- :class:`StyleEncoderBlock` (encoder): the inverse reading. The per-channel mean and standard deviation
  of its activations before each instance norm are the "styles" it hands, through an affine map each, to
  the code w (StyleALAE, eq. 11: w is the sum of those maps).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + eps)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class EqualLinear(nn.Module):
    """y = x (c W)^T + lr_mul b, c = gain / sqrt(in_features) * lr_mul."""

    def __init__(self, in_features: int, out_features: int, gain: float = SQRT2, lr_mul: float = 1.0,
                 bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul))
        self.scale = gain / math.sqrt(in_features) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    """A k x k convolution (same padding) with the equalised learning rate; ``bias=False`` leaves the
    bias to the caller (a style layer adds it after the noise)."""

    def __init__(self, c_in: int, c_out: int, k: int, gain: float = SQRT2, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, k, k))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.scale = gain / math.sqrt(c_in * k * k)
        self.padding = k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


def _instance_norm(x: torch.Tensor) -> torch.Tensor:
    return F.instance_norm(x, eps=1e-8)


def _mean_std(x: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial mean and standard deviation: (B, C, H, W) -> (B, 2C)."""
    mean = x.mean((2, 3))
    std = (x.var((2, 3), unbiased=False) + 1e-8).sqrt()
    return torch.cat([mean, std], 1)


class StyleLayer(nn.Module):
    """(B, C_in, H, W), w (B, D) -> (B, C_out, H', W'); ``up`` doubles the size (nearest) before the
    convolution, ``const`` skips the convolution (the first layer, on the learned constant). In eval mode
    the noise is a fixed map drawn at construction, so a trained model decodes deterministically."""

    def __init__(self, c_in: int, c_out: int, size: int, latent_dim: int, up: bool = False, const: bool = False):
        super().__init__()
        self.conv = None if const else EqualConv2d(c_in, c_out, 3, bias=False)
        self.up = up
        self.noise_weight = nn.Parameter(torch.zeros(c_out))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.style = EqualLinear(latent_dim, 2 * c_out, gain=1.0)
        self.register_buffer("fixed_noise", torch.randn(1, 1, size, size))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.conv is not None:
            x = self.conv(x)
        b, _, h, wd = x.shape
        noise = torch.randn(b, 1, h, wd, device=x.device, dtype=x.dtype) if self.training else self.fixed_noise.to(x.dtype)
        x = x + self.noise_weight[None, :, None, None] * noise + self.bias[None, :, None, None]
        x = _instance_norm(lrelu(x))
        scale, shift = self.style(w).unsqueeze(-1).unsqueeze(-1).chunk(2, 1)
        return x * (1 + scale) + shift


class StyleEncoderBlock(nn.Module):
    """(B, C_in, H, W) -> ((B, C_out, H/2, W/2) or (B, C_out, H, W) when ``down`` is False, (B, D)): two
    3x3 convolutions with leaky ReLU, the second followed by 2x2 average pooling; each activation's
    per-channel mean and std go through an affine map to the latent space and are summed (the block's
    share of w); instance norm follows each read-out."""

    def __init__(self, c_in: int, c_out: int, latent_dim: int, down: bool = True):
        super().__init__()
        self.conv1 = EqualConv2d(c_in, c_in, 3)
        self.conv2 = EqualConv2d(c_in, c_out, 3)
        self.read1 = EqualLinear(2 * c_in, latent_dim, gain=1.0)
        self.read2 = EqualLinear(2 * c_out, latent_dim, gain=1.0)
        self.down = down

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = lrelu(self.conv1(x))
        w = self.read1(_mean_std(x))
        x = self.conv2(_instance_norm(x))
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = lrelu(x)
        w = w + self.read2(_mean_std(x))
        return _instance_norm(x), w
