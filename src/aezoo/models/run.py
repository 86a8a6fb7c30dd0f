"""A run directory opened for use: the model saved in it and the dataset it was trained on.

Below the apps and the report (both open runs) and below the ``codes:`` data source, which opens the run
of the model whose codes it serves.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import data as data_mod
from ..errors import UserError
from ..io import read_json
from .base import Autoencoder, Model, load_model


def open_run(run_dir: str, data_spec: str | None, data_dir: str | None, progress: bool = True,
             refine_steps: int | None = None):
    """The saved model of ``run_dir`` and a dataset (``data_spec``, or the one it was trained on).
    ``refine_steps``: for a model that refines its codes (``ae``), that many steps (see ``AE.refine``)."""
    model = load_model(run_dir)
    if refine_steps is not None:
        if not (isinstance(model, Autoencoder) and model.refines_codes):
            raise UserError(f"--refine-steps applies to ae models; {run_dir} holds a {model.name}")
        model.config.refine_steps = refine_steps
        model.config.validate()  # the config's own check of the value
    if data_spec is None:
        run = Path(run_dir) / "run.json"
        if not run.is_file():
            raise UserError(f"{run_dir}: no run.json to tell which data the model was trained on; pass --data")
        data_spec = read_json(run)["data"]
    with torch.no_grad():
        dataset = data_mod.load(data_spec, data_dir, progress, vocabulary=model.config.vocabulary or None)
    check_compatible(model, dataset)
    return model, dataset


def check_compatible(model: Model, dataset: data_mod.Dataset) -> None:
    if tuple(dataset.shape) != tuple(model.config.input_shape):
        raise UserError(f"{dataset.spec!r} has items of shape {dataset.shape}; the model was trained on "
                        f"{tuple(model.config.input_shape)}")


__all__ = ["open_run", "check_compatible"]
