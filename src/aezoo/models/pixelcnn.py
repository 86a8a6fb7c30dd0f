"""Gated PixelCNN over a grid of discrete codes: the learned prior of a VQ-VAE.

van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu, "Conditional image generation with
PixelCNN decoders", NeurIPS 2016. The grid's joint distribution is factorised in raster order,
p(c) = prod_i p(c_i | c_<i), each factor a softmax over the K codes. Two stacks of masked convolutions
keep that order without the original PixelCNN's blind spot: a vertical stack that sees every row above
the current one, and a horizontal stack that sees the current row up to the current position and
receives the vertical stack's features shifted down by one row. Each layer uses the gated activation
tanh(W_f * x) . sigmoid(W_g * x); the horizontal stack has residual connections. The first layer
excludes the current position (mask "A"); later ones include it (mask "B"), since their input already
excludes the current code. Masks are implemented by padding and cropping, not by zeroed weights.

Trained as a second stage on the codes of a frozen VQ-VAE (``aezoo train pixelcnn --prior-of RUN_DIR``).
Defaults sized for 7x7 grids on a CPU: 64 channels, 8 gated layers of 3x3 kernels, whose receptive
field (8 rows up, 8 columns either side) covers the whole grid (the paper: 15 layers of 384 channels over
32x32 images); no class conditioning. Sampling keeps each layer's features of the positions drawn so
far, so a whole grid costs the arithmetic of about one forward pass (rerunning the network at every
position costs about H * W / 2), with exactly the same draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..outputs import Batch, LossOutput
from ..registry import register
from .base import ModelConfig, Prior, StepContext


@dataclass
class PixelCNNConfig(ModelConfig):
    num_codes: int = 512  # K: set from the VQ-VAE
    channels: int = 64
    layers: int = 8  # gated layers, the first with mask A
    kernel: int = 3  # odd; vertical kernels are (k//2 + 1) x k, horizontal 1 x (k//2 + 1)
    prior_of: str = ""  # the VQ-VAE run this prior belongs to (set by 'aezoo train pixelcnn --prior-of')

    def validate(self) -> None:
        if len(self.input_shape) != 2 or min(self.input_shape) < 1:
            raise UserError(f"pixelcnn models a grid of codes (H, W); got items of shape {tuple(self.input_shape)}")
        if self.num_codes < 2 or self.channels < 1 or self.layers < 1 or self.kernel < 1 or self.kernel % 2 == 0:
            raise UserError("pixelcnn needs num_codes >= 2, channels and layers >= 1, and an odd kernel")


class GatedLayer(nn.Module):
    def __init__(self, ch: int, k: int, first: bool):
        super().__init__()
        self.k, self.first = k, first
        self.v_conv = nn.Conv2d(ch, 2 * ch, (k // 2 + 1, k))
        self.v_to_h = nn.Conv2d(2 * ch, 2 * ch, 1)
        self.h_conv = nn.Conv2d(ch, 2 * ch, (1, k // 2 + 1))
        self.h_out = nn.Conv2d(ch, ch, 1)

    @staticmethod
    def gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.k
        # vertical: output (i, j) sees rows i - k//2 .. i (all columns within k//2)
        v_feat = self.v_conv(F.pad(v, (k // 2, k // 2, k // 2, 0)))
        # ... and the horizontal stack gets it shifted down one row: rows strictly above i
        v_down = F.pad(v_feat, (0, 0, 1, 0))[:, :, :-1]
        # horizontal: (i, j) sees columns j - k//2 .. j of row i; the first layer shifts right by one so
        # the current position is excluded (mask A)
        h_in = F.pad(h, (1, 0))[:, :, :, :-1] if self.first else h
        h_feat = self.h_conv(F.pad(h_in, (k // 2, 0, 0, 0)))
        h_new = self.h_out(self.gate(h_feat + self.v_to_h(v_down)))
        return self.gate(v_feat), (h_new if self.first else h + h_new)


@register("pixelcnn")
class PixelCNN(Prior):
    Config = PixelCNNConfig

    def __init__(self, config: PixelCNNConfig):
        super().__init__(config)
        c = config
        self.embed = nn.Embedding(c.num_codes, c.channels)
        self.layers = nn.ModuleList(GatedLayer(c.channels, c.kernel, i == 0) for i in range(c.layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c.channels, c.channels, 1), nn.ReLU(),
                                  nn.Conv2d(c.channels, c.num_codes, 1))

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W): logits of p(c_ij | codes before (i, j) in raster order)."""
        x = self.embed(codes.long()).permute(0, 3, 1, 2)
        v, h = x, x  # v may see the current row: it reaches h only shifted down by one row
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(codes) per item, in nats: (B,)."""
        lp = -F.cross_entropy(self.logits(codes).float(), codes.long(), reduction="none")
        return lp.flatten(1).sum(1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.logits(codes)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n grids of codes (n, H, W), drawn position by position; logits divided by ``temperature``.

        The same draws as running :meth:`logits` at every position (see the tests), for a fraction of the
        work: every layer keeps its features of the positions drawn so far, so each position computes one
        column of the horizontal stack per layer, and each finished row one row of the vertical stack."""
        (h, w), k2, c = self.config.input_shape, self.config.kernel // 2, self.config.channels
        dev, last = self.device, len(self.layers) - 1
        codes = torch.zeros(n, h, w, dtype=torch.long, device=dev)
        # per layer, its vertical input's last k2 + 1 rows, zero-padded as in GatedLayer.forward (rows above
        # the grid, k2 columns either side): (n, C, k2 + 1, W + 2 k2)
        v_in = [torch.zeros(n, c, k2 + 1, w + 2 * k2, device=dev) for _ in self.layers]
        v_feat = [torch.zeros(n, 2 * c, 1, w, device=dev) for _ in self.layers]  # the row above's (zeros at row 0)
        for i in range(h):
            from_v = [layer.v_to_h(f) for layer, f in zip(self.layers, v_feat)]  # (n, 2C, 1, W)
            # per layer, its horizontal input on row i, zero-padded on the left; the first layer's by one more
            # column, which shifts it right (mask A): (n, C, 1, W + k2 [+ 1])
            h_in = [torch.zeros(n, c, 1, w + k2 + (l == 0), device=dev) for l in range(last + 1)]
            for j in range(w):
                for l, layer in enumerate(self.layers):
                    h_feat = layer.h_conv(h_in[l][..., j : j + k2 + 1])  # (n, 2C, 1, 1): column j only
                    h_new = layer.h_out(layer.gate(h_feat + from_v[l][..., j : j + 1]))
                    out = h_new if l == 0 else h_in[l][..., j + k2 : j + k2 + 1] + h_new  # (n, C, 1, 1)
                    if l < last:
                        h_in[l + 1][..., j + k2] = out[..., 0]
                logits = self.head(out)[:, :, 0, 0].float() / temperature  # (n, K)
                codes[:, i, j] = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(1)
                h_in[0][:, :, 0, j + k2 + 1] = self.embed(codes[:, i, j])
            # row i is drawn: one more row of the vertical stack, layer by layer
            row = self.embed(codes[:, i]).permute(0, 2, 1)[:, :, None]  # (n, C, 1, W)
            for l, layer in enumerate(self.layers):
                v_in[l] = torch.cat([v_in[l][:, :, 1:], F.pad(row, (k2, k2))], 2)
                v_feat[l] = layer.v_conv(v_in[l])  # (n, 2C, 1, W)
                row = layer.gate(v_feat[l])
        return codes

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        codes = batch.x.long()
        nll = F.cross_entropy(self.logits(codes).float(), codes)  # nats per code
        return LossOutput(nll, {"loss": nll.detach(), "bits_per_code": nll.detach() / math.log(2)})
