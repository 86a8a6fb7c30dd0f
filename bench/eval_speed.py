"""Wall time of a plain ``aezoo eval RUN --quiet`` for every family on Fashion-MNIST (issue 14).

    .venv/bin/python bench/eval_speed.py [--runs DIR] [--minutes 1] [--label NAME]

Runs missing from ``DIR`` are trained first (``aezoo train FAMILY --data fashion-mnist --max-minutes
MINUTES --threads 2``; ``pixelcnn`` is the ``vqvae`` run's prior, ``--prior-of``), default settings
otherwise. Each evaluation is a fresh process (imports and data loading included) with the default
sizes: every metric that applies, on the full test split, 5,000 samples per sampler, the NLL with
k = 100 on 200 items (ELBO on 2,000), probes fitted on 5,000 training items. Before each one the script waits until other processes use under 0.2 of a core, and it
records the CPU seconds they used meanwhile (``others_cpu_s``): on a shared machine, a time with much of
that is noise, so a measurement during which they averaged over 0.1 core is repeated (up to ``--tries``
times; the least disturbed is kept). Prints a table and writes bench/results/eval_speed[_NAME].json.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from aezoo.env import machine_info
from aezoo.io import write_json

FAMILIES = ["ae", "dae", "hash", "vae", "vqvae", "pixelcnn", "vaegan", "acai", "alae", "nvae"]


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (Linux /proc/stat)."""
    v = [int(t) for t in open("/proc/stat").readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(limit: float = 0.2, window: float = 5.0) -> None:
    while True:
        b = busy_seconds()
        time.sleep(window)
        if busy_seconds() - b < limit * window:
            return


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aezoo.cli", *args], capture_output=True, text=True, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/eval_speed", help="where the runs are (trained there if missing)")
    p.add_argument("--minutes", type=float, default=1.0, help="training budget of a missing run")
    p.add_argument("--label", default="", help="suffix of the JSON file, e.g. before")
    p.add_argument("--tries", type=int, default=3, help="measurements at most, while others disturb them")
    a = p.parse_args()
    runs = Path(a.runs)
    train = ["--data", "fashion-mnist", "--max-minutes", str(a.minutes), "--threads", "2", "--quiet"]
    for fam in FAMILIES:
        if not (runs / fam / "model.safetensors").is_file():
            extra = ["--prior-of", str(runs / "vqvae")] if fam == "pixelcnn" else []
            cli("train", fam, "--out", str(runs / fam), *(train[2:] if extra else train), *extra)
    rows = []
    for fam in FAMILIES:
        best = None
        for _ in range(a.tries):
            wait_quiet()
            b, c, t = busy_seconds(), children_cpu(), time.perf_counter()
            cli("eval", str(runs / fam), "--quiet")
            wall, own = time.perf_counter() - t, children_cpu() - c
            row = {"family": fam, "wall_s": round(wall, 1), "cpu_s": round(own, 1),
                   "others_cpu_s": round(max(busy_seconds() - b - own, 0.0), 1)}
            if best is None or row["others_cpu_s"] < best["others_cpu_s"]:
                best = row
            if row["others_cpu_s"] <= 0.1 * wall:
                break
        rows.append(best)
        print(f"{fam:9s} {best['wall_s']:7.1f} s wall  {best['cpu_s']:7.1f} s cpu  {best['others_cpu_s']:6.1f} s others",
              flush=True)
    out = Path("bench/results") / f"eval_speed{'_' + a.label if a.label else ''}.json"
    write_json(out, {"machine": machine_info(), "date": time.strftime("%Y-%m-%d"), "runs": str(runs), "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
