"""Representation quality: how well simple classifiers read the labels off the codes."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..progress import bar


def probe_accuracies(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray,
                     k: int = 5, max_train: int = 10000, progress: bool = False) -> dict:
    """Test accuracy of a linear probe (logistic regression on standardised codes, at most 300 L-BFGS
    iterations) and of k-NN (k=5), both fitted on (at most ``max_train``) training codes."""
    z_train, y_train = z_train.reshape(len(z_train), -1)[:max_train], y_train[:max_train]
    z_test = z_test.reshape(len(z_test), -1)
    with bar(total=2, progress=progress, desc="probes", unit="probe") as steps:
        with warnings.catch_warnings():  # the iteration cap is deliberate: a probe, not a tuned classifier
            warnings.simplefilter("ignore", ConvergenceWarning)
            linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(z_train, y_train)
        out = {"linear_probe_acc": float(linear.score(z_test, y_test))}
        steps.update()
        knn = KNeighborsClassifier(n_neighbors=k).fit(z_train, y_train)
        out["knn_acc"] = float(knn.score(z_test, y_test))
        steps.update()
    return out
