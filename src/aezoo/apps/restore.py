"""Denoising and inpainting with a trained ``dae`` or ``photo`` model, or the shipped photo models.

A ``photo`` model is fully convolutional: a picture of any size goes through whole, or, when large, in
tiles whose margins cover the network's receptive field, so the result equals the whole-picture one (no
seams). For a ``dae``, a picture larger than the model's input (a 512x512 photograph from a model
trained on 28x28 or 32x32 patches) is cut into overlapping patches (stride: half a patch), each patch is
restored, and the patches are blended back with a smooth window, so no seams show. A model trained on one channel restores each
channel of a colour picture separately.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..models.base import Restorer


SHIPPED = {False: "photo-denoise", True: "photo-inpaint"}  # the models under aezoo/weights, by inpaint


def shipped_model(inpaint: bool) -> Restorer:
    """The pretrained photo denoiser or inpainter that ships with the package (see aezoo/weights/README.md)."""
    from importlib.resources import files

    from ..models.base import load_model

    where = files("aezoo") / "weights" / SHIPPED[inpaint]
    if not (where / "model.safetensors").is_file():
        raise UserError(f"the shipped {SHIPPED[inpaint]} model is not installed with this copy of aezoo; "
                        "give a run directory of 'aezoo train photo' instead")
    return load_model(str(where))


def impulse_mask(image: torch.Tensor) -> torch.Tensor:
    """Holes (1, H, W) where salt-and-pepper noise may have hit: pixels at pure black or white in any channel."""
    return ((image <= 0) | (image >= 1)).any(0, keepdim=True).float()


def require_restorer(model, run_dir: str, inpaint: bool) -> None:
    """Refuse, in one line, a run that is not a restorer of the asked kind (a denoiser given to inpaint)."""
    if not isinstance(model, Restorer):
        raise UserError(f"{run_dir} holds an {model.name!r} model, not a restoration model; train one with "
                        f"'aezoo train photo{' --preset inpaint' if inpaint else ''} --data patches:FOLDER ...' or "
                        f"'aezoo train dae --set corruption={'boxes:0.25' if inpaint else 'gaussian:0.2'} ...'")
    if inpaint and not model.inpaints:
        raise UserError(f"{run_dir} holds a {model.name} model trained to denoise ({model.corruption}), not to "
                        "inpaint; use 'aezoo denoise', or give an inpainting run")
    if not inpaint and model.inpaints:
        raise UserError(f"{run_dir} holds a {model.name} model trained to inpaint ({model.corruption}), not to "
                        "denoise; use 'aezoo inpaint', or give a denoising run")


def _window(h: int, w: int) -> torch.Tensor:
    # A raised-sine window, never exactly 0, so every pixel gets weight from some patch.
    wy = torch.sin(torch.pi * (torch.arange(h) + 0.5) / h)
    wx = torch.sin(torch.pi * (torch.arange(w) + 0.5) / w)
    return (wy[:, None] * wx[None, :]).clamp_min(1e-3)


@torch.no_grad()
def restore_image(model: Restorer, image: torch.Tensor, hole: torch.Tensor | None = None,
                  batch_size: int = 256, sigma: float | None = None, tile: int = 1024) -> torch.Tensor:
    """Restore one picture ``image`` (C, H, W) in [0, 1]; ``hole`` (1, H, W) marks missing pixels.
    ``sigma``: the noise level on the [0, 1] scale, for models told it (``photo``; else estimated)."""
    model.eval()
    if model.any_size:
        return _restore_tiled(model, image, hole, sigma, tile)
    if sigma is not None:
        raise UserError(f"a {model.name} model is not told the noise level; --sigma applies to photo models")
    mc, ph, pw = model.config.input_shape
    c, h, w = image.shape
    if c != mc:
        if mc == 1:  # a greyscale model restores each channel on its own
            return torch.cat([restore_image(model, image[i : i + 1], hole, batch_size) for i in range(c)])
        if c == 1:
            return restore_image(model, image.expand(mc, h, w), hole, batch_size).mean(0, keepdim=True)
        raise UserError(f"the model restores {mc}-channel images, the picture has {c} channels")
    dev = model.device
    x = image[None].to(dev)
    m = None if hole is None else hole[None].to(dev).float()
    if (h, w) == (ph, pw):
        return model.restore(x, m)[0].clamp(0, 1).cpu()
    # Pad (reflect where possible) to cover the picture with patches at stride half a patch.
    sh, sw = max(1, ph // 2), max(1, pw // 2)
    H = max(ph, ph + -(-(h - ph) // sh) * sh)
    W = max(pw, pw + -(-(w - pw) // sw) * sw)
    pad = (0, W - w, 0, H - h)
    mode = "reflect" if (W - w) < w and (H - h) < h else "replicate"
    xp = F.pad(x, pad, mode=mode)
    mp = None if m is None else F.pad(m, pad, mode="constant", value=0.0)
    cols = F.unfold(xp, (ph, pw), stride=(sh, sw))  # (1, C*ph*pw, L)
    patches = cols[0].T.reshape(-1, c, ph, pw)
    hole_patches = None if mp is None else F.unfold(mp, (ph, pw), stride=(sh, sw))[0].T.reshape(-1, 1, ph, pw)
    outs = []
    for i in range(0, len(patches), batch_size):
        hp = None if hole_patches is None else hole_patches[i : i + batch_size]
        outs.append(model.restore(patches[i : i + batch_size], hp).float())
    out = torch.cat(outs)  # (L, C, ph, pw)
    win = _window(ph, pw).to(out)
    summed = F.fold((out * win).reshape(len(out), -1).T[None], (H, W), (ph, pw), stride=(sh, sw))
    weight = F.fold(win.expand(len(out), 1, ph, pw).reshape(len(out), -1).T[None], (H, W), (ph, pw), stride=(sh, sw))
    result = (summed / weight)[0, :, :h, :w]
    if m is not None:  # known pixels stay exactly as given
        result = m[0] * result + (1 - m[0]) * x[0]
    return result.clamp(0, 1).cpu()


def _restore_tiled(model, image: torch.Tensor, hole, sigma, tile: int) -> torch.Tensor:
    """A fully convolutional model over ``image`` in tiles of ``tile`` pixels (even offsets) with margins
    of its receptive field: every output pixel sees what it would see in the whole picture."""
    dev = model.device
    x = image[None].to(dev)
    m = None if hole is None else hole[None].to(dev).float()
    if not model.inpaints and sigma is None:
        sigma = model.noise_level(x)  # once, from the whole picture: every tile is told the same
    _, _, h, w = x.shape
    tile += tile % 2  # even offsets: the half-resolution grid of every tile is the picture's
    margin = model.receptive_field // 2 + 2
    margin += margin % 2
    out = torch.empty_like(x)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            t0, l0 = max(0, top - margin), max(0, left - margin)
            t1, l1 = min(h, top + tile + margin), min(w, left + tile + margin)
            part = model.restore(x[..., t0:t1, l0:l1], None if m is None else m[..., t0:t1, l0:l1], sigma)
            out[..., top : top + tile, left : left + tile] = part[..., top - t0 : top - t0 + tile, left - l0 : left - l0 + tile]
    return out[0].clamp(0, 1).cpu()


def read_picture(path: str | Path, channels: int | None = None) -> torch.Tensor:
    """A picture file as (C, H, W) float32 in [0, 1]; greyscale files stay single-channel."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            grey = im.mode in ("L", "1", "LA", "I", "I;16", "F") if channels is None else channels == 1
            a = np.asarray(im.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"{path}: cannot read the image ({e})") from None
    return torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1).copy())


def to_pil(image: torch.Tensor):
    from PIL import Image

    a = (image.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
