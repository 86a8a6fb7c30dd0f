"""Photo restorer: a fully convolutional denoiser or inpainter for photographs of any size.

Zhang, Zuo & Zhang, "FFDNet: Toward a fast and flexible solution for CNN-based image denoising", IEEE TIP
2018: the noisy picture is reshuffled into four half-resolution sub-images (``pixel_unshuffle``), a plain
stack of 3x3 convolutions and ReLUs runs at half resolution (four times cheaper than at full), and a map
of the noise level is an extra input, so one network handles every sigma it was trained on, is told the
sigma or estimates it, and a user can turn it up or down. From DnCNN (Zhang et al., IEEE TIP 2017), the
network predicts the noise and subtracts it (residual learning), which trains faster.

A network trained on colour data is the paper's colour FFDNet: the 3 channels at half resolution (12) and a
noise map per colour channel, 15 inputs; training noise has one sigma per picture in all channels (AWGN,
as the paper's benchmarks). Greyscale networks restore colour photographs channel by channel in an
orthonormal opponent colour space (luminance and two colour differences, as CBM3D does), where i.i.d.
noise stays i.i.d. with the same sigma.
Inpainting (``task="inpaint"``): the hole mask replaces the noise map, the known pixels are kept exactly,
and training holes are a mix of boxes, brush strokes and scattered pixels (salt-and-pepper impulses,
once detected, are such holes).

Preset ``zhang2018`` is the paper's greyscale network: 15 layers of 64 channels, sigma in [0, 75]/255;
``zhang2018_colour`` its colour network (for colour data): 12 layers of 96 channels, shallower and wider,
the paper's choice for using the dependencies between colour channels. The CPU default, grey or colour, is
12 layers of 64 channels (receptive field 50 pixels) and sigma in [0, 55]/255, for the noise levels that
are measured (15, 25, 50): for grey a fifth less compute than the paper's network, for colour 2.25x less
per layer (a colour picture then costs a third of going through the greyscale network in opponent
colours). Middle layers have batch normalisation, as in both papers: without it, the same network learnt
about half as fast here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..corrupt import Corruption, random_boxes, random_strokes
from ..errors import UserError
from ..outputs import Batch, LossOutput
from ..registry import register
from .base import ModelConfig, Optim, Restorer, StepContext

# Orthonormal opponent colour transform (rows: luminance, red-blue, green-magenta), and the scale and
# offset that bring each row's range into [0, 1] for a greyscale network.
_OPP = torch.tensor([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=torch.float32) / torch.tensor([[3**0.5], [2**0.5], [6**0.5]])
_SCALE = torch.tensor([1 / 3**0.5, 1 / 2**0.5, 6**0.5 / 4])
_SHIFT = torch.tensor([0.0, 0.5, 0.5])


def estimate_sigma(x: torch.Tensor) -> torch.Tensor:
    """Gaussian noise level of each picture (B, C, H, W) -> (B,): the median absolute finest diagonal Haar
    coefficient / 0.6745 (Donoho & Johnstone 1994), over all channels; a few lines, so no wavelet package."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    v = x[..., :h, :w].float()
    hh = (v[..., 0::2, 0::2] - v[..., 0::2, 1::2] - v[..., 1::2, 0::2] + v[..., 1::2, 1::2]) / 2
    return hh.abs().flatten(1).median(1).values / 0.6745


@dataclass
class PhotoConfig(ModelConfig):
    task: Literal["denoise", "inpaint"] = "denoise"
    depth: int = 12  # 3x3 convolutions, all at half resolution
    width: int = 64
    sigma_max: float = 55 / 255  # denoise: training sigma is uniform in [0, sigma_max] (values in [0, 1])
    hole_max: float = 0.25  # inpaint: largest box as a fraction of the crop; pixel holes up to this density
    batch_norm: bool = True  # in the middle layers (DnCNN, FFDNet); False: plain convolutions and ReLUs

    def validate(self) -> None:
        super().validate()
        if self.data_kind != "image" or len(self.input_shape) != 3:
            raise UserError("the photo model needs image data (e.g. --data patches:FOLDER)")
        if self.depth < 2 or self.width < 1:
            raise UserError(f"photo needs depth >= 2 and width >= 1, got {self.depth} and {self.width}")
        if not 0 < self.sigma_max <= 1 or not 0 < self.hole_max <= 1:
            raise UserError("sigma_max and hole_max must be in (0, 1]")


