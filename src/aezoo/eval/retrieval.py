"""Retrieval quality, with relevance = same label (the semantic-hashing and hashing literature's protocol).

For each query the whole database is ranked by distance (Hamming distance for binary codes, ties kept in
database order, so results are deterministic), and:

- ``precision_at_k``: the fraction of the first k items that share the query's label;
- ``map``: mean average precision over the full ranking;
- ``precision_radius``: the fraction of relevant items among those within Hamming distance r of the
  query (the hash-table lookup's answer); a query with nothing within r counts as precision 0, as in
  Salakhutdinov & Hinton (2009) and Gong & Lazebnik (ITQ, 2011). ``radius_hit_rate`` is the fraction of
  queries with at least one item within r.
"""

from __future__ import annotations

import numpy as np


def hamming_distances(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """(Q, N) Hamming distances between packed codes (Q, B) and (N, B), uint8 bytes."""
    q, db = np.ascontiguousarray(queries), np.ascontiguousarray(database)
    if q.shape[1] % 8 == 0:  # whole 64-bit words: 8x fewer operations
        q, db = q.view(np.uint64), db.view(np.uint64)
    return np.bitwise_count(q[:, None, :] ^ db[None, :, :]).sum(-1, dtype=np.int32)


def ranking_metrics(dist: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray, k: int = 100,
                    radius: int | None = None) -> dict:
    """Sums (not means) of the per-query metrics for a block of queries; see :func:`retrieval_metrics`."""
    order = np.argsort(dist, axis=1, kind="stable")
    rel = db_labels[order] == q_labels[:, None]  # (Q, N) relevance in rank order
    ranks = np.arange(1, rel.shape[1] + 1)
    hits = np.cumsum(rel, axis=1)
    n_rel = rel.sum(1)
    ap = np.where(n_rel > 0, (hits / ranks * rel).sum(1) / np.maximum(n_rel, 1), 0.0)
    out = {"precision_at_k": float(rel[:, :k].mean(1).sum()), "map": float(ap.sum())}
    if radius is not None:
        within = dist <= radius
        n_in = within.sum(1)
        good = (within & (db_labels[None, :] == q_labels[:, None])).sum(1)
        out["precision_radius"] = float(np.where(n_in > 0, good / np.maximum(n_in, 1), 0.0).sum())
        out["radius_hit_rate"] = float((n_in > 0).sum())
        out["radius_mean_returned"] = float(n_in.sum())
    return out


def retrieval_metrics(query, database, q_labels, db_labels, *, k: int = 100, radius: int | None = 2,
                      metric: str = "hamming", block: int = 100) -> dict:
    """Mean retrieval metrics of ``query`` against ``database``.

    ``metric="hamming"``: packed binary codes (uint8); ``"euclidean"`` and ``"cosine"``: float vectors
    (the exact k-NN ceiling; no radius). Queries are processed ``block`` at a time.
    """
    q_labels, db_labels = np.asarray(q_labels), np.asarray(db_labels)
    sums: dict[str, float] = {}
    if metric == "cosine":
        query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
        database = database / np.maximum(np.linalg.norm(database, axis=1, keepdims=True), 1e-12)
    db_sq = (database.astype(np.float32) ** 2).sum(1) if metric == "euclidean" else None
    for i in range(0, len(query), block):
        q = query[i : i + block]
        if metric == "hamming":
            dist = hamming_distances(q, database)
        elif metric == "euclidean":  # squared distances rank the same
            q = q.astype(np.float32)
            dist = db_sq[None, :] - 2 * q @ database.T.astype(np.float32)
        elif metric == "cosine":
            dist = -(q @ database.T)
        else:
            raise ValueError(f"unknown metric {metric!r}")
        part = ranking_metrics(dist, q_labels[i : i + block], db_labels, k, radius if metric == "hamming" else None)
        for key, v in part.items():
            sums[key] = sums.get(key, 0.0) + v
    n = len(query)
    out = {key: v / n for key, v in sums.items()}
    if "radius_mean_returned" in out:
        out["radius"] = radius
    out["k"] = k
    return out
