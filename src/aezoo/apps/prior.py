"""A learned prior for a trained VQ-VAE: ``aezoo train pixelcnn --prior-of RUN_DIR --out PRIOR_DIR``.

The VQ-VAE is frozen; its code grids of the data's splits become the prior's dataset. When the prior is
trained, a copy of it goes into ``RUN_DIR/prior/``: loading RUN_DIR then attaches the prior, so
``aezoo sample RUN_DIR`` draws from it, and RUN_DIR's evaluation and report are refreshed with sample
quality and the prior's NLL.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..models.base import copy_model, load_model
from ..models.codes import open_codes
from ..models.vqvae import PRIOR_DIR
from .runs import finish_run, train_run


def train_prior(run_dir: str, out: str, *, prior: str = "pixelcnn", data_spec: str | None = None, preset=None,
                model_overrides=(), train_overrides=None, train_sets=(), resume=False, overwrite=False, data_dir=None,
                progress=True, eval_options: dict | None = None) -> dict:
    """Train the registered :class:`~aezoo.models.base.Prior` ``prior`` on the codes of the run ``run_dir``
    into ``out``, link it to the run, and refresh the run's evaluation and report."""
    if Path(out).resolve() == Path(run_dir).resolve():
        raise UserError("--out must be a new directory, not the VQ-VAE run itself")
    if data_spec is not None:
        raise UserError("--prior-of trains on the codes of the VQ-VAE's own training data; drop --data")
    vq, images, codes = open_codes(run_dir, data_dir, progress)
    sets = [f"num_codes={vq.config.num_codes}", f"prior_of={json.dumps(str(Path(run_dir).resolve()))}",
            *model_overrides]
    metrics = train_run(prior, codes.spec, out, preset=preset, model_overrides=[] if resume else sets,
                        train_overrides=train_overrides, train_sets=train_sets, resume=resume, overwrite=overwrite,
                        progress=progress, dataset=codes, eval_options=eval_options)
    if metrics is None:  # a rank other than 0 of a distributed run: rank 0 finishes
        return None
    # a copy of the prior goes into the run (atomically), which then holds everything it needs; then the
    # VQ-VAE run's evaluation and report are refreshed with the prior
    copy_model(out, Path(run_dir) / PRIOR_DIR)
    vq = load_model(run_dir)
    finish_run(vq, images, Path(run_dir), eval_options, progress, refit_gmm=False)
    return metrics
