"""The metric registry: every metric aezoo computes, what it needs, and what it costs.

A metric is registered with ``@register_metric(name, needs=..., cost=...)``: ``needs`` are
:class:`Need` s (the model's kind and capabilities, the data: labels, images a feature network reads, the
``lines`` benchmark), ``cost`` is ``"cheap"`` (one pass over the test items: what ``aezoo train`` ends with)
or ``"costly"`` (sampling, importance sampling, classifiers fitted on codes). Its function takes an
:class:`EvalContext` and returns a flat dict. :func:`evaluate` is a loop over the metrics that apply; it
names no model family and no dataset (cf. stylegan3's ``metrics/metric_main.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch

from ..errors import UserError
from ..models.base import Autoencoder, Model, Prior, Restorer


@dataclass
class EvalContext:
    """One evaluation: the model, the dataset and its evaluated split, and the sizes every metric shares."""

    model: Model
    dataset: object  # aezoo.data.Dataset
    split: str = "test"
    items: int | None = None  # every metric uses the split's first items (None: all)
    samples: int = 5000  # draws per sampler for the sample metrics (at most the evaluated items)
    nll_k: int = 100  # importance samples per item for the NLL (the standard estimate uses 5000)
    nll_items: int = 200  # items the NLL is estimated on; the ELBO uses ten times as many
    probe_train: int = 5000  # training items the probes are fitted on
    run_dir: Path | None = None  # where a fitted Gaussian mixture is kept (None: fitted in memory)
    progress: bool = False
    _cache: dict = field(default_factory=dict)

    @property
    def part(self):
        """The evaluated items (a :class:`~aezoo.data.Split`)."""
        if "part" not in self._cache:
            part = self.dataset.split(self.split)
            self._cache["part"] = part if self.items is None else part.head(self.items)
        return self._cache["part"]

    def features(self):
        """The feature network of the data (see :mod:`aezoo.eval.features`), or None."""
        if "features" not in self._cache:
            from .features import features_for

            self._cache["features"] = features_for(self.dataset, self.progress)
        return self._cache["features"]

    def real_features(self, n: int) -> torch.Tensor:
        """Features of the first ``n`` evaluated items (computed once per evaluation)."""
        key = ("real", n)
        if key not in self._cache:
            self._cache[key] = self.features()(self.part.x[:n], self.progress)
        return self._cache[key]

    def gmm(self):
        """The Gaussian mixture over the model's training codes: the run's, else fitted now (and kept)."""
        if "gmm" not in self._cache:
            from .gmm import GMM_FILE, fit_gmm, gmm_of

            gmm = gmm_of(self.run_dir, self.model)
            if gmm is None:
                gmm = fit_gmm(self.model, self.dataset.train.x)
                if self.run_dir is not None:
                    gmm.save(Path(self.run_dir) / GMM_FILE)
            self._cache["gmm"] = gmm
        return self._cache["gmm"]


@dataclass(frozen=True)
class Need:
    """One requirement of a metric: a sentence for ``--list-metrics`` and its test."""

    what: str  # completes "needs ...", e.g. "a model that samples"
    test: Callable[[EvalContext], bool]

    def __call__(self, ctx: EvalContext) -> bool:
        return bool(self.test(ctx))


def _ae(ctx, capability: str | None = None) -> bool:
    return isinstance(ctx.model, Autoencoder) and (capability is None or bool(getattr(ctx.model, capability)))


AUTOENCODER = Need("an autoencoder (encode/decode)", lambda c: _ae(c))
RESTORER = Need("a restoration model", lambda c: isinstance(c.model, Restorer))
PRIOR = Need("a prior over codes", lambda c: isinstance(c.model, Prior))
SAMPLES = Need("a model that samples (a prior over its codes)", lambda c: _ae(c, "can_sample"))
LIKELIHOOD = Need("a likelihood (a latent-variable model)", lambda c: _ae(c, "has_likelihood"))
DISCRETE = Need("discrete codes (a codebook)", lambda c: _ae(c, "discrete_codes"))
ATTACHED_PRIOR = Need("a trained prior over the codes", lambda c: _ae(c, "discrete_codes") and c.model.prior is not None)
DECODABLE = Need("codes that decode alone (continuous, no skip features)",
                 lambda c: _ae(c) and c.model.decodes_codes and not c.model.binary_codes)
LABELS = Need("labelled data", lambda c: c.part.y is not None and c.dataset.train.y is not None)
NOT_TEXT = Need("data other than word counts", lambda c: c.dataset.kind != "text")
FEATURES = Need("a feature network: 28x28 greyscale images, or labelled images of at least 4x4",
                lambda c: c.features() is not None)
LINES = Need("the lines data (ACAI's benchmark) with at least 512 items",
             lambda c: c.dataset.meta.get("benchmark") == "lines" and len(c.part.x) >= 512)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[EvalContext], dict]
    needs: tuple[Need, ...]
    cost: Literal["cheap", "costly"]
    about: str

    def missing(self, ctx: EvalContext) -> Need | None:
        """The first need the context does not meet, or None when the metric applies."""
        return next((n for n in self.needs if not n(ctx)), None)


METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, needs: tuple[Need, ...], cost: Literal["cheap", "costly"]):
    """Register ``fn(ctx) -> dict`` as metric ``name``; its docstring's first line says what it measures."""

    def wrap(fn):
        if name in METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        about = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        METRICS[name] = Metric(name, fn, tuple(needs), cost, about)
        return fn

    return wrap


