"""Denoising and inpainting autoencoder.

Vincent et al., "Extracting and composing robust features with denoising autoencoders", ICML 2008:
corrupt x into x~ by a stochastic process q(x~ | x), and train the autoencoder to reconstruct the clean x
from x~. Corruption processes live in :mod:`aezoo.corrupt` (Gaussian, salt-and-pepper, masking noise as
in the paper; random boxes or strokes for inpainting).

Inpainting (``corruption=boxes:F`` or ``strokes:N``): the encoder is told where the holes are (the hole
mask is an extra input channel), the loss counts only the hole pixels, and the output keeps the known
pixels exactly: ``restored = hole * g(f(x~, hole)) + (1 - hole) * x``.

Differences from the paper: the paper's DAE has one sigmoid hidden layer (tied weights) and is a
pre-training step for a deep network; here a deep network is trained directly for restoration, which is
what users ask of a denoiser today. The default, ``arch="skip"``, is a convolutional encoder-decoder with
symmetric skip connections (Mao, Shen & Yang, "Image restoration using very deep convolutional
encoder-decoder networks with symmetric skip connections", NeurIPS 2016): three resolution levels of 16,
32 and 64 channels, the code a 32-channel map at a quarter of the resolution, and each level's encoder
features added back in the decoder, so fine detail need not pass through the code. In equal time it
restored better than the same code without skips (``arch="fullconv"``) and than wider levels, and
``fullconv`` better than a code vector (``arch="conv"``); see BENCHMARKS.md, "Restoration". As the paper
notes, with denoising the code need not be smaller than the input. A ``skip`` model restores items but
cannot decode a code alone. Preset ``inpaint`` uses a dense 128-number code (holes need global context);
preset ``vincent2008`` is the paper's single hidden layer of 1000 units with masking noise 25%.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..corrupt import Corruption, parse
from ..errors import UserError
from ..losses import squared_error
from ..nn import SkipConvNet, activation
from ..outputs import Batch, Encoded, LossOutput
from ..registry import register
from .ae import AE, AEConfig
from .base import Restorer, StepContext


@dataclass
class DAEConfig(AEConfig):
    # fullconv: the code is a feature map, no detail-losing bottleneck vector; skip: encoder-decoder with
    # symmetric skip connections (Mao et al. 2016), the code is the coarsest map
    arch: Literal["mlp", "conv", "fullconv", "skip"] = "skip"
    channels: tuple[int, ...] = (16, 32, 64)  # skip: channels of each resolution level; conv: of each stride-2 stage
    latent_dim: int = 32  # skip/fullconv: channels of the code (32 x H/4 x W/4); conv/mlp: size of the code vector
    corruption: str = "gaussian:0.2"  # KIND:AMOUNT, see aezoo.corrupt

    def validate(self) -> None:
        super().validate()
        if self.refine_steps:
            raise UserError("refine_steps applies to ae only (a dae's input is corrupted)")
        c = parse(self.corruption)
        if c.is_mask and (self.data_kind != "image" or len(self.input_shape) != 3):
            raise UserError(f"corruption {self.corruption} (inpainting) needs image data")


@register("dae")
class DAE(AE, Restorer):
    Config = DAEConfig
    # inpaint: a dense code sees the whole image, which filling large holes needs
    PRESETS = {"inpaint": {"corruption": "boxes:0.25", "arch": "conv", "channels": [32, 64], "latent_dim": 128},
               "vincent2008": {"corruption": "masking:0.25", "arch": "mlp", "widths": [1000], "latent_dim": 1000}}

    def __init__(self, config: DAEConfig, **given):
        super().__init__(config, **given)
        c = config
        if c.arch == "skip":
            out_channels = self.likelihood.out_shape(tuple(c.input_shape))[0]
            self.net = SkipConvNet(self.encoder_input_shape()[0], out_channels, tuple(c.channels), c.activation, c.norm)
            self.to_code = nn.Conv2d(c.channels[-1], c.latent_dim, 1)
            self.from_code = nn.Sequential(nn.Conv2d(c.latent_dim, c.channels[-1], 1), activation(c.activation))

    refines_codes = False  # its input is corrupted; refinement would fit the corruption

    @property
    def corruption(self) -> Corruption:
        return parse(self.config.corruption)

    @property
    def inpaints(self) -> bool:
        return self.corruption.is_mask

    def encoder_input_shape(self) -> tuple[int, ...]:
        c, *rest = self.config.input_shape
        return (c + 1, *rest) if parse(self.config.corruption).is_mask else tuple(self.config.input_shape)

    def _net_input(self, x: torch.Tensor, hole: torch.Tensor | None) -> torch.Tensor:
        if not self.inpaints:
            return x
        if hole is None:
            hole = torch.zeros_like(x[:, :1])
        return torch.cat([x * (1 - hole), hole], 1)

    def encode(self, x: torch.Tensor, hole: torch.Tensor | None = None) -> Encoded:
        if self.config.arch == "skip":
            h, skips = self.net.encode(self._net_input(x, hole))
            return Encoded(z=self.to_code(h), skips=skips)
        return super().encode(self._net_input(x, hole))

    @property
    def decodes_codes(self) -> bool:
        return self.config.arch != "skip"

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if not self.decodes_codes:
            raise UserError("a dae with arch=skip decodes with its encoder's skip features, not from a code "
                            "alone: restore items instead (aezoo denoise / inpaint)")
        return super().decode(z)

    def _output(self, x: torch.Tensor, hole: torch.Tensor | None) -> torch.Tensor:
        """Raw output (logits or means) for corrupted ``x``."""
        enc = self.encode(x, hole)
        if self.config.arch == "skip":
            return self.net.decode(self.from_code(enc.z), enc.skips)  # (B, C, H, W) of x's size
        return self.decoder_output(enc.z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.restore(x)

    def restore(self, x: torch.Tensor, hole: torch.Tensor | None = None, sigma=None) -> torch.Tensor:
        """The clean estimate of corrupted items ``x``; with inpainting, ``hole`` (B, 1, H, W) marks the
        missing pixels and the known ones are returned unchanged. It is not told the noise level
        (``sigma`` must be None)."""
        if sigma is not None:
            raise UserError(f"a {self.name} model is not told the noise level; --sigma applies to photo models")
        out = self.likelihood.mean(self._output(x, hole))
        if self.inpaints and hole is not None:
            out = hole * out + (1 - hole) * x
        return out

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        x = batch.x
        noisy, hole = self.corruption(x)
        out = self._output(noisy, hole)
        nll = self.likelihood.nll(out, x, hole)  # inpainting: only the holes count; denoising: every value (None)
        pred = self.likelihood.mean(out)
        restored = pred if hole is None else hole * pred + (1 - hole) * x
        loss = nll.mean()
        sse = squared_error(restored, x).mean()
        return LossOutput(loss, {"loss": loss.detach(), "restored_sse": sse.detach()})
