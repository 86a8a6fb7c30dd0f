"""Time to quality of precision=auto against fp32 for the convolutional families, on this machine.

    flock /tmp/aezoo-heavy.lock .venv/bin/python bench/precision.py [--minutes 1] [--threads 2]
        [--families photo dae vqvae vae-conv acai vaegan nvae] [--photos data/photos]

Per family, two runs of the same wall-clock budget, one after the other in this process: fp32 contiguous
(``precision=fp32 channels_last=false``) and the automatic choice (``auto``; the probe runs with an empty
cache, so it measures, and its time is outside the budget and reported apart). Each is scored on the test
split by the cheap metrics of ``aezoo.eval.metrics.evaluate``: restored PSNR for restorers (photo, dae),
reconstruction PSNR for the others. The auto run's probe numbers (seconds per step of each candidate,
fp32/bf16 x contiguous/channels-last, the network at its batch size) are the throughput table. Families
train with their TRAIN_DEFAULTS except a constant schedule (a decay needs a planned number of steps).
Fashion-MNIST for all but photo (greyscale 64x64 crops of the photographs of scripts/get-photos.sh).
Prints two tables and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

import aezoo
from aezoo.env import cpu_flags, machine_info
from aezoo.eval.metrics import evaluate
from aezoo.io import write_json
from aezoo.registry import get as get_model_class
from aezoo.train import TrainConfig, Trainer
from aezoo.train import precision as prec

FAMILIES = {"photo": ("photo", {}), "dae": ("dae", {}), "vqvae": ("vqvae", {}), "vae-conv": ("vae", {"arch": "conv"}),
            "acai": ("acai", {}), "vaegan": ("vaegan", {}), "nvae": ("nvae", {})}
CANDIDATES = ["fp32", "fp32+channels_last", "bf16", "bf16+channels_last"]


def train_config(name: str, minutes: float, threads: int, **kw) -> TrainConfig:
    defaults = dict(getattr(get_model_class(name), "TRAIN_DEFAULTS", {}))
    defaults.pop("schedule", None)
    defaults.pop("min_lr_ratio", None)
    return TrainConfig(**{"epochs": None, "max_minutes": minutes, "threads": threads, "progress": False,
                          "checkpoint_every": 0, "log_every": 100, **defaults, **kw})


def score(metrics: dict) -> tuple[str, float]:
    key = "psnr_restored" if "psnr_restored" in metrics else "psnr"
    return key, metrics[key]


def cell(family: str, data, minutes: float, threads: int, run_dir: str, **kw) -> dict:
    name, model_kw = FAMILIES[family]
    model = aezoo.create(name, seed=0, input_shape=list(data.shape), **model_kw)
    cfg = train_config(name, minutes, threads, **kw)
    t = time.perf_counter()
    result = Trainer(model, data, cfg, run_dir).fit()
    wall = time.perf_counter() - t
    import json

    run = json.load(open(os.path.join(run_dir, "run.json")))
    metrics = evaluate(model.to("cpu").eval(), data, "test", "cheap")
    key, value = score(metrics)
    return {"steps": result.step, "train_s": round(result.elapsed_s, 1), "outside_budget_s": round(wall - result.elapsed_s, 1),
            "precision": run["precision"], "channels_last": run["channels_last"], "choice": run["precision_choice"],
            "score": key, "value": value, "metrics": metrics, "batch_size": cfg.batch_size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.0, help="training budget of each run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--photos", default="data/photos", help="photographs for photo (scripts/get-photos.sh)")
    ap.add_argument("--out", default="bench/results/precision.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    os.environ.pop("AEZOO_PROBE", None)
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="aezoo-precision-cache-")  # the probe measures
    fmnist = aezoo.data.load("fashion-mnist")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in a.families:
            data = aezoo.data.load(f"patches:{a.photos}?grey=true&n=10000&val=500") if family == "photo" else fmnist
            row = {"family": family}
            for label, kw in (("fp32", dict(precision="fp32", channels_last=False)), ("auto", {})):
                row[label] = cell(family, data, a.minutes, a.threads, os.path.join(tmp, f"{family}-{label}"), **kw)
                r = row[label]
                print(f"{family} {label}: {r['steps']} steps, {r['score']} {r['value']:.3f}, "
                      f"{r['precision']}{'+channels_last' if r['channels_last'] else ''}", file=sys.stderr, flush=True)
            rows.append(row)
    flags = cpu_flags() or frozenset()
    print(f"\nCPU: {machine_info()['cpu']}; bf16 hardware flags: "
          f"{', '.join(f for f in prec.BF16_FLAGS if f in flags) or 'none'}; torch {torch.__version__}, {a.threads} threads\n")
    print("Probe (the auto run's, at the family's batch size): speed-up over fp32 contiguous")
    print("| family | batch | fp32 ms/step | " + " | ".join(CANDIDATES[1:]) + " | auto chose | why |")
    print("|---|---|---|" + "---|" * (len(CANDIDATES) - 1) + "---|---|")
    for row in rows:
        ch = row["auto"]["choice"]
        probe = ch.get("probe") or {}
        sec, up = probe.get("seconds_per_step", {}), probe.get("speedup", {})
        cells = " | ".join(f"{up[c]:.2f}x" if c in up else "-" for c in CANDIDATES[1:])
        why = "; ".join(f"{k}: {v}" for k, v in ch["reason"].items())
        chose = ch["precision"] + ("+channels_last" if ch["channels_last"] else "")
        fp32 = f"{1e3 * sec['fp32']:.1f}" if "fp32" in sec else "-"
        print(f"| {row['family']} | {row['auto']['batch_size']} | {fp32} | {cells} | {chose} | {why} |")
    print(f"\nTime to quality: {a.minutes:g} min of training each (probe outside the budget)")
    print("| family | metric | fp32 steps | fp32 | auto steps | auto | auto - fp32 | probe s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        f, u = row["fp32"], row["auto"]
        print(f"| {row['family']} | {f['score']} | {f['steps']:,} | {f['value']:.3f} | {u['steps']:,} | {u['value']:.3f} | "
              f"{u['value'] - f['value']:+.3f} | {u['outside_budget_s'] - f['outside_budget_s']:.1f} |")
    write_json(a.out, {"benchmark": "precision", "minutes": a.minutes, "rows": rows, "machine": machine_info(),
                       "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx"))),
                       "date": time.strftime("%Y-%m-%d")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
