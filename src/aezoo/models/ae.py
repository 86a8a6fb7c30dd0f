"""Deterministic deep autoencoder.

Hinton & Salakhutdinov, "Reducing the dimensionality of data with neural networks", Science 313 (2006).
An encoder f maps x to a low-dimensional code z = f(x) (a linear code layer), a mirrored decoder g maps it
back, and training minimises the reconstruction error of g(f(x)): cross-entropy for pixels in [0, 1]
(the paper's choice for MNIST, "bernoulli") or squared error ("gaussian"; :mod:`aezoo.nn.likelihood`).

Preset ``hinton2006``: the paper's MNIST network 784-1000-500-250-30 with the mirrored decoder.
Difference from the paper: it pre-trains a stack of RBMs and fine-tunes logistic units by conjugate
gradients; we train from a random start with ReLU units, batch normalisation after each hidden layer and
Adam, which needs no pre-training stage and reaches a lower error within minutes on a CPU (see
BENCHMARKS.md, "AE against PCA").

``refine_steps`` > 0 refines each code at inference (eval mode) by Adam steps on the reconstruction loss
through the frozen decoder, starting from the encoder's output (semi-amortised inference, Kim et al.
2018). A large MLP encoder fits its training items better than new ones; refinement closes this
"amortisation gap" (Cremer et al. 2018). Training is unchanged; ``aezoo eval/embed/reconstruct
--refine-steps N`` turn it on.

Variants: ``arch="conv"`` for images, and ``arch="fullconv"``, whose code is a low-resolution feature map
rather than a vector (for restoration, where no bottleneck vector is wanted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..errors import UserError
from ..losses import squared_error
from ..nn import ConvDecoder, ConvEncoder, mlp
from ..nn.likelihood import Likelihood, LikelihoodConfig, make_likelihood, resolve_likelihood
from ..outputs import Batch, Encoded, LossOutput
from ..registry import register
from . import parts
from .base import Autoencoder, ModelConfig, StepContext
from .parts import Part


@dataclass
class AEConfig(ModelConfig, LikelihoodConfig):
    arch: Literal["mlp", "conv", "fullconv"] = "mlp"  # conv, fullconv: image data; fullconv's code is a feature map
    widths: tuple[int, ...] = (1000, 500, 250)  # MLP hidden layers, encoder side; the decoder mirrors them
    channels: tuple[int, ...] = (32, 64)  # conv: channels of each stride-2 stage
    latent_dim: int = 30  # size of the code (fullconv: channels of the code's feature map)
    activation: str = "relu"  # hidden units (the paper: logistic, with RBM pre-training)
    norm: Literal["none", "batch", "layer"] = "batch"  # after each hidden layer; batch: faster training (BENCHMARKS.md)
    likelihood: Literal["auto", "bernoulli", "gaussian"] = "auto"  # auto: bernoulli for images, else gaussian
    refine_steps: int = 0  # inference only: Adam steps that improve each code through the decoder (0: off)
    refine_lr: float = 0.002  # Adam step size of that refinement
    encoder: str | None = None  # your own encoder, by import path module:Name (None: arch's); see PARTS
    encoder_kwargs: dict = field(default_factory=dict)  # keyword arguments of its constructor
    decoder: str | None = None  # your own decoder, by import path (None: arch's)
    decoder_kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if self.refine_steps < 0 or self.refine_lr <= 0:
            raise UserError("refine_steps must be >= 0 and refine_lr > 0")
        if self.latent_dim < 1:
            raise UserError(f"latent_dim must be at least 1, got {self.latent_dim}")
        if any(w < 1 for w in self.widths) or any(c < 1 for c in self.channels):
            raise UserError("widths and channels must be positive")
        if self.arch != "mlp" and (self.data_kind != "image" or len(self.input_shape) != 3):
            raise UserError(f"arch={self.arch} needs image data (C, H, W); use arch=mlp for vectors")
        if (self.encoder or self.decoder) and self.arch not in ("mlp", "conv"):
            raise UserError(f"your own encoder and decoder replace arch=mlp or conv's, whose code is a vector; "
                            f"arch={self.arch}'s cannot be replaced: use arch=conv")
        resolve_likelihood(self)  # refuses a likelihood that does not fit the data


@register("ae")
class AE(Autoencoder):
    Config = AEConfig
    PRESETS = {"hinton2006": {"arch": "mlp", "widths": [1000, 500, 250], "latent_dim": 30, "likelihood": "bernoulli"}}
    PARTS = {"encoder": Part("x -> the code", takes=lambda m: m.encoder_input_shape(),
                             gives=lambda m: (m.config.latent_dim,)),
             "decoder": Part("code -> logits (bernoulli) or means (gaussian) of each value",
                             takes=lambda m: (m.config.latent_dim,),
                             gives=lambda m: m.likelihood.out_shape(tuple(m.config.input_shape)), any_layout=True)}

    def __init__(self, config: AEConfig, **given):
        super().__init__(config)
        c = config
        in_shape = self.encoder_input_shape()
        self.likelihood: Likelihood = make_likelihood(c.resolved_likelihood)
        out_shape = self.likelihood.out_shape(tuple(c.input_shape))  # what the decoder emits per item
        d = math.prod(out_shape)
        if c.arch == "mlp":
            self.encoder = parts.build(self, "encoder", given, lambda: mlp(
                [math.prod(in_shape), *c.widths, c.latent_dim], c.activation, norm=c.norm, flat_input=True))
            self.decoder = parts.build(self, "decoder", given, lambda: mlp(
                [c.latent_dim, *reversed(c.widths), d], c.activation, norm=c.norm))
        elif c.arch in ("conv", "fullconv"):
            spatial = c.arch == "fullconv"
            enc = ConvEncoder(tuple(in_shape), tuple(c.channels), c.latent_dim, c.activation, c.norm, spatial)
            self.encoder = parts.build(self, "encoder", given, lambda: enc)  # its sizes shape the decoder
            self.decoder = parts.build(self, "decoder", given, lambda: ConvDecoder(
                c.latent_dim, enc.feature_shape, tuple(c.channels), enc.sizes, out_shape[0], c.activation, c.norm,
                spatial))

    refines_codes = True

    def encoder_input_shape(self) -> tuple[int, ...]:
        """What the encoder reads: the item itself here; subclasses may add channels (e.g. a mask)."""
        return tuple(self.config.input_shape)

    def encode(self, x: torch.Tensor) -> Encoded:
        z = self.encoder(x)  # (B, latent_dim), fullconv: (B, latent_dim, H/4, W/4)
        if self.config.refine_steps and not self.training:
            z = self.refine(x, z)
        return Encoded(z=z)

    def recon_nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-item reconstruction loss of raw decoder output ``out`` against ``x``."""
        return self.likelihood.nll(out, x)

    def refine(self, x: torch.Tensor, z: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Improve codes ``z`` of items ``x`` by ``steps`` (default ``refine_steps``) Adam steps on the
        reconstruction loss through the frozen decoder, starting from the encoder's output: semi-amortised
        inference (Kim et al., ICML 2018), which closes the encoder's "amortisation gap" (Cremer et al.,
        ICML 2018). Each item's code depends only on that item. The weights are not touched."""
        steps = self.config.refine_steps if steps is None else steps
        with torch.enable_grad():
            z = z.detach().float().clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=self.config.refine_lr)
            for _ in range(steps):
                loss = self.recon_nll(self.decoder_output(z), x).sum()
                (z.grad,) = torch.autograd.grad(loss, z)
                opt.step()
        return z.detach()

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """Raw decoder output (B, *likelihood.out_shape): logits (bernoulli) or means (gaussian)."""
        return self.decoder(z).reshape(-1, *self.likelihood.out_shape(tuple(self.config.input_shape)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder_output(z))

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        x = batch.x
        out = self.decoder_output(self.encode(x).z)
        nll = self.recon_nll(out, x)
        sse = squared_error(self.likelihood.mean(out), x)
        loss = nll.mean()
        return LossOutput(loss, {"loss": loss.detach(), "recon_sse": sse.mean().detach()})
