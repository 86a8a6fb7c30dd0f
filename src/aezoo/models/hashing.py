"""Semantic hashing: an autoencoder whose code is a short binary word.

Salakhutdinov & Hinton, "Semantic hashing", International Journal of Approximate Reasoning 50 (2009).
The code layer has ``bits`` logistic units. In training, Gaussian noise is added to their total input
(the paper: variance 16, ``noise_std=4``): only a code far from 0.5 survives the noise, so the units
learn to saturate. At use, bit i is 1 where its logit is above 0, and similar items get codes a few bits
apart, which a hash table finds by looking up nearby codes (:mod:`aezoo.hashing`).

Differences from the paper, and why (the measurements are in BENCHMARKS.md, "Semantic hashing quality"):
- Trained from a random start with ReLU units, batch normalisation and Adam, instead of pre-trained RBMs
  fine-tuned by conjugate gradients: no pre-training stage, minutes on a CPU. Encoder 500-500 as the
  paper's 20-Newsgroups network (images, vectors); codes of 8 to 128 bits.
- A linear decoder (``decoder_widths=()``; the paper mirrors the encoder, ``None``): codes a few bits
  apart decode to similar outputs, so Hamming distance follows similarity (as in VDSH and NASH).
- Balanced bits (``balance``): the code logits are batch-normalised without a shift, then scaled by a
  learned per-bit factor, so each bit is on for about half the items and none is a wasted constant. Up
  to 16 bits they are ZCA-whitened instead (``whiten``; Huang et al., CVPR 2018): with few bits,
  correlated bits waste code space. Noise std 2 when whitened, else 8, which keeps more neighbours
  within Hamming radius 2 at long codes. On small collections try ``whiten=false``.
- Text: TF-IDF in (IDF from the training documents) and out (squared error) through a linear encoder, a
  binary autoencoder (Carreira-Perpinan & Raziperchikolaei, CVPR 2015); and each item's code must also
  reconstruct one of its ``neighbours=10`` nearest items, found by cosine after PCA to 32 dimensions
  (after NbrReg, Chaidaroon et al., SIGIR 2018), so similar items share codes. ``text_input="counts"``
  is the paper's model: log(1 + counts) in, softmax out, loss -sum_w n_w log p_w (the multinomial
  likelihood of its constrained-Poisson model).
- Images: Bernoulli likelihood; other vectors: squared error (:mod:`aezoo.nn.likelihood`).
Preset ``salakhutdinov2009``: log counts in (text), mirrored decoder, 128 bits, noise std 4, as the paper.
"""

from __future__ import annotations

import math

import numpy as np
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..nn import ConvDecoder, ConvEncoder, mlp
from ..nn.likelihood import Likelihood, LikelihoodConfig, make_likelihood, resolve_likelihood
from ..outputs import Batch, Encoded, LossOutput
from ..registry import register
from . import parts
from .base import Autoencoder, ModelConfig, StepContext
from .parts import Part


