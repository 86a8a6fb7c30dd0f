"""ALAE: an autoencoder whose latent space is learned adversarially.

Pidhorskyi, Adjeroh & Doretto, "Adversarial latent autoencoders", CVPR 2020 (arXiv:2004.04467). A mapping
F (z -> w), a generator G (w -> x), an encoder E (x -> w) and a discriminator D on codes, D(E(x)). Each
batch makes Algorithm 1's three updates on two Adam optimizers (beta1 0, beta2 0.99, lr 0.002,
equalised learning rate; F and D ``mapping_lr_mul`` slower), each with a fresh z:

1. E and D: softplus(D(E(G(F(z))))) + softplus(-D(E(x))) + gamma / 2 ||grad_x D(E(x))||^2 (R1);
2. F and G: softplus(-D(E(G(F(z))))), non-saturating;
3. E, G and F: ||w - E(G(w))||^2 with w = F(z); the target is a constant, G's input is not, so F learns
   through G (no pixel-space loss).

Encoding, decoding and sampling use a moving average of F, G and E. ``arch="mlp"`` is the paper's MNIST
model (preset ``pidhorskyi2020-mnist``, also the CPU default); ``arch="style"`` is StyleALAE at 32x32
(preset ``pidhorskyi2020-mnist-style``, the authors' MNIST network; the CPU default has fewer channels
for speed). Differences from podgorskiy/ALAE (Apache-2.0, read for facts): D has leaky ReLUs between its
layers (the authors' linear D measured worse: BENCHMARKS.md), no progressive growing, blur or truncation.
As there, update 3 reaches F through G's input (the paper's Algorithm 1 lists only E and G) and the MNIST
batch is 128. Pixels are mapped to [-1, 1] inside.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..losses import fake_nll, real_nll
from ..nn.style import EqualConv2d, EqualLinear, StyleEncoderBlock, StyleLayer, lrelu, pixel_norm
from ..outputs import Batch, Encoded
from ..registry import register
from ..nn.blocks import FlatInput
from . import parts
from .base import Autoencoder, ModelConfig, Optim
from .parts import Part


@dataclass
class ALAEConfig(ModelConfig):
    arch: Literal["mlp", "style"] = "mlp"
    latent_dim: int = 50  # z and w (paper MNIST: 50)
    widths: tuple[int, ...] = (1024, 1024)  # mlp: hidden layers of E and G (paper: 1024, 1024)
    channels: tuple[int, ...] = (64, 32, 16, 8)  # style: G's channels at 4x4, 8x8, ...; E mirrors them (paper: 256, 256, 128, 64)
    mapping_layers: int = 6  # F: layers of latent_dim units (authors' MNIST code: 6)
    dis_layers: int = 3  # D: layers on w, latent_dim wide, then one logit
    mapping_lr_mul: float = 0.1  # learning-rate multiplier of F and D (authors' code: 0.1)
    r1_gamma: float = 10.0  # R1 penalty on real items in update 1
    style_mixing: float = 0.9  # style: probability that a batch's styles switch to a second w at a random layer
    ema_half_life: float = 10_000.0  # items; encode/decode/sample use the moving average (0: the live weights)
    encoder: str | None = None  # your own E, G, F, D by import path module:Name (None: arch's); see PARTS
    encoder_kwargs: dict = field(default_factory=dict)  # keyword arguments of its constructor
    decoder: str | None = None  # G
    decoder_kwargs: dict = field(default_factory=dict)
    mapping: str | None = None  # F
    mapping_kwargs: dict = field(default_factory=dict)
    discriminator: str | None = None  # D
    discriminator_kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if self.arch not in ("mlp", "style"):
            raise UserError(f"alae arch must be mlp or style, got {self.arch!r}")
        if self.arch == "style":
            if self.data_kind != "image" or len(self.input_shape) != 3:
                raise UserError("alae arch=style needs image data (C, H, W)")
            if not self.channels or min(self.channels) < 1:
                raise UserError("alae channels must be positive, one per resolution from 4x4 up")
            if self.encoder or self.decoder:
                raise UserError("alae: your own encoder and decoder replace arch=mlp's (arch=style's generator takes "
                                "one style per layer); use arch=mlp")
            if max(self.input_shape[1:]) > self.resolution:
                raise UserError(f"input {tuple(self.input_shape)} is larger than arch=style's {self.resolution}x"
                                f"{self.resolution} with {len(self.channels)} channels entries; add one")
        elif self.data_kind not in ("image", "vector"):
            raise UserError("alae needs image or vector data")
        if min(self.latent_dim, self.mapping_layers, self.dis_layers, *self.widths) < 1:
            raise UserError("alae latent_dim, widths, mapping_layers and dis_layers must be positive")
        if not (self.mapping_lr_mul > 0 and self.r1_gamma >= 0 and 0 <= self.style_mixing <= 1
                and self.ema_half_life >= 0):
            raise UserError("alae mapping_lr_mul must be positive, r1_gamma and ema_half_life not negative, "
                            "style_mixing in [0, 1]")

    @property
    def resolution(self) -> int:
        return 4 * 2 ** (len(self.channels) - 1)


def _mlp(sizes: list[int], lr_mul: float = 1.0, last_act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(EqualLinear(a, b, lr_mul=lr_mul))
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class Mapping(nn.Module):
    """F: z (B, D) -> w (B, D): pixel norm, then ``layers`` equalised layers with leaky ReLU."""

    def __init__(self, dim: int, layers: int, lr_mul: float):
        super().__init__()
        self.net = _mlp([dim] * (layers + 1), lr_mul)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_norm(z))


class StyleGenerator(nn.Module):
    """G: styles (B, S, D), one w per style layer -> (B, C, R, R); S = 2 * len(channels)."""

    def __init__(self, channels: tuple[int, ...], out_channels: int, latent_dim: int):
        super().__init__()
        self.const = nn.Parameter(torch.ones(1, channels[0], 4, 4))
        self.layers = nn.ModuleList()
        c_prev, size = channels[0], 4
        for i, c in enumerate(channels):
            if i:
                size *= 2
            self.layers.append(StyleLayer(c_prev, c, size, latent_dim, up=i > 0, const=i == 0))
            self.layers.append(StyleLayer(c, c, size, latent_dim))
            c_prev = c
        self.to_image = EqualConv2d(c_prev, out_channels, 1, gain=0.03)

    def forward(self, styles: torch.Tensor) -> torch.Tensor:
        x = self.const.expand(styles.shape[0], -1, -1, -1)
        for i, layer in enumerate(self.layers):
            x = layer(x, styles[:, i])
        return self.to_image(x)


class StyleEncoder(nn.Module):
    """E: (B, C, R, R) -> w (B, D), the sum of every block's style read-outs."""

    def __init__(self, channels: tuple[int, ...], in_channels: int, latent_dim: int):
        super().__init__()
        rev = channels[::-1]  # finest first
        self.from_image = EqualConv2d(in_channels, rev[0], 1)
        self.blocks = nn.ModuleList(StyleEncoderBlock(rev[i], rev[min(i + 1, len(rev) - 1)], latent_dim,
                                                      down=i < len(rev) - 1) for i in range(len(rev)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = lrelu(self.from_image(x))
        w = 0
        for block in self.blocks:
            h, part = block(h)
            w = w + part
        return lrelu(w)


@register("alae")
class ALAE(Autoencoder):
    Config = ALAEConfig
    TRAIN_DEFAULTS = {"batch_size": 128}  # the authors' MNIST configurations (configs/mnist_fc.yaml, mnist.yaml)
    PRESETS = {"pidhorskyi2020-mnist": {"arch": "mlp", "latent_dim": 50, "widths": [1024, 1024], "mapping_layers": 6,
                                        "dis_layers": 3, "mapping_lr_mul": 0.1, "r1_gamma": 10.0,
                                        "ema_half_life": 10_000.0},
               # the authors' StyleALAE MNIST configuration (configs/mnist.yaml), at full resolution from the start
               "pidhorskyi2020-mnist-style": {"arch": "style", "latent_dim": 32, "channels": [256, 256, 128, 64],
                                              "mapping_layers": 4, "dis_layers": 3, "mapping_lr_mul": 0.1,
                                              "r1_gamma": 10.0, "style_mixing": 0.9,
                                              "ema_half_life": 10_000.0, "train": {"lr": 0.0015}}}
    LR = 0.002  # Adam (beta1 0, beta2 0.99), both optimizers; train.lr (--lr) replaces it, F and D keep mapping_lr_mul

    PARTS = {"encoder": Part("E: x (in [-1, 1] for images) -> w", takes=lambda m: m.config.input_shape,
                             gives=lambda m: (m.config.latent_dim,)),
             "decoder": Part("G: w -> an item (in [-1, 1] for images)", takes=lambda m: (m.config.latent_dim,),
                             gives=lambda m: m.config.input_shape, any_layout=True),
             "mapping": Part("F: z ~ N(0, I) -> w", takes=lambda m: (m.config.latent_dim,),
                             gives=lambda m: (m.config.latent_dim,)),
             "discriminator": Part("D: w -> one logit per item", takes=lambda m: (m.config.latent_dim,),
                                   gives=lambda m: (1,))}

    can_sample = True

    def __init__(self, config: ALAEConfig, **given):
        super().__init__(config)
        c = config
        d = c.latent_dim
        self.mapping = parts.build(self, "mapping", given, lambda: Mapping(d, c.mapping_layers, c.mapping_lr_mul))
        if c.arch == "mlp":  # items in and out as they are, (B, *input_shape)
            n = math.prod(c.input_shape)
            self.generator = parts.build(self, "decoder", given, lambda: _mlp([d, *c.widths, n], last_act=False))
            # w passes a leaky ReLU, as F's output does
            self.encoder = parts.build(self, "encoder", given, lambda: FlatInput(*_mlp([n, *c.widths[::-1], d])))
            self.styles = 1
        else:
            self.generator = StyleGenerator(tuple(c.channels), c.input_shape[0], d)
            self.encoder = StyleEncoder(tuple(c.channels), c.input_shape[0], d)
            self.styles = 2 * len(c.channels)
        self.discriminator = parts.build(self, "discriminator", given, lambda: _mlp(
            [d] * c.dis_layers + [1], c.mapping_lr_mul, last_act=False))
        # the moving averages that encode, decode and sample (buffers of the state, not trained)
        self.ema = nn.ModuleDict({"mapping": copy.deepcopy(self.mapping), "generator": copy.deepcopy(self.generator),
                                  "encoder": copy.deepcopy(self.encoder)}).requires_grad_(False)
        self._batch = 0

    def optimizers(self) -> dict[str, Optim]:
        c = self.config

        def adam(*modules):
            return Optim([p for m in modules for p in m.parameters()], kind="adam", lr=self.LR, betas=(0.0, 0.99))

        return {"encoder": adam(self.encoder, self.discriminator), "generator": adam(self.mapping, self.generator)}

    # --- the networks, in data space [-1, 1] (images) ------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.arch == "mlp":
            return x
        r, (h, w) = self.config.resolution, x.shape[-2:]
        return F.pad(x, (0, r - w, 0, r - h))

    def _unpad(self, y: torch.Tensor) -> torch.Tensor:
        shape = self.config.input_shape
        if self.config.arch == "mlp":
            return y
        return y[..., : shape[1], : shape[2]]

    def _inside(self, x: torch.Tensor) -> torch.Tensor:
        return self._pad(2 * x - 1 if self.config.data_kind == "image" else x)

    def _outside(self, y: torch.Tensor) -> torch.Tensor:
        y = self._unpad(y)
        return ((y + 1) / 2).clamp(0, 1) if self.config.data_kind == "image" else y

    def _generate(self, generator: nn.Module, w: torch.Tensor, w2: torch.Tensor | None = None) -> torch.Tensor:
        """G(w); with ``w2`` (style), the layers from a random crossover on take w2 (style mixing)."""
        if self.config.arch == "mlp":
            return generator(w).reshape(-1, *self.config.input_shape)
        styles = w[:, None].expand(-1, self.styles, -1)
        if w2 is not None:
            cut = int(torch.randint(1, self.styles, ()))
            styles = torch.cat([styles[:, :cut], w2[:, None].expand(-1, self.styles - cut, -1)], 1)
        return generator(styles)

    def _fake(self, like: torch.Tensor, mixing: bool) -> torch.Tensor:
        """G(F(z)) for fresh z, one per item of ``like`` (its device and dtype), with style mixing at the
        configured probability when ``mixing``."""
        shape = (len(like), self.config.latent_dim)
        w = self.mapping(torch.randn(shape, device=like.device, dtype=like.dtype))
        w2 = None
        if mixing and self.config.arch == "style" and float(torch.rand(())) < self.config.style_mixing:
            w2 = self.mapping(torch.randn(shape, device=like.device, dtype=like.dtype))
        return self._generate(self.generator, w, w2)

    # --- the autoencoder interface (moving averages) -------------------------------------------------
    def encode(self, x: torch.Tensor) -> Encoded:
        """w = E(x): (B, latent_dim)."""
        return Encoded(z=self.ema["encoder"](self._inside(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """G(w) in the data's range."""
        return self._outside(self._generate(self.ema["generator"], z))

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        z = temperature * torch.randn(n, self.config.latent_dim, device=self.device)
        return self.decode(self.mapped(z))

    def mapped(self, z: torch.Tensor) -> torch.Tensor:
        """w = F(z) through the moving-average mapping: interpolating in z goes through here."""
        return self.ema["mapping"](z)

    # --- training: Algorithm 1 ---------------------------------------------------------------------------
    def training_step(self, batch: Batch, ctx) -> dict:
        c = self.config
        x = self._inside(batch.x)
        b, dev = len(x), x.device
        self._batch = b
        # 1. E and D: tell real codes from generated ones, R1 on the real items
        with torch.no_grad():
            fake = self._fake(x, mixing=True)
        real = x.detach().requires_grad_(ctx.training and c.r1_gamma > 0)
        real_logit = self.discriminator(self.encoder(real)).squeeze(1).float()
        fake_logit = self.discriminator(self.encoder(fake)).squeeze(1).float()
        d_loss = real_nll(real_logit).mean() + fake_nll(fake_logit).mean()
        r1 = torch.zeros((), device=dev, dtype=torch.float32)
        if real.requires_grad:
            (grad,) = torch.autograd.grad(real_logit.sum(), real, create_graph=True)
            r1 = grad.float().pow(2).flatten(1).sum(1).mean()
        ctx.backward(d_loss + 0.5 * c.r1_gamma * r1, "encoder")
        ctx.step("encoder")
        # 2. F and G: make generated codes look real (non-saturating)
        g_loss = real_nll(self.discriminator(self.encoder(self._fake(x, mixing=True))).squeeze(1)).mean()
        ctx.backward(g_loss, "generator")
        ctx.step("generator")
        # 3. E, G and F: the latent reconstruction; the target w is a constant, G's input w = F(z) is not
        w = self.mapping(torch.randn(b, c.latent_dim, device=dev, dtype=x.dtype))
        ae_loss = (self.encoder(self._generate(self.generator, w)).float() - w.detach().float()).pow(2).mean()
        ctx.backward(ae_loss, "encoder", "generator")
        ctx.step("encoder", "generator")
        metrics = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "latent_mse": ae_loss.detach(),
                   "r1": r1.detach(), "real_score": real_logit.detach().mean(), "fake_score": fake_logit.detach().mean()}
        if not ctx.training:  # what a user gets: G(E(x)) through the moving averages
            with torch.no_grad():
                metrics["recon_mse"] = (self(batch.x) - batch.x).pow(2).flatten(1).mean(1).mean()
        return metrics

    @torch.no_grad()
    def after_step(self, ctx) -> None:
        """The moving averages follow the live networks: a half-life of ``ema_half_life`` items."""
        h = self.config.ema_half_life
        beta = 0.5 ** (self._batch / h) if h > 0 else 0.0
        for name in ("mapping", "generator", "encoder"):
            live = getattr(self, name)
            for avg, p in zip(self.ema[name].parameters(), live.parameters()):
                avg.lerp_(p, 1 - beta)  # the buffers (fixed noise maps) never change