# --- the metrics, in the order they run ---------------------------------------------------------
@register_metric("recon", needs=(AUTOENCODER,), cost="cheap")
def _recon(ctx: EvalContext) -> dict:
    """Reconstruction error: squared error per item and per value, and PSNR (not for word counts)."""
    from .reconstruction import reconstruction_metrics

    lo, hi = ctx.dataset.value_range()
    out = reconstruction_metrics(ctx.model, ctx.part.x, data_range=hi - lo, progress=ctx.progress)
    if ctx.dataset.kind == "text":  # a peak signal-to-noise ratio of word counts means nothing
        out.pop("psnr", None)
    return out


@register_metric("restoration", needs=(RESTORER,), cost="cheap")
def _restoration(ctx: EvalContext) -> dict:
    """PSNR of the corrupted and of the restored items, with the model's own corruption."""
    from .restoration import restoration_metrics

    return restoration_metrics(ctx.model, ctx.part.x, ctx.model.corruption, progress=ctx.progress)


@register_metric("codebook", needs=(DISCRETE,), cost="cheap")
def _codebook(ctx: EvalContext) -> dict:
    """Codebook use: the perplexity of the codes over the split and the fraction of codes used."""
    from .codes import codebook_perplexity

    return codebook_perplexity(_grids(ctx), ctx.model.config.num_codes)


@register_metric("prior_nll", needs=(ATTACHED_PRIOR,), cost="cheap")
def _prior_nll(ctx: EvalContext) -> dict:
    """The attached prior's negative log-likelihood of the split's code grids (nats, bits per code)."""
    from .codes import prior_metrics

    return prior_metrics(ctx.model.prior, _grids(ctx), progress=ctx.progress)


@register_metric("prior", needs=(PRIOR,), cost="cheap")
def _prior(ctx: EvalContext) -> dict:
    """A prior model's negative log-likelihood of the code grids it is evaluated on."""
    from .codes import prior_metrics

    return prior_metrics(ctx.model, ctx.part.x, progress=ctx.progress)


@register_metric("lines", needs=(LINES, DECODABLE), cost="cheap")
def _lines(ctx: EvalContext) -> dict:
    """Interpolation quality on lines: mean distance to the nearest ideal line, and smoothness (ACAI)."""
    from .lines import interpolation_paths, lines_metrics

    return lines_metrics(interpolation_paths(ctx.model, ctx.part.x))


