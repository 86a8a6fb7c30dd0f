"""The lines interpolation metrics (ACAI's evaluation) on constructed paths with known answers."""

import math

import numpy as np
import pytest
import torch

import aezoo
from aezoo.data.synthetic import render_lines
from aezoo.eval.lines import interpolation_paths, lines_metrics, match_lines, reference_lines, smoothness

REFS = reference_lines(32)
STEP = 2 * math.pi / 10_000  # spacing of the ideal lines


def lines(angles):
    return torch.from_numpy(render_lines(np.asarray(angles, np.float64), 32))


def test_an_ideal_rotation_is_on_the_lines_and_perfectly_smooth():
    # two paths of 16 ideal lines at grid angles, one of them crossing angle 0 (unwrapping must handle it)
    starts = [100, 9_800]
    paths = torch.stack([lines([(s + 37 * k) % 10_000 * STEP for k in range(16)]) for s in starts])
    m = lines_metrics(paths, REFS)
    assert m["lines_mean_distance"] == pytest.approx(0.0, abs=1e-6)
    assert m["lines_smoothness"] == pytest.approx(0.0, abs=1e-9)


def test_an_abrupt_switch_scores_one_minus_one_fifteenth():
    a, b = 1_000 * STEP, 3_000 * STEP
    path = lines([a] * 8 + [b] * 8)[None]
    m = lines_metrics(path, REFS)
    assert m["lines_mean_distance"] == pytest.approx(0.0, abs=1e-6)
    assert m["lines_smoothness"] == pytest.approx(1 - 1 / 15)


def test_a_pixel_blend_stays_near_its_nearer_end_and_jumps_halfway():
    a, b = lines([0.0, 2_500 * STEP])  # 0 and 90 degrees
    t = torch.arange(16, dtype=torch.float64) / 15
    path = ((1 - t)[:, None, None, None] * a + t[:, None, None, None] * b).float()
    angles, dist = match_lines(path, REFS)
    # By hand, in [-1, 1] pixels (A' = 2a - 1, B' = 2b - 1, |A'| = |B'|): the distance to the nearer end,
    # 1 - cos(blend, A') with s = min(t, 1 - t). The nearest ideal line may be a little closer still
    # (slightly turned towards the other end), never farther.
    A, B = (2 * a.double().flatten() - 1), (2 * b.double().flatten() - 1)
    n2, c = float(A @ A), float(A @ B)
    s = torch.minimum(t, 1 - t)
    to_end = 1 - ((1 - s) * n2 + s * c) / (math.sqrt(n2) * torch.sqrt((1 - s) ** 2 * n2 + s**2 * n2 + 2 * s * (1 - s) * c))
    assert (dist <= to_end + 1e-6).all() and (dist[1:-1] > 0.5 * to_end[1:-1]).all()
    degrees = angles * 180 / math.pi
    assert (degrees[:8] < 2).all() and (degrees[8:] > 88).all()  # each half matches its own end
    m = lines_metrics(path[None], REFS)
    jump = float(degrees[8] - degrees[7]) / 90
    assert m["lines_smoothness"] == pytest.approx(jump - 1 / 15) and m["lines_smoothness"] > 0.9


def test_a_path_whose_ends_meet_counts_zero_in_the_mean():
    assert torch.isnan(smoothness(torch.tensor([[1.0, 1.5, 1.0]]))).all()
    flat = lines([0.5] * 16)[None]
    good = lines([(1_000 + 10 * k) * STEP for k in range(16)])[None]
    m = lines_metrics(torch.cat([flat, good]), REFS)
    assert m["lines_smoothness"] == pytest.approx(0.0, abs=1e-9) and m["lines_pairs"] == 2
    assert m["lines_unturned"] == 0.5


def test_interpolation_paths_pair_item_i_with_item_pairs_plus_i():
    m = aezoo.create("ae", seed=0, input_shape=(1, 32, 32), widths=[16], latent_dim=3).eval()
    x = lines(np.linspace(0, 6, 12))
    paths = interpolation_paths(m, x, pairs=6, steps=5)
    assert paths.shape == (6, 5, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(paths[2, 0], m(x[2:3])[0], atol=1e-6)
        assert torch.allclose(paths[2, -1], m(x[8:9])[0], atol=1e-6)


def test_aezoo_eval_scores_interpolation_on_the_lines(tmp_path):
    from aezoo.eval.metrics import evaluate

    data = aezoo.data.load("lines?n=400&test=512")
    m = aezoo.create("ae", seed=0, input_shape=data.shape, widths=[32], latent_dim=4)
    aezoo.Trainer(m, data, aezoo.TrainConfig(epochs=1, batch_size=64, progress=False), run_dir=None).fit()
    metrics = evaluate(m, data, metrics="cheap")
    assert metrics["lines_pairs"] == 256 and metrics["lines_steps"] == 16
    assert 0 < metrics["lines_mean_distance"] < 1 and 0 <= metrics["lines_smoothness"] < 1
    assert "lines_mean_distance" not in evaluate(m, data, metrics="cheap", items=100)  # too few items for 256 pairs
