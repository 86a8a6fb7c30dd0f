"""NVAE: a deep hierarchical VAE of residual cells.

Vahdat & Kautz, NeurIPS 2020 (arXiv:2007.03898), written from the paper (the authors' code is under a
non-commercial licence and was not used). Latent groups z_1..z_L at two or more scales: a bottom-up
encoder of residual cells gives one feature map per group; a top-down decoder of inverted residual cells
takes, group after group, the prior p(z_l | z_<l) from its state and the posterior relative to it
(residual normal, eq. 2, soft-clamped); each group's KL is analytic. Training (sec. 3.2, app. A): the KL
weight rises from ``kl_min`` to 1 over the first ``kl_warmup`` of the run (``StepContext.progress``: of
its planned steps or of its ``--max-minutes``, so a cut run ends on the full objective), with KL balancing
during the warm-up; a spectral penalty ``sr_lambda`` on every convolution and batch-norm scale; Adamax lr
1e-2, eps 1e-3, weight decay 3e-4 (the authors' script), warm-up then cosine decay (``TRAIN_DEFAULTS``).
Likelihood: Bernoulli for binary data, else a discretised logistic mixture. Sampling re-estimates the
decoder's batch-norm statistics from ``bn_samples`` draws at the temperature, as the paper does.

Preset ``vahdat2020-mnist`` is the paper's MNIST model (app. A, Table 6). The CPU default keeps its
structure at 16 initial channels, 2 groups per scale, decoder cells expanding 3x and no full-resolution
pre/post-processing cells, which cost most of a CPU step. NaN guards: soft clamping, fp32 densities, the
spectral penalty, clamped log-variances. It takes no networks of yours (no ``PARTS``): its encoder and
decoder are cells interleaved group by group with every group's prior and posterior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..nn.cells import DecoderCell, EncoderCell
from ..nn.distributions import DiagonalGaussian, residual_normal, soft_clamp
from ..nn.likelihood import Likelihood, LikelihoodConfig, make_likelihood, resolve_likelihood
from ..nn.spectral import SpectralPenalty
from ..outputs import Batch, Encoded, LossOutput
from ..registry import register
from .base import Autoencoder, ModelConfig, Optim, StepContext


@dataclass
class NVAEConfig(ModelConfig, LikelihoodConfig):
    channels: int = 16  # after the stem; doubled by every down-sampling (paper MNIST: 32)
    pre_blocks: int = 2  # down-sampling pre-processing blocks (and up-sampling post-processing ones)
    pre_cells: int = 0  # residual cells per pre-/post-processing block (paper: 2)
    scales: int = 2  # latent scales, the finest after the pre-processing, each next one half its size
    groups_per_scale: int = 2  # paper MNIST: 5
    latent_channels: int = 20  # channels of each latent group (paper MNIST: 20)
    cells_per_group: int = 1  # residual cells per group in the encoder and the decoder
    expand: int = 3  # decoder cells' 1x1 expansion (paper: 6)
    likelihood: Literal["auto", "bernoulli", "logistic_mixture"] = "auto"  # auto: bernoulli for 1 channel
    mixtures: int = 10  # logistic_mixture: components per value
    kl_warmup: float = 0.3  # fraction of the planned steps over which the KL weight rises to 1
    kl_min: float = 1e-4  # KL weight at step 0
    kl_balance: bool = True  # KL balancing across groups during the warm-up
    sr_lambda: float = 1e-2  # spectral regularisation weight (paper: 1e-2 for MNIST)
    bn_samples: int = 500  # draws that re-estimate the decoder's batch norm before sampling (0: keep)

    def validate(self) -> None:
        super().validate()
        if self.data_kind != "image" or len(self.input_shape) != 3:
            raise UserError("nvae needs image data (C, H, W)")
        if min(self.channels, self.scales, self.groups_per_scale, self.latent_channels, self.expand,
               self.mixtures) < 1 or min(self.pre_blocks, self.pre_cells, self.cells_per_group) < 0:
            raise UserError("nvae's channels, scales, groups, latent_channels, expand and mixtures must be "
                            "positive; pre_blocks, pre_cells and cells_per_group not negative")
        if not (0 <= self.kl_warmup <= 1 and 0 <= self.kl_min <= 1 and self.sr_lambda >= 0
                and self.bn_samples >= 0):
            raise UserError("kl_warmup and kl_min must be in [0, 1]; sr_lambda and bn_samples not negative")
        resolve_likelihood(self)  # refuses a likelihood that does not fit the data
        if self.top_size < 1:
            raise UserError(f"input {tuple(self.input_shape)} is too small for {self.factor}x down-sampling")

    @property
    def factor(self) -> int:
        """Total down-sampling from the (padded) input to the top scale."""
        return 2 ** (self.pre_blocks + self.scales - 1)

    @property
    def top_size(self) -> int:
        return min(self.input_shape[1:]) // self.factor


class _Down(nn.Module):
    """Halve the size, double the channels."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(F.silu(x))


