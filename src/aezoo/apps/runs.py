"""Runs on disk: starting, resuming and finishing a training run directory.

A run directory holds ``run.json`` (model name and config, training config, data spec, timing),
``metrics.jsonl``, ``checkpoint.safetensors``, the final ``config.json`` + ``model.safetensors``,
``eval.json``, ``reconstructions.png`` and ``report.html``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path


from .. import data as data_mod
from ..config import apply_overrides, from_dict, to_dict
from ..errors import UserError
from ..eval.metrics import evaluate
from ..io import cannot_write, check_output_dir, one_writer, read_json, save_image, write_json
from ..models.base import Autoencoder, Model, Prior, make_config, read_config, saved_preset, train_defaults
from ..models.parts import check_trust
from ..rng import seeded
from ..registry import get as get_model_class
from ..report import reconstruction_grid
from ..report.grid import validation_pictures
from ..train import TrainConfig, Trainer, distributed


def build(model_name: str, dataset: data_mod.Dataset, preset: str | None, model_overrides: list[str],
          seed: int = 0) -> Model:
    """A new model for ``dataset`` (its config: :func:`new_config`); its weights are initialised under ``seed``."""
    config = new_config(model_name, dataset, preset, model_overrides)
    with seeded(seed):
        model = get_model_class(model_name)(config)
    model.preset = preset
    return model


def new_config(model_name: str, dataset: data_mod.Dataset, preset: str | None, model_overrides: list[str]):
    """The config of a new model for ``dataset``: defaults, then the preset, then ``--set`` overrides,
    validated once; nothing is imported or built yet."""
    return make_config(get_model_class(model_name), preset, {
        "input_shape": list(dataset.shape), "data_kind": dataset.kind,
        "vocabulary": list(dataset.meta.get("vocabulary", ()))}, model_overrides)


def train_run(model_name: str | None, data_spec: str | None, out: str, *, preset: str | None = None,
              model_overrides: list[str] = (), train_overrides: dict | None = None, train_sets: list[str] = (),
              resume: bool = False, overwrite: bool = False, data_dir: str | None = None,
              progress: bool = True, dataset: data_mod.Dataset | None = None,
              eval_options: dict | None = None) -> dict | None:
    """Validate everything, then train and finish the run. Returns the test metrics (``eval_options``:
    keyword arguments of :func:`aezoo.eval.metrics.evaluate`; by default the cheap metrics).

    Under torchrun every rank calls this: rank 0 alone checks and locks the folder, writes and evaluates;
    its refusal is every rank's (the others exit quietly with it). The other ranks return None."""
    out_dir = Path(out)
    group = distributed.join()
    main = group is None or group.main
    try:
        with contextlib.ExitStack() as stack:
            problem = None
            try:
                if main:
                    check_output_dir(out_dir)
                    stack.enter_context(one_writer(out_dir))  # one process per run directory
                cfg, model, dataset = _prepare(model_name, data_spec, out_dir, preset, model_overrides, train_overrides,
                                               train_sets, resume, overwrite, data_dir, progress, dataset, owner=main)
            except UserError as e:
                if group is None:
                    raise
                problem = e
            if group is not None:
                verdict = group.share_text(str(problem) if problem is not None and main else None)
                if problem is not None:
                    raise problem
                if verdict is not None:
                    raise distributed.RankZeroRefused(verdict)
            cfg.progress = progress and cfg.progress
            trainer = Trainer(model, dataset, cfg, out_dir,
                              extra_meta={"model_config": to_dict(model.config), "preset": model.preset},
                              val_images=lambda m: validation_pictures(m, dataset))
            trainer.fit(resume=resume)
            return finish_run(model, dataset, out_dir, eval_options, cfg.progress) if main else None
    finally:
        distributed.leave(wait=not isinstance(sys.exc_info()[1], distributed.PeerLost))


