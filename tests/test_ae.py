"""The deterministic autoencoder's code refinement (AE.refine)."""

import pytest
import torch

import aezoo
from aezoo.errors import UserError


def linear_ae(**kw):
    torch.manual_seed(0)
    return aezoo.create("ae", input_shape=[6], data_kind="vector", widths=[], latent_dim=3, norm="none", **kw).eval()


def test_refinement_reaches_the_least_squares_code_of_a_linear_decoder():
    m = linear_ae(refine_lr=0.05)
    x = torch.randn(5, 6)
    w, b = m.decoder[0].weight.detach(), m.decoder[0].bias.detach()  # decode(z) = z w^T + b
    best = torch.linalg.lstsq(w, (x - b).T).solution.T
    z0 = m.encoder(x)
    assert (z0 - best).abs().max() > 0.1  # the encoder alone is far from it
    z = m.refine(x, z0, steps=3000)
    assert torch.allclose(z, best, atol=1e-3)


def test_refinement_only_in_eval_mode_and_leaves_the_weights_alone():
    m = linear_ae(refine_steps=50)
    x = torch.randn(4, 6)
    before = [p.detach().clone() for p in m.parameters()]
    refined = m.encode(x).z
    assert all(torch.equal(a, p) for a, p in zip(before, m.parameters()))
    assert all(p.grad is None for p in m.parameters())
    sse = lambda z: ((m.decode(z) - x) ** 2).sum().item()
    with torch.no_grad():
        plain = m.encoder(x)
    assert sse(refined) < sse(plain)
    m.train()
    assert torch.equal(m.encode(x).z, m.encoder(x))  # training sees the encoder's own codes
    m.config.refine_steps = 0
    m.eval()
    assert torch.equal(m.encode(x).z, plain)


def test_refinement_settings_are_checked():
    with pytest.raises(UserError, match="refine_steps"):
        linear_ae(refine_steps=-1)
    with pytest.raises(UserError, match="ae only"):
        aezoo.create("dae", input_shape=(1, 8, 8), channels=[4, 8], refine_steps=5)
