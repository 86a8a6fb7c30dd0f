"""VQ-VAE: discrete codebook latents.

van den Oord, Vinyals & Kavukcuoglu, "Neural discrete representation learning", NeurIPS 2017. The
encoder maps an image to a grid of D-dimensional vectors; each is snapped to the nearest of K codebook
vectors (:class:`~aezoo.nn.quantize.VectorQuantizer`), and the decoder reconstructs from the snapped
grid. Loss: reconstruction error + codebook loss (or EMA updates) + beta * commitment loss, with the
straight-through gradient. A VQ-VAE alone cannot generate: a prior over the grid of code indices, the
gated PixelCNN (``pixelcnn``), is trained afterwards on the codes of the frozen model
(``aezoo train pixelcnn --prior-of RUN_DIR --out PRIOR_DIR``); loading the run then attaches it, and
``sample`` draws codes from it and decodes them.

Architecture as in the paper: two stride-2 4x4 convolutions, a 3x3 convolution and two residual blocks
(ReLU, 3x3 conv, ReLU, 1x1 conv), then a 1x1 convolution to D; the decoder mirrors it with transposed
convolutions. A 28x28 image becomes a 7x7 grid of codes. Paper defaults: K = 512, beta = 0.25, EMA
decay 0.99. Differences, for CPU budgets: ``hidden = 64`` channels (paper 256) and D = 16 (paper 64 in
the published code); reconstruction error is the mean squared error (a Gaussian likelihood with fixed
variance, as the paper) or, on request, Bernoulli cross-entropy, each averaged over the item's values
(:mod:`aezoo.nn.likelihood`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..errors import UserError
from ..nn.likelihood import Likelihood, LikelihoodConfig, make_likelihood, resolve_likelihood
from ..nn.quantize import VectorQuantizer
from ..outputs import Batch, Encoded, LossOutput
from ..registry import register
from . import parts
from .base import Autoencoder, ModelConfig, StepContext
from .parts import Part

PRIOR_DIR = "prior"  # in a VQ-VAE run: a copy of its PixelCNN prior (config.json, model.safetensors)


@dataclass
class VQVAEConfig(ModelConfig, LikelihoodConfig):
    hidden: int = 64  # channels of the convolutions (paper: 256)
    res_blocks: int = 2  # residual blocks in encoder and decoder (paper: 2)
    num_codes: int = 512  # K (paper: 512)
    code_dim: int = 16  # D
    beta: float = 0.25  # commitment cost (paper: 0.25)
    ema: bool = True  # learn the codebook by exponential moving averages (paper's appendix) or by the loss
    decay: float = 0.99  # EMA decay (paper: 0.99)
    dead_threshold: float = 1.0  # restart codes assigned fewer vectors per batch than this (decayed count)
    likelihood: Literal["gaussian", "bernoulli"] = "gaussian"  # gaussian: mean squared error
    encoder: str | None = None  # your own encoder, by import path module:Name (None: the paper's); see PARTS
    encoder_kwargs: dict = field(default_factory=dict)  # keyword arguments of its constructor
    decoder: str | None = None  # your own decoder, by import path (None: the paper's)
    decoder_kwargs: dict = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        if self.data_kind != "image" or len(self.input_shape) != 3:
            raise UserError("vqvae needs image data (C, H, W)")
        _, h, w = self.input_shape
        if h % 4 or w % 4:
            raise UserError(f"vqvae halves the image twice: height and width must be multiples of 4, got {h}x{w}")
        if self.num_codes < 2 or self.code_dim < 1 or self.hidden < 2 or self.res_blocks < 0:
            raise UserError("num_codes must be at least 2, code_dim and hidden positive")
        if not 0 < self.decay < 1 or self.beta < 0:
            raise UserError("decay must be in (0, 1) and beta not negative")
        resolve_likelihood(self)

    @property
    def grid(self) -> tuple[int, int]:
        return self.input_shape[1] // 4, self.input_shape[2] // 4


class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), the paper's residual block."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, x):
        return x + self.body(x)


@register("vqvae")
class VQVAE(Autoencoder):
    Config = VQVAEConfig
    PRESETS = {"oord2017": {"hidden": 256, "num_codes": 512, "code_dim": 64, "beta": 0.25, "ema": True, "decay": 0.99}}
    PARTS = {"encoder": Part("x -> a grid of vectors, each snapped to the nearest code",
                             takes=lambda m: m.config.input_shape, gives=lambda m: (m.config.code_dim, *m.config.grid)),
             "decoder": Part("the snapped grid -> logits (bernoulli) or means (gaussian) of each value",
                             takes=lambda m: (m.config.code_dim, *m.config.grid),
                             gives=lambda m: m.likelihood.out_shape(tuple(m.config.input_shape)))}

    def __init__(self, config: VQVAEConfig, **given):
        super().__init__(config)
        c = config
        hd = c.hidden
        self.likelihood: Likelihood = make_likelihood(c.resolved_likelihood)
        out_ch = self.likelihood.out_shape(tuple(c.input_shape))[0]  # decoder outputs: one per input channel
        self.encoder = parts.build(self, "encoder", given, lambda: nn.Sequential(
            nn.Conv2d(c.input_shape[0], hd // 2, 4, 2, 1), nn.ReLU(), nn.Conv2d(hd // 2, hd, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(hd, hd, 3, padding=1), *[ResBlock(hd) for _ in range(c.res_blocks)], nn.ReLU(),
            nn.Conv2d(hd, c.code_dim, 1)))
        self.quantizer = VectorQuantizer(c.num_codes, c.code_dim, c.beta, c.ema, c.decay,
                                         dead_threshold=c.dead_threshold)
        self.decoder = parts.build(self, "decoder", given, lambda: nn.Sequential(
            nn.Conv2d(c.code_dim, hd, 3, padding=1), *[ResBlock(hd) for _ in range(c.res_blocks)], nn.ReLU(),
            nn.ConvTranspose2d(hd, hd // 2, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(hd // 2, out_ch, 4, 2, 1)))
        self._prior = []  # [(pixelcnn, prior_dir)] once attached; a list keeps it out of the state dict

    discrete_codes = True

    # --- codes ------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Encoded:
        """z: the quantised grid (B, D, H/4, W/4)."""
        return Encoded(z=self.quantizer(self.encoder(x)).z_q)

    def code_indices(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H/4, W/4) indices of the nearest codes."""
        z = self.encoder(x).float()
        b, d, h, w = z.shape
        return self.quantizer.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)

    def decoder_output(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_q)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Snap z (B, D, h, w) to the codebook, then decode; codebook vectors decode as they are."""
        q = self.quantizer.nearest(z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
        return self.decode_indices(q.view(z.shape[0], *z.shape[2:]))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder_output(self.quantizer.lookup(indices))).clamp(0, 1)  # pixels

    # --- the prior --------------------------------------------------------------------------------
    @property
    def prior(self):
        return self._prior[0][0] if self._prior else None

    @property
    def can_sample(self) -> bool:
        return self.prior is not None

    def _apply(self, fn, recurse=True):
        """``to``, ``cuda``, ``float``...: the prior (outside the module tree) moves with the model."""
        super()._apply(fn, recurse)
        if self._prior:
            self._prior[0][0]._apply(fn, recurse)
        return self

    def set_prior(self, pixelcnn, prior_dir: str | None = None) -> None:
        if tuple(pixelcnn.config.input_shape) != self.config.grid or pixelcnn.config.num_codes != self.config.num_codes:
            raise UserError(f"the prior models {pixelcnn.config.num_codes} codes on a {tuple(pixelcnn.config.input_shape)} "
                            f"grid; this VQ-VAE has {self.config.num_codes} codes on {self.config.grid}")
        self._prior = [(pixelcnn.to(self.device).eval(), prior_dir)]

    def attach(self, directory: Path) -> None:
        """The prior copied into the run's own ``prior/`` folder, if any (nothing outside the run is read)."""
        from .base import load_model

        target = Path(directory) / PRIOR_DIR
        if (target / "model.safetensors").is_file():
            self.set_prior(load_model(target), str(target))

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        if self.prior is None:
            raise UserError("this VQ-VAE has no prior yet; train one: aezoo train pixelcnn --prior-of RUN_DIR --out PRIOR_DIR")
        return self.decode_indices(self.prior.sample(n, temperature=temperature))

    # --- training ---------------------------------------------------------------------------------
    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        x = batch.x
        q = self.quantizer(self.encoder(x))
        out = self.decoder_output(q.z_q)
        rec = self.likelihood.nll(out, x).mean() / x[0].numel()  # per value: gaussian, the mean squared error
        loss = rec + q.loss
        return LossOutput(loss, {"loss": loss.detach(), "recon": rec.detach(), "vq_loss": q.loss.detach(),
                                 "perplexity": q.perplexity, "code_usage": q.usage})
