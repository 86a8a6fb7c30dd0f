"""Drawing from a trained model: samples, interpolation paths and latent traversals, as decoded
items (figures are made of them by the report and the CLI; sample quality is measured on them)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from ..models.base import Autoencoder, Prior
from ..rng import seeded


def require_generator(model, run_dir: str) -> None:
    """Refuse, in one line, a run whose model has no prior to sample from."""
    if isinstance(model, Prior):
        raise UserError(f"{run_dir} holds a {model.name!r} prior over another model's codes; sample from the "
                        "run it belongs to")
    if not isinstance(model, Autoencoder):
        raise UserError(f"{run_dir} holds a {model.name!r} restoration model, which does not sample")
    if model.discrete_codes and model.prior is None:  # a two-stage model whose prior is not trained yet
        raise UserError(f"{run_dir}: no prior has been trained for this {model.name!r} model yet; train one with "
                        f"'aezoo train pixelcnn --prior-of {run_dir} --out PRIOR_DIR'")
    if not model.can_sample:
        raise UserError(f"{run_dir} holds an {model.name!r} model, which has no prior to sample from; "
                        "train a generative model such as 'vae'")


def require_gmm(model, run_dir: str):
    """The Gaussian mixture kept with the run, or a one-line refusal saying why there is none."""
    from .gmm import gmm_applies, gmm_of

    if not gmm_applies(model):
        raise UserError(f"{run_dir} holds a {model.name!r} model without continuous codes that decode alone, so no "
                        "Gaussian mixture samples it; use --sampler prior where the model has one")
    gmm = gmm_of(run_dir, model)
    if gmm is None:
        raise UserError(f"{run_dir}: no Gaussian mixture has been fitted for this run yet; "
                        f"'aezoo eval {run_dir} --metrics gmm_samples' fits one and keeps it with the run")
    return gmm


@torch.no_grad()
def sample_images(model, n: int, temperature: float = 1.0, seed: int = 0) -> torch.Tensor:
    if n < 1:
        raise UserError("-n must be at least 1")
    if not temperature > 0:
        raise UserError("--temperature must be positive")
    model.eval()
    with seeded(seed, model.device):
        return model.sample(n, temperature=temperature).float().cpu()


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b (White 2016, "Sampling generative networks"):
    along the great circle, with the norm interpolated linearly. a, b: (B, D); t: (T,), or (B, T) for
    fractions per row -> (B, T, D)."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    omega = torch.acos((ua * ub).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))[:, None]  # (B, 1, 1)
    t = t[None, :, None] if t.dim() == 1 else t[:, :, None]
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) * ua[:, None] + torch.sin(t * omega) * ub[:, None]) / so
    return direction * ((1 - t) * na[:, None] + t * nb[:, None])


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t[None, :, None] if t.dim() == 1 else t[:, :, None]
    return a[:, None] + t * (b - a)[:, None]


@torch.no_grad()
def interpolation_rows(model, x: torch.Tensor, pairs: int, steps: int, mode: str, seed: int = 0):
    """Decoded paths between ``pairs`` random pairs of items: a list of rows (endpoints included), and
    their labels. ``mode``: linear, spherical or both (two rows per pair)."""
    if pairs < 1 or steps < 2:
        raise UserError("--pairs must be at least 1 and --steps at least 2")
    if len(x) < 2:
        raise UserError("need at least two items to interpolate between")
    if not model.decodes_codes:
        raise UserError(f"a {model.name} with arch={model.config.arch} cannot decode a code alone "
                        "(its decoder also needs the encoder's skip features), so it cannot interpolate")
    model.eval()
    g = np.random.default_rng(seed)
    idx = torch.from_numpy(g.choice(len(x), size=(pairs, 2), replace=len(x) < 2 * pairs))
    a, b = x[idx[:, 0]].to(model.device), x[idx[:, 1]].to(model.device)
    za, zb = model.encode(a).z, model.encode(b).z
    shape = za.shape[1:]
    za, zb = za.flatten(1), zb.flatten(1)
    t = torch.linspace(0, 1, steps, device=za.device)
    modes = ["linear", "spherical"] if mode == "both" else [mode]
    rows, labels = [], []
    for i in range(pairs):
        for m in modes:
            path = (lerp if m == "linear" else slerp)(za[i : i + 1], zb[i : i + 1], t)[0]  # (T, D)
            rows.append(model.decode(path.view(steps, *shape)).float().cpu())
            labels.append(m)
    return rows, labels


@torch.no_grad()
def traversal_rows(model: Autoencoder, steps: int = 9, span: float = 3.0, max_dims: int = 10) -> list[torch.Tensor]:
    """One row per latent dimension: decode z = 0 with that coordinate swept over [-span, span]."""
    d = model.traversal_dims
    if d == 0:
        raise UserError(f"this {model.name!r} model has no standard-normal prior over a code vector to traverse; "
                        "train a 'vae' for latent traversals")
    if d > max_dims:
        raise UserError(f"latent traversals are for low-dimensional codes (at most {max_dims}); this one has {d}")
    model.eval()
    t = torch.linspace(-span, span, steps)
    rows = []
    for k in range(d):
        z = torch.zeros(steps, d)
        z[:, k] = t
        rows.append(model.decode(z.to(model.device)).float().cpu())
    return rows

