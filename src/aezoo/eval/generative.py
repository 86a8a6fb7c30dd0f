"""Sample-quality metrics on features: Frechet distance and generative precision/recall."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

from .generate import lerp, slerp


def frechet_distance_from_stats(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)): the squared 2-Wasserstein distance between the
    Gaussians N(mu1, C1) and N(mu2, C2) (Dowson & Landau 1982; as used by Heusel et al. 2017)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    with warnings.catch_warnings():  # a singular product is expected (identical features) and handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():  # near-singular product: regularise (as the reference code does)
        eps = 1e-6 * np.eye(len(cov1))
        covmean = linalg.sqrtm((cov1 + eps) @ (cov2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    a, b = feats_a.double().numpy(), feats_b.double().numpy()
    return frechet_distance_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _knn_radii(f: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    out = []
    for i in range(0, len(f), chunk):
        d = torch.cdist(f[i : i + chunk], f)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(out)


def _covered(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    hits = []
    for i in range(0, len(query), chunk):
        d = torch.cdist(query[i : i + chunk], ref)
        hits.append((d <= radii[None]).any(1))
    return torch.cat(hits)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the real manifold is the union of balls
    around real features reaching each one's k-th nearest real neighbour; precision is the fraction of
    generated features inside it, recall the fraction of real features inside the generated manifold."""
    real, fake = real.double(), fake.double()
    precision = _covered(fake, real, _knn_radii(real, k)).double().mean()
    recall = _covered(real, fake, _knn_radii(fake, k)).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


@torch.no_grad()
def path_length(decode, features, a: torch.Tensor, b: torch.Tensor, *, spherical: bool = False, to_code=None,
                eps: float = 1e-4, seed: int = 0, batch_size: int = 500) -> dict:
    """Perceptual path length (Karras et al., CVPR 2019, sec. 4.2): for each pair (a_i, b_i) and
    t ~ U(0, 1), ||phi(decode(c(t))) - phi(decode(c(t + eps)))||^2 / eps^2, where c interpolates from a_i to
    b_i (linearly, or spherically when ``spherical``) and then passes ``to_code`` (e.g. a mapping network,
    to measure paths in its input space), and phi is ``features``. Returns the mean over the values
    between the 1st and 99th percentiles (as the reference implementation) and the median."""
    g = torch.Generator().manual_seed(seed)
    values = []
    for i in range(0, len(a), batch_size):
        ai, bi = a[i : i + batch_size], b[i : i + batch_size]
        t = torch.rand(len(ai), generator=g, dtype=ai.dtype).to(ai.device)
        ends = []
        for s in (t, t + eps):
            point = (slerp if spherical else lerp)(ai, bi, s[:, None])[:, 0]
            ends.append(point if to_code is None else to_code(point))
        f0, f1 = (features(decode(code)).double() for code in ends)
        values.append(((f1 - f0) ** 2).sum(1).cpu() / eps**2)
    v = torch.cat(values)
    lo, hi = torch.quantile(v, 0.01), torch.quantile(v, 0.99)
    kept = v[(v >= lo) & (v <= hi)]
    return {"ppl": float(kept.mean()), "ppl_median": float(v.median()), "pairs": len(v)}
