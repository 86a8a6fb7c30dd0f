"""ACAI: an autoencoder whose interpolations are made realistic by an adversarial critic.

Berthelot, Raffel, Roy & Goodfellow, "Understanding and improving interpolation in autoencoders via an
adversarial regularizer", ICLR 2019 (arXiv:1807.07543). For each item, a mixing coefficient
alpha = 0.5 - |u - 0.5|, u ~ U(0, 1), and an interpolant decoded from its code mixed with another
item's code of the batch (the batch reversed): x^_alpha = g(alpha z_1 + (1 - alpha) z_2). A critic d
learns to predict alpha from x^_alpha (eq. 1); the autoencoder learns to make d say 0 (eq. 2):

    L_d = ||d(x^_alpha) - alpha||^2 + ||d(gamma x + (1 - gamma) g(f(x)))||^2
    L_f,g = ||x - g(f(x))||^2 + lambda ||d(x^_alpha)||^2

The second critic term (on a blend of an item and its reconstruction) keeps the critic's output 0 on
realistic data, which regularises it. Defaults as the paper: lambda = 0.5, gamma = 0.2, Adam 1e-4 for both,
batch 64, pixels in [-1, 1]. Networks as the paper's code: the encoder is a 1x1 convolution to ``depth``
channels, then per scale two 3x3 convolutions of depth 2^s channels and a 2x2 average pooling, then
3x3 convolutions to depth 2^scales and to ``latent_dim`` channels (linear); the decoder mirrors it with
nearest-neighbour upsampling; leaky ReLU 0.2, no normalisation. The critic is built like the encoder,
and its output averaged to one number. The code is the (latent_dim, H / 2^scales, W / 2^scales) map.

Preset ``berthelot2019``: the paper's lines setting (depth 16, latent_dim 16, 4 scales: a 2x2 code on
32x32 images; lr 1e-4). The CPU default keeps that depth and latent_dim, uses 3 scales, which suits 28x28
items (a 4x4 code; the pooling rounds 7 up to 4, the decoder upsamples back to each recorded size), and
lr 3e-4, which leaves the all-black plateau of the lines sooner. Weights are initialised as in the
authors' code (brain-research/acai, lib/layers.py): normal with std 1 / sqrt((1 + 0.2^2) fan_in), a He
initialisation for leaky ReLU 0.2 without its factor 2; biases zero. It replaced torch's He initialisation
(with the factor 2) after a side-by-side run on the lines at 1,500 equal steps: smoothness 0.148 against
0.496, mean distance 7.4e-3 against 5.6e-3 (BENCHMARKS.md, issue 31).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..losses import squared_error
from ..outputs import Batch, Encoded
from ..registry import register
from . import parts
from .base import Autoencoder, ModelConfig, Optim
from .parts import Part


@dataclass
class ACAIConfig(ModelConfig):
    depth: int = 16  # channels of the first scale; scale s has depth * 2^s
    scales: int = 3  # average poolings (the code is 1/2^scales of the item's size); lines preset: 4
    latent_dim: int = 16  # channels of the code
    advweight: float = 0.5  # lambda: weight of the critic's output on interpolants in the autoencoder's loss
    reg: float = 0.2  # gamma: how much of the item is blended into its reconstruction for the critic
    encoder: str | None = None  # your own networks by import path module:Name (None: the paper's); see PARTS
    encoder_kwargs: dict = field(default_factory=dict)  # keyword arguments of its constructor
    decoder: str | None = None
    decoder_kwargs: dict = field(default_factory=dict)
    critic: str | None = None
    critic_kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if self.data_kind != "image" or len(self.input_shape) != 3:
            raise UserError("acai needs image data (C, H, W)")
        if self.depth < 1 or self.latent_dim < 1 or self.scales < 1:
            raise UserError("depth, latent_dim and scales must be at least 1")
        if min(self.input_shape[1:]) < 2 ** self.scales:
            raise UserError(f"input {tuple(self.input_shape)} is too small for {self.scales} scales")
        if self.advweight < 0 or not 0 <= self.reg <= 1:
            raise UserError("advweight must not be negative and reg must be in [0, 1]")


def _conv(a: int, b: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(a, b, k, padding=k // 2)


class Encoder(nn.Module):
    """The paper's encoder (also its critic): (B, C, H, W) -> (B, latent, H / 2^scales, W / 2^scales),
    rounding up at each pooling. ``sizes``: the spatial size before each pooling."""

    def __init__(self, channels: int, depth: int, scales: int, latent: int):
        super().__init__()
        self.stem = _conv(channels, depth, 1)
        c = depth
        self.blocks = nn.ModuleList()
        for s in range(scales):
            self.blocks.append(nn.ModuleList([_conv(c, depth << s), _conv(depth << s, depth << s)]))
            c = depth << s
        self.top = _conv(c, depth << scales)
        self.out = _conv(depth << scales, latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for a, b in self.blocks:
            h = F.leaky_relu(b(F.leaky_relu(a(h), 0.2)), 0.2)
            h = F.avg_pool2d(h, 2, ceil_mode=True)
        return self.out(F.leaky_relu(self.top(h), 0.2))


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`: (B, latent, h, w) -> (B, C, H, W) by nearest-neighbour upsampling to
    each of the encoder's recorded sizes; linear output."""

    def __init__(self, channels: int, depth: int, scales: int, latent: int, sizes: list[tuple[int, int]]):
        super().__init__()
        self.sizes = sizes  # (H, W) after each upsampling
        c = latent
        self.blocks = nn.ModuleList()
        for s in reversed(range(scales)):
            self.blocks.append(nn.ModuleList([_conv(c, depth << s), _conv(depth << s, depth << s)]))
            c = depth << s
        self.top = _conv(c, depth)
        self.out = _conv(depth, channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for (a, b), size in zip(self.blocks, self.sizes):
            h = F.leaky_relu(b(F.leaky_relu(a(h), 0.2)), 0.2)
            h = F.interpolate(h, size=size, mode="nearest")
        return self.out(F.leaky_relu(self.top(h), 0.2))


@register("acai")
class ACAI(Autoencoder):
    Config = ACAIConfig
    PRESETS = {"berthelot2019": {"depth": 16, "scales": 4, "latent_dim": 16, "advweight": 0.5, "reg": 0.2,
                                 "train": {"lr": 1e-4}}}
    LR = 3e-4  # Adam, both networks (paper: 1e-4, preset berthelot2019); train.lr (--lr) replaces it
    PARTS = {"encoder": Part("x in [-1, 1] -> the code, a (latent_dim, H / 2^scales, W / 2^scales) map (rounded up)",
                             takes=lambda m: m.config.input_shape, gives=lambda m: m.code_shape),
             "decoder": Part("code -> an item in [-1, 1] (linear output)", takes=lambda m: m.code_shape,
                             gives=lambda m: m.config.input_shape),
             "critic": Part("x in [-1, 1] -> any (B, ...) whose mean per item is the predicted mixing coefficient",
                            takes=lambda m: m.config.input_shape, gives=lambda m: None)}

    def __init__(self, config: ACAIConfig, **given):
        super().__init__(config)
        c = config
        ch, h, w = c.input_shape
        sizes = [(h, w)]
        for _ in range(c.scales):
            h, w = -(-h // 2), -(-w // 2)
            sizes.append((h, w))
        self.code_shape = (c.latent_dim, h, w)
        own = [Encoder(ch, c.depth, c.scales, c.latent_dim),
               Decoder(ch, c.depth, c.scales, c.latent_dim, list(reversed(sizes[:-1]))),
               Encoder(ch, c.depth, c.scales, c.latent_dim)]
        self.encoder = parts.build(self, "encoder", given, lambda: own[0])
        self.decoder = parts.build(self, "decoder", given, lambda: own[1])
        self.critic = parts.build(self, "critic", given, lambda: own[2])
        own = [m for m in own if any(m is n for n in (self.encoder, self.decoder, self.critic))]
        for conv in (m for net in own for m in net.modules()):  # the authors' "He modified normal" of slope 0.2, zero biases
            if isinstance(conv, nn.Conv2d):
                fan_in = conv.weight[0].numel()
                nn.init.normal_(conv.weight, std=(1.04 * fan_in) ** -0.5)
                nn.init.zeros_(conv.bias)

    def optimizers(self) -> dict[str, Optim]:
        lr = self.LR
        return {"autoencoder": Optim([*self.encoder.parameters(), *self.decoder.parameters()], kind="adam", lr=lr),
                "critic": Optim(self.critic.parameters(), kind="adam", lr=lr)}

    # --- the model (images in [0, 1] outside, [-1, 1] inside, as the paper) -----------------------------
    def encode(self, x: torch.Tensor) -> Encoded:
        return Encoded(z=self.encoder(2 * x - 1))  # (B, latent, h, w)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (self.decoder(z) + 1) / 2

    def critique(self, x: torch.Tensor) -> torch.Tensor:
        """d(x) for x in [-1, 1]: the critic's map averaged to one number per item, (B,)."""
        return self.critic(x).float().flatten(1).mean(1)

    # --- training: eq. 1 and 2, one forward pass, two routed losses ------------------------------------
    def training_step(self, batch: Batch, ctx) -> dict:
        c = self.config
        x = 2 * batch.x - 1
        b = len(x)
        z = self.encoder(x)
        u = torch.rand(b, 1, 1, 1, device=x.device)
        alpha = 0.5 - (u - 0.5).abs()  # in [0, 0.5]: the critic cannot tell which end the mix is nearer
        z_mix = alpha * z + (1 - alpha) * z.flip(0)  # mixes each code with the batch reversed
        out = self.decoder(torch.cat([z, z_mix.to(z.dtype)]))  # reconstructions, then interpolants
        rec, mix = out[:b], out[b:]
        blend = c.reg * x + (1 - c.reg) * rec.detach()
        d = self.critique(torch.cat([mix, blend]))  # one critic pass: interpolants, then blends
        recon = squared_error(rec, x).mean() / x[0].numel()  # mean over values, as the paper's MSE
        ae_loss = recon + c.advweight * d[:b].square().mean()
        critic_loss = (d[:b] - alpha.view(-1)).square().mean() + d[b:].square().mean()
        ctx.backward(ae_loss, "autoencoder", retain_graph=True)
        ctx.backward(critic_loss, "critic")
        ctx.step("autoencoder", "critic")
        return {"loss": ae_loss.detach(), "recon_mse": recon.detach() / 4,  # in [0, 1] units
                "critic_loss": critic_loss.detach(), "critic_on_mix": d[:b].mean().detach()}
