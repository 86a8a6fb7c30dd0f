"""VAE-GAN: a VAE whose reconstruction error is measured in a discriminator's features.

Larsen, Sonderby, Larochelle & Winther, ICML 2016 (arXiv:1512.09300). Encoder q(z|x) = N(mu, sigma^2),
decoder (the GAN's generator) x~ = Dec(z), discriminator Dis; reconstruction is a Gaussian likelihood of
the l-th discriminator layer, L_llike = 0.5 ||Dis_l(x~) - Dis_l(x)||^2 (eq. 9). One step (Algorithm 1):
the encoder learns L_prior + L_llike; the decoder gamma L_llike - L_GAN (the GAN term never reaches the
encoder); the discriminator L_GAN = -log D(x) - log(1 - D(x_p)), x_p = Dec(z_p), z_p ~ N(0, I).

Settings of the authors' final code (andersbll/autoencoding_beyond_pixels @24aa0f2, CIFAR script): the
GAN sees real items and prior samples only (``gan_on_recon`` adds x~, as Algorithm 1 does); real and
generated items weigh ``real_weight`` = 0.5; Dis_l is the third convolution before its batch norm; the
decoder's GAN term is the minimax log(1 - D); an equilibrium rule pauses whichever side is ahead by
``margin``; RMSprop lr 0.025 / 64, batch 64; their weight decay 1e-5 of summed losses, 2 x 1e-5 / 64 of
our mean losses, on convolution and affine weights only. Features come from a discriminator pass over
(x~, x), the GAN from one over (x, x_p), reconstructions and samples decoded in separate passes.

Preset ``larsen2016`` is that network (latent 256). The CPU default halves the encoder, uses latent 64 and
thinner decoder and discriminator convolutions, several times cheaper per step. Not reproduced: the repo's
lr decay over 200 epochs, nearly constant over a CPU run (``train.schedule`` offers one). No ELBO: ``aezoo
eval`` reports pixel error and Frechet distances instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UserError
from ..losses import fake_nll, real_nll, squared_error
from ..nn.distributions import DiagonalGaussian
from ..outputs import Batch, Encoded
from ..registry import register
from . import parts
from .base import Autoencoder, ModelConfig, Optim
from .parts import Part


@dataclass
class VAEGANConfig(ModelConfig):
    channels: tuple[int, ...] = (32, 64, 128)  # encoder: 5x5 stride-2 convolutions (paper: 64, 128, 256)
    hidden: int = 512  # encoder: fully connected layer before the latent heads (paper: 1024)
    latent_dim: int = 64  # paper: 128
    decoder_channels: tuple[int, ...] = (64, 32, 16)  # transposed convolutions, one per encoder stage (paper: 192, 128, 32)
    dis_channels: tuple[int, ...] = (16, 32, 64, 128)  # first stride 1, then stride 2 (paper: 32, 128, 192, 256)
    dis_hidden: int = 256  # discriminator's fully connected layer (paper: 512)
    feature_layer: int = 3  # Dis_l: output of this convolution of the discriminator (1-based), before its norm
    gamma: float = 1e-5  # weight of the feature loss against the GAN loss in the decoder's update
    real_weight: float = 0.5  # share of the real items in the discriminator's loss
    gan_on_recon: bool = False  # the GAN also sees reconstructions x~ (the paper's Algorithm 1; off in the final code)
    equilibrium: float = 0.68  # the equilibrium rule: target of either GAN cost (about log 2)
    margin: float = 0.35  # ... and the margin around it; a negative margin turns the rule off
    weight_decay: float = 3.125e-7  # of convolution and affine weights: 2 x 1e-5 / 64, the authors' decay of summed losses
    encoder: str | None = None  # your own networks by import path module:Name (None: the ones above); see PARTS
    encoder_kwargs: dict = field(default_factory=dict)  # keyword arguments of its constructor
    decoder: str | None = None
    decoder_kwargs: dict = field(default_factory=dict)
    discriminator: str | None = None
    discriminator_kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if self.data_kind != "image" or len(self.input_shape) != 3:
            raise UserError("vaegan needs image data (C, H, W)")
        if min(self.input_shape[1:]) < 2 ** len(self.channels):
            raise UserError(f"input {tuple(self.input_shape)} is too small for {len(self.channels)} stride-2 stages")
        if len(self.decoder_channels) != len(self.channels):
            raise UserError("decoder_channels needs one entry per encoder stage (channels)")
        if not 1 <= self.feature_layer <= len(self.dis_channels):
            raise UserError(f"feature_layer must be in 1..{len(self.dis_channels)}, got {self.feature_layer}")
        if min(self.latent_dim, self.hidden, self.dis_hidden, *self.channels, *self.decoder_channels,
               *self.dis_channels) < 1:
            raise UserError("widths, channels and latent_dim must be positive")
        if not (0 <= self.gamma <= 1 and 0 < self.real_weight < 1):
            raise UserError("gamma must be in [0, 1] and real_weight in (0, 1)")


def _conv_stack(c: int, h: int, w: int, channels, strides) -> tuple[list[nn.Module], list[tuple[int, int]], int]:
    """5x5 convolutions (padding 2) with the given strides; returns them, the spatial size before each one
    and after the last, and the last channel count."""
    layers, sizes = [], [(h, w)]
    for ch, s in zip(channels, strides):
        layers.append(nn.Conv2d(c, ch, 5, stride=s, padding=2))
        c, h, w = ch, (h - 1) // s + 1, (w - 1) // s + 1
        sizes.append((h, w))
    return layers, sizes, c


def equilibrium_updates(real_cost: float, fake_cost: float, equilibrium: float, margin: float) -> tuple[bool, bool]:
    """(update the decoder, update the discriminator) under the authors' equilibrium rule, from the
    discriminator's mean costs -log D(x) on real items and -log(1 - D) on generated ones: no discriminator
    update when either cost is below ``equilibrium - margin`` (it is winning), no decoder update when either
    is above ``equilibrium + margin`` (it is losing); both when both would be skipped; a negative margin
    always updates both."""
    if margin < 0:
        return True, True
    dis = min(real_cost, fake_cost) >= equilibrium - margin
    dec = max(real_cost, fake_cost) <= equilibrium + margin
    return (dec, dis) if dec or dis else (True, True)


class Discriminator(nn.Module):
    """Convolutions (the first without batch norm) with ReLU, a hidden layer, one logit."""

    def __init__(self, shape: tuple[int, int, int], channels, hidden: int, feature_layer: int):
        super().__init__()
        strides = [1] + [2] * (len(channels) - 1)
        convs, sizes, c = _conv_stack(*shape, channels, strides)
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(nn.Identity() if i == 0 else nn.BatchNorm2d(ch) for i, ch in enumerate(channels))
        self.feature_layer = feature_layer
        h, w = sizes[-1]
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                  nn.Linear(hidden, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Dis_l(x): the ``feature_layer``-th convolution's output before its norm, (B, C_l * H_l * W_l)."""
        for conv, norm in zip(self.convs[: self.feature_layer - 1], self.norms):
            x = torch.relu(norm(conv(x)))
        return self.convs[self.feature_layer - 1](x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits D(x) before the sigmoid: (B,)."""
        for conv, norm in zip(self.convs, self.norms):
            x = torch.relu(norm(conv(x)))
        return self.head(x).squeeze(1)


@register("vaegan")
class VAEGAN(Autoencoder):
    Config = VAEGANConfig
    LR = 3.906e-4  # RMSprop, all three networks (0.025 / batch 64 in the authors' code); train.lr (--lr) replaces it
    PRESETS = {"larsen2016": {"channels": [64, 128, 256], "hidden": 1024, "latent_dim": 256,
                              "decoder_channels": [192, 128, 32], "dis_channels": [32, 128, 192, 256],
                              "dis_hidden": 512, "feature_layer": 3, "gamma": 1e-5, "real_weight": 0.5,
                              "gan_on_recon": False, "equilibrium": 0.68, "margin": 0.35,
                              "weight_decay": 3.125e-7}}
    PARTS = {"encoder": Part("x in [-1, 1] -> the mean and log-variance of q(z|x), latent_dim each, concatenated",
                             takes=lambda m: m.config.input_shape, gives=lambda m: (2 * m.config.latent_dim,)),
             "decoder": Part("z -> an item before the tanh that maps it to [-1, 1]",
                             takes=lambda m: (m.config.latent_dim,), gives=lambda m: m.config.input_shape),
             "discriminator": Part("x in [-1, 1] -> logits (B,); and features(x) -> Dis_l(x) (B, F), the layer whose "
                                   "distance measures reconstruction", takes=lambda m: m.config.input_shape,
                                   gives=lambda m: (), also=(("features", lambda m: (None,)),))}

    def __init__(self, config: VAEGANConfig, **given):
        super().__init__(config)
        c = config
        shape = tuple(c.input_shape)
        convs, sizes, ch = _conv_stack(*shape, c.channels, [2] * len(c.channels))
        layers: list[nn.Module] = []
        for conv in convs:
            layers += [conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU()]
        h, w = sizes[-1]
        self.encoder = parts.build(self, "encoder", given, lambda: nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(ch * h * w, c.hidden), nn.BatchNorm1d(c.hidden), nn.ReLU(),
            nn.Linear(c.hidden, 2 * c.latent_dim)))
        self.decoder = parts.build(self, "decoder", given, lambda: None)  # None: the layers below
        if self.decoder is None:
            self.start = (ch, h, w)  # the decoder starts from the encoder's last feature map shape
            self.decoder_input = nn.Sequential(nn.Linear(c.latent_dim, ch * h * w), nn.BatchNorm1d(ch * h * w), nn.ReLU())
            self.up_sizes = list(reversed(sizes[:-1]))  # the decoder undoes the encoder's sizes exactly
            chans = [ch, *c.decoder_channels]
            self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, 5, stride=2, padding=2)
                                     for a, b in zip(chans[:-1], chans[1:]))
            self.up_norms = nn.ModuleList(nn.BatchNorm2d(b) for b in chans[1:])
            self.to_image = nn.Conv2d(chans[-1], shape[0], 5, padding=2)
        self.discriminator = parts.build(self, "discriminator", given, lambda: Discriminator(
            shape, c.dis_channels, c.dis_hidden, c.feature_layer))

    can_sample = True

    @property
    def traversal_dims(self) -> int:
        return self.config.latent_dim

    def optimizers(self) -> dict[str, Optim]:
        c = self.config

        latent_heads = self.encoder[-1].weight if c.encoder is None else None  # yours: every matrix decays

        def rmsprop(modules):
            # the authors decay convolution and affine weights only: not biases, batch norms or the latent heads
            params = [p for m in modules for p in m.parameters()]
            decayed = [p for p in params if p.dim() > 1 and p is not latent_heads]
            rest = [p for p in params if not any(p is d for d in decayed)]
            return Optim([{"params": decayed, "weight_decay": c.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                         kind="rmsprop", lr=self.LR, alpha=0.9)

        decoder = [self.decoder] if self.decoder is not None else [self.decoder_input, self.ups, self.up_norms,
                                                                   self.to_image]
        return {"encoder": rmsprop([self.encoder]), "decoder": rmsprop(decoder),
                "discriminator": rmsprop([self.discriminator])}

    # --- the model (images in [0, 1] outside, [-1, 1] inside, as the paper's tanh output) ------------
    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        mean, logvar = self.encoder(2 * x - 1).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def encode(self, x: torch.Tensor) -> Encoded:
        q = self.posterior(x)
        return Encoded(z=q.mode(), posterior=q)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Dec(z) in [-1, 1]: (N, C, H, W)."""
        if self.decoder is not None:  # your own
            return torch.tanh(self.decoder(z))
        h = self.decoder_input(z).view(-1, *self.start)
        for up, norm, size in zip(self.ups, self.up_norms, self.up_sizes):
            h = torch.relu(norm(up(h, output_size=size)))
        return torch.tanh(self.to_image(h))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (self.generate(z) + 1) / 2

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        z = temperature * torch.randn(n, self.config.latent_dim, device=self.device)
        return self.decode(z)

    # --- training: Algorithm 1, one step, three routed losses -----------------------------------------
    def training_step(self, batch: Batch, ctx) -> dict:
        c = self.config
        x = 2 * batch.x - 1
        b = len(x)
        q = self.posterior(batch.x)
        z = q.sample()
        recon = self.generate(z)  # x~: (B, C, H, W)
        # L_llike: Gaussian log-likelihood (unit variance) of Dis_l(x) given Dis_l(x~), eq. 9
        features = self.discriminator.features(torch.cat([recon, x]))
        feature_loss = 0.5 * squared_error(features[:b], features[b:]).mean()
        kl = q.kl().mean()
        # the GAN's generated items: prior samples x_p (and x~ with gan_on_recon); z enters as a constant
        fakes = self.generate(torch.randn_like(z))
        if c.gan_on_recon:
            fakes = torch.cat([self.generate(z.detach()), fakes])
        logits = self.discriminator(torch.cat([x, fakes])).float()
        real_cost = real_nll(logits[:b])  # -log D(x), per item
        fake_cost = fake_nll(logits[b:])  # -log(1 - D(.)) per generated item
        gan = c.real_weight * real_cost.mean() + (1 - c.real_weight) * fake_cost.mean()

        # the rule decides alike on every rank of a distributed run: it reads the costs averaged over ranks
        real_mean, fake_mean = ctx.mean(torch.stack([real_cost.detach().mean(), fake_cost.detach().mean()])).tolist()
        train_dec, train_dis = equilibrium_updates(real_mean, fake_mean, c.equilibrium, c.margin)
        # encoder: L_prior + L_llike; decoder: gamma L_llike - L_GAN (minimax: the sum of log(1 - D) over the
        # generated items, per real item as in the authors' code, whose generator gradient is unweighted)
        ctx.backward(kl + feature_loss, "encoder", retain_graph=True)
        if train_dec:
            ctx.backward(c.gamma * feature_loss - (1 - c.gamma) * fake_cost.sum() / b, "decoder", retain_graph=True)
        if train_dis:
            ctx.backward(gan, "discriminator")
        ctx.step("encoder")
        if train_dec:
            ctx.step("decoder")
        if train_dis:
            ctx.step("discriminator")
        return {"loss": (kl + feature_loss).detach(), "kl": kl.detach(), "feature_loss": feature_loss.detach(),
                "dis_real_cost": real_mean, "dis_fake_cost": fake_mean, "gan_loss": gan.detach(),
                "recon_sse": squared_error(recon.detach(), x).mean() / 4,  # in [0, 1] units
                "decoder_updated": float(train_dec), "discriminator_updated": float(train_dis)}
