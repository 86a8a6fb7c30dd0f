"""The metric registry: one hand-worked case per registered metric, the choice of metrics, the Gaussian
mixture sampler against its fitted mixture, and evaluation code that names no family or dataset."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import aezoo
from aezoo.corrupt import Corruption
from aezoo.data import Dataset, Split
from aezoo.errors import UserError
from aezoo.eval.features import FeatureNetwork
from aezoo.eval.generative import frechet_distance, precision_recall
from aezoo.eval.gmm import GaussianMixtureSampler, fit_gmm, sample_gmm
from aezoo.eval.metrics import METRICS, EvalContext, applicability, choose, evaluate
from aezoo.models.base import Autoencoder, ModelConfig, Prior, Restorer
from aezoo.outputs import Encoded

SRC = Path(aezoo.__file__).parent


class Tiny(Autoencoder):
    """An unregistered autoencoder for hand-worked cases: the code is the item, decoded plus ``shift``."""

    name = "tiny"

    def __init__(self, shape=(1, 28, 28), shift=0.0, **caps):
        super().__init__(ModelConfig(input_shape=shape))
        self.w = torch.nn.Parameter(torch.zeros(1))  # a parameter, so the model has a device
        self.shift = shift
        for k, v in caps.items():
            setattr(self, k, v)

    def encode(self, x):
        return Encoded(z=x.flatten(1))

    def decode(self, z):
        return z.view(len(z), *self.config.input_shape) + self.shift


def images(n=400, seed=0, size=28):
    """Two-level images in [0.2, 0.8], so a shift by 0.1 is not clipped."""
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * (torch.rand(n, 1, size, size, generator=g) > 0.6).float()


def ctx_for(model, data, **kw):
    return EvalContext(model, data, **kw)


@pytest.fixture
def toy():
    x, y = images(300), torch.arange(300) % 3
    return Dataset("toy", "image", Split(x, y), Split(x, y), Split(x, y))


def test_every_metric_has_a_case_here():
    src = Path(__file__).read_text()
    for name in METRICS:
        assert f"def test_metric_{name}(" in src, f"metric {name!r} has no hand-worked test"


def test_metric_recon(toy):
    out = evaluate(Tiny(shift=0.1), toy, metrics=["recon"])
    assert out["recon_mse"] == pytest.approx(0.01, rel=1e-5)  # every value off by 0.1
    assert out["recon_sse_per_item"] == pytest.approx(0.01 * 784, rel=1e-5)
    assert out["psnr"] == pytest.approx(20.0, rel=1e-4)  # 10 log10(1 / 0.01)


class Mean(Restorer):
    """Restores every item to 0.5: exact for the flat items below."""

    name = "mean-restorer"

    def __init__(self):
        super().__init__(ModelConfig(input_shape=(1, 8, 8)))
        self.w = torch.nn.Parameter(torch.zeros(1))

    @property
    def corruption(self):
        return Corruption("gaussian", 0.1)

    @property
    def inpaints(self):
        return False

    def restore(self, x, hole=None, sigma=None):
        return torch.full_like(x, 0.5)


def test_metric_restoration():
    x = torch.full((50, 1, 8, 8), 0.5)
    data = Dataset("flat", "image", Split(x), Split(x), Split(x))
    out = evaluate(Mean(), data, metrics="cheap")
    assert "recon_mse" not in out  # a restorer is not an autoencoder
    assert out["psnr_corrupted"] == pytest.approx(20.0, abs=0.5)  # sigma 0.1 -> MSE 0.01
    assert out["psnr_restored"] == pytest.approx(100.0)  # exact: MSE floored at 1e-10
    assert out["restored_sse_per_item"] == 0.0


class Coded(Tiny):
    """Discrete codes: item i's grid is all code (i mod 2); its prior gives every grid the same density."""

    discrete_codes = True

    def __init__(self, num_codes=8, prior=None):
        super().__init__(shape=(1, 8, 8))
        self.config.num_codes = num_codes
        self._prior = [prior]  # kept out of the module tree, as a VQ-VAE keeps its attached prior

    @property
    def prior(self):
        return self._prior[0]

    def code_indices(self, x):
        first = (x[:, 0, 0, 0] > 0.5).long()  # items alternate 0 and 1 below
        return first[:, None, None].expand(len(x), 2, 2)


