"""``aezoo compare``: the autoencoder family trained on one dataset and ranked in one leaderboard.

Every registered autoencoder family that fits the data (or those named) is trained exactly as ``aezoo
train`` would (each run's command is recorded), at equal wall-clock time per model and seed (or equal
steps), each in its own run folder ``OUT/FAMILY-seedS``. A VQ-VAE's budget covers its PixelCNN prior: 70%
for the VQ-VAE, 30% for the prior. A family whose recipe plans its schedule over the run's length (nvae's
KL warm-up and cosine decay) follows the clock, so its run ends with the full objective. Every run is then
scored by the same metrics (:mod:`aezoo.eval.metrics`, all that apply) on the same test items with the same
sample count, and ``leaderboard.md``, ``leaderboard.json`` and ``report.html`` are written: the table (mean
± std over seeds, the best of each column marked) and side-by-side grids of reconstructions of the same
items, samples with the same seeds, and interpolations between the same pairs.

A family's model settings (``--set NAME.KEY=VALUE``, e.g. your own networks: ``vae.encoder=mypkg.nets:Encoder``)
are its ``aezoo train --set KEY=VALUE``; a family given settings must build with them (an error, not a skip).
Runs naming your own networks are loaded to be evaluated, so they need ``--trust-code`` from the start.

A compare killed midway and started again with the same arguments reuses the finished runs and resumes the
unfinished one from its last checkpoint.
"""

from __future__ import annotations

import html
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

from .. import data as data_mod
from .. import registry
from ..errors import UserError
from ..eval.metrics import evaluate
from ..io import check_output_dir, make_dir, one_writer, read_json, write_bytes, write_json
from ..models.base import Autoencoder, Prior, load_model, train_defaults
from ..models.parts import check_trust
from ..train import TrainConfig
from .prior import train_prior
from .runs import train_run

PRIOR_SHARE = 0.3  # of a two-stage family's budget, for its prior
# (result key, column title, "low"/"high" is better, or None: shown, not ranked)
COLUMNS = [
    ("parameters", "params", None), ("step", "steps", None), ("train_s", "train s", None),
    ("recon_mse", "recon MSE", "low"), ("psnr", "PSNR dB", "high"), ("fd_recon", "recon FD", "low"),
    ("sample_fd", "sample FD", "low"), ("sample_precision", "precision", "high"), ("sample_recall", "recall", "high"),
    ("gmm_sample_fd", "GMM sample FD", "low"), ("gmm_sample_precision", "GMM precision", "high"),
    ("gmm_sample_recall", "GMM recall", "high"), ("nll_nats", "NLL nats", "low"),
    ("linear_probe_acc", "linear probe", "high"), ("nn1_acc", "1-NN", "high"),
    ("lines_mean_distance", "lines distance", "low"), ("lines_smoothness", "lines smoothness", "low"),
]
VIEW_ITEMS = 8  # items per row in the report's grids


def families(names: str | None) -> list[str]:
    """The autoencoder families to compare: those named, or every registered one."""
    every = [n for n in registry.names() if issubclass(registry.get(n), Autoencoder)]
    if not names:
        return every
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    for n in chosen:
        if n not in registry.names():
            raise UserError(f"unknown model {n!r} in --models; the autoencoder families are {', '.join(every)}")
        if n not in every:
            raise UserError(f"{n!r} is not an autoencoder family (compare trains {', '.join(every)})")
    if len(set(chosen)) != len(chosen):
        raise UserError("--models names a family twice")
    return chosen


def family_sets(items: list[str], names: list[str]) -> dict[str, list[str]]:
    """``--set NAME.KEY=VALUE`` items as {family: its ``KEY=VALUE`` settings}, each parsed later by the
    family's config exactly as ``aezoo train --set KEY=VALUE``."""
    sets = {}
    for item in items:
        name, dot, setting = item.partition(".")
        if not dot or "=" in name or "=" not in setting:
            raise UserError(f"--set expects NAME.KEY=VALUE with NAME a compared family, e.g. "
                            f"vae.encoder=mypkg.nets:Encoder; got {item!r}")
        if name not in names:
            raise UserError(f"--set {item!r}: {name!r} is not among the compared families ({', '.join(names)})")
        sets.setdefault(name, []).append(setting)
    return sets


