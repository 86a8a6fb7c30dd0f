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
SHIPPED_COLOUR = "photo-denoise-colour"  # the denoiser of colour pictures
SHIPPED_FROM = "the shipped photo model"


def shipped_name(inpaint: bool, colour: bool = False) -> str:
    """The folder under aezoo/weights of the shipped model for the task: the colour denoiser for colour
    pictures (the inpainter is greyscale: colour goes through it in opponent colours)."""
    return SHIPPED_COLOUR if colour and not inpaint else SHIPPED[inpaint]


def shipped_model(inpaint: bool, colour: bool = False) -> Restorer:
    """The pretrained photo denoiser or inpainter that ships with the package (see aezoo/weights/README.md);
    ``colour``: the one for colour pictures (:func:`shipped_name`)."""
    from importlib.resources import files

    from ..models.base import load_model

    name = shipped_name(inpaint, colour)
    where = files("aezoo") / "weights" / name
    if not (where / "model.safetensors").is_file():
        raise UserError(f"the shipped {name} model is not installed with this copy of aezoo; "
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


# --- the restoration commands (aezoo denoise / inpaint): inputs, corruption, holes, output names ------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def open_restorer(inputs: list[str], inpaint: bool, data: bool) -> tuple[Restorer, str, list[str]]:
    """(model, where it came from, the image inputs): a run directory given first, else the shipped model."""
    from ..models.base import load_model

    if inputs and Path(inputs[0]).is_dir():
        model = load_model(inputs[0])
        require_restorer(model, inputs[0], inpaint)
        return model, inputs[0], inputs[1:]
    if data:
        raise UserError("--data needs a run directory first: the model trained on that data")
    return shipped_model(inpaint), SHIPPED_FROM, inputs


def read_for(model: Restorer, path: str | Path) -> torch.Tensor:
    """A picture file read as the model restores it: colour for a colour model, else as the file is."""
    c = model.config.input_shape[0]
    return read_picture(path, 3 if c == 3 else None)


def restore_split(model: Restorer, run_dir: str, corruption, data_spec: str, data_dir: str | None = None,
                  split: str = "test", n: int = 12, seed: int = 0, progress: bool = True):
    """Corrupt a dataset split, restore it: (metrics over the whole split, a corrupted / restored / clean
    grid of its first ``n`` items as a picture)."""
    from ..eval import corrupt_fixed, restoration_metrics, restore_batched
    from ..models.run import open_run
    from ..report import image_grid, to_images

    _, data = open_run(run_dir, data_spec, data_dir, progress)
    x = data.split(split).x
    metrics = {"data": data.spec, "split": split}
    metrics.update(restoration_metrics(model, x, corruption, seed))
    noisy, hole = corrupt_fixed(x[:n], corruption, seed)
    restored = restore_batched(model, noisy, hole)
    shown = noisy if hole is None else noisy + hole * 0.5  # holes shown grey
    grid = image_grid([to_images(t, data.shape, data.kind) for t in (shown, restored, x[:n])])
    return metrics, grid


def _image_file(path: str | Path) -> None:
    from ..io import check_output_file

    if not str(path).lower().endswith(IMAGE_SUFFIXES):
        raise UserError("--out must name a .png or .jpg file")
    check_output_file(path)


def denoise(inputs: list[str], out: str, *, noise: str | None = None, sigma: float | None = None,
            data: str | None = None, data_dir: str | None = None, split: str = "test", n: int = 12, seed: int = 0,
            progress: bool = True) -> dict:
    """``aezoo denoise``: image files (a run directory first, else the shipped model) into ``out``, a
    folder (``NAME-denoised.png``, and ``NAME-noisy.png`` when ``noise`` is added first) or, for one input,
    an image file (``OUT-noisy.png`` beside it); returns ``{"pictures": count}``. With ``data``: a corrupted
    split, restored, its metrics returned and written with a grid into the folder ``out``. ``sigma``: the noise level on the 0-255
    scale, for photo models. Every input is read before anything is written."""
    from ..corrupt import parse
    from ..eval import corrupt_fixed
    from ..io import check_output_dir, save_image, write_json

    corruption = parse(noise) if noise else None
    if corruption is not None and corruption.is_mask:
        raise UserError(f"--noise {noise} makes holes; use 'aezoo inpaint' for those")
    if sigma is not None and not 0 < sigma <= 255:
        raise UserError(f"--sigma {sigma:g} must be in (0, 255] (the 0-255 scale)")
    model, run_dir, inputs = open_restorer(inputs, False, bool(data))
    if bool(inputs) == bool(data):
        raise UserError("give image files to denoise, or --data SPEC (with --noise) to denoise a dataset split")
    one_file = len(inputs) == 1 and Path(out).suffix.lower() in IMAGE_SUFFIXES
    if data or not one_file:
        check_output_dir(Path(out))
    else:
        _image_file(out)
    if data:
        metrics, grid = restore_split(model, run_dir, corruption or model.corruption, data, data_dir, split, n, seed,
                                      progress)
        save_image(Path(out) / "denoise.png", grid)
        write_json(Path(out) / "denoise.json", metrics)
        return metrics
    pictures = [(p, read_for(model, p)) for p in inputs]  # read all first: a bad file writes nothing
    colour_model = model  # the shipped models: the colour denoiser for colour pictures
    if run_dir == SHIPPED_FROM and any(img.shape[0] == 3 for _, img in pictures):
        colour_model = shipped_model(False, colour=True)
    for i, (path, img) in enumerate(pictures):
        stem = Path(path).stem
        if corruption is not None:
            img = corrupt_fixed(img[None], corruption, seed + i)[0][0]
            save_image(Path(out).with_name(Path(out).stem + "-noisy.png") if one_file else
                       Path(out) / f"{stem}-noisy.png", to_pil(img))
        clean = to_pil(restore_image(colour_model if img.shape[0] == 3 else model, img,
                                     sigma=None if sigma is None else sigma / 255))
        save_image(out if one_file else Path(out) / f"{stem}-denoised.png", clean)
    return {"pictures": len(pictures)}


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``X,Y,W,H`` (pixels from the top-left) as four whole numbers."""
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise UserError(f"--box {text!r} must be four whole numbers X,Y,W,H")
    return box


def _one_mark(mask, box, impulses) -> None:
    if (bool(mask) + bool(box) + impulses) != 1:
        raise UserError("mark the missing pixels with --mask MASK.png, --box X,Y,W,H or --impulses (one of them)")


def hole_of(image: torch.Tensor, source: str, *, mask: str | None = None, box: str | None = None,
            impulses: bool = False) -> torch.Tensor:
    """The missing pixels (1, H, W) of ``image`` (read from ``source``), marked by exactly one of a mask
    file (white = missing), a box ``X,Y,W,H`` or ``impulses`` (pure black and white pixels)."""
    from ..corrupt import box_mask, mask_from_image

    _one_mark(mask, box, impulses)
    _, h, w = image.shape
    if box:
        return box_mask(h, w, parse_box(box))[0]
    if impulses:
        hole = impulse_mask(image)
        if not hole.any():
            raise UserError(f"{source}: no pure black or white pixels, so no salt-and-pepper noise to remove")
        return hole
    return mask_from_image(mask, h, w)[0]


def inpaint(inputs: list[str], out: str, *, mask: str | None = None, box: str | None = None, impulses: bool = False,
            data: str | None = None, data_dir: str | None = None, split: str = "test", n: int = 12, seed: int = 0,
            progress: bool = True) -> dict:
    """``aezoo inpaint``: one image file (a run directory first, else the shipped model) with its holes
    marked as :func:`hole_of` says, filled into the image file ``out``; the known pixels are kept exactly
    (returns ``{"pictures": 1}``). With ``data``: the model's random holes in a split, its metrics returned
    and a grid written to ``out``."""
    from ..io import save_image

    model, run_dir, inputs = open_restorer(inputs, True, bool(data))
    if len(inputs) > 1:
        raise UserError(f"inpaint takes one image file, got {len(inputs)}: {' '.join(inputs)}")
    if bool(inputs) == bool(data):
        raise UserError("give one image file to inpaint, or --data SPEC to inpaint a dataset split")
    if inputs:
        _one_mark(mask, box, impulses)
    _image_file(out)
    if data:
        metrics, grid = restore_split(model, run_dir, model.corruption, data, data_dir, split, n, seed, progress)
        save_image(out, grid)
        return metrics
    image = read_for(model, inputs[0])
    save_image(out, to_pil(restore_image(model, image, hole_of(image, inputs[0], mask=mask, box=box,
                                                               impulses=impulses))))
    return {"pictures": 1}
