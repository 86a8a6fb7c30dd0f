"""The ``codes:RUN_DIR`` data source: the code grids of a trained model with discrete codes (a VQ-VAE)
on the data it was trained on, which a :class:`~aezoo.models.base.Prior` (``pixelcnn``) then learns.

Registered with :func:`aezoo.data.register_source` when the models package is imported.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import data as data_mod
from ..errors import UserError
from ..progress import bar
from .base import Autoencoder
from .run import open_run


@torch.no_grad()
def code_grids(model: Autoencoder, x: torch.Tensor, batch_size: int = 1000, progress: bool = False) -> torch.Tensor:
    """(N, H/4, W/4) code indices (as float32, exact) of images x."""
    model.eval()
    steps = bar(range(0, len(x), batch_size), progress=progress, desc="code grids")
    out = [model.code_indices(x[i : i + batch_size].to(model.device)).cpu() for i in steps]
    return torch.cat(out).float()


def codes_of(model: Autoencoder, dataset: data_mod.Dataset, spec: str = "codes",
             progress: bool = False) -> data_mod.Dataset:
    """The dataset of ``model``'s code grids of every split of ``dataset`` (labels kept)."""
    splits = {name: data_mod.Split(code_grids(model, getattr(dataset, name).x, progress=progress),
                                   getattr(dataset, name).y) for name in ("train", "val", "test")}
    return data_mod.Dataset(spec=spec, kind="codes", classes=dataset.classes, meta={"images": dataset.spec}, **splits)


def open_codes(run_dir: str, data_dir: str | None = None, progress: bool = True):
    """The model of ``run_dir``, the dataset it was trained on, and that dataset's code grids."""
    model, dataset = open_run(run_dir, None, data_dir, progress)
    if not (isinstance(model, Autoencoder) and model.discrete_codes):
        raise UserError(f"{run_dir}: --prior-of needs a VQ-VAE run; this one holds a {model.name!r} model")
    return model, dataset, codes_of(model, dataset, f"codes:{Path(run_dir).resolve()}", progress)


def _load(spec: data_mod.Spec, data_dir, progress, vocabulary) -> data_mod.Dataset:
    return open_codes(spec.path, data_dir, progress)[2]


data_mod.register_source("codes", "codes:RUN_DIR, the code grids of a trained VQ-VAE (data for its pixelcnn prior)",
                         _load, needs_path=True)

__all__ = ["code_grids", "codes_of", "open_codes"]