@dataclass
class HashConfig(ModelConfig, LikelihoodConfig):
    bits: int = 32  # code length, 8 to 128
    arch: Literal["mlp", "conv"] = "mlp"  # conv: image data
    widths: tuple[int, ...] | None = None  # encoder hidden layers; None: (500, 500) as the paper, () for TF-IDF text
    decoder_widths: tuple[int, ...] | None = ()  # decoder hidden layers; (): linear (default), None: mirror widths
    channels: tuple[int, ...] = (32, 64)  # conv: channels of each stride-2 stage
    activation: str = "relu"
    norm: Literal["none", "batch", "layer"] = "batch"
    noise_std: float | None = None  # std of the training noise on the code logits (paper: 4); None: 8, 2 if whitened
    balance: bool = True  # batch-normalise the code logits without a shift (then a learned scale): no dead bits
    whiten: bool | None = None  # balance by ZCA whitening instead (decorrelated bits); None: on up to 16 bits
    likelihood: Literal["auto", "bernoulli", "gaussian", "multinomial"] = "auto"  # auto: by data kind and text_input
    text_input: Literal["tfidf", "counts"] = "tfidf"  # text: TF-IDF vectors (L2-normalised) or log(1 + counts)
    neighbours: int | None = None  # each item also reconstructs one of its k nearest neighbours; None: 10 for text, else 0
    neighbour_dims: int = 32  # neighbours are found by cosine similarity after PCA to this many dimensions
    neighbour_weight: float = 1.0  # weight of the neighbour's reconstruction in the loss
    encoder: str | None = None  # your own encoder, by import path module:Name (None: arch's); see PARTS
    encoder_kwargs: dict = field(default_factory=dict)  # keyword arguments of its constructor
    decoder: str | None = None  # your own decoder, by import path (None: arch's)
    decoder_kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if not 8 <= self.bits <= 128:
            raise UserError(f"bits must be between 8 and 128, got {self.bits}")
        if self.noise_std is not None and self.noise_std < 0:
            raise UserError("noise_std must not be negative")
        if self.whiten and not self.balance:
            raise UserError("whiten=true balances the bits by whitening; it needs balance=true")
        if self.arch == "conv" and (self.data_kind != "image" or len(self.input_shape) != 3):
            raise UserError("arch=conv needs image data (C, H, W); use arch=mlp")
        if self.neighbours is not None and self.neighbours < 0:
            raise UserError("neighbours must be >= 0 (0: no neighbour reconstruction)")
        if self.neighbour_dims < 1:
            raise UserError("neighbour_dims must be >= 1")
        if self.neighbour_weight < 0:
            raise UserError("neighbour_weight must not be negative")
        resolve_likelihood(self, self.target_kind)  # refuses a likelihood that does not fit the data

    @property
    def target_kind(self) -> str:
        """What the decoder reconstructs: TF-IDF text is a real vector, counts stay text."""
        return "vector" if self.tfidf_text else self.data_kind

    @property
    def tfidf_text(self) -> bool:
        """True for text read as TF-IDF vectors (the model then holds the training documents' IDF)."""
        return self.data_kind == "text" and self.text_input == "tfidf"

    @property
    def resolved_widths(self) -> tuple[int, ...]:
        if self.widths is not None:
            return tuple(self.widths)
        return () if self.tfidf_text else (500, 500)

    @property
    def resolved_whiten(self) -> bool:
        if self.whiten is not None:
            return self.whiten
        return self.balance and self.bits <= 16

    @property
    def resolved_noise_std(self) -> float:
        if self.noise_std is not None:
            return self.noise_std
        return 2.0 if self.resolved_whiten else 8.0

    @property
    def resolved_neighbours(self) -> int:
        if self.neighbours is not None:
            return self.neighbours
        return 10 if self.data_kind == "text" else 0


