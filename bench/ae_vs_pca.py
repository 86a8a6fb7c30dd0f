"""Fashion-MNIST test reconstruction error of PCA-k (scikit-learn) against AE-k, side by side in one run.

    .venv/bin/python bench/ae_vs_pca.py [--ks 2,10,30] [--epochs 100] [--minutes 9.5] [--threads 2]

Metric: ``recon_sse_per_item``, the squared error summed over an image's 784 values (in [0, 1]) and
averaged over the 10,000 test images. The AE is the ``hinton2006`` layout (784-1000-500-250-k, mirrored
decoder) trained from scratch, cosine learning-rate decay over the planned epochs, with a wall-clock
cap per k; PCA is fitted on the same 55,000 training
images (60,000 with ``--train-on-val``). With ``--refine-steps N`` (default 50) the AE is also scored
with each test code refined by N Adam steps through the frozen decoder (``AE.refine``, semi-amortised
inference); both numbers are reported. Prints a table and writes JSON (default bench/results/ae_vs_pca.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA

import aezoo
from aezoo.eval.metrics import evaluate
from aezoo.data.base import Split
from aezoo.env import machine_info
from aezoo.io import write_json


def pca_sse(train: np.ndarray, test: np.ndarray, k: int, seed: int) -> tuple[float, float]:
    t = time.perf_counter()
    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(train)
    rec = pca.inverse_transform(pca.transform(test))
    return float(((rec - test) ** 2).sum(1).mean()), time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="2,10,30")
    ap.add_argument("--epochs", type=int, default=100, help="planned AE epochs per k (cosine decay over them)")
    ap.add_argument("--minutes", type=float, default=9.5, help="AE wall-clock cap per k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--likelihood", default="bernoulli", choices=["gaussian", "bernoulli"])
    ap.add_argument("--arch", default="mlp", choices=["mlp", "conv"], help="mlp: the hinton2006 layout")
    ap.add_argument("--weight-decay", type=float, default=0.8, help="> 0: AdamW with this decoupled weight decay (0: Adam)")
    ap.add_argument("--train-on-val", action="store_true",
                    help="fit PCA and AE on training + validation images (60,000); validation then only monitors")
    ap.add_argument("--refine-steps", type=int, default=50,
                    help="also score codes refined by this many steps through the decoder (AE.refine; 0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default="/tmp/aezoo-bench-ae-vs-pca")
    ap.add_argument("--out", default="bench/results/ae_vs_pca.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    ks = [int(k) for k in a.ks.split(",")]
    ds = aezoo.data.load("fashion-mnist")
    if a.train_on_val:
        ds = dataclasses.replace(ds, train=Split(torch.cat([ds.train.x, ds.val.x]), torch.cat([ds.train.y, ds.val.y])))
    train = ds.train.x.flatten(1).numpy().astype(np.float64)
    test = ds.test.x.flatten(1).numpy().astype(np.float64)

    rows = []
    for k in ks:
        p_sse, p_time = pca_sse(train, test, k, a.seed)
        model = aezoo.create("ae", preset="hinton2006", input_shape=ds.shape, latent_dim=k, likelihood=a.likelihood,
                             arch=a.arch)
        cfg = aezoo.TrainConfig(epochs=a.epochs, max_minutes=a.minutes, schedule="cosine", batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                                threads=a.threads, checkpoint_every=0, progress=sys.stderr.isatty(),
                                optimizer="adamw" if a.weight_decay else "adam", weight_decay=a.weight_decay)
        res = aezoo.Trainer(model, ds, cfg, Path(a.runs) / f"ae{k}").fit()
        ae_sse = evaluate(model, ds, metrics=["recon"])["recon_sse_per_item"]
        row = {"k": k, "pca_sse": p_sse, "pca_fit_s": p_time, "ae_sse": ae_sse, "ratio": ae_sse / p_sse,
               "ae_train_s": res.elapsed_s, "ae_steps": res.step, "stopped_by": res.stopped_by}
        if a.refine_steps:
            model.config.refine_steps = a.refine_steps
            t = time.perf_counter()
            row["refined_sse"] = evaluate(model, ds, metrics=["recon"])["recon_sse_per_item"]
            row["refined_ratio"], row["refine_s"] = row["refined_sse"] / p_sse, time.perf_counter() - t
        rows.append(row)
        print(f"k={k}: PCA {p_sse:.2f}  AE {ae_sse:.2f}  ratio {ae_sse / p_sse:.3f}  refined {row.get('refined_sse', float('nan')):.2f}",
              file=sys.stderr, flush=True)

    print(f"\nAE: {a.arch}, weight decay {a.weight_decay}, {a.epochs} planned epochs, "
          f"cap {a.minutes} min, fitted on {len(ds.train)} images")
    refined = f"AE-k SSE, codes refined {a.refine_steps} steps | refined / PCA | refine time (test set) | "
    print("\n| k | PCA-k SSE | AE-k SSE | AE / PCA | " + (refined if a.refine_steps else "") + "AE train time | AE steps (epochs) |")
    print("|---|---|---|---|" + ("---|---|---|" if a.refine_steps else "") + "---|---|")
    for r in rows:
        ref = f"{r['refined_sse']:.2f} | {r['refined_ratio']:.3f} | {r['refine_s']:.0f} s | " if a.refine_steps else ""
        print(f"| {r['k']} | {r['pca_sse']:.2f} | {r['ae_sse']:.2f} | {r['ratio']:.3f} | {ref}"
              f"{r['ae_train_s'] / 60:.1f} min | {r['ae_steps']} ({r['ae_steps'] * a.batch_size / len(ds.train):.1f}) |")
    result = {
        "benchmark": "ae_vs_pca", "data": "fashion-mnist", "metric": "test recon_sse_per_item",
        "settings": vars(a), "rows": rows,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_json(a.out, result)
    print(f"\nwritten to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