class Uniform(Prior):
    name = "uniform-prior"

    def __init__(self, k=8):
        super().__init__(ModelConfig(input_shape=(2, 2), data_kind="codes"))
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.k = k

    def log_prob(self, codes):
        return torch.full((len(codes),), -codes[0].numel() * math.log(self.k))


def _alternating(n=40):
    x = torch.zeros(n, 1, 8, 8)
    x[1::2] = 1.0
    return Dataset("alt", "image", Split(x), Split(x), Split(x))


def test_metric_codebook():
    out = evaluate(Coded(num_codes=8), _alternating(), metrics=["codebook"])
    assert out["codebook_perplexity"] == pytest.approx(2.0)  # two codes, used equally
    assert out["codebook_used"] == pytest.approx(2 / 8)


def test_metric_prior_nll():
    out = evaluate(Coded(8, prior=Uniform(8)), _alternating(), metrics=["prior_nll"])
    assert out["prior_bits_per_code"] == pytest.approx(3.0)  # log2 of 8 equally likely codes
    assert out["prior_nll_nats"] == pytest.approx(4 * math.log(8))


def test_metric_prior():
    codes = torch.randint(0, 8, (30, 2, 2)).float()
    data = Dataset("codes", "codes", Split(codes), Split(codes), Split(codes))
    out = evaluate(Uniform(8), data)
    assert out["prior_bits_per_code"] == pytest.approx(3.0)
    assert "recon_mse" not in out


class Angles(Tiny):
    """Lines: the code is the nearest ideal line's (cos, sin); decoding renders that line."""

    def __init__(self):
        super().__init__(shape=(1, 32, 32))

    def encode(self, x):
        from aezoo.eval.lines import match_lines

        a = match_lines(x)[0].float()
        return Encoded(z=torch.stack([a.cos(), a.sin()], 1))

    def decode(self, z):
        from aezoo.data.synthetic import render_lines

        a = torch.atan2(z[:, 1], z[:, 0]).double().numpy() % (2 * math.pi)
        return torch.from_numpy(render_lines(a, 32)).float()[:, None]


def test_metric_lines():
    data = aezoo.data.load("lines?n=2000&test=600")
    out = evaluate(Angles(), data, metrics=["lines"])
    assert out["lines_mean_distance"] < 0.01  # every interpolant is an ideal line
    assert out["lines_pairs"] == 256
    assert "lines" not in [m.name for m in choose(ctx_for(Angles(), data, items=500))]  # too few items


class ConstantWeights(Tiny):
    has_likelihood = True

    def __init__(self, c):
        super().__init__(shape=(1, 4, 4))
        self.c = c

    def log_importance_weights(self, x, k):
        return torch.full((k, len(x)), self.c)


def test_metric_nll():
    x = torch.rand(30, 1, 4, 4)
    data = Dataset("v", "image", Split(x), Split(x), Split(x))
    out = evaluate(ConstantWeights(-7.5), data, metrics=["nll"], nll_k=16, nll_items=10)
    assert out["elbo"] == pytest.approx(-7.5)
    assert out["nll_nats"] == pytest.approx(7.5)  # log k - logsumexp(k copies of c) = -c
    assert out["nll_bits_per_dim"] == pytest.approx(7.5 / (16 * math.log(2)))
    assert out["nll_k"] == 16 and out["nll_items"] == 10


