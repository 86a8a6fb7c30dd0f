"""Vector quantisation with a learned codebook (van den Oord et al., "Neural discrete representation
learning", NeurIPS 2017).

Each D-dimensional encoder output z_e is replaced by its nearest codebook vector e_k (squared Euclidean
distance). Gradients pass straight through: the forward value is e_k, the backward gradient is the one
z_q received. The codebook is learned either by the loss ||sg[z_e] - e||^2 (``ema=False``) or by
exponential moving averages of the assigned encoder outputs (``ema=True``, the paper's appendix;
decay 0.99, Laplace smoothing of the counts). The commitment loss beta * ||z_e - sg[e]||^2 keeps the
encoder close to its codes. The codebook starts as random encoder outputs of the first training batch.
Codes whose decayed assignment count (vectors per batch) falls below ``dead_threshold`` (default 1)
are restarted on random encoder outputs of the current batch, a remedy for codebook collapse (Dhariwal
et al. 2020, Jukebox). The quantiser always computes in fp32, also under autocast. In a distributed run
the batch's counts and sums are summed over ranks, so the codebook follows the global batch; restarted
codes are rank 0's picks. On a GPU nothing is read back to the host per step (dead codes are restarted
with masks, not with their count).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import env


@dataclass
class Quantized:
    z_q: torch.Tensor  # (B, D, H, W) codebook vectors, straight-through gradient to z_e
    indices: torch.Tensor  # (B, H, W) int64
    loss: torch.Tensor  # codebook (unless EMA) + beta * commitment
    perplexity: torch.Tensor  # exp(entropy of the batch's code usage)
    usage: torch.Tensor  # fraction of the K codes used in the batch


class VectorQuantizer(nn.Module):
    def __init__(self, num_codes: int = 512, dim: int = 64, beta: float = 0.25, ema: bool = True,
                 decay: float = 0.99, eps: float = 1e-5, dead_threshold: float = 1.0):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.ema, self.decay, self.eps, self.dead_threshold = ema, decay, eps, dead_threshold
        init = torch.empty(num_codes, dim).uniform_(-1 / num_codes, 1 / num_codes)
        # decayed assignment counts: the EMA codebook's denominators, and how dead codes are found
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._started = False  # ``initialized`` was read once (never per step: on a GPU a read waits)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row of ``flat`` (N, D)."""
        e = self.codebook.float()
        d = (flat * flat).sum(1, keepdim=True) - 2 * flat @ e.t() + (e * e).sum(1)[None]
        return d.argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of ``indices`` (B, H, W) as (B, D, H, W)."""
        return self.codebook[indices].permute(0, 3, 1, 2).contiguous()

    def forward(self, z_e: torch.Tensor) -> Quantized:
        dev = z_e.device.type
        with torch.autocast(device_type=dev, enabled=False):
            z = z_e.float()
            b, d, h, w = z.shape
            flat = z.permute(0, 2, 3, 1).reshape(-1, d)
            if self.training and not self._started:
                if not self.initialized:
                    # data-dependent start: the codes are random encoder outputs of the first batch, so every
                    # code begins where the data is (a codebook far from the outputs collapses onto one code)
                    self.restart(torch.ones(self.num_codes, dtype=torch.bool, device=flat.device), flat.detach())
                    self.initialized.fill_(True)
                self._started = True
            idx = self.nearest(flat.detach())
            onehot = F.one_hot(idx, self.num_codes).type(flat.dtype)
            if self.training:
                self._update(flat.detach(), onehot)
            q = self.codebook[idx].float()
            commit = F.mse_loss(flat, q.detach())
            loss = self.beta * commit if self.ema else self.beta * commit + F.mse_loss(q, flat.detach())
            z_q_flat = flat + (q - flat).detach()  # straight-through
            z_q = z_q_flat.view(b, h, w, d).permute(0, 3, 1, 2)
            p = onehot.mean(0)
            perplexity = torch.exp(-(p * torch.log(p + 1e-10)).sum())
            usage = (p > 0).float().mean()
        return Quantized(z_q, idx.view(b, h, w), loss, perplexity.detach(), usage.detach())

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, onehot: torch.Tensor) -> None:
        """Training only: decay the counts; with EMA, move each code to its assigned outputs' running mean."""
        decay = self.decay
        counts, sums = onehot.sum(0), (onehot.t() @ flat if self.ema else None)
        if dist.is_available() and dist.is_initialized():  # a distributed run: the global batch's statistics
            both = torch.cat([counts[:, None], sums], 1) if self.ema else counts[:, None].clone()
            dist.all_reduce(both)
            counts, sums = both[:, 0], (both[:, 1:] if self.ema else None)
        self.ema_count.mul_(decay).add_(counts, alpha=1 - decay)
        if self.ema:
            self.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
            n = self.ema_count.sum()
            count = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n  # Laplace smoothing
            self.codebook.copy_(self.ema_sum / count[:, None])
        dead = self.ema_count < self.dead_threshold
        if env.host_reads_free(flat.device):  # the CPU: draws only when a code died (the CPU's fixed results)
            if dead.any():
                self.restart(dead, flat)
        else:  # a GPU: no read-back per step
            self._restart_masked(dead, flat)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._started = False  # read the loaded ``initialized`` again

    @torch.no_grad()
    def restart(self, dead: torch.Tensor, flat: torch.Tensor) -> None:
        """Move the ``dead`` codes onto random rows of ``flat`` (this batch's encoder outputs)."""
        k = int(dead.sum())
        pick = torch.randint(0, flat.shape[0], (k,), device=flat.device)
        self.codebook.data[dead] = flat[pick].to(self.codebook.dtype)
        # a restarted code must be assigned at least one vector in the next batch, or it moves again
        fresh = self.dead_threshold if self.dead_threshold > 0 else 1.0
        self.ema_count[dead] = fresh
        if self.ema:
            self.ema_sum[dead] = flat[pick] * fresh
        if dist.is_available() and dist.is_initialized():  # every rank restarts alike: rank 0's picks
            dist.broadcast(self.codebook.data, 0)
            if self.ema:
                dist.broadcast(self.ema_sum, 0)

    @torch.no_grad()
    def _restart_masked(self, dead: torch.Tensor, flat: torch.Tensor) -> None:
        """:meth:`restart` without reading ``dead`` back to the host: a pick for every code, kept where the
        code is dead (a draw per code and step, so a GPU run's random stream is not a CPU run's)."""
        pick = flat[torch.randint(0, flat.shape[0], (self.num_codes,), device=flat.device)]
        fresh = self.dead_threshold if self.dead_threshold > 0 else 1.0
        self.codebook.data.copy_(torch.where(dead[:, None], pick.to(self.codebook.dtype), self.codebook.data))
        self.ema_count.copy_(torch.where(dead, torch.full_like(self.ema_count, fresh), self.ema_count))
        if self.ema:
            self.ema_sum.copy_(torch.where(dead[:, None], pick * fresh, self.ema_sum))
        if dist.is_available() and dist.is_initialized():  # every rank alike: rank 0's picks
            dist.broadcast(self.codebook.data, 0)
            if self.ema:
                dist.broadcast(self.ema_sum, 0)
