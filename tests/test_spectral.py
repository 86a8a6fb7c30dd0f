"""Spectral regularisation (NVAE sec. 3.2): power-iteration estimates of each layer's largest singular
value against the exact one, their gradient, and their state."""

import torch
from torch import nn

from aezoo.nn.spectral import SpectralPenalty
from aezoo.rng import seeded


def layers():
    with seeded(0):
        return [nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1), nn.Linear(5, 7)]


def exact(layer):
    return torch.linalg.matrix_norm(layer.weight.detach().reshape(layer.weight.shape[0], -1), ord=2)


def test_the_estimates_reach_the_largest_singular_values():
    ls = layers()
    with seeded(1):
        pen = SpectralPenalty(ls, warmup_iterations=200)
    want = torch.stack([exact(layer) for layer in ls])
    assert torch.allclose(pen.sigmas().detach(), want, rtol=1e-4)
    assert torch.allclose(pen().detach(), want.sum(), rtol=1e-4)


def test_the_gradient_is_u_v_transposed_and_descent_lowers_sigma():
    ls = layers()
    with seeded(1):
        pen = SpectralPenalty(ls, warmup_iterations=200)
    pen.eval()  # no iteration: u and v stay fixed, so the gradient is exactly u v^T
    pen().backward()
    w = ls[0].weight
    want = torch.outer(pen.u0, pen.v0).reshape(w.shape)
    assert torch.allclose(w.grad, want, atol=1e-6)
    before = exact(ls[0])
    with torch.no_grad():
        w -= 0.1 * w.grad
    assert exact(ls[0]) < before


def test_vectors_are_buffers_that_iterate_only_in_training():
    ls = layers()
    with seeded(1):
        pen = SpectralPenalty(ls, warmup_iterations=0)
    assert set(pen.state_dict()) == {"u0", "v0", "u1", "v1", "u2", "v2"}  # the layers belong to the model
    u = pen.u0.clone()
    pen.eval()
    pen()
    assert torch.equal(pen.u0, u)
    pen.train()
    pen()
    assert not torch.equal(pen.u0, u)
