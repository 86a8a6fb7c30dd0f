"""Test likelihood of vae, vae with the IWAE bound and nvae at equal wall-clock time (issue 16).

    .venv/bin/python bench/likelihood.py [--minutes 8] [--k 1000] [--items 1000] [--threads 2]
    .venv/bin/python bench/likelihood.py --only vae,vae-iwae --smoke      # checks that the script runs

**Data**: dynamically binarised Fashion-MNIST (``fashion-mnist?binarize=dynamic``: each training batch is
drawn anew as Bernoulli(pixel), validation and test are binarised once with a fixed seed); ``--data``
names another spec. Validation during training uses the first 500 validation items.

**Rows**, one process, one model after another, every model built and trained under the same ``--seed``:

- ``vae``: the family default, the IWAE paper's one-stochastic-layer MLP (784-200-200-50, tanh),
  Bernoulli likelihood, trained on the ELBO.
- ``vae-iwae``: preset ``iwae``, the same network trained on the k = 50 importance-weighted bound.
- ``nvae``: the family's CPU default, KL balancing on (Vahdat & Kautz, NeurIPS 2020).
- ``nvae-nokb``: the same with ``kl_balance=False``.
- ``nvae-adamax-plain``: the same with Adamax at torch's eps (1e-8) and no weight decay, the settings before
  the authors' eps 1e-3 and weight decay 3e-4.

**Equal wall-clock protocol**: ``--minutes`` of training per model (default 8) on ``--threads`` CPU
threads (default 2), batch 64 for every model unless its class's ``TRAIN_DEFAULTS`` say otherwise; those
defaults (nvae: a cosine lr decay after a linear warm-up) apply to every model's training config, except
the budget, seed and thread fields, which the bench sets. nvae plans its KL warm-up and lr decay over the
run's planned steps, so every run is given whole epochs: a throwaway copy of the model (same config and
training settings) first trains 3 untimed steps, then 30 timed ones (``Trainer.fit`` on exactly that many
batches; the time includes a validation pass over one item), which gives steps/s, and the run is planned
for ``epochs = max(1, floor(minutes * 60 * steps_per_s / steps_per_epoch))``, with ``max_minutes =
minutes`` as a hard stop. A run therefore uses a little less than the budget (the fraction of an epoch
that did not fit), or is cut by the hard stop when the per-epoch validation or a slower machine makes it
overrun; the table gives each run's actual training seconds and steps against the planned steps, and a
run cut short says so (its schedules did not reach their end). When a single epoch does not fit in the
budget, the plan is one epoch and the hard stop ends it. The calibration is not counted in the budget.

**Measurements** on the first ``--items`` test items (default 1,000): the test NLL in nats by importance
sampling (:func:`aezoo.eval.likelihood.importance_nll`, ``--k`` samples per item, default 1,000), the
single-sample ELBO on the same items, and the gap -ELBO - NLL (how loose the bound is); the Frechet
distance of ``--fd-samples`` samples (default 5,000; each model's ``sample()``, e.g. the decoder's
Bernoulli means for vae) to as many binarised test items in the features of the Fashion-MNIST classifier
(:func:`aezoo.eval.metrics.sample_quality`; left empty when the classifier's weights are missing); for the
nvae rows, the mean KL of each latent group over the same test items (``model.group_kl``) and the number
of active groups, those whose KL is above ``--active-threshold`` nats per item (default 0.1). nvae is
evaluated 20 items at a time, its k samples 250 at a time, to bound memory.

**Targets**: nvae has the lowest NLL of vae, vae-iwae and nvae at equal time; with KL balancing every
group of nvae is active (and, for contrast, how many stay active without it).

**Throughput of the paper-sized model** (the ``throughput`` part): the ``vahdat2020-mnist`` preset on
1x28x28 input, its parameter count, and its training speed here, with the Trainer on this data (forward,
backward and the model's optimizer update, the paper's Adamax; train mode): 3 untimed steps, then 5 timed
ones at batch ``--throughput-batch`` (default 32; the paper uses 200 per GPU), as items/s and as the
CPU days that the paper's 400 epochs of 60,000 items would take at that speed. For the record: the paper
reports 78.01 nats on (statically) binarised MNIST after days of training on GPUs; the numbers here are
on Fashion-MNIST and are not comparable to it.

``--only`` runs a comma-separated subset of ``vae,vae-iwae,nvae,nvae-nokb,nvae-adamax-plain,throughput`` (default: all).
Every model name and preset is checked before any training: an unknown one ends the script with one line.
Prints a markdown table and writes JSON (bench/results/likelihood.json; with ``--smoke``, a run of a few
seconds on 2,000 items with tiny budgets, /tmp/aezoo-bench-likelihood-smoke.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time

import torch

import aezoo
from aezoo.apps.runs import build
from aezoo.eval.metrics import sample_quality
from aezoo.config import to_dict
from aezoo.data import num_batches
from aezoo.env import machine_info
from aezoo.errors import TrainingDiverged, UserError
from aezoo.eval.likelihood import elbo, importance_nll
from aezoo.io import write_json
from aezoo.models.base import make_config
from aezoo.registry import get as get_model_class

DATA = "fashion-mnist?binarize=dynamic"
BATCH = 64  # every model's batch unless its TRAIN_DEFAULTS say otherwise
VAL_ITEMS = 500  # validation items seen during training
CALIBRATION = (3, 30)  # untimed, then timed training steps that give a model's steps/s
TIMING = (3, 5)  # the same for the throughput of the paper-sized preset
PAPER_PRESET = "vahdat2020-mnist"
PAPER_EPOCHS, PAPER_ITEMS, PAPER_BATCH = 400, 60_000, 200  # the paper's MNIST run (batch per GPU)
PAPER_NLL_MNIST = 78.01  # nats, binarised MNIST (Vahdat & Kautz 2020)
# fields of TrainConfig that the bench owns: a model's TRAIN_DEFAULTS do not change them
BENCH_FIELDS = {"epochs", "max_minutes", "seed", "threads", "progress", "checkpoint_every", "device"}

# how each model is evaluated: items per importance-sampling batch, samples drawn per pass, items per
# ELBO / group-KL batch; nvae smaller to bound memory
VAE_EVAL = {"nll_batch": 100, "chunk": 500, "batch": 500}
NVAE_EVAL = {"nll_batch": 20, "chunk": 250, "batch": 250}
# row -> (family, preset, config values, evaluation sizes, has latent groups); the docstring says why
ROWS = {
    "vae": ("vae", None, {}, VAE_EVAL, False),
    "vae-iwae": ("vae", "iwae", {}, VAE_EVAL, False),
    "nvae": ("nvae", None, {}, NVAE_EVAL, True),
    "nvae-nokb": ("nvae", None, {"kl_balance": False}, NVAE_EVAL, True),
    "nvae-adamax-plain": ("nvae", None, {}, NVAE_EVAL, True),
}
# row -> optimizer fields replacing its family's: nvae with torch's Adamax eps (1e-8) and no weight decay, the
# settings before the authors' eps 1e-3 and weight decay 3e-4 (issue 31's ablation)
OPTIMIZER_FIELDS = {"nvae-adamax-plain": {"eps": 1e-8, "weight_decay": 0.0}}
PARTS = (*ROWS, "throughput")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make(row: str, ds, seed: int):
    family, preset, values, _, _ = ROWS[row]
    model = build(family, ds, preset, [f"{k}={json.dumps(v)}" for k, v in values.items()], seed)
    if row in OPTIMIZER_FIELDS:
        declared = model.optimizers
        model.optimizers = lambda: {k: dataclasses.replace(o, **OPTIMIZER_FIELDS[row]) for k, o in declared().items()}
    return model


def check_parts(parts: list[str], ds) -> None:
    """Every model name, preset and config of the selected parts, before any training (a UserError names
    the first that is wrong)."""
    for part in parts:
        if part == "throughput":
            make_config(get_model_class("nvae"), PAPER_PRESET, {"input_shape": [1, 28, 28]}).validate()
        else:
            make(part, ds, 0)


def train_config(model, a, **fields) -> aezoo.TrainConfig:
    """The training settings of every run: batch 64, the bench's budget fields, then the model's
    ``TRAIN_DEFAULTS`` (all but the bench's own fields), then ``fields``."""
    defaults = {k: v for k, v in getattr(type(model), "TRAIN_DEFAULTS", {}).items() if k not in BENCH_FIELDS}
    values = {"batch_size": BATCH, "seed": a.seed, "threads": a.threads, "checkpoint_every": 0,
              "progress": sys.stderr.isatty(), **defaults, **fields}
    return aezoo.TrainConfig(**values)


def timed_steps(model, ds, cfg: aezoo.TrainConfig, steps: int) -> tuple[int, float, dict]:
    """Train ``model`` for exactly ``steps`` steps (one epoch over that many batches, validation on one
    item) and return (steps, seconds, optimizer classes)."""
    steps = min(steps, num_batches(len(ds.train), cfg.batch_size, drop_last=True))
    part = dataclasses.replace(ds, train=ds.train.head(steps * cfg.batch_size), val=ds.val.head(1))
    cfg = dataclasses.replace(cfg, epochs=1, max_minutes=None, progress=False)
    trainer = aezoo.Trainer(model, part, cfg, run_dir=None)
    res = trainer.fit()
    return res.step, res.elapsed_s, {name: type(opt).__name__ for name, opt in trainer.optimizers.items()}


def plan(row: str, ds, a) -> dict:
    """Steps/s of a throwaway copy of the row's model, and the epochs that fit in the budget."""
    model = make(row, ds, a.seed)
    cfg = train_config(model, a, epochs=1)
    timed_steps(model, ds, cfg, a.calibration[0])
    steps, secs, _ = timed_steps(model, ds, cfg, a.calibration[1])
    rate = steps / secs
    per_epoch = num_batches(len(ds.train), cfg.batch_size, drop_last=True)
    epochs = max(1, math.floor(a.minutes * 60 * rate / per_epoch))
    return {"calibration_steps": steps, "calibration_s": secs, "steps_per_s": rate, "steps_per_epoch": per_epoch,
            "epochs": epochs, "planned_steps": epochs * per_epoch}


def train(row: str, ds, a, p: dict):
    """The row's model trained for its planned epochs within ``--minutes``; (model, result fields)."""
    model = make(row, ds, a.seed)
    cfg = train_config(model, a, epochs=p["epochs"], max_minutes=a.minutes)
    run = dataclasses.replace(ds, val=ds.val.head(VAL_ITEMS))
    out = {"batch_size": cfg.batch_size, "train_config": to_dict(cfg)}
    try:
        res = aezoo.Trainer(model, run, cfg, run_dir=None).fit()
        out.update(train_s=res.elapsed_s, steps=res.step, stopped_by=res.stopped_by, error=None)
    except TrainingDiverged as e:  # the Trainer stops before applying the non-finite step
        out.update(train_s=None, steps=None, stopped_by="diverged", error=str(e))
    return model.eval(), out


@torch.no_grad()
def group_kl(model, x: torch.Tensor, batch: int) -> list[float]:
    """The mean KL of each latent group over ``x`` (nats per item), ``batch`` items at a time."""
    total = None
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        kl = model.group_kl(xb).double().cpu() * len(xb)
        total = kl if total is None else total + kl
    return (total / len(x)).tolist()


def measure(row: str, model, ds, a) -> dict:
    _, _, _, ev, groups = ROWS[row]
    x = ds.test.x[: a.items]
    progress = sys.stderr.isatty()
    out = {}
    t = time.perf_counter()
    out.update(importance_nll(model, x, k=a.k, batch_size=ev["nll_batch"], chunk=ev["chunk"], seed=a.seed,
                              progress=progress))
    out["nll_s"] = time.perf_counter() - t
    out["elbo"] = elbo(model, x, batch_size=ev["batch"], seed=a.seed, progress=progress)
    out["nll_gap"] = -out["elbo"] - out["nll_nats"]
    if model.can_sample:
        t = time.perf_counter()
        with torch.no_grad():
            out.update(sample_quality(model, ds, ds.test, a.fd_samples, progress))
        out["fd_s"] = time.perf_counter() - t
    if groups:
        kl = group_kl(model, x, ev["batch"])
        out.update(group_kl=kl, groups=len(kl), active_groups=sum(v > a.active_threshold for v in kl))
    return out


def throughput(ds, a) -> dict:
    """Parameters and training items/s of the paper-sized preset at ``--throughput-batch``."""
    model = build("nvae", ds, PAPER_PRESET, [], a.seed)
    cfg = train_config(model, a, epochs=1, batch_size=a.throughput_batch)
    timed_steps(model, ds, cfg, a.timing[0])
    steps, secs, optims = timed_steps(model, ds, cfg, a.timing[1])
    speed = steps * cfg.batch_size / secs
    return {"preset": PAPER_PRESET, "params": model.num_parameters(), "batch_size": cfg.batch_size, "steps": steps,
            "seconds": secs, "items_per_s": speed, "optimizers": optims,
            "paper_epochs": PAPER_EPOCHS, "paper_items": PAPER_ITEMS, "paper_batch_per_gpu": PAPER_BATCH,
            "cpu_days_for_paper_run": PAPER_EPOCHS * PAPER_ITEMS / speed / 86400,
            "model_config": to_dict(model.config)}


def fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def print_table(rows: list[dict], a) -> None:
    print(f"\n{a.data}: {a.minutes} min of training per model, {a.threads} threads, seed {a.seed}; test NLL "
          f"by importance sampling with k = {a.k} on the first {a.items} test items\n")
    print(f"| model | params | train s | steps (planned) | test NLL, nats (k={a.k}, {a.items} items) | ELBO | "
          f"NLL gap | FD of samples | active groups / groups (KL > {a.active_threshold}) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["error"]:
            print(f"| {r['model']} | {r['params']:,} | — | diverged | — | — | — | — | — |")
            continue
        cut = ", cut by time" if r["stopped_by"] == "time" else ""
        groups = f"{r['active_groups']} / {r['groups']}" if "groups" in r else "—"
        print(f"| {r['model']} | {r['params']:,} | {r['train_s']:.0f} | {r['steps']:,} ({r['planned_steps']:,}{cut}) | "
              f"{r['nll_nats']:.2f} | {r['elbo']:.2f} | {r['nll_gap']:.2f} | {fmt(r.get('sample_fd'), '.1f')} | "
              f"{groups} |")
    for r in rows:
        if r["error"]:
            print(f"\n{r['model']}: {r['error']}")


def print_throughput(t: dict) -> None:
    print(f"\nPaper-sized nvae ({t['preset']}, 1x28x28): {t['params']:,} parameters; training "
          f"({', '.join(t['optimizers'].values())}) at batch {t['batch_size']} (paper: {t['paper_batch_per_gpu']} "
          f"per GPU): {t['items_per_s']:.1f} items/s over {t['steps']} steps on this CPU, so the paper's "
          f"{t['paper_epochs']} epochs of {t['paper_items']:,} items would take {t['cpu_days_for_paper_run']:.0f} "
          f"CPU days here. The paper reports {PAPER_NLL_MNIST} nats on binarised MNIST after days on GPUs.")


def targets_of(rows: list[dict]) -> dict:
    by = {r["model"]: r for r in rows if not r["error"]}
    out = {}
    three = ("vae", "vae-iwae", "nvae")
    if all(m in by for m in three):
        out["nvae_lowest_nll"] = all(by["nvae"]["nll_nats"] < by[m]["nll_nats"] for m in three[:2])
    if "nvae" in by:
        out["nvae_all_groups_active"] = by["nvae"]["active_groups"] == by["nvae"]["groups"]
    if "nvae-nokb" in by:
        out["nvae_nokb_active_groups"] = f"{by['nvae-nokb']['active_groups']} / {by['nvae-nokb']['groups']}"
    if "nvae_lowest_nll" in out and "nvae_all_groups_active" in out:
        out["met"] = out["nvae_lowest_nll"] and out["nvae_all_groups_active"]
    return out


def run(a, parts: list[str]) -> int:
    spec = a.data
    if a.smoke:
        spec += ("&" if "?" in spec else "?") + "limit=2000"
    ds = aezoo.data.load(spec)
    check_parts(parts, ds)
    rows = []
    models = [p for p in parts if p in ROWS]
    for i, row in enumerate(models, 1):
        p = plan(row, ds, a)
        log(f"[{i}/{len(models)}] {row}: {p['steps_per_s']:.1f} steps/s over {p['calibration_steps']} calibration "
            f"steps -> {p['epochs']} epoch(s), {p['planned_steps']:,} steps planned in {a.minutes} min")
        model, res = train(row, ds, a, p)
        r = {"model": row, "params": model.num_parameters(), **p, **res}
        if res["error"]:
            log(f"  diverged: {res['error']}")
        else:
            log(f"  trained {res['steps']:,} steps in {res['train_s']:.0f} s (stopped by {res['stopped_by']}); "
                f"measuring")
            r.update(measure(row, model, ds, a))
            groups = f", active groups {r['active_groups']} / {r['groups']}" if "groups" in r else ""
            log(f"  NLL {r['nll_nats']:.2f} nats, ELBO {r['elbo']:.2f}, FD {fmt(r.get('sample_fd'), '.1f')}{groups}")
        rows.append(r)
    if rows:
        print_table(rows, a)
    tp = None
    if "throughput" in parts:
        log(f"throughput of {PAPER_PRESET} at batch {a.throughput_batch}")
        tp = throughput(ds, a)
        print_throughput(tp)
    targets = targets_of(rows)
    if targets:
        print("\nTargets" + (f" ({'met' if targets['met'] else 'NOT met'})" if "met" in targets else "") + ":")
        for key, label in (("nvae_lowest_nll", "nvae has the lowest NLL of vae, vae-iwae and nvae"),
                           ("nvae_all_groups_active", "every latent group of nvae is active with KL balancing"),
                           ("nvae_nokb_active_groups", "active groups without KL balancing (no target)")):
            if key in targets:
                print(f"- {label}: {targets[key]}")
    out = a.out or ("/tmp/aezoo-bench-likelihood-smoke.json" if a.smoke else "bench/results/likelihood.json")
    write_json(out, {
        "benchmark": "likelihood", "data": spec, "split": "test", "settings": vars(a), "parts": parts,
        "protocol": {"minutes_per_model": a.minutes, "batch_default": BATCH, "val_items": VAL_ITEMS,
                     "calibration": {"warmup_steps": a.calibration[0], "timed_steps": a.calibration[1]},
                     "active_threshold_nats": a.active_threshold},
        "models": {k: {"family": f, "preset": p, "config": v, "eval": e} for k, (f, p, v, e, _) in ROWS.items()
                   if k in parts},
        "rows": rows, "throughput": tp, "targets": targets,
        "paper": {"nll_nats_binarized_mnist": PAPER_NLL_MNIST, "source": "Vahdat & Kautz 2020 (NVAE)"},
        "machine": machine_info(), "date": time.strftime("%Y-%m-%d"),
    })
    log(f"\nwritten to {out}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget per model (wall clock)")
    ap.add_argument("--k", type=int, default=1000, help="importance samples per test item")
    ap.add_argument("--items", type=int, default=1000, help="test items for NLL, ELBO and group KL")
    ap.add_argument("--fd-samples", type=int, default=5000, help="samples (and test items) for the Frechet distance")
    ap.add_argument("--active-threshold", type=float, default=0.1,
                    help="a latent group is active when its mean KL is above this (nats per item)")
    ap.add_argument("--throughput-batch", type=int, default=32, help="batch of the paper-sized preset's timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma list of parts among {','.join(PARTS)}")
    ap.add_argument("--data", default=DATA, help="dataset spec (binary images)")
    ap.add_argument("--smoke", action="store_true",
                    help="a run of a few seconds to check the script: 2,000 items of each split, 0.05 min, k=10, "
                         "20 items, 200 samples, 1+5 calibration steps, 1+1 timed steps of the paper preset")
    ap.add_argument("--out", default=None, help="default: bench/results/likelihood.json")
    a = ap.parse_args(argv)
    a.calibration, a.timing = CALIBRATION, TIMING
    if a.smoke:
        a.minutes, a.k, a.items, a.fd_samples = 0.05, 10, 20, 200
        a.calibration, a.timing = (1, 5), (1, 1)
    parts = [p.strip() for p in a.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        ap.error(f"--only: unknown part {unknown[0]!r}; choose among {', '.join(PARTS)}" if unknown
                 else "--only names no part")
    if a.minutes <= 0 or a.k < 1 or a.items < 1 or a.fd_samples < 2 or a.throughput_batch < 1:
        ap.error("--minutes must be positive; --k, --items and --throughput-batch at least 1, --fd-samples at least 2")
    torch.set_num_threads(a.threads)
    try:
        return run(a, parts)
    except UserError as e:  # an unknown model or preset, a dataset option not supported yet
        print(f"likelihood.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