def _prepare(model_name, data_spec, out_dir: Path, preset, model_overrides, train_overrides, train_sets, resume: bool,
             overwrite: bool, data_dir, progress: bool, dataset, owner: bool = True):
    """The training config, model and data of a new or resumed run. The ``owner`` (rank 0) checks the
    folder and, with ``overwrite``, clears it."""
    out = str(out_dir)
    if resume:
        meta = read_json(out_dir / "run.json", "run (run.json); nothing to resume")
        if model_name and model_name != meta["model"]:
            raise UserError(f"{out}: the run trains {meta['model']!r}, not {model_name!r}")
        if model_overrides or preset:
            raise UserError("a resumed run keeps its model config; drop --set/--preset for the model")
        data_spec = data_spec or meta["data"]
        if data_spec != meta["data"]:
            raise UserError(f"{out}: the run was trained on {meta['data']!r}, not {data_spec!r}")
        cfg = from_dict(TrainConfig, meta["train"], "train config", validate=False)  # checked with the options below
        # A resumed run may extend its budget (epochs, max_minutes) and move to another device (bit-exact
        # resumes are promised on the same device only), and change its trackers; nothing else changes.
        allowed = {"epochs", "max_minutes", "max_steps", "progress", "device", "log"}
        fixed = sorted({t.split("=", 1)[0].strip() for t in train_sets} - allowed)
        if fixed:
            raise UserError(f"a resumed run keeps its training config; --set train.{fixed[0]} cannot change (on "
                            f"resume only {', '.join(sorted(allowed - {'progress'}))} can)")
        cfg = _apply_train(cfg, {k: v for k, v in (train_overrides or {}).items() if k in allowed}, train_sets)
        cls = get_model_class(meta["model"])
        config = read_config(cls, meta["model_config"], f"{meta['model']} config")
        old_lr = meta["model_config"].get("lr")  # an earlier version kept the rate in the model config
        if cfg.lr is None and old_lr is not None:
            if isinstance(old_lr, bool) or not isinstance(old_lr, (int, float)) or not 0 < old_lr < float("inf"):
                raise UserError(f"{out_dir / 'run.json'}: model_config.lr must be a positive number, got {old_lr!r}")
            cfg.lr = float(old_lr)
        dataset = dataset or data_mod.load(data_spec, data_dir, progress)
        check_trust(cls, config, out_dir / "run.json")  # your own networks are imported only when trusted
        model = cls(config)
        model.preset = saved_preset(cls, meta.get("preset"), out_dir / "run.json")
        return cfg, model, dataset
    if owner and out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise UserError(f"{out}: exists and is not empty; add --resume to continue that run, "
                            "--overwrite to replace it, or choose a new --out")
        if not (out_dir / "run.json").is_file():
            raise UserError(f"{out}: not an aezoo run directory; --overwrite only replaces runs")
    if not data_spec:
        raise UserError("--data is required")
    # the model family's training settings (its paper's schedule), then the user's
    cls = get_model_class(model_name)
    defaults = train_defaults(cls, preset)
    cfg = _apply_train(TrainConfig(), {**defaults, **{k: v for k, v in (train_overrides or {}).items()
                                                      if v is not None}}, train_sets)
    dataset = dataset or data_mod.load(data_spec, data_dir, progress)
    model = build(model_name, dataset, preset, list(model_overrides), cfg.seed)
    if owner and overwrite and out_dir.exists():
        try:
            shutil.rmtree(out_dir)  # only now: every check above has passed
        except OSError as e:
            raise cannot_write(out_dir, e) from None
    return cfg, model, dataset


def _apply_train(cfg: TrainConfig, values: dict, sets: list[str]) -> TrainConfig:
    items = [f"{k}={json.dumps(v)}" for k, v in values.items() if v is not None]
    cfg = apply_overrides(cfg, items + list(sets), where="train config")
    cfg.validate()
    return cfg


def finish_run(model: Model, dataset: data_mod.Dataset, out_dir: Path, eval_options: dict | None = None,
               progress: bool = False, refit_gmm: bool = True) -> dict:
    """The end of a run: the Gaussian mixture over the training codes (autoencoders whose codes decode
    alone: ``gmm.safetensors``), test metrics into ``eval.json`` (``eval_options``: keyword arguments of
    :func:`aezoo.eval.metrics.evaluate`; by default the cheap metrics), a reconstruction grid and the report.
    ``refit_gmm=False`` keeps the mixture a run already has (its model has not changed since)."""
    from ..eval.gmm import GMM_FILE, fit_gmm, gmm_applies

    model.to("cpu").eval()
    if gmm_applies(model) and dataset.kind == "image" and (refit_gmm or not (out_dir / GMM_FILE).is_file()):
        fit_gmm(model, dataset.train.x).save(out_dir / GMM_FILE)
    options = {"metrics": "cheap", **(eval_options or {})}
    metrics = evaluate(model, dataset, "test", **options, run_dir=out_dir, progress=progress)
    write_json(out_dir / "eval.json", metrics)
    if isinstance(model, Prior):  # its samples are shown in the report of the VQ-VAE it belongs to
        return metrics
    if dataset.kind != "text" and isinstance(model, Autoencoder):
        save_image(out_dir / "reconstructions.png", reconstruction_grid(model, dataset, "test", 12))
    from ..report.html import write_report

    write_report(out_dir, dataset=dataset, model=model)
    return metrics
