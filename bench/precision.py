"""Training throughput of fp32 against bf16 autocast on this machine, side by side in one run.

    .venv/bin/python bench/precision.py [--threads 2] [--steps 30]

For each model layout and batch size: samples per second of full training steps (forward, backward,
Adam) in fp32 and under ``torch.autocast(dtype=bfloat16)``, and their ratio. The trainer's
``precision=auto`` follows what this shows (fp32 on CPU). On a CPU without native bf16 (where the
Trainer refuses ``precision=bf16``) the bf16 cells are skipped, with a note printed and in the JSON.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import aezoo
from aezoo.env import machine_info
from aezoo.io import write_json
from aezoo.models.base import LossStep
from aezoo.outputs import Batch
from aezoo.train.trainer import bf16_supported

LAYOUTS = {"ae mlp 1000-500-250-30": dict(arch="mlp"), "ae conv 32-64": dict(arch="conv"),
           "dae conv 32-64 (latent 128)": dict(arch="conv", latent_dim=128)}


def throughput(model_kwargs: dict, batch: int, bf16: bool, steps: int) -> float:
    name = "dae" if "latent_dim" in model_kwargs else "ae"
    torch.manual_seed(0)
    m = aezoo.create(name, input_shape=(1, 28, 28), **model_kwargs)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x = Batch(torch.rand(batch, 1, 28, 28))

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = m.loss(x, LossStep())
        out.loss.backward()
        opt.step()

    for _ in range(5):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default="bench/results/precision.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    native = bf16_supported(torch.device("cpu"))
    note = None if native else "bf16 cells skipped: this CPU has no native bf16, and the Trainer refuses precision=bf16 on it"
    if note:
        print(note, file=sys.stderr, flush=True)
    rows = []
    for layout, kw in LAYOUTS.items():
        for batch in (128, 256, 512):
            fp32 = throughput(kw, batch, False, a.steps)
            bf16 = throughput(kw, batch, True, a.steps) if native else None
            rows.append({"layout": layout, "batch": batch, "fp32": fp32, "bf16": bf16,
                         "ratio": bf16 / fp32 if native else None})
            print(f"{layout} b={batch}: fp32 {fp32:,.0f}/s" + (f" bf16 {bf16:,.0f}/s" if native else ""),
                  file=sys.stderr, flush=True)
    print(f"\nbf16 supported natively: {native}\n")
    print("| layout | batch | fp32 samples/s | bf16 autocast samples/s | bf16 / fp32 |")
    print("|---|---|---|---|---|")
    for r in rows:
        bf16 = f"{r['bf16']:,.0f} | {r['ratio']:.2f}" if native else "skipped | -"
        print(f"| {r['layout']} | {r['batch']} | {r['fp32']:,.0f} | {bf16} |")
    if note:
        print(f"\n{note}.")
    write_json(a.out, {"benchmark": "precision", "rows": rows, "bf16_supported": native, "note": note,
                       "machine": machine_info(), "date": time.strftime("%Y-%m-%d")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
