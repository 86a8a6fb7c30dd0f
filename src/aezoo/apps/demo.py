"""``aezoo demo``: the showcase. Three training runs, each exactly what ``aezoo train`` does, then one
combined report (``OUT/report.html``) beside each run's own report:

1. ``ae``: the deep autoencoder, and PCA with as many components, side by side;
2. ``dae`` with Gaussian noise: denoising;
3. ``dae`` with random boxes: inpainting;
4. ``vae``: samples, interpolations and the test NLL;
5. ``vqvae``, then its ``pixelcnn`` prior: samples, interpolations (which VQ-VAE does poorly: compare
   with the VAE's), codebook perplexity and the prior's bits per code;
6. no training: a photograph restored by the shipped photo models (Gaussian noise, salt-and-pepper).

VAE-GAN and ACAI are left out: in a run of under half a minute neither shows what it is for (README).
"""

from __future__ import annotations

import html
import shutil
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .. import data as data_mod
from ..errors import UserError
from ..io import cannot_write, check_output_dir, make_dir, read_json, write_bytes
from ..models.base import load_model
from ..report.grid import image_grid, to_images
from ..report.html import figure, generative_sections, page, pil_png, run_sections, table
from .prior import train_prior
from .runs import train_run


class Step(NamedTuple):
    """One run of the showcase and what the combined report shows of it."""

    folder: str
    model: str
    preset: str | None
    sets: list[str]  # --set overrides
    title: str
    shows: str  # the combined report's section: "pca" (the AE against PCA), "restoration", "generative"
    prior: str | None = None  # a prior to train on the model's codes afterwards (a second run)


STEPS = [
    Step("ae", "ae", None, [], "Deep autoencoder (Hinton & Salakhutdinov 2006) against PCA", "pca"),
    Step("denoise", "dae", None, ["corruption=gaussian:0.2"],
         "Denoising (Vincent et al. 2008), Gaussian noise sigma 0.2", "restoration"),
    Step("inpaint", "dae", "inpaint", [], "Inpainting of random boxes (the mask is an input channel)", "restoration"),
    Step("vae", "vae", None, [], "Variational autoencoder (Kingma & Welling 2014): samples and interpolations",
         "generative"),
    Step("vqvae", "vqvae", None, [], "VQ-VAE (van den Oord et al. 2017) with a gated PixelCNN prior", "generative",
         prior="pixelcnn"),
]
RUNS = len(STEPS) + sum(step.prior is not None for step in STEPS)  # a prior is a second training run
GENERATIVE_METRICS = ("nll_nats", "nll_bits_per_dim", "elbo", "psnr", "codebook_perplexity", "prior_bits_per_code",
                      "sample_fd", "fd_recon", "sample_precision", "sample_recall")
# The showcase evaluates on the first 2,000 test items and 1,000 samples (eval.json records both), so the
# whole demo stays within about 5 minutes; 'aezoo eval RUN_DIR' gives the full-size numbers.
QUICK_EVAL = {"metrics": "all", "items": 2000, "samples": 1000, "nll_items": 200, "nll_k": 100, "probe_train": 2000}


def run_demo(out: str = "runs/demo", minutes: float = 3.3, data_spec: str = "fashion-mnist",
             data_dir: str | None = None, progress: bool = True) -> Path:
    out_dir = Path(out)
    check_output_dir(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "demo.json").is_file():
        raise UserError(f"{out}: exists and is not an aezoo demo folder; choose another --out")
    if minutes <= 0.2:
        raise UserError("--minutes must be above 0.2")
    t0 = time.perf_counter()
    dataset = data_mod.load(data_spec, data_dir, progress)
    if dataset.kind != "image":
        raise UserError("the demo needs image data")
    if out_dir.exists():
        try:
            shutil.rmtree(out_dir)
        except OSError as e:
            raise cannot_write(out_dir, e) from None
    make_dir(out_dir)
    write_bytes(out_dir / "demo.json", b'{"demo": true}\n')
    # leave time for evaluation and reports; a budget under a minute gives each run a few seconds (a smoke run)
    budget = max(0.05, (minutes - 0.6) / RUNS)
    sections, commands = [], []
    for folder, model_name, preset, sets, title, shows, prior in STEPS:
        run_dir = out_dir / folder
        cmd = f"aezoo train {model_name} --data {data_spec} --out {run_dir} --max-minutes {budget:.2f}" + \
              (f" --preset {preset}" if preset else "") + "".join(f" --set {s}" for s in sets)
        commands.append(cmd)
        print(f"aezoo demo: {cmd}", file=sys.stderr)
        metrics = train_run(model_name, data_spec, str(run_dir), preset=preset, model_overrides=sets,
                            train_overrides={"epochs": None, "max_minutes": budget}, train_sets=["epochs=null"],
                            progress=progress, dataset=dataset, eval_options=QUICK_EVAL)
        if prior is not None:  # second stage: the prior, trained on the frozen model's codes
            prior_dir = out_dir / f"{folder}-prior"
            cmd2 = f"aezoo train {prior} --prior-of {run_dir} --out {prior_dir} --max-minutes {budget:.2f}"
            commands.append(cmd2)
            print(f"aezoo demo: {cmd2}", file=sys.stderr)
            train_prior(str(run_dir), str(prior_dir), prior=prior,
                        train_overrides={"epochs": None, "max_minutes": budget}, train_sets=["epochs=null"],
                        progress=progress, eval_options=QUICK_EVAL)
            metrics = read_json(run_dir / "eval.json")  # refreshed with the prior's metrics
            shown = f"{html.escape(cmd)}</code> then <code>{html.escape(cmd2)}"
        else:
            shown = html.escape(cmd)
        model = load_model(run_dir)
        body = f"<h2>{html.escape(title)}</h2><p><code>{shown}</code> &middot; " \
               f"<a href='{folder}/report.html'>full run report</a></p>"
        if shows == "pca":
            body += ae_vs_pca(model, dataset, metrics)
        elif shows == "generative":
            body += table([(k, metrics[k]) for k in GENERATIVE_METRICS if k in metrics], ("test metric", "value"))
            body += "".join(generative_sections(model, dataset))
        else:  # restoration
            body += table([(k, metrics[k]) for k in ("corruption", "psnr_corrupted", "psnr_restored")],
                          ("test metric", "value"))
            body += "".join(s for s in run_sections(run_dir, model, dataset) if "<h2>Restoration" in s)
        sections.append(body)
    sections.append(photo_section())
    head = (f"<h1>aezoo demo on {html.escape(data_spec)}</h1><p class='muted'>Made in "
            f"{(time.perf_counter() - t0) / 60:.1f} minutes by <code>aezoo demo</code>, which runs:</p><pre>" +
            html.escape("\n".join(commands)) + "</pre>")
    path = out_dir / "report.html"
    write_bytes(path, page("aezoo demo", [head, *sections]).encode())
    return path


