"""k-means clustering accuracy (ACAI's protocol) against hand-worked cases."""

import numpy as np
import pytest
from sklearn.cluster import KMeans

from aezoo.eval.probes import clustering_accuracy, matched_accuracy, whitening


def test_renamed_clusters_score_one():
    y = np.array([0, 0, 1, 1, 1, 2, 2])
    assert matched_accuracy(np.array([7, 7, 3, 3, 3, 5, 5]), y) == 1.0
    assert matched_accuracy(y, y) == 1.0


def test_a_known_confusion():
    # clusters x labels: c0 = {0: 1, 1: 3}, c1 = {0: 3}, c2 = {1: 1, 2: 2}
    # best matching c1->0, c0->1, c2->2: 3 + 3 + 2 of 10
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    assigned = np.array([1, 1, 1, 0, 0, 0, 0, 2, 2, 2])
    assert matched_accuracy(assigned, y) == pytest.approx(0.8)


def test_matching_is_one_to_one():
    # A = {0: 3, 1: 2}, B = {0: 2}. Majority voting would map both to label 0 (5/7); one to one, the
    # best is A->1, B->0: 2 + 2 of 7 (A->0, B->1 gives 3 + 0)
    y = np.array([0, 0, 0, 1, 1, 0, 0])
    assigned = np.array(["A", "A", "A", "A", "A", "B", "B"])
    assert matched_accuracy(assigned, y) == pytest.approx(4 / 7)


def test_a_cluster_without_a_label_counts_wrong():
    assert matched_accuracy(np.array([0, 0, 1, 2]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)


def test_whitening_gives_identity_covariance_and_drops_constant_features():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 3)) @ np.array([[3.0, 0, 0], [1, 0.1, 0], [0, 0, 20]])
    z = np.hstack([z, np.full((500, 1), 4.0)])  # a constant feature
    mean, proj = whitening(z)
    assert proj.shape == (4, 3)
    w = (z - mean) @ proj
    assert np.allclose(w.mean(0), 0, atol=1e-12) and np.allclose(w.T @ w / len(w), np.eye(3), atol=1e-10)


def two_classes(n, rng):
    """Label in the sign of a small feature; a large pure-noise feature; a constant one."""
    y = rng.integers(0, 2, n)
    z = np.stack([(2 * y - 1) + rng.normal(0, 0.1, n), rng.normal(0, 100, n), np.full(n, 3.0)], 1)
    return z, y


def test_whitened_kmeans_finds_a_small_scale_class_structure():
    rng = np.random.default_rng(0)
    z, y = two_classes(400, rng)
    # raw k-means splits the large noise feature instead: about chance
    raw = KMeans(2, n_init=10, random_state=0).fit_predict(z)
    assert matched_accuracy(raw, y) < 0.7
    assert clustering_accuracy(z, y, n_init=10, seed=0) == 1.0
    assert clustering_accuracy(z, 1 - y, n_init=10, seed=0) == 1.0  # label names do not matter
    z_fit, _ = two_classes(400, rng)  # ACAI's protocol: fitted on other codes (training), scores these
    assert clustering_accuracy(z, y, n_init=10, seed=0, fit_on=z_fit) == 1.0