@register("hash")
class SemanticHash(Autoencoder):
    Config = HashConfig
    PRESETS = {"salakhutdinov2009": {"arch": "mlp", "widths": [500, 500], "decoder_widths": None, "bits": 128,
                                     "noise_std": 4.0, "text_input": "counts", "neighbours": 0}}
    TFIDF_NORM = 10.0  # length of a TF-IDF input vector (unit length gave constant bits: BENCHMARKS.md)
    PARTS = {"encoder": Part("x (text: its TF-IDF vector or log counts) -> the code logits, bit i is 1 where above 0",
                             takes=lambda m: m.config.input_shape, gives=lambda m: (m.config.bits,)),
             "decoder": Part("code in (0, 1) -> the likelihood's parameters of each value (logits for bernoulli, "
                             "means for gaussian, word logits for multinomial)", takes=lambda m: (m.config.bits,),
                             gives=lambda m: m.out_shape, any_layout=True)}

    def __init__(self, config: HashConfig, **given):
        super().__init__(config)
        c = config
        d = math.prod(c.input_shape)
        self.likelihood: Likelihood = make_likelihood(c.resolved_likelihood)
        self.out_shape = self.likelihood.out_shape(tuple(c.input_shape))  # what the decoder emits per item
        if c.arch == "mlp":
            widths = c.resolved_widths
            self.encoder = parts.build(self, "encoder", given, lambda: mlp(
                [d, *widths, c.bits], c.activation, norm=c.norm, flat_input=True))
            dec = tuple(reversed(widths)) if c.decoder_widths is None else tuple(c.decoder_widths)
            self.decoder = parts.build(self, "decoder", given, lambda: mlp(
                [c.bits, *dec, math.prod(self.out_shape)], c.activation, norm=c.norm))
        else:
            enc = ConvEncoder(tuple(c.input_shape), tuple(c.channels), c.bits, c.activation, c.norm)
            self.encoder = parts.build(self, "encoder", given, lambda: enc)  # its sizes shape the decoder
            self.decoder = parts.build(self, "decoder", given, lambda: ConvDecoder(
                c.bits, enc.feature_shape, tuple(c.channels), enc.sizes, self.out_shape[0], c.activation, c.norm))

        if c.balance:
            self.code_norm = Whitening(c.bits) if c.resolved_whiten else nn.BatchNorm1d(c.bits, affine=False)
            self.code_scale = nn.Parameter(torch.full((c.bits,), c.resolved_noise_std or 1.0))
        if self.config.tfidf_text:
            # inverse document frequencies of the training documents, set by prepare() and saved with the model
            self.register_buffer("idf", torch.ones(d))
        self._neighbours: torch.Tensor | None = None  # (N, k) positions in the training split; not saved
        self._train_x: torch.Tensor | None = None

    # --- data-dependent state ---------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, train) -> None:
        """IDF weights of the training documents (text, ``text_input="tfidf"``) and, when neighbour
        reconstruction is on, each training item's ``neighbours`` nearest training items."""
        from sklearn.feature_extraction.text import TfidfTransformer

        c = self.config
        if self.config.tfidf_text:
            idf = TfidfTransformer().fit(train.x.numpy()).idf_  # smooth idf: ln((1 + n) / (1 + df)) + 1
            self.idf.copy_(torch.from_numpy(idf).to(self.idf))
        k = c.resolved_neighbours
        self._neighbours, self._train_x = None, None
        if k and c.neighbour_weight > 0:
            feats = torch.cat([self.input_features(train.x[i : i + 4096].to(self.device)).flatten(1).cpu()
                               for i in range(0, len(train), 4096)])
            self._neighbours = torch.from_numpy(nearest_neighbours(feats.numpy(), k, c.neighbour_dims))
            self._train_x = train.x

    def input_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, *input_shape): what the encoder reads (and, for TF-IDF text, what the decoder reconstructs)."""
        c = self.config
        if c.data_kind == "text":
            if c.text_input == "counts":
                return torch.log1p(x)
            return F.normalize(x * self.idf, dim=-1) * self.TFIDF_NORM
        return x  # items as they are (the MLP encoder flattens them)

    binary_codes = True

    # --- codes ------------------------------------------------------------------------------------
    def code_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, bits): the code units' total input; bit i is 1 where it is above 0."""
        h = self.encoder(self.input_features(x)).float()
        return self.code_norm(h) * self.code_scale if self.config.balance else h

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bits (N, b) bool, continuous codes (N, b) in (0, 1)): the binary word and the code units'
        probabilities, which re-ranking compares."""
        logits = self.code_logits(x)
        return logits > 0, torch.sigmoid(logits)

    def encode(self, x: torch.Tensor) -> Encoded:
        return Encoded(z=(self.code_logits(x) > 0).float())

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).reshape(-1, *self.out_shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction: pixels, values, or for text the words' proportions (expected counts of a
        one-word document). A TF-IDF reconstruction becomes proportions by dividing out the IDF weights
        (negative values clipped to 0; a reconstruction with no positive value at all gives every word the
        same share, so proportions always sum to 1)."""
        out = self.decoder_output(z)
        if self.config.tfidf_text and self.likelihood.name == "gaussian":
            tf = (out / self.idf).clamp_min(0)
            total = tf.sum(-1, keepdim=True)
            tf = torch.where(total == 0, torch.ones_like(tf), tf)  # (a NaN stays NaN: the run's checks see it)
            return tf / tf.sum(-1, keepdim=True)
        return self.likelihood.mean(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rec = self.decode(self.encode(x).z)
        if self.config.data_kind == "text":  # expected counts for the document's length
            rec = rec * x.sum(-1, keepdim=True)
        return rec

    # --- training ---------------------------------------------------------------------------------
    def train_code(self, logits: torch.Tensor) -> torch.Tensor:
        """The code the decoder sees: sigmoid(logits + noise) in training, sigmoid(logits) in eval."""
        std = self.config.resolved_noise_std
        if self.training and std > 0:
            logits = logits + std * torch.randn_like(logits)
        return torch.sigmoid(logits)

    def reconstruction_nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(N,) negative log-likelihood (or squared error) of items ``x`` under decoder outputs ``out``."""
        if self.config.data_kind == "text" and self.likelihood.name == "gaussian":
            x = self.input_features(x)  # the TF-IDF vector (or log counts) the encoder reads
        return self.likelihood.nll(out, x.reshape(out.shape))

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        x = batch.x
        logits = self.code_logits(x)
        out = self.decoder_output(self.train_code(logits))
        nll = self.reconstruction_nll(out, x)
        loss = nll.mean()
        extra = {}
        if self.training and self._neighbours is not None and batch.index is not None:
            # Neighbour reconstruction: the code of an item must also reconstruct a random one of its nearest
            # neighbours, so similar items are pushed towards the same code.
            table = self._neighbours[batch.index.cpu()]
            pick = torch.randint(table.shape[1], (len(table),), device="cpu")
            x_nbr = self._train_x[table[torch.arange(len(table)), pick]].to(x.device, x.dtype)
            nbr_nll = self.reconstruction_nll(out, x_nbr).mean()
            loss = loss + self.config.neighbour_weight * nbr_nll
            extra["neighbour_loss"] = nbr_nll.detach()
        with torch.no_grad():
            p = torch.sigmoid(logits)
            metrics = {"loss": loss.detach(),
                       # mean distance of the code units from the nearest of 0 and 1: 0 when fully binary
                       "code_binary_gap": torch.minimum(p, 1 - p).mean(),
                       # 1 - |2 * (fraction of ones) - 1| per bit, averaged: 1 when every bit is balanced, 0 when constant
                       "bit_balance": (1 - (2 * (logits > 0).float().mean(0) - 1).abs()).mean()}
            if self.config.resolved_likelihood == "multinomial":  # per-word perplexity of the reconstruction
                metrics["perplexity"] = torch.exp(nll.sum() / x.sum().clamp_min(1))
            metrics.update(extra)
        return LossOutput(loss, metrics)


class Whitening(nn.Module):
    """ZCA whitening of a batch of vectors: x -> (x - mean) C^(-1/2), with C the batch covariance (plus
    ``eps`` I), so the outputs have zero mean, unit variance and no correlation. Decorrelated batch
    normalisation (Huang et al., "Decorrelated batch normalization", CVPR 2018); gradients flow through the
    eigendecomposition. In eval mode it applies running averages of the mean and of the whitening matrix.
    Computed in float32, also under autocast."""

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-3):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_whiten", torch.eye(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            if not self.training:
                return (x - self.running_mean) @ self.running_whiten
            if len(x) < 2:
                raise UserError("whitened codes need training batches of at least 2 items")
            mean = x.mean(0)
            xc = x - mean
            cov = xc.T @ xc / len(x) + self.eps * torch.eye(x.shape[1], device=x.device)
            eigval, eigvec = torch.linalg.eigh(cov)
            w = (eigvec * eigval.clamp_min(1e-5).rsqrt()) @ eigvec.T
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_whiten.lerp_(w, self.momentum)
            return xc @ w


def nearest_neighbours(features: np.ndarray, k: int, dims: int) -> np.ndarray:
    """(N, k) int64: for each row of ``features`` (N, D), the k most similar other rows by cosine
    similarity after PCA to ``dims`` dimensions (FAISS: ``PCAMatrix``, then exact inner-product search of
    the L2-normalised projections). The row itself is left out, even when it has duplicates."""
    import faiss

    x = np.ascontiguousarray(features, dtype=np.float32)
    n, d = x.shape
    k = min(k, n - 1)
    if k < 1:
        raise UserError("neighbour reconstruction needs at least 2 training items")
    if dims < d:
        pca = faiss.PCAMatrix(d, dims)
        pca.train(x)
        x = pca.apply(x)
    faiss.normalize_L2(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, found = index.search(x, k + 1)
    not_self = found != np.arange(n)[:, None]
    order = np.argsort(~not_self, axis=1, kind="stable")  # the row itself (if found) moves to the end
    return np.take_along_axis(found, order, axis=1)[:, :k].astype(np.int64)