def test_metric_probes():
    y = torch.arange(600) % 3
    x = torch.zeros(600, 1, 4, 4)
    x[:, 0, 0, 0] = y.float()  # the label sits in one value of the code
    x[:, 0, 1:, :] = torch.rand(600, 3, 4)
    data = Dataset("p", "image", Split(x[:400], y[:400]), Split(x[400:], y[400:]), Split(x[400:], y[400:]))
    out = evaluate(Tiny((1, 4, 4)), data, metrics=["probes"])
    assert out["linear_probe_acc"] == pytest.approx(1.0) and out["nn1_acc"] > 0.9
    unlabelled = Dataset("q", "image", Split(x[:400]), Split(x[400:]), Split(x[400:]))
    assert "linear_probe_acc" not in evaluate(Tiny((1, 4, 4)), unlabelled)  # no labels: no probes


def _features():
    """A fixed feature network for any 28x28 greyscale data: 4x4 average pooling (49 features)."""
    class Pool(torch.nn.Module):
        def features(self, x):
            return F.avg_pool2d(x, 4).flatten(1)

    return FeatureNetwork("pool", Pool(), 1.0)


@pytest.fixture
def pooled(monkeypatch):
    monkeypatch.setattr(EvalContext, "features", lambda self: _features())


def test_metric_fd_recon(toy, pooled):
    exact = evaluate(Tiny(), toy, metrics=["fd_recon"])
    assert exact["fd_recon"] == pytest.approx(0.0, abs=1e-6)
    assert exact["features"] == "pool"
    shifted = evaluate(Tiny(shift=0.1), toy, metrics=["fd_recon"])
    assert shifted["fd_recon"] == pytest.approx(49 * 0.01, rel=1e-4)  # every pooled feature moves by 0.1


class Replay(Tiny):
    """Samples the evaluated items themselves (seed b gives batch b), or their shift."""

    can_sample = True

    def __init__(self, x, shift=0.0):
        super().__init__(shift=shift)
        self.x = x
        self.calls = 0

    def sample(self, n, temperature=1.0):
        out = self.x[self.calls : self.calls + n] + self.shift
        self.calls += n
        return out


def test_metric_samples(toy, pooled):
    out = evaluate(Replay(toy.test.x), toy, metrics=["samples"], samples=200)
    assert out["sample_fd"] == pytest.approx(0.0, abs=1e-6)
    assert out["sample_precision"] == 1.0 and out["sample_recall"] == 1.0 and out["sample_items"] == 200
    shifted = evaluate(Replay(toy.test.x, shift=0.1), toy, metrics=["samples"], samples=200)
    assert shifted["sample_fd"] == pytest.approx(49 * 0.01, rel=1e-4)
    ones = torch.ones_like(toy.test.x)  # every sample the same white picture: C_fake = 0
    far = evaluate(Replay(ones), toy, metrics=["samples"], samples=200)
    real = _features()(toy.test.x[:200]).double()
    want = float(((real.mean(0) - 1) ** 2).sum() + torch.trace(torch.cov(real.T)))
    assert far["sample_fd"] == pytest.approx(want, rel=1e-4)
    assert far["sample_precision"] == 0.0 and far["sample_recall"] == 0.0


def test_metric_gmm_samples(toy, pooled, tmp_path):
    model = Tiny(shape=(1, 28, 28))
    out = evaluate(model, toy, metrics=["gmm_samples"], samples=100, run_dir=tmp_path)
    assert (tmp_path / "gmm.safetensors").is_file()  # fitted and kept with the run
    gmm = GaussianMixtureSampler.load(tmp_path / "gmm.safetensors")
    assert gmm.covariance_type == "diag"  # 784 code values
    fake = sample_gmm(model, gmm, 100, seed=0).clamp(0, 1)
    real = _features()(toy.test.x[:100])
    want = frechet_distance(real, _features()(fake))
    assert out["gmm_sample_fd"] == pytest.approx(want, rel=1e-6)
    assert out["gmm_sample_precision"] == precision_recall(real, _features()(fake))["precision"]