@register("photo")
class PhotoRestorer(Restorer):
    Config = PhotoConfig
    PRESETS = {"zhang2018": {"depth": 15, "width": 64, "sigma_max": 75 / 255},
               "zhang2018_colour": {"depth": 12, "width": 96, "sigma_max": 75 / 255},
               "inpaint": {"task": "inpaint"}}
    # Adam at 1e-3 as the papers, with a warm-up and a cosine decay (BENCHMARKS.md: the recipe's trials)
    TRAIN_DEFAULTS = {"batch_size": 32, "schedule": "cosine", "warmup_steps": 100, "min_lr_ratio": 0.02}

    def optimizers(self) -> dict[str, Optim]:
        return {"main": Optim(self.parameters(), lr=1e-3 if self.config.batch_norm else 4e-4)}

    any_size = True
    takes_sigma = True

    def __init__(self, config: PhotoConfig):
        super().__init__(config)
        c = config
        ch = 4 * c.input_shape[0]  # the picture at half resolution
        side = 4 if c.task == "inpaint" else c.input_shape[0]  # the hole mask at half resolution, or a noise map per channel
        layers: list[nn.Module] = [nn.Conv2d(ch + side, c.width, 3, padding=1), nn.ReLU()]
        for _ in range(c.depth - 2):  # batch normalisation in the middle layers, as both papers
            layers += [nn.Conv2d(c.width, c.width, 3, padding=1, bias=not c.batch_norm),
                       *([nn.BatchNorm2d(c.width)] if c.batch_norm else []), nn.ReLU()]
        layers.append(nn.Conv2d(c.width, ch, 3, padding=1))
        self.body = nn.Sequential(*layers)
        # He initialisation: torch's default shrinks the signal at each ReLU layer, and a plain stack this
        # deep then barely learns (measured: no gain over the noisy input after 100 steps)
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.body[-1].weight)  # the first estimate of the noise is none

    @property
    def inpaints(self) -> bool:
        return self.config.task == "inpaint"

    @property
    def corruption(self) -> Corruption:
        """The corruption ``aezoo eval`` measures with."""
        return Corruption("boxes", self.config.hole_max) if self.inpaints else Corruption("gaussian", 25 / 255)

    @property
    def receptive_field(self) -> int:
        """Pixels each output pixel sees, across."""
        return 2 * (2 * self.config.depth + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x``; an inpainter given no holes has nothing to fill."""
        return self.restore(x, torch.zeros_like(x[:, :1]) if self.inpaints else None)

    def _run(self, x: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        """Residual estimate of even-sized ``x`` (B, C, H, W) given the side input: the noise level map
        (B, C, H, W) or the hole mask (B, 1, H, W)."""
        side = F.pixel_unshuffle(side, 2)  # (B, 4 * channels, H/2, W/2)
        side = side.unflatten(1, (-1, 4)).mean(2) if not self.inpaints else side  # noise: one level per channel
        return F.pixel_shuffle(self.body(torch.cat([F.pixel_unshuffle(x, 2), side], 1)), 2)

    def _restore_direct(self, x: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        """``x`` with the model's own channels (greyscale, or colour for a colour network)."""
        h, w = x.shape[-2:]
        ph, pw = h % 2, w % 2
        if ph or pw:  # odd sizes: mirror one row / column, then drop it
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            side = F.pad(side, (0, pw, 0, ph), mode="replicate")
        if self.inpaints:
            x = x * (1 - side)
        return (x - self._run(x, side))[..., :h, :w]

    def restore(self, x: torch.Tensor, hole: torch.Tensor | None = None, sigma=None) -> torch.Tensor:
        """Restore pictures ``x`` (B, C, H, W) in [0, 1], any size. Denoising: ``sigma`` (a number or (B,),
        on the [0, 1] scale) is the noise level, estimated from each picture when None. Inpainting: ``hole``
        (B, 1, H, W) marks missing pixels; the others are returned unchanged."""
        c = self.config.input_shape[0]
        if self.inpaints:
            if hole is None:
                raise UserError("the inpainting model needs a hole mask")
            hole = hole.to(x.dtype)
        if x.shape[1] == c:
            out = self._restore_direct(x, self._side(x, hole, sigma))
        elif c == 1 and x.shape[1] == 3:  # colour through a greyscale network, in opponent colours
            out = self._restore_colour(x, hole, sigma)
        else:
            raise UserError(f"the model restores {c}-channel pictures, these have {x.shape[1]} channels")
        if hole is not None:
            out = hole * out + (1 - hole) * x
        return out

    def noise_level(self, x: torch.Tensor) -> torch.Tensor:
        """Estimated sigma (B,) of pictures ``x``: in a colour picture, from its two colour-difference
        channels (smoother than luminance, so less of the picture is mistaken for noise)."""
        if x.shape[1] == 3:
            return estimate_sigma(torch.einsum("kc,bchw->bkhw", _OPP.to(x), x)[:, 1:])
        return estimate_sigma(x)

    def _side(self, x: torch.Tensor, hole, sigma, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
        if self.inpaints:
            return hole
        b = x.shape[0]
        s = self.noise_level(x) if sigma is None else torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
        return (s * scale).to(x.dtype).view(b, 1, 1, 1).expand(b, x.shape[1], *x.shape[-2:])  # every channel alike

    def _restore_colour(self, x: torch.Tensor, hole, sigma) -> torch.Tensor:
        b, _, h, w = x.shape
        opp, scale, shift = (t.to(x.device, x.dtype) for t in (_OPP, _SCALE, _SHIFT))
        y = torch.einsum("kc,bchw->bkhw", opp, x) * scale.view(1, 3, 1, 1) + shift.view(1, 3, 1, 1)
        if not self.inpaints and sigma is None:  # i.i.d. RGB noise has the same sigma in opponent colours
            sigma = self.noise_level(x)
        flat = y.reshape(b * 3, 1, h, w)
        if self.inpaints:
            side = hole.repeat_interleave(3, 0)
        else:
            s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
            side = (s[:, None] * scale[None]).reshape(b * 3, 1, 1, 1).expand(b * 3, 1, h, w)
        out = self._restore_direct(flat, side).reshape(b, 3, h, w)
        out = (out - shift.view(1, 3, 1, 1)) / scale.view(1, 3, 1, 1)
        return torch.einsum("kc,bkhw->bchw", opp, out)  # the transform is orthonormal: its inverse is its transpose

    def _holes(self, x: torch.Tensor) -> torch.Tensor:
        """Training holes: per item, a box, brush strokes, or scattered pixels (a third each)."""
        b, _, h, w = x.shape
        f = self.config.hole_max
        kind = torch.randint(0, 3, (b, 1, 1, 1), device=x.device)
        boxes = random_boxes(b, h, w, f, x.device)
        strokes = random_strokes(b, h, w, 2, x.device)
        dots = (torch.rand(b, 1, h, w, device=x.device) < torch.rand(b, 1, 1, 1, device=x.device) * 2 * f).float()
        return torch.where(kind == 0, boxes, torch.where(kind == 1, strokes, dots))

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        x = batch.x
        if self.inpaints:
            side = self._holes(x)
            corrupted = x
        else:
            sigma = torch.rand(x.shape[0], 1, 1, 1, device=x.device) * self.config.sigma_max
            corrupted = x + sigma * torch.randn_like(x)  # not clipped, as in the papers' benchmarks
            side = sigma.expand(-1, x.shape[1], *x.shape[-2:])
        out = self._restore_direct(corrupted, side)
        if self.inpaints:
            out = side * out + (1 - side) * x
        err = (out - x).square().flatten(1).mean(1)
        loss = err.mean()
        psnr = (-10 * torch.log10(err.detach().clamp_min(1e-10))).mean()
        return LossOutput(loss, {"loss": loss.detach(), "psnr": psnr})