@register_metric("nll", needs=(LIKELIHOOD,), cost="costly")
def _nll(ctx: EvalContext) -> dict:
    """ELBO (first 10 x nll_items items) and importance-sampled NLL (nll_k samples, first nll_items items)."""
    from .likelihood import elbo, importance_nll

    x = ctx.part.x
    out = {"elbo": elbo(ctx.model, x[: 10 * ctx.nll_items], progress=ctx.progress),
           "elbo_items": min(len(x), 10 * ctx.nll_items)}
    out.update(importance_nll(ctx.model, x[: ctx.nll_items], k=ctx.nll_k, progress=ctx.progress))
    return out


@register_metric("probes", needs=(AUTOENCODER, LABELS), cost="costly")
def _probes(ctx: EvalContext) -> dict:
    """Linear-probe, 1-NN and 5-NN accuracy of the labels read off the codes (fitted on training codes)."""
    from .probes import probe_accuracies
    from .reconstruction import embed

    train = ctx.dataset.train
    n = min(len(train), ctx.probe_train)
    z_train, z_test = (embed(ctx.model, x, progress=ctx.progress).numpy() for x in (train.x[:n], ctx.part.x))
    return probe_accuracies(z_train, train.y[:n].numpy(), z_test, ctx.part.y.numpy(), progress=ctx.progress)


@register_metric("fd_recon", needs=(AUTOENCODER, NOT_TEXT, FEATURES), cost="costly")
def _fd_recon(ctx: EvalContext) -> dict:
    """Frechet distance of reconstructions to their items in the feature network: how real they look."""
    from .generative import frechet_distance
    from .reconstruction import reconstruct

    n = min(ctx.samples, len(ctx.part.x))
    net = ctx.features()
    rec = reconstruct(ctx.model, ctx.part.x[:n], progress=ctx.progress).clamp(0, 1)
    return {"fd_recon": frechet_distance(ctx.real_features(n), net(rec, ctx.progress)), **_feature_facts(net)}


@register_metric("samples", needs=(SAMPLES, FEATURES), cost="costly")
def _samples(ctx: EvalContext) -> dict:
    """Frechet distance, precision and recall of draws from the model's own prior."""
    from .generate import sample_images

    return _sample_scores(ctx, "", lambda n, seed: sample_images(ctx.model, n, seed=seed))


@register_metric("gmm_samples", needs=(DECODABLE, NOT_TEXT, FEATURES), cost="costly")
def _gmm_samples(ctx: EvalContext) -> dict:
    """The same scores for draws from a 10-component Gaussian mixture fitted on the training codes."""
    from .gmm import sample_gmm

    gmm = ctx.gmm()
    return _sample_scores(ctx, "gmm_", lambda n, seed: sample_gmm(ctx.model, gmm, n, seed=seed))


def _grids(ctx: EvalContext) -> torch.Tensor:
    if "grids" not in ctx._cache:
        from ..models.codes import code_grids

        ctx._cache["grids"] = code_grids(ctx.model, ctx.part.x, progress=ctx.progress)
    return ctx._cache["grids"]


def _feature_facts(net) -> dict:
    return {"features": net.name, "features_test_acc": net.test_accuracy}


def _sample_scores(ctx: EvalContext, prefix: str, draw, batch_size: int = 500) -> dict:
    """``draw(n, seed)`` -> n items; ``samples`` draws (batch b with seed b) against as many real items."""
    from ..progress import bar
    from .generative import frechet_distance, precision_recall

    n = min(ctx.samples, len(ctx.part.x))
    net = ctx.features()
    real = ctx.real_features(n)
    fake = []
    with bar(total=n, progress=ctx.progress, desc=f"{prefix}samples", unit="sample") as drawn:
        for b, i in enumerate(range(0, n, batch_size)):
            fake.append(draw(min(batch_size, n - i), b).clamp(0, 1))
            drawn.update(len(fake[-1]))
    fake = net(torch.cat(fake), ctx.progress)
    pr = precision_recall(real, fake)
    return {f"{prefix}sample_fd": frechet_distance(real, fake), f"{prefix}sample_precision": pr["precision"],
            f"{prefix}sample_recall": pr["recall"], "sample_items": n, **_feature_facts(net)}