def _fits(name: str, dataset, sets: list[str] = ()) -> str | None:
    """Why the family cannot take this data (its config's own check), or None. A family given settings must
    build with them: their error is raised, and their networks are imported only when trusted (its runs are
    loaded to be evaluated)."""
    from .runs import build, new_config

    try:
        if sets:
            check_trust(registry.get(name), new_config(name, dataset, None, list(sets)), f"--set {name}")
        build(name, dataset, None, list(sets))
    except UserError as e:
        if sets:
            raise
        return str(e)
    return None


def _train_sets(minutes: float, steps: int | None, batch_size: int | None, seed: int):
    """(train overrides, train --set values) of one run, as the command line would give them."""
    overrides = {"epochs": None, "seed": seed, "batch_size": batch_size}
    sets = ["epochs=null"]
    if steps is not None:
        sets.append(f"max_steps={steps}")
    else:  # a schedule planned over the run's length (nvae's warm-up and decay) follows the clock
        overrides["max_minutes"] = minutes
    return overrides, sets


def _command(name: str, spec: str, run_dir: Path, overrides: dict, sets: list[str], prior_of: Path | None = None,
             model_sets=()) -> str:
    parts = ["aezoo train", name]
    parts += [f"--prior-of {prior_of}"] if prior_of else [f"--data {_quote(spec)}"]
    parts.append(f"--out {run_dir}")
    if overrides.get("max_minutes") is not None:
        parts.append(f"--max-minutes {overrides['max_minutes']:g}")
    if overrides.get("seed"):
        parts.append(f"--seed {overrides['seed']}")
    if overrides.get("batch_size"):
        parts.append(f"--batch-size {overrides['batch_size']}")
    parts += [f"--set {shlex.quote(s)}" for s in model_sets]
    parts += [f"--set train.{s}" for s in sets if s != "epochs=null" or overrides.get("max_minutes") is None]
    return " ".join(parts)


def _quote(spec: str) -> str:
    return f'"{spec}"' if any(c in spec for c in "?&; ") else spec


def _status(run_dir: Path) -> str:
    """"new", "partial" (a checkpoint to resume) or "trained"."""
    run = run_dir / "run.json"
    if not run.is_file():
        return "new"
    try:
        meta = read_json(run)
    except UserError:
        return "new"
    if meta.get("finished") and (run_dir / "model.safetensors").is_file():
        return "trained"
    return "partial" if (run_dir / "checkpoint.safetensors").is_file() else "new"