class _Up(nn.Module):
    """Double the size (nearest), halve the channels."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c // 2, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _head(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))


@register("nvae")
class NVAE(Autoencoder):
    Config = NVAEConfig
    LR = 1e-2  # Adamax (paper); train.lr (--lr) replaces it
    PRESETS = {"vahdat2020-mnist": {"channels": 32, "pre_blocks": 2, "pre_cells": 2, "scales": 2, "expand": 6,
                                    "groups_per_scale": 5, "latent_channels": 20, "cells_per_group": 1,
                                    "sr_lambda": 1e-2, "kl_warmup": 0.3}}
    # The paper's optimisation: Adamax with a linear lr warm-up, then cosine decay (app. A)
    TRAIN_DEFAULTS = {"schedule": "cosine", "warmup_steps": 200, "min_lr_ratio": 0.01}

    can_sample = True
    has_likelihood = True

    def __init__(self, config: NVAEConfig):
        super().__init__(config)
        c = config
        cin, h, w = c.input_shape
        f = c.factor
        self.padded = (-(-h // f) * f, -(-w // f) * f)
        zc = c.latent_channels
        ch = c.channels
        # --- bottom-up encoder ---
        self.stem = nn.Conv2d(cin, ch, 3, padding=1)
        pre = []
        for _ in range(c.pre_blocks):
            pre += [EncoderCell(ch) for _ in range(c.pre_cells)] + [_Down(ch)]
            ch *= 2
        self.pre = nn.Sequential(*pre)
        self.enc_groups = nn.ModuleList()  # bottom-up order: finest scale first
        self.enc_downs = nn.ModuleList()
        scale_channels = []
        for s in range(c.scales):
            scale_channels.append(ch)
            for _ in range(c.groups_per_scale):
                self.enc_groups.append(nn.Sequential(*[EncoderCell(ch) for _ in range(c.cells_per_group)]))
            if s < c.scales - 1:
                self.enc_downs.append(_Down(ch))
                ch *= 2
        # --- top-down decoder: group l (top first) works at scale_of[l] ---
        self.scale_of = [s for s in reversed(range(c.scales)) for _ in range(c.groups_per_scale)]
        top_c = scale_channels[-1]
        top = (self.padded[0] // f, self.padded[1] // f)
        self.h0 = nn.Parameter(torch.zeros(1, top_c, *top))
        self.dec_cells = nn.ModuleList()
        self.priors = nn.ModuleList()
        self.posteriors = nn.ModuleList()
        self.combiners = nn.ModuleList()
        self.dec_ups = nn.ModuleList()
        for l, s in enumerate(self.scale_of):
            cs = scale_channels[s]
            self.dec_cells.append(nn.Sequential(*[DecoderCell(cs, c.expand) for _ in range(c.cells_per_group if l else 0)]))
            self.priors.append(_head(cs, 2 * zc) if l else nn.Identity())
            self.posteriors.append(_head(2 * cs, 2 * zc))
            self.combiners.append(nn.Conv2d(zc, cs, 1))
            if l + 1 < len(self.scale_of) and self.scale_of[l + 1] != s:
                self.dec_ups.append(_Up(cs))
        ch = scale_channels[0]
        post = []
        for _ in range(c.pre_blocks):
            post += [_Up(ch)] + [DecoderCell(ch // 2, c.expand) for _ in range(c.pre_cells)]
            ch //= 2
        self.post = nn.Sequential(*post)
        self.likelihood: Likelihood = make_likelihood(c.resolved_likelihood, mixtures=c.mixtures)
        self.out = _head(ch, self.likelihood.out_shape(tuple(c.input_shape))[0])  # 1 or 3 * mixtures per value
        self.group_sizes = [zc * (top[0] << (c.scales - 1 - s)) * (top[1] << (c.scales - 1 - s)) for s in self.scale_of]  # latent values per group
        self.spectral = SpectralPenalty([m for m in self.modules() if isinstance(m, nn.Conv2d)])
        self.decoder_norms = [m for part in (self.dec_cells, self.post) for m in part.modules()
                              if isinstance(m, nn.BatchNorm2d)]
        self.to(memory_format=torch.channels_last)  # 2-4x faster depthwise convolutions on CPU

    @property
    def latent_groups(self) -> int:
        return len(self.scale_of)

    # --- the two passes ------------------------------------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.padded[1] - w, 0, self.padded[0] - h))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's map for each group, in top-down order (top group first)."""
        h = self.pre(self.stem(self._pad(x).contiguous(memory_format=torch.channels_last)))
        feats = []
        g = 0
        for s in range(self.config.scales):
            for _ in range(self.config.groups_per_scale):
                h = self.enc_groups[g](h)
                feats.append(h)
                g += 1
            if s < self.config.scales - 1:
                h = self.enc_downs[s](h)
        return feats[::-1]

    def _prior(self, l: int, h: torch.Tensor) -> DiagonalGaussian:
        if l == 0:
            zero = torch.zeros(h.shape[0], self.config.latent_channels, *h.shape[2:], device=h.device)
            return DiagonalGaussian(zero, zero, event_dims=3)
        mean, logvar = self.priors[l](h).chunk(2, 1)
        return DiagonalGaussian(soft_clamp(mean.float()), soft_clamp(logvar.float()), event_dims=3)

    def top_down(self, n: int, feats: list[torch.Tensor] | None = None, *, keep: int | None = None,
                 temperature: float = 1.0, use_mean: bool = False, top: torch.Tensor | None = None):
        """Run the decoder for n items. Groups l < ``keep`` (all, given ``feats``) come from the posterior,
        the others from the prior at ``temperature`` (0: its mean); ``use_mean``: posterior means instead
        of draws; ``top``: a given top-group code. Returns (decoder output, [(q or None, p, z) per group])."""
        keep = (len(self.scale_of) if feats is not None else 0) if keep is None else keep
        h = self.h0.expand(n, -1, -1, -1)
        groups = []
        up = 0
        for l, s in enumerate(self.scale_of):
            h = self.dec_cells[l](h)
            p = self._prior(l, h)
            if l == 0 and top is not None:
                q, z = None, top.float()
            elif l < keep:
                dmean, dlogvar = self.posteriors[l](torch.cat([feats[l], h], 1)).chunk(2, 1)
                q = residual_normal(p, dmean, dlogvar)
                z = q.mean if use_mean else q.sample()
            else:
                q = None
                z = p.mean if temperature == 0 else p.mean + temperature * p.std * torch.randn_like(p.mean)
            groups.append((q, p, z))
            h = h + self.combiners[l](z.to(h.dtype))
            if l + 1 < len(self.scale_of) and self.scale_of[l + 1] != s:
                h = self.dec_ups[up](h)
                up += 1
        out = self.out(self.post(h))
        return out[..., : self.config.input_shape[1], : self.config.input_shape[2]], groups

    # --- the autoencoder interface ---------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Encoded:
        """The top group's posterior mean, a (latent_channels, H/f, W/f) map."""
        n = x.shape[0]
        _, groups = self.top_down(n, self.features(x), keep=1, temperature=0.0, use_mean=True)
        q = groups[0][0]
        return Encoded(z=q.mean, posterior=q)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """From a top-group code, the lower groups at their prior means (temperature 0)."""
        out, _ = self.top_down(z.shape[0], top=z, temperature=0.0)
        return self.likelihood.mean(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction from every group's posterior mean."""
        out, _ = self.top_down(x.shape[0], self.features(x), use_mean=True)
        return self.likelihood.mean(out)

    def reconstruct_groups(self, x: torch.Tensor, keep: int, temperature: float = 0.6) -> torch.Tensor:
        """The top ``keep`` groups from x's posterior means, the others drawn from the prior: what the
        top groups encode is what stays fixed across draws."""
        out, _ = self.top_down(x.shape[0], self.features(x), keep=keep, temperature=temperature, use_mean=True)
        return self.likelihood.mean(out)

    # --- sampling --------------------------------------------------------------------------------------
    @torch.no_grad()
    def readjust_norms(self, temperature: float, n: int | None = None, batch_size: int = 100) -> None:
        """Re-estimate the decoder's batch-norm statistics from ``n`` (``bn_samples``) draws at
        ``temperature`` (sec. 5 of the paper): training statistics come from posterior codes, and a
        lower temperature shifts them."""
        n = self.config.bn_samples if n is None else n
        if n == 0:
            return
        was = self.training
        self.eval()
        for m in self.decoder_norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the draws
            m.train()
        for i in range(0, n, batch_size):
            self.top_down(min(batch_size, n - i), temperature=temperature)
        for m in self.decoder_norms:
            m.momentum = 0.1
        self.train(was)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n draws, every group from its prior at ``temperature``, after re-estimating the batch-norm
        statistics at that temperature; the trained statistics are restored afterwards."""
        saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                 for m in self.decoder_norms]
        was = self.training
        try:
            self.readjust_norms(temperature)
            self.eval()
            out, _ = self.top_down(n, temperature=temperature)
        finally:
            self.train(was)
            for m, (mean, var, count) in zip(self.decoder_norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        return self.likelihood.mean(out)

    # --- likelihood bounds -----------------------------------------------------------------------------
    def _elbo_parts(self, x: torch.Tensor):
        out, groups = self.top_down(x.shape[0], self.features(x))
        log_px = -self.likelihood.nll(out, x)
        kls = torch.stack([q.kl(p) for q, p, _ in groups], 1)  # (B, L), analytic per group
        return log_px, kls

    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x, z) - log q(z | x) for k draws of every group: (k, B)."""
        b = x.shape[0]
        feats = [f.repeat(k, 1, 1, 1) for f in self.features(x)]  # the encoder is deterministic: run it once
        out, groups = self.top_down(k * b, feats)
        log_w = -self.likelihood.nll(out, x.repeat(k, *[1] * (x.dim() - 1)))
        for q, p, z in groups:
            log_w = log_w + p.log_prob(z) - q.log_prob(z)
        return log_w.view(k, b)

    @torch.no_grad()
    def group_kl(self, x: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
        """Mean KL (nats per item) of each group over the items x: (L,). Groups near 0 are inactive."""
        self.eval()
        total = torch.zeros(self.latent_groups)
        for i in range(0, len(x), batch_size):
            total += self._elbo_parts(x[i : i + batch_size].to(self.device))[1].sum(0).cpu()
        return total / len(x)

    # --- training ----------------------------------------------------------------------------------------
    def optimizers(self) -> dict[str, Optim]:
        return {"main": Optim(self.parameters(), kind="adamax", lr=self.LR, eps=1e-3, weight_decay=3e-4)}

    def kl_weight(self, progress: float) -> float:
        """beta at ``progress`` (0 to 1) of the run: from ``kl_min`` up to 1 at ``kl_warmup``."""
        c = self.config
        if c.kl_warmup == 0:
            return 1.0
        return max(c.kl_min, min(1.0, progress / c.kl_warmup))

    def balance(self, kls: torch.Tensor) -> torch.Tensor:
        """KL balancing coefficients gamma_l (L,), constants: each group's batch-mean KL over its size,
        normalised to sum to L."""
        per_value = (kls.detach().mean(0).abs() + 0.01) / torch.tensor(self.group_sizes, device=kls.device)
        return per_value * (len(per_value) / per_value.sum())

    def spectral_loss(self) -> torch.Tensor:
        """Sum of the largest singular values of the convolutions and of the batch norms' scales."""
        bn = [m.weight.abs().max() for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        return self.spectral() + torch.stack(bn).sum()

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        """Training: the warmed-up, balanced negative ELBO plus the spectral term; validation: the negative
        ELBO (its metrics only, without the spectral power iteration)."""
        c = self.config
        log_px, kls = self._elbo_parts(batch.x)
        kl = kls.sum(1)
        metrics = {"elbo": (log_px - kl).mean().detach(), "recon_nll": (-log_px).mean().detach(),
                   "kl": kl.mean().detach(), "active_groups": (kls.detach().mean(0) > 0.1).sum()}
        if not ctx.training:
            return LossOutput((-log_px + kl).mean(), metrics)
        beta = self.kl_weight(ctx.progress)
        weighted = kls * self.balance(kls) if c.kl_balance and beta < 1 else kls
        sr = self.spectral_loss()
        loss = (-log_px + beta * weighted.sum(1)).mean() + c.sr_lambda * sr
        return LossOutput(loss, {**metrics, "loss": loss.detach(), "kl_weight": beta, "spectral": sr.detach()})
