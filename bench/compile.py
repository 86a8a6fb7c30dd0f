"""torch.compile on the CPU, its compile time inside the budget: steps reached in equal wall time.

    flock /tmp/aezoo-heavy.lock .venv/bin/python bench/compile.py [--minutes 1] [--threads 2]

For an MLP family (ae, default config) and a conv family (dae, default config) on Fashion-MNIST at batch
128: the same wall-clock budget with each top-level submodule compiled (``module.compile()``, what
``train.compile`` did) and without, one after the other in this process. Reports the time to the first
step (compilation happens there), the steps reached in the budget, and the steady rate after the first
step. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import aezoo
from aezoo.env import machine_info
from aezoo.io import write_json
from aezoo.train import TrainConfig, Trainer

FAMILIES = {"ae (mlp)": ("ae", {}), "dae (conv)": ("dae", {})}


def cell(name: str, kw: dict, data, minutes: float, threads: int, compiled: bool) -> dict:
    model = aezoo.create(name, seed=0, input_shape=list(data.shape), **kw)
    if compiled:
        for module in model.children():
            module.compile()
    trainer = Trainer(model, data, TrainConfig(epochs=None, max_minutes=minutes, threads=threads, progress=False,
                                               checkpoint_every=0, precision="fp32", channels_last=False), None)
    marks = []
    step = trainer._train_step

    def timed(batch, i):
        out = step(batch, i)
        marks.append(time.perf_counter())
        return out

    trainer._train_step = timed
    t0 = time.perf_counter()
    result = trainer.fit()
    first = marks[0] - t0
    steady = (len(marks) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 else float("nan")
    return {"steps": result.step, "first_step_s": round(first, 2), "steady_steps_per_s": round(steady, 2),
            "train_s": round(result.elapsed_s, 1), "val": result.last_metrics}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/compile.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = aezoo.data.load("fashion-mnist")
    rows = []
    for label, (name, kw) in FAMILIES.items():
        row = {"family": label}
        for compiled in (False, True):
            try:
                row["compiled" if compiled else "eager"] = r = cell(name, kw, data, a.minutes, a.threads, compiled)
                print(f"{label} compiled={compiled}: {r}", file=sys.stderr, flush=True)
            except Exception as e:  # a compile failure is a result too
                row["compiled" if compiled else "eager"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                print(f"{label} compiled={compiled}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        rows.append(row)
    print(f"\n{a.minutes:g} min per run, batch 128, fp32, {a.threads} threads; CPU: {machine_info()['cpu']}\n")
    print("| family | eager steps | compiled steps | compiled / eager | first step eager (s) | first step compiled (s) "
          "| steady steps/s eager | steady compiled |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        e, c = row["eager"], row["compiled"]
        if "error" in e or "error" in c:
            print(f"| {row['family']} | {e.get('steps', e.get('error'))} | {c.get('steps', c.get('error'))} | - | - | - | - | - |")
            continue
        print(f"| {row['family']} | {e['steps']:,} | {c['steps']:,} | {c['steps'] / e['steps']:.2f} | {e['first_step_s']} | "
              f"{c['first_step_s']} | {e['steady_steps_per_s']} | {c['steady_steps_per_s']} |")
    write_json(a.out, {"benchmark": "compile", "minutes": a.minutes, "rows": rows, "machine": machine_info(),
                       "date": time.strftime("%Y-%m-%d")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
