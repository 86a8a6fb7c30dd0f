"""The likelihood objects (aezoo.nn.likelihood): each one's NLL against its closed form at generic values,
its mean, the decoder outputs it needs, and the one "auto" rule every family resolves with."""

import math

import pytest
import torch
import torch.distributions as D

import aezoo
from aezoo.errors import UserError
from aezoo.nn.likelihood import (Bernoulli, DiscretizedLogistic, Gaussian, Likelihood, LogisticMixture, Multinomial,
                                 make_likelihood)

g = torch.Generator().manual_seed(0)
OUT = torch.randn(3, 2, 4, 5, generator=g)  # decoder outputs for 3 items of shape (2, 4, 5)
X = torch.rand(3, 2, 4, 5, generator=g)  # values in [0, 1]


def test_bernoulli_nll_is_the_cross_entropy_and_for_binary_values_the_bernoulli_log_pmf():
    b = (X > 0.5).float()
    want = -D.Bernoulli(logits=OUT).log_prob(b).flatten(1).sum(1)
    assert torch.allclose(Bernoulli().nll(OUT, b), want, atol=1e-5)
    p = torch.sigmoid(OUT)
    cross = -(X * p.log() + (1 - X) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(Bernoulli().nll(OUT, X), cross, atol=1e-4)
    assert torch.allclose(Bernoulli().mean(OUT), p)


def test_gaussian_nll_with_a_variance_is_the_normal_density_and_without_one_the_squared_error():
    for log_var in (0.0, -1.3, torch.full((2, 4, 5), 0.7)):
        std = torch.exp(0.5 * torch.as_tensor(log_var))
        want = -D.Normal(OUT, std).log_prob(X).flatten(1).sum(1)
        assert torch.allclose(Gaussian(log_var).nll(OUT, X), want, atol=1e-4)
    # no variance: -log N(x | out, 1/2) less its constant (D/2) log pi, i.e. the sum of squared errors
    half = -D.Normal(OUT, math.sqrt(0.5)).log_prob(X).flatten(1).sum(1) - 0.5 * 40 * math.log(math.pi)
    assert torch.allclose(Gaussian().nll(OUT, X), half, atol=1e-4)
    assert torch.allclose(Gaussian().nll(OUT, X), (OUT - X).square().flatten(1).sum(1))
    assert torch.equal(Gaussian(-1.3).mean(OUT), OUT)


def test_a_weight_counts_only_the_values_it_marks():
    hole = (torch.rand(3, 1, 4, 5, generator=g) > 0.5).float()
    for lik in (Bernoulli(), Gaussian()):
        # each value's own nll (items of one value), then the marked ones summed
        singles = torch.stack([lik.nll(OUT[:, c:c + 1, i:i + 1, j:j + 1], X[:, c:c + 1, i:i + 1, j:j + 1])
                               for c in range(2) for i in range(4) for j in range(5)], 1).view(3, 2, 4, 5)
        want = (singles * hole).flatten(1).sum(1)
        assert torch.allclose(lik.nll(OUT, X, hole), want, atol=1e-4)
    with pytest.raises(ValueError, match="no per-value weight"):
        Multinomial().nll(OUT.flatten(1), X.flatten(1), torch.ones(3, 40))


def _logistic_bin(x, mean, scale, bins=256):
    """P(x) of a logistic integrated over x's bin; the edge bins take the tails."""
    h = 0.5 / (bins - 1)
    cdf = lambda v: torch.sigmoid((v - mean) / scale)  # noqa: E731
    lo = torch.where(x < h, torch.zeros_like(x), cdf(x - h))
    hi = torch.where(x > 1 - h, torch.ones_like(x), cdf(x + h))
    return hi - lo


def test_discretised_logistic_nll_against_the_logistic_cdf_and_its_mean():
    x = torch.tensor([[0.0, 0.3, 128 / 255, 1.0]])  # both edge bins and two inner levels
    mean, log_scale = torch.tensor([[0.1, 0.35, 0.5, 0.8]]), torch.tensor([[-2.0, -3.0, -1.5, -2.5]])
    out = torch.cat([mean, log_scale], 1)  # (1, 2 * 4): means, then log-scales
    want = -torch.log(_logistic_bin(x, mean, log_scale.exp())).sum(1)
    assert torch.allclose(DiscretizedLogistic().nll(out, x), want, atol=1e-5)
    assert torch.equal(DiscretizedLogistic().mean(torch.tensor([[-0.2, 1.4, 0.0, 0.0]])), torch.tensor([[0.0, 1.0]]))


def test_logistic_mixture_nll_against_a_hand_mixture_and_its_mean():
    k, x = 2, torch.tensor([[0.0, 0.3, 0.6, 1.0]])  # one item of 4 values
    logits = torch.tensor([[[0.3, -1.0, 2.0, 0.0]], [[-0.4, 0.5, 0.1, 1.0]]]).transpose(0, 1)  # (1, K, 4)
    raw_means = torch.tensor([[[-1.0, 0.2, 0.5, 2.0]], [[1.0, -0.5, 0.3, 0.0]]]).transpose(0, 1)
    log_scales = torch.tensor([[[-2.0, -3.0, -1.0, -2.0]], [[-2.5, -1.5, -3.0, -2.0]]]).transpose(0, 1)
    out = torch.cat([logits, raw_means, log_scales], 1)  # (1, 3K * C) with C = 4 values
    w, means = torch.softmax(logits, 1), torch.sigmoid(raw_means)
    p = sum(w[:, i] * _logistic_bin(x, means[:, i], log_scales[:, i].exp()) for i in range(k))
    lik = LogisticMixture(k)
    assert torch.allclose(lik.nll(out, x), -p.log().sum(1), atol=1e-5)
    assert torch.allclose(lik.mean(out), (w * means).sum(1), atol=1e-6)


def test_multinomial_nll_is_the_multinomial_log_pmf_without_its_coefficient():
    counts = torch.tensor([[2.0, 0, 1, 4, 0], [0, 1, 0, 3, 1]])
    out = torch.randn(2, 5, generator=g)
    n = counts.sum(1)
    pmf = torch.stack([D.Multinomial(int(n[i]), logits=out[i]).log_prob(counts[i]) for i in range(2)])
    coefficient = torch.lgamma(n + 1) - torch.lgamma(counts + 1).sum(1)
    assert torch.allclose(Multinomial().nll(out, counts), -(pmf - coefficient), atol=1e-4)
    assert torch.allclose(Multinomial().mean(out), torch.softmax(out, 1))


def test_output_channels_per_kind_for_images_and_vectors():
    assert Bernoulli().out_shape((3, 8, 8)) == (3, 8, 8) and Gaussian().out_shape((7,)) == (7,)
    assert DiscretizedLogistic().out_shape((3, 8, 8)) == (6, 8, 8) and DiscretizedLogistic().out_shape((7,)) == (14,)
    assert LogisticMixture(5).out_shape((3, 8, 8)) == (45, 8, 8)
    # a vector's logistic splits into means and log-scales of the vector's size
    out = torch.randn(4, 14)
    assert DiscretizedLogistic().nll(out, torch.rand(4, 7)).shape == (4,)


def test_nll_and_mean_are_fp32_under_bf16_autocast():
    x = (X > 0.5).float()
    for lik, out in ((Bernoulli(), OUT), (Gaussian(0.0), OUT), (DiscretizedLogistic(), torch.cat([OUT, OUT], 1)),
                     (LogisticMixture(2), OUT.repeat(1, 6, 1, 1))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            nll, mean = lik.nll(out.bfloat16(), x), lik.mean(out.bfloat16())
        assert nll.dtype == torch.float32 and mean.dtype == torch.float32 and nll.shape == (3,)


IMAGE, COLOUR, VECTOR, TEXT = ((1, 8, 8), "image"), ((3, 8, 8), "image"), ((6,), "vector"), ((6,), "text")


@pytest.mark.parametrize("name, data, extra, want", [
    ("ae", IMAGE, {}, "bernoulli"), ("ae", COLOUR, {}, "bernoulli"), ("ae", VECTOR, {}, "gaussian"),
    ("ae", TEXT, {}, "gaussian"), ("dae", IMAGE, {}, "bernoulli"),
    ("vae", IMAGE, {}, "bernoulli"), ("vae", COLOUR, {"arch": "conv"}, "bernoulli"), ("vae", VECTOR, {}, "gaussian"),
    ("hash", IMAGE, {}, "bernoulli"), ("hash", VECTOR, {}, "gaussian"), ("hash", TEXT, {}, "gaussian"),
    ("hash", TEXT, {"text_input": "counts"}, "multinomial"),
    ("nvae", ((1, 16, 16), "image"), {}, "bernoulli"), ("nvae", ((3, 16, 16), "image"), {}, "logistic_mixture"),
])
def test_auto_is_resolved_by_one_rule_over_what_each_family_offers(name, data, extra, want):
    (shape, kind) = data
    m = aezoo.create(name, input_shape=shape, data_kind=kind, **extra)
    assert m.config.resolved_likelihood == want
    assert isinstance(m.likelihood, Likelihood) and m.likelihood.name == want


@pytest.mark.parametrize("name, choice", [("ae", "bernoulli"), ("vae", "logistic"), ("hash", "bernoulli"),
                                          ("dae", "bernoulli")])
def test_a_likelihood_for_values_in_0_1_is_refused_on_other_data_in_one_line(name, choice):
    with pytest.raises(UserError, match=rf"likelihood={choice} needs values in \[0, 1\] \(image data\)"):
        aezoo.create(name, input_shape=(6,), data_kind="vector", likelihood=choice,
                     **({"arch": "mlp"} if name == "dae" else {}))
    with pytest.raises(UserError, match="multinomial needs word counts"):
        aezoo.create("hash", input_shape=(1, 8, 8), likelihood="multinomial")


FAMILIES = [("ae", {"widths": [8], "latent_dim": 2}), ("dae", {"arch": "mlp", "widths": [8], "latent_dim": 2}),
            ("vae", {"widths": [8], "latent_dim": 2, "likelihood": "logistic"}),
            ("vqvae", {"hidden": 8, "num_codes": 4, "code_dim": 2, "likelihood": "bernoulli"}),
            ("hash", {"widths": [8], "bits": 8}),
            ("nvae", {"channels": 4, "pre_blocks": 1, "groups_per_scale": 1, "latent_channels": 2, "expand": 2,
                      "likelihood": "logistic_mixture", "mixtures": 2, "kl_warmup": 0})]


@pytest.mark.parametrize("name, config", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_family_decodes_the_mean_of_its_likelihood_with_the_outputs_it_needs(name, config):
    torch.manual_seed(0)
    m = aezoo.create(name, input_shape=(1, 8, 8), **config).eval()
    x = torch.rand(2, 1, 8, 8)
    lik = m.likelihood
    with torch.no_grad():
        if name == "nvae":
            out, _ = m.top_down(2, m.features(x), use_mean=True)
            assert torch.equal(m(x), lik.mean(out))
        else:
            z = m.encode(x).z
            out = m.decoder_output(z if name != "hash" else torch.sigmoid(m.code_logits(x)))
            if name != "hash":
                assert torch.equal(m.decode(z), lik.mean(out).clamp(0, 1) if name == "vqvae" else lik.mean(out))
    assert out.shape[1:] == lik.out_shape((1, 8, 8)) == make_likelihood(lik.name, mixtures=2).out_shape((1, 8, 8))
