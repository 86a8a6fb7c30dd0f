"""Sample-quality and representation metrics against hand computations."""

import numpy as np
import pytest
import torch

from aezoo.eval.generative import frechet_distance, frechet_distance_from_stats, precision_recall
from aezoo.eval.probes import probe_accuracies


def test_frechet_distance_closed_forms():
    # diagonal covariances: sum (mu1-mu2)^2 + sum (s1 + s2 - 2 sqrt(s1 s2))
    mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, 1.0])
    s1, s2 = np.array([1.0, 4.0]), np.array([4.0, 9.0])
    want = 9.0 + (1 + 4 - 2 * 2) + (4 + 9 - 2 * 6)
    assert frechet_distance_from_stats(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want)
    x = torch.randn(500, 3, dtype=torch.float64)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + 2.0) == pytest.approx(12.0, rel=1e-6)  # shift by 2 in 3 dims


def test_precision_recall_hand_example():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    # with k=1 every real ball has radius 1: the real manifold covers [-1, 4]
    fake = torch.tensor([[0.5], [2.5], [10.0], [11.0]])
    pr = precision_recall(real, fake, k=1)
    assert pr["precision"] == 0.5  # 0.5 and 2.5 are inside, 10 and 11 outside
    # fake balls (k=1): 0.5 -> radius 2, 2.5 -> 2, 10 -> 1, 11 -> 1: cover [-1.5, 4.5] and [9, 12]
    assert pr["recall"] == 1.0
    assert precision_recall(real, real, k=1) == {"precision": 1.0, "recall": 1.0}


def test_probes_read_separable_codes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    z = np.eye(3)[y] * 5 + rng.normal(0, 0.5, (600, 3))
    acc = probe_accuracies(z[:400], y[:400], z[400:], y[400:])
    assert acc["linear_probe_acc"] > 0.95 and acc["knn_acc"] > 0.95
    noise = rng.normal(size=(600, 3))
    chance = probe_accuracies(noise[:400], y[:400], noise[400:], y[400:])
    assert chance["linear_probe_acc"] < 0.6


from conftest import needs_fmnist  # noqa: E402


@needs_fmnist
def test_shipped_classifier_and_its_frechet_distance():
    from aezoo import data
    from aezoo.eval.features import classifier_features, classifier_info, load_classifier

    assert float(classifier_info()["test_accuracy"]) > 0.9
    ds = data.load("fashion-mnist")
    x, y = ds.test.x[:2000], ds.test.y[:2000]
    with torch.no_grad():
        acc = (load_classifier()(x).argmax(1) == y).float().mean().item()
    assert acc > 0.9
    real_a, real_b = classifier_features(x[:1000]), classifier_features(ds.val.x[:1000])
    noise = classifier_features(torch.rand(1000, 1, 28, 28))
    assert frechet_distance(real_a, real_b) * 10 < frechet_distance(real_a, noise)
