import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator

from aezoo.sklearn import AutoencoderReducer

FAST = dict(hidden_layer_sizes=(8,), max_epochs=2, batch_size=32)


def test_check_estimator():
    check_estimator(AutoencoderReducer(**FAST))


def test_check_estimator_denoising():
    check_estimator(AutoencoderReducer(model="dae", **FAST))


def test_reduces_better_than_pca_on_a_curved_manifold():
    # points on a 1-D curve in 3-D: one code number suffices for an autoencoder, not for PCA
    rng = np.random.default_rng(0)
    t = rng.uniform(-3, 3, 1500)
    X = np.c_[np.sin(t), np.cos(t) * t, t ** 2 / 3] + rng.normal(0, 0.01, (1500, 3))
    ae = AutoencoderReducer(n_components=1, hidden_layer_sizes=(64, 64), max_epochs=60, batch_size=64).fit(X)
    err_ae = ((ae.inverse_transform(ae.transform(X)) - X) ** 2).sum(1).mean()
    pca = PCA(1).fit(X)
    err_pca = ((pca.inverse_transform(pca.transform(X)) - X) ** 2).sum(1).mean()
    assert err_ae < 0.5 * err_pca


def test_pipeline_and_grid_search(digits):
    X = digits.train.x.flatten(1).numpy()[:400]
    y = digits.train.y.numpy()[:400]
    pipe = make_pipeline(AutoencoderReducer(n_components=8, hidden_layer_sizes=(64,), max_epochs=30, batch_size=32),
                         LogisticRegression(max_iter=300))
    grid = GridSearchCV(pipe, {"autoencoderreducer__n_components": [2, 8]}, cv=2).fit(X, y)
    assert grid.best_params_["autoencoderreducer__n_components"] == 8
    assert grid.best_score_ > 0.5
    names = AutoencoderReducer(n_components=3, **FAST).fit(X).get_feature_names_out()
    assert list(names) == ["autoencoderreducer0", "autoencoderreducer1", "autoencoderreducer2"]


def test_bad_parameters_raise_value_error():
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="model must be"):
        AutoencoderReducer(model="pca", **FAST).fit(X)
    with pytest.raises(ValueError, match="n_components"):
        AutoencoderReducer(n_components=0, **FAST).fit(X)
    with pytest.raises(ValueError, match="epochs"):
        AutoencoderReducer(hidden_layer_sizes=(8,), max_epochs=None).fit(X)
