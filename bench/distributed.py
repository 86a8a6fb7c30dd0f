"""Data-parallel throughput on this machine: 1 and 2 processes against 1 process with 2 threads (issue 18).

    .venv/bin/python bench/distributed.py [--models ae,vae,vqvae] [--seconds 60] [--batch 128]

For each model (its CPU default config, Fashion-MNIST), three ways of spending the machine on the same
global batch (``--batch``): one process with 1 thread, one process with 2 threads, and two processes of
1 thread each started by ``torchrun`` (batch/2 per process, gloo over loopback). Each trains for
``--seconds`` (the trainer's time budget; no files written) and reports items/s. Then ``ae`` reads the
Fashion-MNIST images from one uint8 ``.npy``, into memory (``mmap=false``) or per batch from the mapped
file (``mmap=true``). In the two-process run
each rank then times 30 all-reduces of a flat float32 buffer the size of the model's gradients: the
communication share of a step is that time over the measured step time. Writes
``bench/results/distributed.json``; BENCHMARKS.md turns the all-reduce volume into a prediction for N
machines.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
import torch
import aezoo
from aezoo.apps.runs import build
from aezoo.train import distributed

model_name, batch, seconds, threads = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
spec = sys.argv[5] if len(sys.argv) > 5 else "fashion-mnist"
group = distributed.join()
world = group.world if group else 1
data = aezoo.data.load(spec)
model = build(model_name, data, None, [], 0)
cfg = aezoo.TrainConfig(epochs=None, max_minutes=seconds / 60, batch_size=batch // world, threads=threads,
                        progress=False, log_every=10**9)
res = aezoo.Trainer(model, data, cfg, None).fit()
out = {"model": model_name, "data": spec.split("?")[-1] if "?" in spec else "memory", "processes": world,
       "threads": threads, "steps": res.step,
       "seconds": res.elapsed_s, "items_per_s": res.step * batch / res.elapsed_s,
       "step_ms": 1000 * res.elapsed_s / res.step,
       "grad_numbers": sum(p.numel() for p in model.parameters() if p.requires_grad)}
if group is not None:
    import torch.distributed as dist
    flat = torch.zeros(out["grad_numbers"])
    for _ in range(3):
        dist.all_reduce(flat)
    t = time.perf_counter()
    for _ in range(30):
        dist.all_reduce(flat)
    out["allreduce_ms"] = 1000 * (time.perf_counter() - t) / 30
    out["comm_share"] = out["allreduce_ms"] / out["step_ms"]
if group is None or group.main:
    print("RESULT " + json.dumps(out), flush=True)
distributed.leave()
"""


def all_images(ds):
    """Every item of a dataset's three splits, as one (N, H, W) numpy array."""
    import numpy as np

    return np.concatenate([ds.train.x.numpy(), ds.val.x.numpy(), ds.test.x.numpy()])[:, 0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(worker: Path, model: str, batch: int, seconds: float, processes: int, threads: int, spec: str = "") -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    args = [str(worker), model, str(batch), str(seconds), str(threads)] + ([spec] if spec else [])
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}",
               f"--master-port={free_port()}", *args]
    else:
        cmd = [sys.executable, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode or not lines:
        raise SystemExit(f"{model} with {processes} process(es) failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[0][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="ae,vae,vqvae")
    ap.add_argument("--seconds", type=float, default=60.0, help="training time per configuration")
    ap.add_argument("--batch", type=int, default=128, help="global batch (split over the processes)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "distributed.json"))
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from aezoo.env import machine_info

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        worker = Path(tmp) / "worker.py"
        worker.write_text(WORKER)
        for model in a.models.split(","):
            for processes, threads in ((1, 1), (1, 2), (2, 1)):
                row = run(worker, model, a.batch, a.seconds, processes, threads)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        # data on disk: the Fashion-MNIST training images as one uint8 .npy, read into memory or per batch
        import numpy as np

        sys.path.insert(0, str(ROOT / "src"))
        import aezoo

        npy = Path(tmp) / "fmnist.npy"
        fm = aezoo.data.load("fashion-mnist")
        np.save(npy, (all_images(fm) * 255 + 0.5).astype(np.uint8))
        disk = [run(worker, "ae", a.batch, a.seconds, 1, 2, f"npy:{npy}?mmap={m}") for m in ("false", "true")]
        for row in disk:
            print(json.dumps(row), file=sys.stderr, flush=True)
    print("| model | params | 1 proc x 1 thread, items/s | 1 proc x 2 threads | 2 procs x 1 thread | "
          "2 procs / 1x2 | all-reduce ms | step ms (2 procs) | comm share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in a.models.split(","):
        r11, r12, r21 = [r for r in rows if r["model"] == model]
        print(f"| {model} | {r11['grad_numbers']:,} | {r11['items_per_s']:,.0f} | {r12['items_per_s']:,.0f} | "
              f"{r21['items_per_s']:,.0f} | {r21['items_per_s'] / r12['items_per_s']:.2f} | "
              f"{r21['allreduce_ms']:.2f} | {r21['step_ms']:.2f} | {r21['comm_share']:.1%} |")
    print("\n| ae, items from one .npy | items/s (1 process x 2 threads) |")
    print("|---|---|")
    for row in disk:
        print(f"| {'in memory' if row['data'] == 'mmap=false' else 'memory-mapped, gathered per batch'} | "
              f"{row['items_per_s']:,.0f} |")
    rows += disk
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps({"args": vars(a), "machine": machine_info(), "rows": rows}, indent=1))
    tmp_out.replace(out)


if __name__ == "__main__":
    main()
