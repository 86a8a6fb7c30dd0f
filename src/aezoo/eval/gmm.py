"""Samples from any autoencoder: a Gaussian mixture fitted on its training codes (ex-post density
estimation; Ghosh et al., "From variational to deterministic autoencoders", ICLR 2020, sec. 4; pythae's
``GaussianMixtureSampler``).

The mixture (10 components by default) is fitted by scikit-learn's EM on the flattened codes ``encode(x).z``
of at most 10,000 training items (the first ones: deterministic and bounded in cost), with full covariances
up to 256 code values and diagonal ones above (a full 784 x 784 covariance per component, as a VQ-VAE's
7x7x16 code grid would need, costs more to fit than the model took to train). It is kept with the run as
``gmm.safetensors`` (tensors and a JSON header; no pickle) and sampled in torch: a component by its weight,
then mean + temperature * L eps with L the covariance's Cholesky factor, decoded by the model.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io import save_tensors
from ..models.base import Autoencoder
from ..rng import seeded

GMM_FILE = "gmm.safetensors"
FULL_MAX_DIMS = 256  # above: diagonal covariances
FORMAT = "aezoo-gmm/1"


def gmm_applies(model) -> bool:
    """Codes a mixture can model and the decoder can turn back into items: continuous, decodable alone."""
    return isinstance(model, Autoencoder) and model.decodes_codes and not model.binary_codes


@dataclass
class GaussianMixtureSampler:
    weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, D)
    scale: torch.Tensor  # (K, D, D) lower Cholesky factors ("full") or (K, D) standard deviations ("diag")
    code_shape: tuple[int, ...]  # one code, as encode(x).z gives it, e.g. (16, 3, 3)

    @property
    def covariance_type(self) -> str:
        return "full" if self.scale.dim() == 3 else "diag"

    def sample_codes(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n codes (n, *code_shape) from torch's current RNG (seed it with :func:`aezoo.rng.seeded`)."""
        comp = torch.multinomial(self.weights, n, replacement=True)  # (n,)
        eps = torch.randn(n, self.means.shape[1], dtype=self.means.dtype)
        if self.covariance_type == "full":
            step = torch.einsum("nij,nj->ni", self.scale[comp], eps)
        else:
            step = self.scale[comp] * eps
        return (self.means[comp] + temperature * step).view(n, *self.code_shape)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log density of codes (n, *code_shape) under the mixture, (n,)."""
        z = z.reshape(len(z), -1).to(self.means.dtype)
        if self.covariance_type == "full":
            dist = torch.distributions.MultivariateNormal(self.means, scale_tril=self.scale)
        else:
            dist = torch.distributions.Independent(torch.distributions.Normal(self.means, self.scale), 1)
        return torch.logsumexp(dist.log_prob(z[:, None]) + self.weights.log(), 1)

    def save(self, path: str | Path) -> None:
        meta = {"format": FORMAT, "code_shape": json.dumps(list(self.code_shape))}
        save_tensors(Path(path), {"weights": self.weights, "means": self.means, "scale": self.scale}, metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "GaussianMixtureSampler":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                t = {k: f.get_tensor(k) for k in ("weights", "means", "scale")}
            shape = tuple(int(v) for v in json.loads(meta["code_shape"]))
        except (SafetensorError, OSError, KeyError, ValueError, TypeError) as e:
            raise UserError(f"{path}: not a readable aezoo Gaussian mixture ({e}); delete it to refit") from None
        if meta.get("format") != FORMAT or t["means"].shape[1] != math.prod(shape):
            raise UserError(f"{path}: not an aezoo Gaussian mixture of this version; delete it to refit")
        return cls(t["weights"], t["means"], t["scale"], shape)


@torch.no_grad()
def fit_gmm(model: Autoencoder, x: torch.Tensor, components: int = 10, max_items: int = 10_000,
            seed: int = 0) -> GaussianMixtureSampler:
    """Fit the mixture on the codes of the first ``max_items`` items of ``x`` (training items)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    from .reconstruction import embed

    if not gmm_applies(model):
        raise UserError(f"a {model.name} model has no continuous codes that decode alone; no mixture to fit")
    z = embed(model, x[:max_items])
    code_shape = tuple(z.shape[1:])
    flat = z.reshape(len(z), -1).double().numpy()
    k = max(1, min(components, len(flat) // 2))
    kind = "full" if flat.shape[1] <= FULL_MAX_DIMS else "diag"
    gm = GaussianMixture(k, covariance_type=kind, reg_covar=1e-6, max_iter=200, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(flat)
    cov = gm.covariances_
    scale = np.linalg.cholesky(cov) if kind == "full" else np.sqrt(cov)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float()
    weights = as_t(gm.weights_)
    return GaussianMixtureSampler(weights / weights.sum(), as_t(gm.means_), as_t(scale), code_shape)


def gmm_of(run_dir, model) -> GaussianMixtureSampler | None:
    """The mixture kept with a run, or None (no run, a model without such codes, or none fitted yet)."""
    if run_dir is None or not gmm_applies(model):
        return None
    path = Path(run_dir) / GMM_FILE
    return GaussianMixtureSampler.load(path) if path.is_file() else None


@torch.no_grad()
def sample_gmm(model: Autoencoder, gmm: GaussianMixtureSampler, n: int, temperature: float = 1.0,
               seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """n items decoded from the mixture's codes, (n, *item), on the CPU."""
    if n < 1:
        raise UserError("-n must be at least 1")
    if not temperature > 0:
        raise UserError("--temperature must be positive")
    model.eval()
    with seeded(seed):
        z = gmm.sample_codes(n, temperature)
    return torch.cat([model.decode(z[i : i + batch_size].to(model.device)).float().cpu()
                      for i in range(0, n, batch_size)])


__all__ = ["GaussianMixtureSampler", "fit_gmm", "gmm_of", "gmm_applies", "sample_gmm", "GMM_FILE"]
