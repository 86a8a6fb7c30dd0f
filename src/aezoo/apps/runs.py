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

import torch

from .. import data as data_mod
from ..config import apply_overrides, from_dict, to_dict
from ..errors import UserError
from ..eval import reconstruction_metrics, restoration_metrics
from ..io import cannot_write, check_output_dir, one_writer, read_json, save_image, write_json
from ..models.base import Autoencoder, Model, Prior, make_config
from ..models.run import check_compatible
from ..rng import seeded
from ..registry import get as get_model_class
from ..report import reconstruction_grid
from ..train import TrainConfig, Trainer, distributed


def build(model_name: str, dataset: data_mod.Dataset, preset: str | None, model_overrides: list[str],
          seed: int = 0) -> Model:
    """A new model for ``dataset``: defaults, then the preset, then ``--set`` overrides, validated once;
    its weights are initialised under ``seed``."""
    cls = get_model_class(model_name)
    config = make_config(cls, preset, {"input_shape": list(dataset.shape), "data_kind": dataset.kind,
                                       "vocabulary": list(dataset.meta.get("vocabulary", ()))}, model_overrides)
    with seeded(seed):
        return cls(config)


def train_run(model_name: str | None, data_spec: str | None, out: str, *, preset: str | None = None,
              model_overrides: list[str] = (), train_overrides: dict | None = None, train_sets: list[str] = (),
              resume: bool = False, overwrite: bool = False, data_dir: str | None = None,
              progress: bool = True, dataset: data_mod.Dataset | None = None,
              eval_options: dict | None = None) -> dict | None:
    """Validate everything, then train and finish the run. Returns the test metrics (``eval_options``:
    keyword arguments of :func:`evaluate`, e.g. smaller samples for a quick showcase).

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
                              extra_meta={"model_config": to_dict(model.config), "preset": preset})
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
        cfg = from_dict(TrainConfig, meta["train"], "train config")
        # A resumed run may extend its budget: epochs and max_minutes can change, nothing else.
        allowed = {"epochs", "max_minutes", "progress"}
        cfg = _apply_train(cfg, {k: v for k, v in (train_overrides or {}).items() if k in allowed}, train_sets)
        dataset = dataset or data_mod.load(data_spec, data_dir, progress)
        cls = get_model_class(meta["model"])
        model = cls(from_dict(cls.Config, meta["model_config"], f"{meta['model']} config"))
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
    defaults = dict(getattr(get_model_class(model_name), "TRAIN_DEFAULTS", {}))
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
               progress: bool = False) -> dict:
    """Test metrics into ``eval.json`` and a reconstruction grid into ``reconstructions.png``."""
    model.to("cpu")
    metrics = evaluate(model, dataset, "test", **(eval_options or {}), progress=progress)
    write_json(out_dir / "eval.json", metrics)
    if isinstance(model, Prior):  # its samples are shown in the report of the VQ-VAE it belongs to
        return metrics
    if dataset.kind != "text":
        save_image(out_dir / "reconstructions.png", reconstruction_grid(model, dataset, "test", 12))
    from ..report.html import write_report

    write_report(out_dir, dataset=dataset, model=model)
    return metrics


def evaluate(model: Autoencoder, dataset: data_mod.Dataset, split: str = "test", nll_k: int = 500,
             nll_items: int = 1000, items: int | None = None, samples: int = 5000, probe_train: int = 10000,
             progress: bool = False) -> dict:
    """Every metric that applies to the model on one split. The importance-sampled NLL uses ``nll_k``
    samples on the first ``nll_items`` items; ``items`` limits every other metric to the split's first
    items (default: all); sample metrics use ``samples`` draws; probes train on ``probe_train`` items.
    ``progress``: a progress bar on stderr for each metric that takes a while."""
    check_compatible(model, dataset)
    part = dataset.split(split)
    if items is not None:
        part = part.head(items)
    metrics = {"model": model.name, "data": dataset.spec, "split": split}
    if isinstance(model, Prior):  # a prior over VQ-VAE codes
        from ..eval.codes import prior_metrics

        metrics.update(prior_metrics(model, part.x, progress=progress))
        return metrics
    lo, hi = dataset.value_range()
    metrics.update(reconstruction_metrics(model, part.x, data_range=hi - lo, progress=progress))
    if dataset.kind == "text":  # a peak signal-to-noise ratio of word counts means nothing
        metrics.pop("psnr", None)
    if model.discrete_codes:  # VQ-VAE: codebook use, and its prior's NLL once it has one
        from ..eval.codes import codebook_perplexity, prior_metrics
        from ..models.codes import code_grids

        grids = code_grids(model, part.x, progress=progress)
        metrics.update(codebook_perplexity(grids, model.config.num_codes))
        if model.prior is not None:
            metrics.update(prior_metrics(model.prior, grids, progress=progress))
    if model.restores:  # restoration models: how well they undo their own corruption
        metrics.update(restoration_metrics(model, part.x, model.corruption, progress=progress))
    if model.has_likelihood:  # latent-variable models: ELBO and importance-sampled NLL
        from ..eval.likelihood import elbo, importance_nll

        n = min(len(part.x), nll_items)
        metrics["elbo"] = elbo(model, part.x, progress=progress)
        metrics.update(importance_nll(model, part.x[:n], k=nll_k, progress=progress))
    if dataset.meta.get("benchmark") == "lines" and model.decodes_codes:
        from ..eval.lines import PAIRS, interpolation_paths, lines_metrics

        if len(part.x) >= 2 * PAIRS:
            metrics.update(lines_metrics(interpolation_paths(model, part.x)))
    if part.y is not None and dataset.train.y is not None:  # how well simple classifiers read the codes
        from ..eval import embed
        from ..eval.probes import probe_accuracies

        n_train = min(len(dataset.train), probe_train)
        z_train, z_test = (embed(model, x, progress=progress).numpy() for x in (dataset.train.x[:n_train], part.x))
        metrics.update(probe_accuracies(z_train, dataset.train.y[:n_train].numpy(), z_test, part.y.numpy(),
                                        progress=progress))
    metrics.update(reconstruction_quality(model, dataset, part, samples, progress))
    if model.can_sample:
        metrics.update(sample_quality(model, dataset, part, samples, progress))
    return metrics


def _fmnist_features_apply(dataset: data_mod.Dataset) -> bool:
    from ..eval.features import weights_path

    return tuple(dataset.shape) == (1, 28, 28) and weights_path().is_file()


def reconstruction_quality(model: Autoencoder, dataset: data_mod.Dataset, part, n: int = 5000,
                           progress: bool = False) -> dict:
    """Frechet distance of the reconstructions of the first ``n`` items to those items, in the features of
    the Fashion-MNIST classifier (28x28 greyscale data only): how real reconstructions look, where pixel
    error rewards blur (VAE-GAN's claim, Larsen et al. 2016)."""
    from ..eval import reconstruct
    from ..eval.features import classifier_features
    from ..eval.generative import frechet_distance

    if not _fmnist_features_apply(dataset):
        return {}
    x = part.x[:n]
    real = classifier_features(x, progress=progress)
    rec = classifier_features(reconstruct(model, x, progress=progress).clamp(0, 1), progress=progress)
    return {"fd_recon_fmnist": frechet_distance(real, rec)}


def sample_quality(model: Autoencoder, dataset: data_mod.Dataset, part, n: int = 5000, progress: bool = False,
                   batch_size: int = 500) -> dict:
    """Frechet distance and precision/recall of ``n`` samples against as many real items, in the features
    of the Fashion-MNIST classifier (28x28 greyscale data only; not Inception FID). Samples are drawn
    ``batch_size`` at a time, batch b with seed b."""
    from ..eval.generate import sample_images
    from ..eval.features import classifier_features
    from ..eval.generative import frechet_distance, precision_recall
    from ..progress import bar

    if not _fmnist_features_apply(dataset):
        return {}
    n = min(n, len(part.x))
    real = classifier_features(part.x[:n], progress=progress)
    fake = []
    with bar(total=n, progress=progress, desc="samples", unit="sample") as drawn:
        for b, i in enumerate(range(0, n, batch_size)):
            fake.append(sample_images(model, min(batch_size, n - i), seed=b).clamp(0, 1))
            drawn.update(len(fake[-1]))
    fake = classifier_features(torch.cat(fake), progress=progress)
    out = {"fd_fmnist": frechet_distance(real, fake), "sample_items": n}
    out.update({f"sample_{k}": v for k, v in precision_recall(real, fake).items()})
    return out