def photo_section(sigma: float = 25) -> str:
    """A held-out photograph with Gaussian noise and with 10% salt-and-pepper noise, restored by the models
    that ship with aezoo (no training), with the PSNR of each."""
    from importlib.resources import files

    from ..eval.reconstruction import psnr_from_mse
    from ..report.grid import image_grid
    from .restore import impulse_mask, read_picture, restore_image, shipped_model

    title = "<h2>Restoring a photograph (the shipped photo models, no training)</h2>"
    try:
        denoiser, inpainter = shipped_model(False, colour=True), shipped_model(True)  # a colour photograph
    except UserError as e:
        return title + f"<p class='muted'>{html.escape(str(e))}</p>"
    clean = read_picture(files("aezoo") / "weights" / "demo-photo.jpg")
    g = torch.Generator().manual_seed(0)
    noisy = clean + sigma / 255 * torch.randn(clean.shape, generator=g)
    hit = torch.rand(clean.shape, generator=g) < 0.1
    peppered = torch.where(hit, (torch.rand(clean.shape, generator=g) < 0.5).float(), clean)
    denoised = restore_image(denoiser, noisy)
    filled = restore_image(inpainter, peppered, impulse_mask(peppered))
    psnr = lambda a: float(psnr_from_mse((a.clamp(0, 1) - clean).square().mean(), 1.0))
    rows = [(f"Gaussian noise, sigma {sigma:g}/255 (blind: sigma estimated)", psnr(noisy), psnr(denoised)),
            ("salt-and-pepper, 10% of the values (aezoo inpaint --impulses)", psnr(peppered), psnr(filled))]
    show = lambda t: t.clamp(0, 1).permute(1, 2, 0).numpy()[None]
    grid = image_grid([np.concatenate([show(a), show(b), show(clean)]) for a, b in ((noisy, denoised), (peppered, filled))],
                      scale=1)
    return (title + "<p><code>aezoo denoise photo.png --out clean.png</code> &middot; "
            "<code>aezoo inpaint photo.png --impulses --out clean.png</code></p>" +
            table([(a, f"{b:.2f}", f"{c:.2f}") for a, b, c in rows], ("corruption", "PSNR in, dB", "PSNR out, dB")) +
            figure(pil_png(grid), "Rows: Gaussian noise, salt-and-pepper. Columns: corrupted, restored, clean. "
                                  "The photograph (Trevor 'Freespace', CC BY 4.0) was held out of training."))


def ae_vs_pca(model, dataset, metrics: dict) -> str:
    """Test reconstruction error of the AE and of PCA with as many components, and a picture of both."""
    from sklearn.decomposition import PCA

    from ..eval import reconstruct

    k = model.config.latent_dim
    train = dataset.train.x.flatten(1).numpy()
    test = dataset.test.x[: metrics.get("items")].flatten(1).numpy()  # the items the AE was scored on
    pca = PCA(n_components=k, svd_solver="randomized", random_state=0).fit(train)
    rec = pca.inverse_transform(pca.transform(test))
    pca_sse = float(((rec - test) ** 2).sum(1).mean())
    ae_sse = metrics["recon_sse_per_item"]
    rows = [(f"AE-{k}", ae_sse), (f"PCA-{k}", pca_sse), ("AE / PCA", ae_sse / pca_sse)]
    n = 16
    with torch.no_grad():
        ae_rec = reconstruct(model, dataset.test.x[:n])
    pca_rec = torch.from_numpy(np.clip(rec[:n], 0, 1)).view(n, *dataset.shape)
    grid = image_grid([to_images(t, dataset.shape, "image") for t in (dataset.test.x[:n], ae_rec, pca_rec)])
    return (table(rows, ("test squared error per image", "value")) +
            figure(pil_png(grid), f"Rows: test images, AE-{k} reconstructions, PCA-{k} reconstructions."))
