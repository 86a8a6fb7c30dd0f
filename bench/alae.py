"""ALAE against ae, vae and vaegan on Fashion-MNIST at equal wall-clock time (issue 17).

    .venv/bin/python bench/alae.py [--minutes 15] [--threads 2] [--seed 0] [--only alae,alae-style,ae,vae,vaegan]
    .venv/bin/python bench/alae.py --smoke        # checks that the script runs (seconds per model)

**Rows**, one process, one model after another, each trained for ``--minutes`` on the 60,000 training
images at batch 64 (the paper's MNIST batch is 128; the same batch for every row keeps the comparison
about time): ``alae`` (CPU default, the paper's MNIST MLP), ``alae-style`` (``arch=style``, StyleALAE at
32x32), ``ae`` and ``vae`` (their MLP defaults with a 50-number code, as ALAE's w), ``vaegan`` (its CPU
default with a 50-dimensional latent). ``pixels`` is the representation of raw pixels (no training).

**Representation** (the paper's Table 1 protocol on permutation-invariant MNIST, here Fashion-MNIST):
codes of all 60,000 training and 10,000 test items (``encode(x).z``; w = E(x) for alae), then the test
accuracy of the 1-nearest neighbour (Euclidean, exact, FAISS) and of a linear SVM (scikit-learn
``LinearSVC``, C = ``--svm-c``, on standardised codes, fitted on ``--svm-train`` training codes).

**Samples and reconstructions**: Frechet distance and precision/recall of 5,000 samples against 5,000
test items, and the Frechet distance of the reconstructions of those items, in the features of the
shipped Fashion-MNIST classifier (FD-FMNIST, not Inception FID); reconstruction pixel MSE on the test split.

**Perceptual path length** (Karras et al. 2019, sec. 4.2; :func:`aezoo.eval.generative.path_length`):
``--pairs`` pairs of z ~ N(0, I), t ~ U(0, 1), eps = 1e-4, squared distance in the classifier's features
over eps^2, the mean between the 1st and 99th percentiles. For alae: linear paths in w between F(z1) and
F(z2) ("PPL w"), and spherical paths in z mapped through F ("PPL z"; the paper's claim is PPL w < PPL z).
For vae and vaegan: spherical paths in their z, for reference.

Prints a markdown table and writes JSON (bench/results/alae.json; with ``--smoke``,
/tmp/aezoo-bench-alae-smoke.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import faiss
import numpy as np
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

import aezoo
from aezoo.apps.runs import build
from aezoo.eval.metrics import reconstruction_quality, sample_quality
from aezoo.config import to_dict
from aezoo.env import machine_info
from aezoo.errors import TrainingDiverged
from aezoo.eval import embed, reconstruction_metrics
from aezoo.eval.features import classifier_features
from aezoo.eval.generative import path_length
from aezoo.io import write_json

DATA = "fashion-mnist"
BATCH = 64
# row -> (family, preset, config values); the docstring says why each
ROWS = {
    "alae": ("alae", None, {}),
    "alae-style": ("alae", None, {"arch": "style"}),
    "ae": ("ae", None, {"latent_dim": 50}),
    "vae": ("vae", None, {"latent_dim": 50}),
    "vaegan": ("vaegan", None, {"latent_dim": 50}),
}
PARTS = (*ROWS, "pixels")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make(row: str, ds, seed: int):
    family, preset, values = ROWS[row]
    return build(family, ds, preset, [f"{k}={json.dumps(v)}" for k, v in values.items()], seed)


def representation(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, a) -> dict:
    """1-NN accuracy (exact Euclidean) and linear-SVM accuracy of codes."""
    z_train = np.ascontiguousarray(z_train.reshape(len(z_train), -1), dtype=np.float32)
    z_test = np.ascontiguousarray(z_test.reshape(len(z_test), -1), dtype=np.float32)
    index = faiss.IndexFlatL2(z_train.shape[1])
    index.add(z_train)
    _, nearest = index.search(z_test, 1)
    out = {"nn1_acc": float((y_train[nearest[:, 0]] == y_test).mean())}
    t = time.perf_counter()
    n = min(a.svm_train, len(z_train))
    svm = make_pipeline(StandardScaler(), LinearSVC(C=a.svm_c, max_iter=5000)).fit(z_train[:n], y_train[:n])
    out.update(svm_acc=float(svm.score(z_test, y_test)), svm_s=time.perf_counter() - t)
    return out


def codes_of(model, ds) -> tuple[np.ndarray, np.ndarray]:
    return embed(model, ds.train.x).numpy(), embed(model, ds.test.x).numpy()


@torch.no_grad()
def path_lengths(row: str, model, a) -> dict:
    g = torch.Generator().manual_seed(a.seed)
    d = model.config.latent_dim
    z1, z2 = torch.randn(a.pairs, d, generator=g), torch.randn(a.pairs, d, generator=g)

    def features(x):
        return classifier_features(x.clamp(0, 1))

    if row.startswith("alae"):
        w = path_length(model.decode, features, model.mapped(z1), model.mapped(z2), seed=a.seed)
        z = path_length(model.decode, features, z1, z2, spherical=True, to_code=model.mapped, seed=a.seed)
        return {"ppl_w": w["ppl"], "ppl_z": z["ppl"], "ppl_w_median": w["ppl_median"], "ppl_z_median": z["ppl_median"]}
    z = path_length(model.decode, features, z1, z2, spherical=True, seed=a.seed)
    return {"ppl_z": z["ppl"], "ppl_z_median": z["ppl_median"]}


def run_row(row: str, ds, a) -> dict:
    model = make(row, ds, a.seed)
    cfg = aezoo.TrainConfig(epochs=None, max_minutes=a.minutes, batch_size=BATCH, seed=a.seed, threads=a.threads,
                            checkpoint_every=0, progress=sys.stderr.isatty())
    out = {"model": row, "family": ROWS[row][0], "config": ROWS[row][2], "params": model.num_parameters(),
           "train_config": to_dict(cfg)}
    try:
        res = aezoo.Trainer(model, ds, cfg, run_dir=None).fit()
    except TrainingDiverged as e:
        out.update(diverged=True, error=str(e))
        return out
    model.eval()
    out.update(diverged=False, steps=res.step, train_s=res.elapsed_s,
               finite_weights=all(torch.isfinite(p).all().item() for p in model.parameters()))
    log(f"  trained {res.step:,} steps in {res.elapsed_s:.0f} s; measuring")
    t = time.perf_counter()
    z_train, z_test = codes_of(model, ds)
    out.update(representation(z_train, ds.train.y.numpy(), z_test, ds.test.y.numpy(), a))
    out["recon_mse"] = reconstruction_metrics(model, ds.test.x)["recon_mse"]
    out.update(reconstruction_quality(model, ds, ds.test, n=a.fd_items))
    if model.can_sample:
        out.update(sample_quality(model, ds, ds.test, n=a.fd_items))
        out.update(path_lengths(row, model, a))
    out["measure_s"] = time.perf_counter() - t
    return out


def fmt(v, spec: str = ".4f") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and abs(v) >= 10:
        return f"{v:.1f}"
    return format(v, spec) if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


COLUMNS = [("model", "model"), ("steps", "steps"), ("nn1_acc", "1-NN acc"), ("svm_acc", "linear SVM acc"),
           ("sample_fd", "FD samples"), ("sample_precision", "precision"), ("sample_recall", "recall"),
           ("fd_recon", "FD recon"), ("recon_mse", "recon MSE"), ("ppl_w", "PPL w"), ("ppl_z", "PPL z"),
           ("diverged", "NaN stop")]


def print_table(rows: list[dict], a) -> None:
    print(f"\nALAE bench on {a.data}: {a.minutes} min of training per model, batch {BATCH}, {a.threads} threads, "
          f"seed {a.seed}\n")
    print("| " + " | ".join(h for _, h in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for r in rows:
        print("| " + " | ".join(fmt(r.get(k)) for k, _ in COLUMNS) + " |")


def targets_of(rows: list[dict]) -> dict:
    by = {r["model"]: r for r in rows}
    alae, vae = by.get("alae", {}), by.get("vae", {})
    out = {}
    if "sample_fd" in alae and "sample_fd" in vae:
        out["alae_fd_below_vae"] = alae["sample_fd"] < vae["sample_fd"]
    if "ppl_w" in alae:
        out["alae_ppl_w_below_z"] = alae["ppl_w"] < alae["ppl_z"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget per model (wall clock)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma list among {','.join(PARTS)}")
    ap.add_argument("--pairs", type=int, default=2000, help="path-length pairs")
    ap.add_argument("--fd-items", type=int, default=5000, help="samples and test items for the Frechet distances")
    ap.add_argument("--svm-train", type=int, default=60000, help="training codes the linear SVM is fitted on")
    ap.add_argument("--svm-c", type=float, default=0.02, help="LinearSVC's C")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--smoke", action="store_true", help="5 s per model, 200 pairs, 500 FD items, SVM on 5,000")
    ap.add_argument("--out", default=None, help="default: bench/results/alae.json")
    a = ap.parse_args(argv)
    parts = [p for p in a.only.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        ap.error(f"--only: unknown part {unknown[0]!r}; choose among {', '.join(PARTS)}" if unknown else "--only names no part")
    if a.smoke:
        a.minutes, a.pairs, a.fd_items, a.svm_train = 5 / 60, 200, 500, 5000
    torch.set_num_threads(a.threads)
    ds = aezoo.data.load(a.data)
    for p in parts:  # a bad config fails before any training
        if p != "pixels":
            make(p, ds, 0)
    rows = []
    for i, p in enumerate(parts, 1):
        log(f"[{i}/{len(parts)}] {p}")
        if p == "pixels":
            rows.append({"model": "pixels", **representation(ds.train.x.numpy(), ds.train.y.numpy(), ds.test.x.numpy(),
                                                             ds.test.y.numpy(), a)})
        else:
            rows.append(run_row(p, ds, a))
        log("  " + json.dumps({k: v for k, v in rows[-1].items() if k not in ("train_config", "config")}))
    print_table(rows, a)
    targets = targets_of(rows)
    print("\nTargets: " + json.dumps(targets))
    out = a.out or ("/tmp/aezoo-bench-alae-smoke.json" if a.smoke else "bench/results/alae.json")
    write_json(out, {"benchmark": "alae", "data": a.data, "settings": vars(a), "rows": rows, "targets": targets,
                     "machine": machine_info(), "date": time.strftime("%Y-%m-%d")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