def _begin_anew(run_dir: Path) -> None:
    """Remove a run folder of this comparison that has nothing to resume (killed before its first checkpoint,
    possibly before its run.json), so that it trains from the start; ``train --overwrite`` would refuse a
    folder without run.json. The folder is the comparison's own (its name, inside the comparison's --out)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)


def _train_one(name, spec, dataset, run_dir: Path, minutes, steps, batch_size, seed, progress,
               model_sets=()) -> list[str]:
    """Train (or resume) one run, and its prior for a two-stage family; the commands that do it. A run begun
    earlier keeps the step plan it was begun with (a resumed run must match an uninterrupted one)."""
    two_stage = registry.get(name).discrete_codes  # its samples need a prior over the codes
    share = (1 - PRIOR_SHARE) if two_stage and steps is None else 1.0
    state = _status(run_dir)
    if state == "new":
        overrides, sets = _train_sets(minutes * share, steps, batch_size, seed)
    else:
        planned = read_json(run_dir / "run.json").get("train", {}).get("max_steps")
        overrides = {"epochs": None, "seed": seed, "batch_size": batch_size}
        overrides.update({} if steps is not None else {"max_minutes": minutes * share})
        sets = ["epochs=null"] + ([f"max_steps={planned}"] if planned else [])
    commands = [_command(name, spec, run_dir, overrides, sets, model_sets=model_sets)]
    if state == "partial":
        _say(f"resuming {run_dir.name} from its last checkpoint")
    if state == "new":
        _begin_anew(run_dir)
    if state != "trained":
        train_run(name if state == "new" else None, spec, str(run_dir),
                  model_overrides=list(model_sets) if state == "new" else [],
                  train_overrides=overrides, train_sets=sets if state == "new" else [], resume=state == "partial",
                  progress=progress, dataset=dataset)
    if two_stage:
        prior_dir = run_dir.parent / f"{run_dir.name}-prior"
        p_over, p_sets = ({"epochs": None, "seed": seed, "max_minutes": minutes * PRIOR_SHARE}, ["epochs=null"]) \
            if steps is None else ({"epochs": None, "seed": seed}, ["epochs=null", f"max_steps={steps}"])
        p_over["batch_size"] = batch_size  # --batch-size is the prior's too
        commands.append(_command("pixelcnn", spec, prior_dir, p_over, p_sets, prior_of=run_dir))
        p_state = _status(prior_dir)
        if p_state != "trained" or not (run_dir / "prior" / "model.safetensors").is_file():
            if p_state != "partial":
                _begin_anew(prior_dir)
            train_prior(str(run_dir), str(prior_dir), train_overrides=p_over,
                        train_sets=p_sets if p_state != "partial" else [], resume=p_state == "partial",
                        progress=progress)
    return commands


def run_compare(data_spec: str, out: str, *, minutes: float = 5.0, steps: int | None = None, models: str | None = None,
                seeds: int = 1, batch_size: int | None = None, samples: int = 5000, items: int | None = None,
                data_dir: str | None = None, progress: bool = True, sets: list[str] = ()) -> Path:
    """Train, evaluate and rank; returns the path of ``leaderboard.md``. ``sets``: ``NAME.KEY=VALUE`` model
    settings of the compared families (see :func:`family_sets`)."""
    if not minutes > 0 and steps is None:
        raise UserError("--minutes must be positive")
    if steps is not None and steps < 1:
        raise UserError("--steps must be at least 1")
    if not 1 <= seeds <= 20:
        raise UserError("--seeds must be between 1 and 20")
    if samples < 1 or (items is not None and items < 1) or (batch_size is not None and batch_size < 1):
        raise UserError("--samples, --items and --batch-size must be at least 1")
    names = families(models)
    by_family = family_sets(list(sets), names)
    out_dir = Path(out)
    check_output_dir(out_dir)
    settings = {"data": data_spec, "minutes": None if steps else minutes, "steps": steps, "models": names,
                "seeds": seeds, "batch_size": batch_size, "samples": samples, "items": items, "sets": by_family}
    state_file = out_dir / "compare.json"
    if state_file.is_file():
        if read_json(state_file).get("settings") != settings:
            raise UserError(f"{out}: holds a compare with other settings ({state_file}); run it again with the same "
                            "arguments to continue it, or choose a new --out")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out}: exists and is not an aezoo compare folder; choose a new --out")
    dataset = data_mod.load(data_spec, data_dir, progress)  # a bad spec leaves nothing behind
    skipped = {n: _fits(n, dataset, by_family.get(n, [])) for n in names}  # so do bad settings
    # and a training split smaller than a batch (a two-stage family's prior trains on its codes)
    parts = [p for n in names if skipped[n] is None
             for p in ([n, "pixelcnn"] if registry.get(n).discrete_codes else [n])]
    for part in parts:
        size = batch_size or train_defaults(registry.get(part), None).get("batch_size") or TrainConfig.batch_size
        if len(dataset.train) < size:
            raise UserError(f"the training split has {len(dataset.train)} items, fewer than {part}'s batch "
                            f"size {size}; give a smaller --batch-size or more data")
    with one_writer(out_dir):
        make_dir(out_dir)
        write_json(state_file, {"settings": settings})
        results = _run_all(names, dataset, out_dir, minutes, steps, seeds, batch_size, samples, items, progress,
                           skipped, by_family)
        write_json(out_dir / "leaderboard.json", {"settings": settings, "machine": _machine(), "runs": results,
                                                   "summary": summarise(results)})
        md = leaderboard_markdown(results, settings)
        write_bytes(out_dir / "leaderboard.md", md.encode())
        write_report(out_dir, dataset, results, settings)
    return out_dir / "leaderboard.md"


def _machine() -> dict:
    from ..env import machine_info

    return machine_info()


def _say(msg: str) -> None:
    print(f"aezoo compare: {msg}", file=sys.stderr, flush=True)


def _run_all(names, dataset, out_dir: Path, minutes, steps, seeds, batch_size, samples, items, progress, skipped,
             model_sets) -> list[dict]:
    runs = [(n, s) for n in names for s in range(seeds)]
    results, t_start, done_train = [], time.perf_counter(), 0
    todo = [(n, s) for n, s in runs if skipped[n] is None]
    for i, (name, seed) in enumerate(runs, 1):
        if skipped[name] is not None:
            _say(f"[{i}/{len(runs)}] {name}: skipped ({skipped[name]})")
            results.append({"model": name, "seed": seed, "skipped": skipped[name]})
            continue
        run_dir = out_dir / f"{name}-seed{seed}"
        result_file = out_dir / "results" / f"{run_dir.name}.json"
        if result_file.is_file():
            _say(f"[{i}/{len(runs)}] {name} seed {seed}: finished earlier, reused")
            results.append(read_json(result_file))
            done_train += 1
            continue
        left = len(todo) - done_train
        eta = "" if steps else f"; {left * minutes:.1f} min of training left with this one"
        _say(f"[{i}/{len(runs)}] training {name} seed {seed} "
             f"({f'{steps} steps' if steps else f'{minutes:g} min'}{eta}) into {run_dir}")
        commands = _train_one(name, dataset.spec, dataset, run_dir, minutes, steps, batch_size, seed, progress,
                              model_sets.get(name, []))
        done_train += 1
        _say(f"[{i}/{len(runs)}] evaluating {name} seed {seed}")
        model = load_model(run_dir)
        metrics = evaluate(model, dataset, "test", "all", items=items, samples=samples, run_dir=run_dir,
                           progress=progress)
        write_json(run_dir / "eval.json", metrics)
        run = read_json(run_dir / "run.json")
        result = {"model": name, "seed": seed, "run": run_dir.name, "commands": commands,
                  "parameters": model.num_parameters(), "step": run.get("step"), "train_s": run.get("elapsed_s"),
                  "stopped_by": run.get("stopped_by"), **{k: v for k, v in metrics.items() if k not in ("model",)}}
        if model.prior is not None:
            prior_run = read_json(out_dir / f"{run_dir.name}-prior" / "run.json")
            result.update(prior_steps=prior_run.get("step"), train_s=round((run.get("elapsed_s") or 0) +
                                                                            (prior_run.get("elapsed_s") or 0), 2))
        write_json(result_file, result)
        results.append(result)
    _say(f"all runs done in {(time.perf_counter() - t_start) / 60:.1f} min")
    return results


def summarise(results: list[dict]) -> dict:
    """Per model: {column key: (mean, std over seeds, runs)} for every numeric column."""
    out = {}
    for r in results:
        if "skipped" in r:
            out.setdefault(r["model"], {"skipped": r["skipped"]})
            continue
        out.setdefault(r["model"], {})
        for key, *_ in COLUMNS:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[r["model"]].setdefault(key, []).append(float(v))
    for model, cols in out.items():
        for key, vals in list(cols.items()):
            if isinstance(vals, list):
                t = torch.tensor(vals, dtype=torch.float64)
                cols[key] = {"mean": float(t.mean()), "std": float(t.std()) if len(vals) > 1 else 0.0, "n": len(vals)}
    return out


def _best(summary: dict, key: str, better: str | None) -> str | None:
    if better is None:
        return None
    vals = {m: c[key]["mean"] for m, c in summary.items() if key in c and isinstance(c[key], dict)}
    if len(vals) < 2:
        return None
    return (min if better == "low" else max)(vals, key=vals.get)


def _fmt(v: float) -> str:
    a = abs(v)
    if v == int(v) and a >= 1:
        return f"{int(v):,}"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.01 or v == 0:
        return f"{v:.3f}"
    return f"{v:.2e}"


def _cell(c: dict | None) -> str:
    if not c:
        return "-"
    return _fmt(c["mean"]) + (f" ± {_fmt(c['std'])}" if c["n"] > 1 else "")


def table_rows(results: list[dict]):
    """(header, rows, best per column, notes) of the leaderboard: columns that some model has."""
    summary = summarise(results)
    cols = [(k, t, b) for k, t, b in COLUMNS if any(k in c for c in summary.values())]
    header = ["model"] + [t for _, t, _ in cols]
    best = {k: _best(summary, k, b) for k, _, b in cols}
    rows, notes = [], []
    for model, c in summary.items():
        if "skipped" in c:
            notes.append(f"{model}: skipped, {c['skipped']}")
            continue
        rows.append([model] + [(_cell(c.get(k)), best[k] == model) for k, _, _ in cols])
    return header, rows, notes, summary


def _feature_note(results: list[dict]) -> str:
    feats = {(r.get("features"), r.get("features_test_acc")) for r in results if r.get("features")}
    if not feats:
        return ("No feature network for this data (unlabelled, not 28x28 greyscale): the Frechet distance, "
                "precision and recall columns are left out.")
    name, acc = sorted(feats)[0]
    return (f"Frechet distances, precision and recall in the features of `{name}` (test accuracy {acc:.3f}; "
            "not Inception FID: features are only as good as this classifier).")


def leaderboard_markdown(results: list[dict], settings: dict) -> str:
    header, rows, notes, _ = table_rows(results)
    budget = f"{settings['steps']} steps" if settings["steps"] else f"{settings['minutes']:g} minutes"
    seeds = settings["seeds"]
    lines = [f"# aezoo compare: {settings['data']}", "",
             f"Each family trained for {budget} per seed ({seeds} seed{'s' if seeds > 1 else ''}; mean ± std over "
             "seeds), evaluated on the same test items with the same sample count. **Bold**: the best of a column.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row[0]] + [f"**{v}**" if best else v for v, best in row[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _feature_note(results)]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    lines += ["", "Commands (each run exactly as `aezoo train` makes it):", "", "```sh"]
    lines += [c for r in results for c in r.get("commands", [])]
    lines += ["```", ""]
    return "\n".join(lines)


def write_report(out_dir: Path, dataset, results: list[dict], settings: dict) -> Path:
    """``report.html``: the leaderboard and one grid per view, every model on the same items and seeds."""
    from ..report.html import CSS, img_tag, pil_png

    header, rows, notes, _ = table_rows(results)
    budget = f"{settings['steps']} steps" if settings["steps"] else f"{settings['minutes']:g} minutes"
    parts = [f"<h1>aezoo compare: {html.escape(settings['data'])}</h1>",
             f"<p class='muted'>Each family trained for {html.escape(budget)} per seed; bold: the best of a column. "
             f"{html.escape(_feature_note(results).replace('`', ''))}</p>", "<div style='overflow-x:auto'><table><tr>" +
             "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        parts.append(f"<tr><td>{html.escape(row[0])}</td>" + "".join(
            f"<td>{'<b>' if best else ''}{html.escape(v)}{'</b>' if best else ''}</td>" for v, best in row[1:]) + "</tr>")
    parts.append("</table></div>")
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if dataset.kind == "image":
        for title, caption, strips in _views(out_dir, dataset, results):
            parts.append(f"<h2>{html.escape(title)}</h2><p class='muted'>{html.escape(caption)}</p><table>" + "".join(
                f"<tr><th>{html.escape(label)}</th><td>{img_tag(pil_png(img), label)}</td></tr>" for label, img in strips)
                + "</table>")
    parts.append("<h2>Commands</h2><pre>" + html.escape("\n".join(c for r in results for c in r.get("commands", [])))
                 + "</pre>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>aezoo compare</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
    path = out_dir / "report.html"
    write_bytes(path, page.encode())
    return path


@torch.no_grad()
def _views(out_dir: Path, dataset, results: list[dict]):
    """(title, caption, [(row label, image)]) for reconstructions, samples and interpolations, seed 0 runs."""
    from ..eval.generate import interpolation_rows, sample_images
    from ..eval.gmm import gmm_of, sample_gmm
    from ..eval.reconstruction import reconstruct
    from ..report.grid import image_grid, to_images

    shape = dataset.shape
    x = dataset.test.x[:VIEW_ITEMS]
    strip = lambda t: image_grid([to_images(t, shape, "image")])
    recon, samples, paths = [("test items", strip(x))], [], []
    for r in results:
        if "skipped" in r or r["seed"] != 0:
            continue
        run_dir = out_dir / r["run"]
        model = load_model(run_dir).eval()
        recon.append((r["model"], strip(reconstruct(model, x))))
        if model.can_sample:
            samples.append((f"{r['model']} (prior)", strip(sample_images(model, VIEW_ITEMS, seed=0))))
        gmm = gmm_of(run_dir, model)
        if gmm is not None:
            samples.append((f"{r['model']} (GMM)", strip(sample_gmm(model, gmm, VIEW_ITEMS, seed=0))))
        if model.decodes_codes:
            rows, _ = interpolation_rows(model, dataset.test.x, 1, VIEW_ITEMS, "linear", seed=0)
            paths.append((r["model"], strip(rows[0])))
    yield "Reconstructions", f"The first {VIEW_ITEMS} test items (top row) and each model's reconstructions.", recon
    if samples:
        yield "Samples", "Each sampler's draws with seed 0: the model's own prior, and a Gaussian mixture over its " \
                         "training codes (Ghosh et al. 2020).", samples
    if paths:
        yield "Interpolations", "A linear path in code space between the same two test items, ends included.", paths


__all__ = ["run_compare", "families", "family_sets", "summarise", "leaderboard_markdown"]
