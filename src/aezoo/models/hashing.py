"""Semantic hashing: an autoencoder whose code is a short binary word.

Salakhutdinov & Hinton, "Semantic hashing", International Journal of Approximate Reasoning 50 (2009).
The encoder's code layer has ``bits`` logistic units; the decoder reconstructs the input from them. To
force the codes to binary, the paper adds Gaussian noise to the code units' total input during
fine-tuning (variance 16, so ``noise_std = 4``): only a code far from 0.5 survives the noise, so the
network learns to saturate its code units. At use, bit i is 1 when its logit is above 0. The
alternative ``binarize="straight_through"`` uses the hard bits in the forward pass and the sigmoid's
gradient in the backward pass (Bengio et al. 2013).

Default ``binarize="noise"``, the paper's method: bench/hashing.py measured both at 32 bits, and noise
was better on every measure on both datasets (Fashion-MNIST precision@100 / mAP / precision within
radius 2: 0.726 / 0.414 / 0.755 against 0.709 / 0.317 / 0.626; Debian descriptions: 0.330 / 0.173 /
0.361 against 0.297 / 0.136 / 0.237).

Text (word counts over a vocabulary): the encoder reads log(1 + counts); the decoder gives a softmax
over the vocabulary and the loss is the multinomial negative log-likelihood of the document's words,
-sum_w n_w log p_w, the likelihood of the paper's constrained-Poisson model for a given document length.
Images: Bernoulli likelihood (pixels in [0, 1]); other vectors: squared error.

Defaults: the paper's 20-Newsgroups encoder, 2000-500-500-``bits``. Differences: ReLU hidden units with
batch normalisation, trained from a random start with Adam, instead of a stack of pre-trained RBMs
fine-tuned by conjugate gradients (no pre-training stage, minutes on a CPU). Codes of 8 to 128 bits.
The decoder is linear by default (``decoder_widths=()``), where the paper mirrors the encoder
(``decoder_widths=None``, preset ``salakhutdinov2009``): a linear decoder maps codes that differ in a few
bits to similar outputs, so Hamming distance follows similarity (later text-hashing models, VDSH and
NASH, decode with a linear softmax layer too). ``balance=True`` (default) batch-normalises the code
logits without a shift and multiplies them by a learned per-bit scale (started at ``noise_std``): each
bit is on for about half of a batch, so no bit is wasted on a constant (a linear decoder otherwise lets
some bits die). Noise std 8 by default, twice the paper's 4: with balanced bits it keeps more
neighbours within Hamming radius 2 at long codes (Fashion-MNIST, 128 bits, precision within radius 2:
0.176 against 0.096 with std 4 and 0.053 with std 2) at a small cost in precision@100 at short codes
(16 bits: 0.641 against 0.658). Measured on Fashion-MNIST at 32 bits, std 4 (precision@100 / mAP /
precision within radius 2): mirrored decoder 0.726 / 0.414 / 0.755, linear 0.718 / 0.488 / 0.715, linear
+ balance 0.727 / 0.502 / 0.723; on the Debian descriptions 0.330 / 0.173 / 0.361 (30 epochs), 0.366 /
0.192 / 0.321 and 0.371 / 0.208 / 0.354 (10 epochs). See BENCHMARKS.md for every code length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..losses import bernoulli_nll, squared_error
from ..nn import ConvDecoder, ConvEncoder, mlp
from ..outputs import Batch, Encoded, LossOutput
from ..registry import register
from .base import Autoencoder, ModelConfig


@dataclass
class HashConfig(ModelConfig):
    bits: int = 32  # code length, 8 to 128
    arch: Literal["mlp", "conv"] = "mlp"  # conv: image data
    widths: tuple[int, ...] = (500, 500)  # the paper's 2000-500-500-bits encoder
    decoder_widths: tuple[int, ...] | None = ()  # decoder hidden layers; (): linear (default), None: mirror widths
    channels: tuple[int, ...] = (32, 64)  # conv: channels of each stride-2 stage
    activation: str = "relu"
    norm: Literal["none", "batch", "layer"] = "batch"
    binarize: Literal["noise", "straight_through"] = "noise"  # how training forces binary codes
    noise_std: float = 8.0  # binarize=noise: std of the Gaussian noise on the code logits (paper: 4)
    balance: bool = True  # batch-normalise the code logits without a shift (then a learned scale): no dead bits
    likelihood: Literal["auto", "bernoulli", "gaussian", "multinomial"] = "auto"  # auto: by data kind

    def validate(self) -> None:
        super().validate()
        if not 8 <= self.bits <= 128:
            raise UserError(f"bits must be between 8 and 128, got {self.bits}")
        if self.noise_std < 0:
            raise UserError("noise_std must not be negative")
        if self.arch == "conv" and (self.data_kind != "image" or len(self.input_shape) != 3):
            raise UserError("arch=conv needs image data (C, H, W); use arch=mlp")
        lik = self.resolved_likelihood
        if lik == "bernoulli" and self.data_kind != "image":
            raise UserError("likelihood=bernoulli needs values in [0, 1] (image data)")
        if lik == "multinomial" and (len(self.input_shape) != 1 or self.data_kind == "image"):
            raise UserError("likelihood=multinomial needs word counts (text data)")

    @property
    def resolved_likelihood(self) -> str:
        if self.likelihood != "auto":
            return self.likelihood
        return {"image": "bernoulli", "text": "multinomial"}.get(self.data_kind, "gaussian")


@register("hash")
class SemanticHash(Autoencoder):
    Config = HashConfig
    PRESETS = {"salakhutdinov2009": {"arch": "mlp", "widths": [500, 500], "decoder_widths": None, "bits": 128,
                                     "binarize": "noise", "noise_std": 4.0}}

    def __init__(self, config: HashConfig):
        super().__init__(config)
        c = config
        d = math.prod(c.input_shape)
        if c.arch == "mlp":
            self.encoder = mlp([d, *c.widths, c.bits], c.activation, norm=c.norm)
            dec = tuple(reversed(c.widths)) if c.decoder_widths is None else tuple(c.decoder_widths)
            self.decoder = mlp([c.bits, *dec, d], c.activation, norm=c.norm)
        else:
            enc = ConvEncoder(tuple(c.input_shape), tuple(c.channels), c.bits, c.activation, c.norm)
            self.encoder = enc
            self.decoder = ConvDecoder(c.bits, enc.feature_shape, tuple(c.channels), enc.sizes,
                                       c.input_shape[0], c.activation, c.norm)

        if c.balance:
            self.code_norm = nn.BatchNorm1d(c.bits, affine=False)
            self.code_scale = nn.Parameter(torch.full((c.bits,), c.noise_std or 1.0))

    # --- codes ------------------------------------------------------------------------------------
    def code_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, bits): the code units' total input; bit i is 1 where it is above 0."""
        if self.config.data_kind == "text":
            x = torch.log1p(x)
        h = self.encoder(x.flatten(1) if self.config.arch == "mlp" else x).float()
        return self.code_norm(h) * self.code_scale if self.config.balance else h

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bits (N, b) bool, continuous codes (N, b) in (0, 1)): the binary word and the code units'
        probabilities, which re-ranking compares."""
        logits = self.code_logits(x)
        return logits > 0, torch.sigmoid(logits)

    def encode(self, x: torch.Tensor) -> Encoded:
        return Encoded(z=(self.code_logits(x) > 0).float())

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.config.input_shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction's mean: pixels, values, or expected word counts (document length 1: word
        probabilities)."""
        out = self.decoder_output(z)
        lik = self.config.resolved_likelihood
        if lik == "bernoulli":
            return torch.sigmoid(out)
        return torch.softmax(out, dim=-1) if lik == "multinomial" else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rec = self.decode(self.encode(x).z)
        if self.config.resolved_likelihood == "multinomial":  # expected counts for the document's length
            rec = rec * x.sum(-1, keepdim=True)
        return rec

    # --- training ---------------------------------------------------------------------------------
    def train_code(self, logits: torch.Tensor) -> torch.Tensor:
        """The code the decoder sees while training."""
        c = self.config
        if c.binarize == "straight_through":
            soft = torch.sigmoid(logits)
            return (logits > 0).to(soft.dtype) + soft - soft.detach()
        if self.training and c.noise_std > 0:
            logits = logits + c.noise_std * torch.randn_like(logits)
        return torch.sigmoid(logits)

    def loss(self, batch: Batch, phase: str, step: int) -> LossOutput:
        x = batch.x
        logits = self.code_logits(x)
        out = self.decoder_output(self.train_code(logits))
        lik = self.config.resolved_likelihood
        if lik == "bernoulli":
            nll = bernoulli_nll(out, x)
        elif lik == "multinomial":
            nll = -(x * F.log_softmax(out.float(), dim=-1)).sum(-1)
        else:
            nll = squared_error(out, x)
        loss = nll.mean()
        with torch.no_grad():
            p = torch.sigmoid(logits)
            metrics = {"loss": loss.detach(),
                       # mean distance of the code units from the nearest of 0 and 1: 0 when fully binary
                       "code_binary_gap": torch.minimum(p, 1 - p).mean(),
                       # 1 - |2 * (fraction of ones) - 1| per bit, averaged: 1 when every bit is balanced, 0 when constant
                       "bit_balance": (1 - (2 * (logits > 0).float().mean(0) - 1).abs()).mean()}
            if lik == "multinomial":  # per-word perplexity of the reconstruction
                metrics["perplexity"] = torch.exp(nll.sum() / x.sum().clamp_min(1))
        return LossOutput(loss, metrics)
