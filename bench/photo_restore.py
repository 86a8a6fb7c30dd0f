"""Restoring photographs: aezoo's shipped photo models against classical methods, side by side in one run.

    .venv/bin/python -m pip install -r requirements-bench.txt
    .venv/bin/python bench/photo_restore.py [--denoiser RUN_DIR] [--colour-denoiser RUN_DIR] [--inpainter RUN_DIR] [--quick]

Test photographs: scikit-image's sample images (never used in training), 8 greyscale (camera, moon, coins,
text, clock, brick, grass, gravel) and 4 colour (astronaut, coffee, chelsea, rocket).

- Gaussian noise, sigma 15, 25 and 50 of 255, not clipped (as in the BM3D and DnCNN papers). aezoo's
  shipped denoiser (on colour pictures the colour one, where given or shipped) told sigma, and blind
  (sigma estimated from the picture); BM3D (the ``bm3d`` package,
  ``bm3d_rgb`` for colour, told sigma, its default profile); scikit-image's non-local means, TV
  (Chambolle) and wavelet (BayesShrink) denoising, whose strength is tuned per sigma on three held-out
  training photographs (256x256 centre crops of photographs the patch source holds out), never on the
  test images; and the noisy input.
- Salt-and-pepper noise, 10% of the values: aezoo's shipped inpainter on the pure black and white pixels
  (``aezoo inpaint --impulses``) against a median filter (size tuned, 3 or 5).
- Inpainting: 8 random 24x24 boxes per picture: the shipped inpainter against scikit-image's biharmonic
  inpainting and OpenCV's Telea method. PSNR there is over the hole pixels only (the others are kept).

Metrics: mean PSNR (data range 1) and SSIM (scikit-image; channel axis for colour) over the pictures,
and seconds per megapixel of each method on this machine (``--threads`` torch threads). Prints tables and
writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

GREY = ("camera", "moon", "coins", "text", "clock", "brick", "grass", "gravel")
COLOUR = ("astronaut", "coffee", "chelsea", "rocket")
SIGMAS = (15, 25, 50)
TUNE_PHOTOS = ("Aqua.jpg", "Picture_0B_by_freespace.jpg", "friends_by_Aitzol_Berasategi.jpg")


def test_images(names) -> dict[str, np.ndarray]:
    import skimage.data

    return {n: getattr(skimage.data, n)().astype(np.float32) / 255 for n in names}


def tuning_images(folder: Path, colour: bool) -> list[np.ndarray]:
    from PIL import Image

    from aezoo.data.patches import load_patches

    held = load_patches(str(folder), n=1, val=1).meta["held_out"]
    if missing := [n for n in TUNE_PHOTOS if n not in held]:
        sys.exit(f"{folder}: {', '.join(missing)} not held out by the patches source (scripts/get-photos.sh makes "
                 "the folder); the classical methods are tuned on held-out photographs only")
    out = []
    for name in TUNE_PHOTOS:
        with Image.open(folder / name) as im:
            im = im.convert("RGB" if colour else "L")
            im.thumbnail((512, 512), Image.Resampling.LANCZOS)
            a = np.asarray(im, np.float32) / 255
        h, w = a.shape[:2]
        out.append(a[h // 2 - 128 : h // 2 + 128, w // 2 - 128 : w // 2 + 128])
    return out


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    d = (np.clip(a, 0, 1) - b) ** 2
    mse = d.mean() if where is None else d[np.broadcast_to(where, d.shape)].mean()
    return float(10 * np.log10(1 / max(mse, 1e-12)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.clip(a, 0, 1), b, data_range=1.0, channel_axis=2 if a.ndim == 3 else None))


def noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return (img + np.random.default_rng(seed).normal(0, sigma, img.shape)).astype(np.float32)


def to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1)))


def from_tensor(t: torch.Tensor) -> np.ndarray:
    a = t.numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def classical(sigma: float):
    """name -> (function(image, sigma, parameter) -> image, parameter grid); None: not tuned."""
    import bm3d
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, denoise_wavelet

    def ch(a):
        return 2 if a.ndim == 3 else None

    return {
        "bm3d": (lambda a, s, p: bm3d.bm3d_rgb(a, s) if a.ndim == 3 else bm3d.bm3d(a, sigma_psd=s), [None]),
        "nl_means": (lambda a, s, h: denoise_nl_means(a, h=h * s, sigma=s, patch_size=7, patch_distance=11,
                                                      fast_mode=True, channel_axis=ch(a)), [0.6, 0.8, 1.0]),
        "tv": (lambda a, s, w: denoise_tv_chambolle(a, weight=w * s, channel_axis=ch(a)), [0.5, 1.0, 1.5, 2.0]),
        "wavelet": (lambda a, s, f: denoise_wavelet(a, sigma=f * s, method="BayesShrink", mode="soft",
                                                    rescale_sigma=True, channel_axis=ch(a), convert2ycbcr=a.ndim == 3),
                    [0.75, 1.0, 1.5]),
    }


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def restore(model, a: np.ndarray, hole=None, sigma=None) -> np.ndarray:
    from aezoo.apps.restore import restore_image

    return from_tensor(restore_image(model, to_tensor(a), None if hole is None else torch.from_numpy(hole[None]).float(),
                                     sigma=sigma))


def denoising(images, tune, denoiser, sigmas, seed) -> list[dict]:
    rows = []
    for s255 in sigmas:
        s = s255 / 255
        methods = classical(s)
        params = {}
        for name, (fn, grid) in methods.items():  # tuned on the held-out training photographs
            scores = {p: np.mean([psnr(fn(noisy(t, s, seed + 100 + i), s, p), t) for i, t in enumerate(tune)])
                      for p in grid} if len(grid) > 1 else {grid[0]: 0.0}
            params[name] = max(scores, key=scores.get)
        per: dict[str, dict[str, list]] = {}
        for i, (name, img) in enumerate(images.items()):
            x = noisy(img, s, seed + i)
            mp = img.shape[0] * img.shape[1] / 1e6
            results = {"noisy input": (x, 0.0)}
            results["aezoo, told sigma"] = timed(restore, denoiser, x, None, s)
            results["aezoo, blind"] = timed(restore, denoiser, x, None, None)
            for m, (fn, _) in methods.items():
                results[m] = timed(fn, x, s, params[m])
            for m, (out, secs) in results.items():
                r = per.setdefault(m, {"psnr": [], "ssim": [], "s_per_mp": []})
                r["psnr"].append(psnr(out, img))
                r["ssim"].append(ssim(out, img))
                r["s_per_mp"].append(secs / mp)
            print(f"  sigma {s255} {name}: " + ", ".join(f"{m} {per[m]['psnr'][-1]:.2f}" for m in per),
                  file=sys.stderr, flush=True)
        rows.append({"corruption": f"gaussian {s255}/255", "params": {k: str(v) for k, v in params.items()},
                     "images": list(images), "methods": summarise(per)})
    return rows


def summarise(per: dict) -> dict:
    return {m: {"psnr": float(np.mean(v["psnr"])), "ssim": float(np.mean(v["ssim"])),
                "s_per_mp": float(np.mean(v["s_per_mp"])), "psnr_each": [round(p, 2) for p in v["psnr"]]}
            for m, v in per.items()}


def impulses(images, tune, inpainter, amount, seed) -> dict:
    from scipy.ndimage import median_filter

    from aezoo.apps.restore import impulse_mask

    def corrupt(img, sd):
        rng = np.random.default_rng(sd)
        hit = rng.random(img.shape) < amount
        return np.where(hit, (rng.random(img.shape) < 0.5).astype(np.float32), img)

    def median(a, size):
        return median_filter(a, size=(size, size, 1) if a.ndim == 3 else size)

    best = max((3, 5), key=lambda k: np.mean([psnr(median(corrupt(t, seed + 100 + i), k), t) for i, t in enumerate(tune)]))
    per: dict = {}
    for i, img in enumerate(images.values()):
        x = corrupt(img, seed + i)
        mp = img.shape[0] * img.shape[1] / 1e6
        hole = from_tensor(impulse_mask(to_tensor(x)))
        results = {"noisy input": (x, 0.0), "aezoo inpainter on impulses": timed(restore, inpainter, x, hole),
                   f"median {best}x{best}": timed(median, x, best)}
        for m, (out, secs) in results.items():
            r = per.setdefault(m, {"psnr": [], "ssim": [], "s_per_mp": []})
            r["psnr"].append(psnr(out, img))
            r["ssim"].append(ssim(out, img))
            r["s_per_mp"].append(secs / mp)
    return {"corruption": f"salt-and-pepper {amount:.0%}", "images": list(images), "methods": summarise(per)}


def boxes(images, inpainter, seed, n_boxes: int = 8, side: int = 24) -> dict:
    import cv2
    from skimage.restoration import inpaint_biharmonic

    def telea(a, hole):
        u8 = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
        return cv2.inpaint(u8, hole.astype(np.uint8), 3, cv2.INPAINT_TELEA).astype(np.float32) / 255

    per: dict = {}
    for i, img in enumerate(images.values()):
        rng = np.random.default_rng(seed + i)
        h, w = img.shape[:2]
        hole = np.zeros((h, w), np.float32)
        for _ in range(n_boxes):
            y, x = rng.integers(0, h - side), rng.integers(0, w - side)
            hole[y : y + side, x : x + side] = 1
        mask = hole.astype(bool)
        x_in = img * (1 - (hole[..., None] if img.ndim == 3 else hole))
        mp = h * w / 1e6
        results = {"aezoo inpainter": timed(restore, inpainter, x_in, hole),
                   "biharmonic": timed(lambda a, m: inpaint_biharmonic(a, m, channel_axis=2 if a.ndim == 3 else None),
                                       x_in, mask),
                   "opencv telea": timed(telea, x_in, hole)}
        where = mask[..., None] if img.ndim == 3 else mask
        for m, (out, secs) in results.items():
            out = np.where(where, out, img)
            r = per.setdefault(m, {"psnr": [], "ssim": [], "s_per_mp": []})
            r["psnr"].append(psnr(out, img, where))
            r["ssim"].append(ssim(out, img))
            r["s_per_mp"].append(secs / mp)
    return {"corruption": f"{n_boxes} boxes of {side}x{side} (PSNR in the holes)", "images": list(images),
            "methods": summarise(per)}


def print_table(title: str, rows: list[dict]) -> None:
    """One table per set of methods (denoisers, impulse removers, inpainters): PSNR / SSIM, then seconds
    per megapixel."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r["methods"]), []).append(r)
    print(f"\n{title}")
    for names, part in groups.items():
        print("\n| corruption | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        for r in part:
            print(f"| {r['corruption']} | " + " | ".join(f"{r['methods'][n]['psnr']:.2f} / {r['methods'][n]['ssim']:.3f}"
                                                   for n in names) + " |")
        for r in part[:1] if len(part) > 1 else part:
            print(f"| seconds per megapixel{' (mean over sigmas)' if len(part) > 1 else ''} | " +
                  " | ".join(f"{np.mean([q['methods'][n]['s_per_mp'] for q in part]):.2f}" for n in names) + " |")


def main(argv=None) -> int:
    from aezoo.apps.restore import shipped_model
    from aezoo.env import machine_info
    from aezoo.io import write_json
    from aezoo.models.base import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--denoiser", help="a run of 'aezoo train photo' (default: the shipped denoiser)")
    ap.add_argument("--colour-denoiser", help="a run of 'aezoo train photo' on colour data, for the colour pictures "
                                              "(default: --denoiser when given, else the shipped colour denoiser)")
    ap.add_argument("--inpainter", help="a run of 'aezoo train photo --preset inpaint' (default: the shipped one)")
    ap.add_argument("--photos", default="data/photos", help="the training photographs (scripts/get-photos.sh); "
                                                            "the held-out ones tune the classical methods")
    ap.add_argument("--quick", action="store_true", help="two pictures of each kind, sigma 25 only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/photo_restore.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    denoiser = load_model(a.denoiser) if a.denoiser else shipped_model(False)
    if a.colour_denoiser:
        colour_denoiser = load_model(a.colour_denoiser)
    else:
        colour_denoiser = denoiser if a.denoiser else shipped_model(False, colour=True)
    inpainter = load_model(a.inpainter) if a.inpainter else shipped_model(True)
    grey, colour = (GREY[:2], COLOUR[:2]) if a.quick else (GREY, COLOUR)
    sigmas = (25,) if a.quick else SIGMAS
    result = {"benchmark": "photo_restore", "settings": vars(a), "machine": machine_info(),
              "date": time.strftime("%Y-%m-%d")}
    for kind, names in (("greyscale", grey), ("colour", colour)):
        images = test_images(names)
        tune = tuning_images(Path(a.photos), kind == "colour")
        rows = denoising(images, tune, colour_denoiser if kind == "colour" else denoiser, sigmas, a.seed)
        rows.append(impulses(images, tune, inpainter, 0.1, a.seed))
        rows.append(boxes(images, inpainter, a.seed))
        result[kind] = rows
        print_table(f"{kind} ({', '.join(names)}): mean PSNR dB / SSIM", rows)
    write_json(a.out, result)
    print(f"\nwritten to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
