"""Semantic hashing speed: hash-table radius lookup and Hamming k-NN against exact float search.

    .venv/bin/python bench/hashing_speed.py [--bits 32,64] [--sizes 10000,100000,1000000] [--minutes 1]

A ``hash`` model per code length is trained on Fashion-MNIST for ``--minutes``. The collection is the
65,000 Fashion-MNIST images (training then test), replicated with small perturbations (Gaussian pixel
noise, std 0.05, a new draw per copy) up to the largest size and encoded by the model, so every code and
continuous code is one the model really produced. Queries: ``--queries`` test images with their own
fresh noise. For each collection size (the first N items):

- radius 2 (``HashIndex`` kind ``hash``, FAISS ``IndexBinaryHash``): every item within Hamming
  distance 2, found by looking up the sum_{i<=2} C(b, i) buckets around the query's code;
- Hamming k-NN, k = 10: FAISS ``IndexBinaryFlat`` (exact, popcount scan);
- float exact k-NN, k = 10: FAISS ``IndexFlatL2`` on the model's continuous codes (the same b numbers
  before thresholding): the baseline.

Queries per second (all queries in one call, ``--threads`` threads) and memory per item (the serialised
index / N). Prints a table and writes bench/results/hashing_speed.json.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

import aezoo
from aezoo.apps.index import encode_codes
from aezoo.env import machine_info
from aezoo.hashing import HashIndex, pack_bits
from aezoo.io import write_json


def collection(model, x: torch.Tensor, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed codes and continuous codes of n perturbed copies of the images x (cycled)."""
    g = torch.Generator().manual_seed(seed)
    bits, cont = [], []
    done, rep = 0, 0
    while done < n:
        take = min(len(x), n - done)
        xs = x[:take]
        if rep:
            xs = (xs + 0.05 * torch.randn(xs.shape, generator=g)).clamp(0, 1)
        b, c = encode_codes(model, xs, batch_size=5000)
        bits.append(pack_bits(b))
        cont.append(c.numpy())
        done += take
        rep += 1
    return np.concatenate(bits), np.ascontiguousarray(np.concatenate(cont), dtype=np.float32)


def timed(fn, repeats: int = 3) -> float:
    """Best wall-clock time of ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    import faiss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", default="32,64")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/hashing_speed.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    sizes = [int(s) for s in a.sizes.split(",")]
    ds = aezoo.data.load("fashion-mnist")
    images = torch.cat([ds.train.x, ds.test.x])
    g = torch.Generator().manual_seed(a.seed + 99)
    q_img = (ds.test.x[: a.queries] + 0.05 * torch.randn(ds.test.x[: a.queries].shape, generator=g)).clamp(0, 1)
    rows = []
    for bits in [int(b) for b in a.bits.split(",")]:
        model = aezoo.create("hash", input_shape=ds.shape, bits=bits)
        cfg = aezoo.TrainConfig(epochs=None, max_minutes=a.minutes, batch_size=128, seed=a.seed,
                                checkpoint_every=0, progress=sys.stderr.isatty())
        aezoo.Trainer(model, ds, cfg, run_dir=None).fit()
        model.eval()
        t = time.perf_counter()
        codes, cont = collection(model, images, max(sizes), a.seed)
        enc_s = time.perf_counter() - t
        qb, qc = encode_codes(model, q_img)
        q_packed, q_cont = pack_bits(qb), np.ascontiguousarray(qc.numpy(), dtype=np.float32)
        for n in sizes:
            ids = np.arange(n).astype(str).tolist()
            hidx = HashIndex(bits, "hash")
            hidx.add(codes[:n], ids)
            flat_bin = faiss.IndexBinaryFlat(bits)
            flat_bin.add(codes[:n])
            flat_f = faiss.IndexFlatL2(bits)
            flat_f.add(cont[:n])
            found = []
            t_radius = timed(lambda: found.append(hidx.radius_raw(q_packed, 2)))
            t_knn = timed(lambda: flat_bin.search(q_packed, 10))
            t_float = timed(lambda: flat_f.search(q_cont, 10))
            mean_found = float(np.mean([len(p) for _, p in found[-1]]))
            row = {"bits": bits, "n": n, "radius2_qps": a.queries / t_radius, "radius2_mean_found": mean_found,
                   "hamming_knn_qps": a.queries / t_knn, "float_knn_qps": a.queries / t_float,
                   "hash_bytes_per_item": hidx.memory_bytes() / n,
                   "binary_flat_bytes_per_item": faiss.serialize_index_binary(flat_bin).nbytes / n,
                   "float_bytes_per_item": faiss.serialize_index(flat_f).nbytes / n,
                   "radius2_ms_per_query": 1000 * t_radius / a.queries, "encode_s": enc_s}
            rows.append(row)
            print(f"{bits} bits, {n:,}: radius-2 {row['radius2_qps']:,.0f} q/s ({mean_found:.0f} found), "
                  f"Hamming k-NN {row['hamming_knn_qps']:,.0f} q/s, float k-NN {row['float_knn_qps']:,.0f} q/s",
                  file=sys.stderr, flush=True)
    print(f"\n{a.queries} queries, {a.threads} threads; q/s = queries per second; B/item = index bytes per item\n")
    print("| bits | items | radius-2 lookup q/s | items found | Hamming 10-NN q/s | float 10-NN q/s (IndexFlatL2) | "
          "radius-2 / float | B/item hash / binary flat / float |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bits']} | {r['n']:,} | {r['radius2_qps']:,.0f} | {r['radius2_mean_found']:.1f} | "
              f"{r['hamming_knn_qps']:,.0f} | {r['float_knn_qps']:,.0f} | {r['radius2_qps'] / r['float_knn_qps']:.1f}x | "
              f"{r['hash_bytes_per_item']:.1f} / {r['binary_flat_bytes_per_item']:.1f} / {r['float_bytes_per_item']:.1f} |")
    print("\nGrowth of the radius-2 lookup time per query from the smallest to the largest collection:")
    for bits in sorted({r["bits"] for r in rows}):
        rs = [r for r in rows if r["bits"] == bits]
        lo, hi = rs[0], rs[-1]
        print(f"- {bits} bits: x{hi['radius2_ms_per_query'] / lo['radius2_ms_per_query']:.1f} time for "
              f"x{hi['n'] / lo['n']:.0f} items")
    write_json(a.out, {"benchmark": "hashing_speed", "settings": vars(a), "rows": rows, "machine": machine_info(),
                       "date": time.strftime("%Y-%m-%d")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
