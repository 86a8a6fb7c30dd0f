"""Interpolation quality on the synthetic lines (Berthelot et al. 2019, ACAI, sec. 3.1), as their
evaluation code defines it.

Each decoded interpolant is matched to the nearest of a dense set of ideal lines (10,000 angles) by
cosine distance between the images scaled to [-1, 1] (the paper's pixel range). **Mean distance**: the
mean of those nearest distances over every interpolant of every path. **Smoothness** of one path: with
the matched angles unwrapped (no jump above pi) and T the absolute angle between its ends, the largest
step between consecutive interpolants as a fraction of T, minus the fraction an even rotation would
take, 1 / (steps - 1): 0 for a perfect rotation, 1 - 1 / (steps - 1) for one abrupt switch. A path whose
ends match (nearly) the same angle has no smoothness; it counts as 0 in the mean over paths, as there.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data.synthetic import render_lines

REFERENCE_ANGLES = 10_000
STEPS = 16  # interpolants per path, both ends included
PAIRS = 256


def reference_lines(size: int = 32, n: int = REFERENCE_ANGLES) -> tuple[torch.Tensor, torch.Tensor]:
    """(angles (n,), unit vectors (n, size * size)) of the ideal lines in the [-1, 1] pixel range."""
    angles = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    images = torch.from_numpy(render_lines(angles, size)).flatten(1)
    return torch.from_numpy(angles), F.normalize(2 * images - 1, dim=1)


def match_lines(images: torch.Tensor, references=None, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """For images (N, 1, S, S) in [0, 1]: (the nearest ideal line's angle (N,), its cosine distance (N,))."""
    angles, refs = references if references is not None else reference_lines(images.shape[-1])
    best_d, best_i = [], []
    for i in range(0, len(images), chunk):
        x = F.normalize(2 * images[i : i + chunk].flatten(1).double() - 1, dim=1)
        sim = x @ refs.double().T
        s, j = sim.max(1)
        best_d.append(1 - s)
        best_i.append(j)
    return angles[torch.cat(best_i)], torch.cat(best_d)


def smoothness(angles: torch.Tensor) -> torch.Tensor:
    """Per path (P,) from the matched angles (P, T): max step / total angle - 1 / (T - 1); NaN where the
    ends are less than 1e-4 rad apart."""
    a = torch.from_numpy(np.unwrap(angles.double().numpy(), axis=1))
    steps = (a[:, 1:] - a[:, :-1]).abs()
    total = (a[:, -1] - a[:, 0]).abs()
    score = (steps / total[:, None]).max(1).values - 1.0 / (a.shape[1] - 1)
    return torch.where(total < 1e-4, torch.full_like(score, float("nan")), score)


def lines_metrics(paths: torch.Tensor, references=None) -> dict:
    """``paths`` (P, T, 1, S, S): decoded interpolations, ends included. Mean distance and smoothness
    (mean over paths, a path without one counting 0); ``lines_unturned``: the fraction of paths without
    one (both ends match the same line), which a model decoding every code to one line maximises."""
    p, t = paths.shape[:2]
    angles, dist = match_lines(paths.reshape(p * t, *paths.shape[2:]).float(), references)
    smooth = smoothness(angles.view(p, t))
    return {"lines_mean_distance": float(dist.mean()), "lines_smoothness": float(torch.nan_to_num(smooth).sum() / p),
            "lines_unturned": float(smooth.isnan().double().mean()), "lines_pairs": p, "lines_steps": t}


@torch.no_grad()
def interpolation_paths(model, x: torch.Tensor, pairs: int = PAIRS, steps: int = STEPS,
                        batch_size: int = 256) -> torch.Tensor:
    """(pairs, steps, *item): decoded linear paths between item i and item pairs + i of ``x`` (the
    evaluation code's pairing), ends included."""
    if len(x) < 2 * pairs:
        raise ValueError(f"need {2 * pairs} items for {pairs} pairs, got {len(x)}")
    model.eval()
    dev = model.device
    t = torch.linspace(0, 1, steps, device=dev)
    out = []
    for i in range(0, pairs, batch_size):
        a = model.encode(x[i : min(i + batch_size, pairs)].to(dev)).z
        b = model.encode(x[pairs + i : pairs + min(i + batch_size, pairs)].to(dev)).z
        shape = a.shape[1:]
        z = a.flatten(1)[:, None] + t[None, :, None] * (b - a).flatten(1)[:, None]  # (B, T, D)
        rec = model.decode(z.reshape(-1, *shape))
        out.append(rec.float().cpu().view(len(a), steps, *rec.shape[1:]))
    return torch.cat(out)


__all__ = ["lines_metrics", "match_lines", "smoothness", "reference_lines", "interpolation_paths"]
