"""Representation quality: how well simple classifiers read the labels off the codes, and how well
k-means finds the classes in them without labels."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..progress import bar


def probe_accuracies(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray,
                     k: int = 5, max_train: int = 10000, progress: bool = False) -> dict:
    """Test accuracy of a linear probe (logistic regression on standardised codes, at most 300 L-BFGS
    iterations), of 1-NN (``nn1_acc``) and of k-NN (``knn_acc``, k=5), fitted on (at most ``max_train``)
    training codes."""
    z_train, y_train = z_train.reshape(len(z_train), -1)[:max_train], y_train[:max_train]
    z_test = z_test.reshape(len(z_test), -1)
    with bar(total=3, progress=progress, desc="probes", unit="probe") as steps:
        with warnings.catch_warnings():  # the iteration cap is deliberate: a probe, not a tuned classifier
            warnings.simplefilter("ignore", ConvergenceWarning)
            linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(z_train, y_train)
        out = {"linear_probe_acc": float(linear.score(z_test, y_test))}
        steps.update()
        for key, n in (("nn1_acc", 1), ("knn_acc", k)):
            knn = KNeighborsClassifier(n_neighbors=n).fit(z_train, y_train)
            out[key] = float(knn.score(z_test, y_test))
            steps.update()
    return out


def matched_accuracy(assigned: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of cluster assignments under the best one-to-one matching of clusters to labels (the
    Hungarian algorithm on their contingency table). Cluster ids are arbitrary; a cluster left without a
    label (more clusters than labels) counts as wrong."""
    clusters, a = np.unique(np.asarray(assigned).ravel(), return_inverse=True)
    labels, b = np.unique(np.asarray(y).ravel(), return_inverse=True)
    counts = np.zeros((len(clusters), len(labels)), np.int64)  # (clusters, labels)
    np.add.at(counts, (a, b), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(b))


def whitening(z: np.ndarray, rtol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """(mean, projection) such that ``(x - mean) @ projection`` has zero mean and identity covariance
    over ``z`` (N, D): PCA whitening by SVD. Directions whose singular value is below ``rtol`` times the
    largest are dropped: a constant feature has no variance to scale up, only rounding error (ACAI's code
    divides by s + 1e-5 instead, which scales that rounding error up)."""
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    mean = z.mean(0)
    _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
    keep = s > rtol * s[0] if len(s) and s[0] > 0 else np.zeros(len(s), bool)
    return mean, vt[keep].T * (np.sqrt(len(z)) / s[keep])  # (D, rank)


def clustering_accuracy(z: np.ndarray, y: np.ndarray, n_init: int = 20, seed: int = 0,
                        fit_on: np.ndarray | None = None) -> float:
    """k-means clustering accuracy, ACAI's protocol (Berthelot et al., ICLR 2019; ``cluster.py`` of their
    code): codes flattened and whitened (:func:`whitening`), k-means with k = the number of distinct labels
    in ``y``, random initial centres, ``n_init`` restarts (theirs: 1000), at most 1000 iterations; its
    assignment of ``z`` scored by :func:`matched_accuracy`. Whitening and k-means are fitted on ``fit_on``
    (default ``z``); ACAI fits them on training codes and scores test codes."""
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    fit = z if fit_on is None else np.asarray(fit_on, np.float64).reshape(len(fit_on), -1)
    mean, proj = whitening(fit)
    k = len(np.unique(y))
    km = KMeans(n_clusters=k, init="random", n_init=n_init, max_iter=1000, random_state=seed)
    km.fit((fit - mean) @ proj)
    return matched_accuracy(km.predict((z - mean) @ proj), y)