def reconstruction_quality(model, dataset, part, n: int = 5000, progress: bool = False) -> dict:
    """The ``fd_recon`` metric on the first ``n`` items of ``part`` ({} without a feature network): for
    scripts that score a model outside a run."""
    ctx = EvalContext(model, dataset, samples=n, progress=progress)
    ctx._cache["part"] = part
    return _fd_recon(ctx) if ctx.features() is not None else {}


def sample_quality(model, dataset, part, n: int = 5000, progress: bool = False) -> dict:
    """The ``samples`` metric of anything with ``sample(n, temperature)`` against the first ``n`` items of
    ``part`` ({} without a feature network)."""
    from .generate import sample_images

    ctx = EvalContext(model, dataset, samples=n, progress=progress)
    ctx._cache["part"] = part
    if ctx.features() is None:
        return {}
    return _sample_scores(ctx, "", lambda k, seed: sample_images(model, k, seed=seed))


# --- choosing and running -----------------------------------------------------------------------
def choose(ctx: EvalContext, names: str | list[str] | None = None) -> list[Metric]:
    """The metrics to run: ``"cheap"``, ``"all"`` (default) or a list of names. Named metrics must apply;
    the others run where they apply."""
    if names is None or names in ("all", "full"):
        return [m for m in METRICS.values() if m.missing(ctx) is None]
    if names == "cheap":
        return [m for m in METRICS.values() if m.cost == "cheap" and m.missing(ctx) is None]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; the metrics are {', '.join(METRICS)} "
                        "(see 'aezoo eval RUN --list-metrics')")
    chosen = []
    for n in names:
        need = METRICS[n].missing(ctx)
        if need is not None:
            raise UserError(f"metric {n!r} does not apply to this {ctx.model.name} run on {ctx.dataset.spec!r}: "
                            f"it needs {need.what}")
        chosen.append(METRICS[n])
    return chosen


def applicability(ctx: EvalContext) -> list[dict]:
    """Every registered metric: name, cost, what it measures, and why it does not apply (None if it does)."""
    out = []
    for m in METRICS.values():
        need = m.missing(ctx)
        out.append({"name": m.name, "cost": m.cost, "about": m.about,
                    "applies": need is None, "why_not": None if need is None else f"needs {need.what}"})
    return out


def evaluate(model: Model, dataset, split: str = "test", metrics: str | list[str] | None = None, *,
             items: int | None = None, samples: int = 5000, nll_k: int = 100, nll_items: int = 200,
             probe_train: int = 5000, run_dir: str | Path | None = None, progress: bool = False) -> dict:
    """The chosen metrics (``"cheap"``, ``"all"``/None, or names) of ``model`` on one split, as one flat dict.
    ``items`` limits every metric to the split's first items; ``samples``: draws per sampler;
    ``nll_k``/``nll_items``: the NLL's importance samples and items; ``probe_train``: items the probes fit
    on; ``run_dir``: where the run keeps its Gaussian mixture (fitted and kept there when missing)."""
    import time

    from ..models.run import check_compatible

    check_compatible(model, dataset)
    if nll_k < 1 or nll_items < 1 or samples < 1 or probe_train < 1 or (items is not None and items < 1):
        raise UserError("evaluation sizes (items, samples, nll_k, nll_items, probe_train) must be at least 1")
    ctx = EvalContext(model, dataset, split, items, samples, nll_k, nll_items, probe_train,
                      None if run_dir is None else Path(run_dir), progress)
    out: dict = {"model": model.name, "data": dataset.spec, "split": split}
    model.eval()
    for metric in choose(ctx, metrics):
        t0 = time.perf_counter()
        out.update(metric.fn(ctx))
        out[f"seconds_{metric.name}"] = round(time.perf_counter() - t0, 3)
    return out


__all__ = ["register_metric", "METRICS", "Metric", "Need", "EvalContext", "evaluate", "choose", "applicability",
           "reconstruction_quality", "sample_quality"]
