"""Variational autoencoder.

Kingma & Welling, "Auto-encoding variational Bayes", ICLR 2014. An encoder gives q(z|x) = N(mu(x),
diag sigma^2(x)); with the reparameterisation z = mu + sigma * eps, eps ~ N(0, I), the evidence lower
bound ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || N(0, I)) is maximised by gradient ascent.

Options: ``beta`` weights the KL (Higgins et al. 2017); ``kl_warmup_steps`` ramps that weight from 0 to
``beta`` linearly (Sonderby et al. 2016); ``iw_samples = k > 1`` trains the importance-weighted bound
log (1/k) sum_i p(x, z_i) / q(z_i | x) instead (IWAE, Burda et al. 2016, eq. 8).
Likelihoods p(x|z) (:mod:`aezoo.nn.likelihood`): ``bernoulli`` (pixels in [0, 1]), ``gaussian`` with a
fixed variance (``gaussian_logvar``) or a learned per-value one (``learned_variance``), and ``logistic``: a
discretised logistic over 256 levels (Salimans et al. 2017).

Defaults follow the IWAE paper's one-stochastic-layer MNIST model: 784-200-200-50, tanh units.
Differences: Adam's default learning rate (1e-3) instead of the paper's schedule of 3^i passes with
decaying rates, to fit CPU budgets; a convolutional variant (``arch="conv"``) is offered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..errors import UserError
from ..nn import ConvDecoder, ConvEncoder, mlp
from ..nn.distributions import DiagonalGaussian, standard_normal_log_prob
from ..nn.likelihood import Likelihood, LikelihoodConfig, make_likelihood, resolve_likelihood
from ..outputs import Batch, Encoded, LossOutput
from ..registry import register
from . import parts
from .base import Autoencoder, ModelConfig, StepContext
from .parts import Part


@dataclass
class VAEConfig(ModelConfig, LikelihoodConfig):
    arch: Literal["mlp", "conv"] = "mlp"
    widths: tuple[int, ...] = (200, 200)  # IWAE paper, one stochastic layer
    channels: tuple[int, ...] = (32, 64)  # conv: channels of each stride-2 stage
    latent_dim: int = 50  # IWAE paper
    activation: str = "tanh"  # IWAE paper
    likelihood: Literal["auto", "bernoulli", "gaussian", "logistic"] = "auto"  # auto: bernoulli for images
    gaussian_logvar: float = 0.0  # gaussian: fixed log-variance of p(x|z) unless learned_variance
    learned_variance: bool = False  # gaussian: learn one log-variance per data value
    beta: float = 1.0  # weight of the KL term (1: the true ELBO)
    kl_warmup_steps: int = 0  # steps over which the KL weight rises linearly from 0 to beta
    iw_samples: int = 1  # k > 1: train the IWAE bound with k samples
    encoder: str | None = None  # your own encoder, by import path module:Name (None: arch's); see PARTS
    encoder_kwargs: dict = field(default_factory=dict)  # keyword arguments of its constructor
    decoder: str | None = None  # your own decoder, by import path (None: arch's)
    decoder_kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if self.latent_dim < 1 or self.iw_samples < 1 or self.beta < 0 or self.kl_warmup_steps < 0:
            raise UserError("latent_dim and iw_samples must be at least 1; beta and kl_warmup_steps not negative")
        if self.arch == "conv" and (self.data_kind != "image" or len(self.input_shape) != 3):
            raise UserError("arch=conv needs image data (C, H, W); use arch=mlp for vectors")
        resolve_likelihood(self)  # refuses a likelihood that does not fit the data


@register("vae")
class VAE(Autoencoder):
    Config = VAEConfig
    PRESETS = {"iwae": {"widths": [200, 200], "latent_dim": 50, "activation": "tanh", "iw_samples": 50},
               "kingma2014": {"widths": [500], "latent_dim": 20, "activation": "tanh"}}
    PARTS = {"encoder": Part("x -> the mean and log-variance of q(z|x), latent_dim each, concatenated",
                             takes=lambda m: m.config.input_shape, gives=lambda m: (2 * m.config.latent_dim,)),
             "decoder": Part("z -> the parameters of p(x|z): logits (bernoulli), means (gaussian), or means then "
                             "log-scales (logistic)", takes=lambda m: (m.config.latent_dim,),
                             gives=lambda m: m.out_shape, any_layout=True)}

    def __init__(self, config: VAEConfig, **given):
        super().__init__(config)
        c = config
        shape = tuple(c.input_shape)
        # what the decoder emits per item: 2 values per data value for the logistic (mean, log-scale), else 1
        self.out_shape = make_likelihood(c.resolved_likelihood).out_shape(shape)
        if c.arch == "mlp":
            self.encoder = parts.build(self, "encoder", given, lambda: mlp(
                [math.prod(shape), *c.widths, 2 * c.latent_dim], c.activation, flat_input=True))
            self.decoder = parts.build(self, "decoder", given, lambda: mlp(
                [c.latent_dim, *reversed(c.widths), math.prod(self.out_shape)], c.activation))
        else:
            enc = ConvEncoder(shape, tuple(c.channels), 2 * c.latent_dim, c.activation)  # its sizes shape the decoder
            self.encoder = parts.build(self, "encoder", given, lambda: enc)
            self.decoder = parts.build(self, "decoder", given, lambda: ConvDecoder(
                c.latent_dim, enc.feature_shape, tuple(c.channels), enc.sizes, self.out_shape[0], c.activation))
        if c.resolved_likelihood == "gaussian" and c.learned_variance:
            self.log_var = nn.Parameter(torch.full(shape, float(c.gaussian_logvar)))
        else:
            self.register_buffer("log_var", torch.full(shape, float(c.gaussian_logvar)), persistent=False)

    can_sample = True
    has_likelihood = True

    @property
    def likelihood(self) -> Likelihood:
        """p(x|z); built on use, as it reads ``log_var`` (a parameter or a buffer, replaced when moved)."""
        return make_likelihood(self.config.resolved_likelihood, log_var=self.log_var)

    @property
    def traversal_dims(self) -> int:
        return self.config.latent_dim

    # --- the model ----------------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        h = self.encoder(x)  # (B, 2 * latent_dim)
        mean, logvar = h.chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def encode(self, x: torch.Tensor) -> Encoded:
        q = self.posterior(x)
        return Encoded(z=q.mode(), posterior=q)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """(N, *out_shape): the parameters of p(x|z) (z: (N, D))."""
        return self.decoder(z).reshape(-1, *self.out_shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z)."""
        return self.likelihood.mean(self.decoder_output(z))

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per item; z (N, D) and x (N, ...)."""
        return -self.likelihood.nll(self.decoder_output(z), x)

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n draws of the decoder's mean at z ~ N(0, temperature^2 I)."""
        z = temperature * torch.randn(n, self.config.latent_dim, device=self.device)
        return self.decode(z)

    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i | x) for k draws z_i ~ q(z|x): (k, B). Their log-mean-exp is the
        IWAE bound; as k grows it tends to log p(x)."""
        q = self.posterior(x)
        z = q.sample(k)  # (k, B, D)
        b = x.shape[0]
        flat_z = z.reshape(k * b, -1)
        xk = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
        log_px = self.log_likelihood(flat_z, xk).view(k, b)
        return log_px + standard_normal_log_prob(z) - q.log_prob(z)

    # --- training -----------------------------------------------------------------------------------
    def kl_weight(self, step: int) -> float:
        c = self.config
        if c.kl_warmup_steps and step < c.kl_warmup_steps:
            return c.beta * step / c.kl_warmup_steps
        return c.beta

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        x = batch.x
        c = self.config
        if c.iw_samples > 1:
            log_w = self.log_importance_weights(x, c.iw_samples)
            bound = torch.logsumexp(log_w, 0) - math.log(c.iw_samples)  # (B,)
            loss = -bound.mean()
            return LossOutput(loss, {"loss": loss.detach(), "iwae_bound": bound.mean().detach()})
        q = self.posterior(x)
        z = q.sample()
        log_px = self.log_likelihood(z, x)
        kl = q.kl()
        loss = (-log_px + self.kl_weight(ctx.step_index) * kl).mean()
        elbo = (log_px - kl).mean()
        return LossOutput(loss, {"loss": loss.detach(), "elbo": elbo.detach(), "recon_nll": (-log_px).mean().detach(),
                                 "kl": kl.mean().detach()})