class Identity2(Tiny):
    def __init__(self):
        super().__init__(shape=(2,))


def test_gmm_draws_follow_the_fitted_mixture():
    g = np.random.default_rng(0)
    a = g.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], 3000)
    b = g.multivariate_normal([6, -3], [[0.5, 0], [0, 2]], 1000)
    x = torch.from_numpy(np.concatenate([a, b])).float()
    gmm = fit_gmm(Identity2(), x, components=2)
    assert gmm.covariance_type == "full"
    order = gmm.means[:, 0].argsort()
    assert torch.allclose(gmm.weights[order], torch.tensor([0.75, 0.25]), atol=0.02)
    assert torch.allclose(gmm.means[order], torch.tensor([[0.0, 0.0], [6.0, -3.0]]), atol=0.1)
    # the mixture's own moments (closed form) against those of 40,000 draws
    cov = gmm.scale @ gmm.scale.transpose(1, 2)
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    second = (gmm.weights[:, None, None] * (cov + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0)
    torch.manual_seed(1)
    z = gmm.sample_codes(40_000).double()
    assert torch.allclose(z.mean(0), mean.double(), atol=0.05)
    assert torch.allclose(torch.cov(z.T), (second - mean[:, None] * mean[None]).double(), atol=0.15)
    # its density against scikit-learn's for the same parameters
    from sklearn.mixture import GaussianMixture

    sk = GaussianMixture(2, covariance_type="full")
    sk.weights_, sk.means_ = gmm.weights.double().numpy(), gmm.means.double().numpy()
    sk.covariances_ = cov.double().numpy()
    sk.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(sk.covariances_))
    pts = x[:50]
    assert np.allclose(gmm.log_prob(pts).numpy(), sk.score_samples(pts.double().numpy()), atol=1e-3)
    # temperature scales the spread around each mean
    torch.manual_seed(1)
    near = gmm.sample_codes(40_000, temperature=0.0)
    assert set(map(tuple, near.unique(dim=0).tolist())) == set(map(tuple, gmm.means.tolist()))


def test_gmm_file_round_trip_and_damage(tmp_path):
    gmm = fit_gmm(Identity2(), torch.randn(200, 2), components=3)
    gmm.save(tmp_path / "g.safetensors")
    back = GaussianMixtureSampler.load(tmp_path / "g.safetensors")
    assert torch.equal(back.means, gmm.means) and back.code_shape == (2,)
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(UserError, match="Gaussian mixture"):
        GaussianMixtureSampler.load(tmp_path / "bad.safetensors")


def test_choosing_metrics(toy):
    ctx = ctx_for(Tiny(), toy)
    assert {m.name for m in choose(ctx, "cheap")} == {"recon"}
    with pytest.raises(UserError, match="unknown metric 'fid'"):
        choose(ctx, "recon,fid")
    with pytest.raises(UserError, match="'nll' does not apply .* needs a likelihood"):
        choose(ctx, ["nll"])
    rows = {r["name"]: r for r in applicability(ctx)}
    assert rows["recon"]["applies"] and rows["samples"]["why_not"].startswith("needs a model that samples")
    assert all(m.cost in ("cheap", "costly") for m in METRICS.values())


def test_evaluation_code_names_no_family_and_no_dataset():
    """The evaluation is a loop over what applies: no model or dataset name in its code (a metric's own
    name may match the benchmark tag a dataset declares, as 'lines' does)."""
    names = (set(aezoo.registry.names()) | {"fashion-mnist", "mnist", "digits", "lines", "fmnist"}) - set(METRICS)
    for path in (SRC / "eval" / "metrics.py", SRC / "apps" / "runs.py"):
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        strings = re.findall(r"[\"']([a-z0-9_-]+)[\"']", code)
        assert not names & set(strings), f"{path.name} names {names & set(strings)}"
