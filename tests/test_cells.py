"""NVAE's building blocks (groundwork for issue 16): residual normal posteriors against the paper's
closed-form KL, soft clamping, and the residual cells' shapes and near-identity start."""

import torch

from aezoo.nn.cells import DecoderCell, EncoderCell, SqueezeExcite
from aezoo.nn.distributions import DiagonalGaussian, residual_normal, soft_clamp
from aezoo.rng import seeded


def test_residual_normal_kl_is_the_papers_closed_form():
    g = torch.Generator().manual_seed(0)
    p = DiagonalGaussian(torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g), event_dims=3)
    dmu, dlogvar = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    q = residual_normal(p, dmu, dlogvar)
    dmu_c, dlogvar_c = soft_clamp(dmu), soft_clamp(dlogvar)
    want = 0.5 * (dmu_c.square() / p.logvar.exp() + dlogvar_c.exp() - dlogvar_c - 1)
    assert torch.allclose(q.kl(p), want.sum((1, 2, 3)), atol=1e-5)
    assert torch.allclose(residual_normal(p, torch.zeros_like(dmu), torch.zeros_like(dmu)).kl(p), torch.zeros(4), atol=1e-6)


def test_soft_clamp_is_bounded_and_near_identity_at_zero():
    x = torch.tensor([-1e4, -1.0, 0.0, 0.01, 1e4])
    y = soft_clamp(x, 5.0)
    assert y.abs().max() <= 5.0 and torch.allclose(y[3], x[3], rtol=1e-4) and y[2] == 0
    assert torch.all(y[1:] >= y[:-1])


def test_cells_keep_the_shape_and_start_near_the_identity():
    x = torch.randn(8, 16, 6, 6)
    with seeded(0):
        cells = [EncoderCell(16), DecoderCell(16, expand=3)]
    for cell in cells:
        y = cell.train()(x)
        assert y.shape == x.shape
        assert (y - x).norm() < 0.3 * x.norm()  # the branch is scaled by 0.1 before the skip
    depthwise = [m for m in cells[1].modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (5, 5)][0]
    assert depthwise.groups == 48 and depthwise.weight.shape == (48, 1, 5, 5)


def test_squeeze_excite_gates_each_channel_by_a_factor_in_0_1():
    with seeded(0):
        se = SqueezeExcite(8, reduction=2)
    x = torch.rand(2, 8, 4, 4) + 0.1
    ratio = se(x) / x
    assert ((ratio > 0) & (ratio < 1)).all()
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio))  # one factor per item and channel
