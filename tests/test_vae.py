"""The VAE's maths against closed forms."""

import math

import pytest
import torch
from torch import distributions as D

import aezoo
from aezoo.eval.likelihood import elbo, importance_nll
from aezoo.losses import discretized_logistic_nll, gaussian_nll
from aezoo.nn.distributions import DiagonalGaussian


def test_kl_and_log_prob_match_torch_distributions():
    torch.manual_seed(0)
    m1, lv1, m2, lv2 = (torch.randn(5, 4) for _ in range(4))
    q, p = DiagonalGaussian(m1, lv1), DiagonalGaussian(m2, lv2)
    tq = D.Independent(D.Normal(m1, torch.exp(0.5 * lv1)), 1)
    tp = D.Independent(D.Normal(m2, torch.exp(0.5 * lv2)), 1)
    assert torch.allclose(q.kl(p), D.kl_divergence(tq, tp), atol=1e-5)
    std = D.Independent(D.Normal(torch.zeros(5, 4), torch.ones(5, 4)), 1)
    assert torch.allclose(q.kl(), D.kl_divergence(tq, std), atol=1e-5)
    z = torch.randn(3, 5, 4)
    assert torch.allclose(q.log_prob(z), tq.log_prob(z), atol=1e-5)


def test_a_gaussian_over_latent_groups_sums_over_channels_and_space():
    """(B, C, H, W) latent groups, as NVAE's: one KL and log-density per item, in closed form."""
    torch.manual_seed(0)
    m1, lv1, m2, lv2 = (torch.randn(2, 3, 4, 5) for _ in range(4))
    q, p = DiagonalGaussian(m1, lv1, event_dims=3), DiagonalGaussian(m2, lv2, event_dims=3)
    assert q.event_shape == (3, 4, 5)
    # KL of diagonal Gaussians: 0.5 * sum(lv2 - lv1 + (exp(lv1) + (m1 - m2)^2) / exp(lv2) - 1)
    closed = 0.5 * (lv2 - lv1 + (lv1.exp() + (m1 - m2) ** 2) / lv2.exp() - 1).sum((1, 2, 3))
    assert q.kl(p).shape == (2,) and torch.allclose(q.kl(p), closed, atol=1e-4)
    assert torch.allclose(q.kl(), 0.5 * (m1**2 + lv1.exp() - 1 - lv1).sum((1, 2, 3)), atol=1e-4)
    z = torch.randn(7, 2, 3, 4, 5)  # with a leading sample dimension
    tq = D.Independent(D.Normal(m1, torch.exp(0.5 * lv1)), 3)
    assert q.log_prob(z).shape == (7, 2) and torch.allclose(q.log_prob(z), tq.log_prob(z), atol=1e-4)
    assert q.sample(6).shape == (6, 2, 3, 4, 5)
    # the vector case is the one-dimensional event of the same numbers
    flat = DiagonalGaussian(m1.flatten(1), lv1.flatten(1))
    assert torch.allclose(flat.kl(), q.kl(), atol=1e-4)
    with pytest.raises(ValueError):
        DiagonalGaussian(m1, lv1, event_dims=5)


def test_reparameterised_samples_have_the_right_moments_and_gradients():
    torch.manual_seed(0)
    mean = torch.tensor([[1.0, -2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(4.0)]], requires_grad=True)
    z = DiagonalGaussian(mean, logvar).sample(20000)
    assert torch.allclose(z.mean((0, 1)), torch.tensor([1.0, -2.0]), atol=0.05)
    assert torch.allclose(z.std((0, 1)), torch.tensor([1.0, 2.0]), atol=0.05)
    z.sum().backward()
    assert mean.grad is not None and logvar.grad is not None


def test_gaussian_nll_closed_form():
    x = torch.tensor([[1.0, 2.0]])
    nll = gaussian_nll(torch.zeros(1, 2), x, math.log(2.0))
    want = -D.Normal(0.0, math.sqrt(2.0)).log_prob(x).sum()
    assert nll.item() == pytest.approx(want.item(), rel=1e-6)


def test_discretized_logistic_is_a_distribution_over_256_levels():
    levels = torch.arange(256).float().view(256, 1) / 255
    for mean, log_scale in [(0.3, -2.0), (0.0, -5.0), (1.0, -1.0), (0.6, -7.0)]:
        p = torch.exp(-discretized_logistic_nll(torch.full((256, 1), mean), torch.full((256, 1), log_scale), levels))
        assert p.sum().item() == pytest.approx(1.0, abs=1e-4)
        if log_scale <= -5:  # narrow: the mass sits on the level of the mean (wide ones pile the tails on the edges)
            assert p.argmax().item() == round(mean * 255)


def linear_gaussian_vae(d=3, k=2, noise_logvar=math.log(0.5)):
    """A VAE with a linear decoder and Gaussian likelihood: p(x) = N(b, W W^T + s^2 I) exactly."""
    torch.manual_seed(0)
    m = aezoo.create("vae", input_shape=[d], data_kind="vector", widths=[], latent_dim=k, likelihood="gaussian",
                     gaussian_logvar=noise_logvar)
    return m


def test_importance_sampled_nll_converges_to_the_exact_marginal():
    m = linear_gaussian_vae()
    lin = m.decoder[0]
    cov = lin.weight @ lin.weight.T + 0.5 * torch.eye(3)
    exact = D.MultivariateNormal(lin.bias, cov)
    x = exact.sample((200,))
    true_nll = -exact.log_prob(x).mean().item()
    est = importance_nll(m, x, k=2000, batch_size=50)
    assert est["nll_nats"] == pytest.approx(true_nll, abs=0.05)
    assert est["nll_bits_per_dim"] == pytest.approx(est["nll_nats"] / (3 * math.log(2)))
    # the ELBO bounds it from below (an untrained encoder: a loose bound)
    assert -elbo(m, x) > est["nll_nats"]


def test_iwae_bound_tightens_with_k():
    m = linear_gaussian_vae()
    x = torch.randn(300, 3)
    nlls = [importance_nll(m, x, k=k)["nll_nats"] for k in (1, 10, 100)]
    assert nlls[0] > nlls[1] > nlls[2]


def test_kl_warmup_and_beta():
    m = aezoo.create("vae", input_shape=[4], data_kind="vector", widths=[8], latent_dim=2, beta=2.0,
                     kl_warmup_steps=100)
    assert m.kl_weight(0) == 0.0 and m.kl_weight(50) == pytest.approx(1.0) and m.kl_weight(500) == 2.0


def test_vae_trains_and_its_elbo_improves(digits, tmp_path):
    m = aezoo.create("vae", input_shape=(1, 8, 8), widths=[64], latent_dim=8)
    x = digits.test.x
    before = elbo(m, x)
    aezoo.Trainer(m, digits, aezoo.TrainConfig(epochs=15, batch_size=64, progress=False), tmp_path / "r").fit()
    after = elbo(m, x)
    assert after > before + 5
    s = m.sample(10)
    assert s.shape == (10, 1, 8, 8) and 0 <= s.min() and s.max() <= 1
