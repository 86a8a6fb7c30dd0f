"""A learned prior for a trained VQ-VAE: ``aezoo train pixelcnn --prior-of RUN_DIR --out PRIOR_DIR``.

The VQ-VAE is frozen; its code grids of the data's splits become the prior's dataset. When the prior is
trained, ``RUN_DIR/prior.json`` is written to link the pair: loading RUN_DIR then attaches the prior, so
``aezoo sample RUN_DIR`` draws from it, and RUN_DIR's evaluation and report are refreshed with sample
quality and the prior's NLL.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .. import data as data_mod
from ..errors import UserError
from ..eval.progress import bar
from ..io import write_json
from ..models.base import load_model
from ..models.vqvae import PRIOR_LINK
from .runs import finish_run, open_run, train_run


@torch.no_grad()
def code_grids(model, x: torch.Tensor, batch_size: int = 1000, progress: bool = False) -> torch.Tensor:
    """(N, H/4, W/4) code indices (as float32, exact) of images x."""
    model.eval()
    steps = bar(range(0, len(x), batch_size), progress=progress, desc="code grids")
    out = [model.code_indices(x[i : i + batch_size].to(model.device)).cpu() for i in steps]
    return torch.cat(out).float()


def codes_dataset(run_dir: str, data_spec: str | None, data_dir: str | None, progress: bool):
    vq, dataset = open_run(run_dir, data_spec, data_dir, progress)
    if not hasattr(vq, "code_indices"):
        raise UserError(f"{run_dir}: --prior-of needs a VQ-VAE run; this one holds a {vq.name!r} model")
    return vq, dataset, codes_of(vq, dataset, f"codes:{Path(run_dir).resolve()}", progress)


def codes_of(vq, dataset, spec: str = "codes", progress: bool = False):
    """The dataset of ``vq``'s code grids of every split of ``dataset`` (labels kept)."""
    parts = {name: getattr(dataset, name) for name in ("train", "val", "test")}
    splits = {name: data_mod.Split(code_grids(vq, p.x, progress=progress), p.y) for name, p in parts.items()}
    return data_mod.Dataset(spec=spec, kind="codes", classes=dataset.classes, meta={"images": dataset.spec}, **splits)


def train_prior(run_dir: str, out: str, *, data_spec: str | None = None, preset=None, model_overrides=(),
                train_overrides=None, train_sets=(), resume=False, overwrite=False, data_dir=None,
                progress=True, eval_options: dict | None = None) -> dict:
    if Path(out).resolve() == Path(run_dir).resolve():
        raise UserError("--out must be a new directory, not the VQ-VAE run itself")
    if data_spec is not None:
        raise UserError("--prior-of trains on the codes of the VQ-VAE's own training data; drop --data")
    vq, images, codes = codes_dataset(run_dir, None, data_dir, progress)
    sets = [f"num_codes={vq.config.num_codes}", f"prior_of={json.dumps(str(Path(run_dir).resolve()))}",
            *model_overrides]
    metrics = train_run("pixelcnn", codes.spec, out, preset=preset, model_overrides=[] if resume else sets,
                        train_overrides=train_overrides, train_sets=train_sets, resume=resume, overwrite=overwrite,
                        progress=progress, dataset=codes, eval_options=eval_options)
    # link the pair (atomically), then refresh the VQ-VAE run's evaluation and report with the prior
    write_json(Path(run_dir) / PRIOR_LINK, {"prior_dir": str(Path(out).resolve())})
    vq = load_model(run_dir)
    finish_run(vq, images, Path(run_dir), eval_options, progress)
    return metrics


@torch.no_grad()
def prior_metrics(prior, codes: torch.Tensor, batch_size: int = 500, progress: bool = False) -> dict:
    """The prior's negative log-likelihood of code grids: nats per grid and bits per code."""
    prior.eval()
    total = 0.0
    for i in bar(range(0, len(codes), batch_size), progress=progress, desc="prior NLL"):
        total -= float(prior.log_prob(codes[i : i + batch_size].to(prior.device)).sum())
    per_grid = total / len(codes)
    return {"prior_nll_nats": per_grid, "prior_bits_per_code": per_grid / (codes[0].numel() * math.log(2))}


def codebook_perplexity(indices: torch.Tensor, num_codes: int) -> dict:
    """exp(entropy) of the code usage over a whole split, and the fraction of codes used."""
    counts = torch.bincount(indices.long().flatten(), minlength=num_codes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codebook_perplexity": float(entropy.exp()), "codebook_used": float((counts > 0).double().mean())}
