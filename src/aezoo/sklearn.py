"""scikit-learn estimators around aezoo models.

``AutoencoderReducer`` is a transformer: ``fit`` trains an autoencoder on a numeric table, ``transform``
gives the codes, ``inverse_transform`` maps codes back to the input space. It follows scikit-learn's
rules (``__init__`` stores parameters, ``fit`` returns ``self``, fitted state ends in ``_``), works inside
``Pipeline`` and ``GridSearchCV``, and passes ``sklearn.utils.estimator_checks.check_estimator``.

>>> from aezoo.sklearn import AutoencoderReducer
>>> Z = AutoencoderReducer(n_components=2, max_epochs=20).fit_transform(X)
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .data.base import Dataset, Split
from .errors import UserError

MODELS = ("ae", "dae")  # registered models with an MLP on vectors that make sense as reducers


class AutoencoderReducer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Non-linear dimensionality reduction with an autoencoder (Hinton & Salakhutdinov 2006).

    Parameters
    ----------
    n_components : size of the code.
    model : "ae" (default) or "dae" (denoising; ``corruption`` then applies).
    hidden_layer_sizes : encoder widths; the decoder mirrors them.
    activation, norm : hidden units and their normalisation ("batch", "layer" or "none").
    corruption : for ``model="dae"``, e.g. "gaussian:0.2" (on standardised features).
    max_epochs, max_minutes : training budget (either may be None, not both).
    batch_size, learning_rate : Adam settings.
    standardize : scale each feature to zero mean and unit variance before training (recommended).
    random_state : int seed; None means 0 (results are reproducible either way).
    device : "cpu" (default), "cuda" or "auto". Training is in fp32 on every device, so a ``random_state``
        gives the same codes on every CPU machine; on a GPU they differ slightly (other kernels).
    verbose : show a progress bar.
    """

    def __init__(self, n_components=2, model="ae", hidden_layer_sizes=(256, 128), activation="relu", norm="batch",
                 corruption="gaussian:0.2", max_epochs=50, max_minutes=None, batch_size=128, learning_rate=1e-3,
                 standardize=True, random_state=None, device="cpu", verbose=False):
        self.n_components = n_components
        self.model = model
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.norm = norm
        self.corruption = corruption
        self.max_epochs = max_epochs
        self.max_minutes = max_minutes
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.standardize = standardize
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def fit(self, X, y=None):
        import aezoo

        X = validate_data(self, X, dtype=[np.float64, np.float32])
        n, d = X.shape
        if n < 2:
            raise ValueError(f"AutoencoderReducer needs at least 2 samples, got n_samples = {n} (1 sample)")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        self.mean_ = X.mean(0) if self.standardize else np.zeros(d)
        scale = X.std(0) if self.standardize else np.ones(d)
        self.scale_ = np.where(scale > 1e-12, scale, 1.0)
        Z = torch.from_numpy(((X - self.mean_) / self.scale_).astype(np.float32))
        overrides = dict(input_shape=[d], data_kind="vector", arch="mlp", widths=list(self.hidden_layer_sizes),
                         latent_dim=int(self.n_components), activation=self.activation, norm=self.norm,
                         likelihood="gaussian")
        if self.model == "dae":
            overrides["corruption"] = self.corruption
        seed = 0 if self.random_state is None else int(self.random_state)
        try:
            model = aezoo.create(self.model, seed=seed, **overrides)
            val = Split(Z[: min(n, 1000)])
            data = Dataset("array", "vector", Split(Z), val, val)
            cfg = aezoo.TrainConfig(epochs=self.max_epochs, max_minutes=self.max_minutes,
                                    batch_size=int(min(self.batch_size, n)), lr=float(self.learning_rate),
                                    seed=seed, progress=bool(self.verbose), checkpoint_every=0, log_every=10**9,
                                    device=str(self.device), precision="fp32")
            result = aezoo.Trainer(model, data, cfg, run_dir=None).fit()
        except UserError as e:
            raise ValueError(str(e)) from None
        self.model_ = model.cpu().eval()
        self.n_iter_ = result.step
        self.n_epochs_ = result.epoch
        self.n_features_out_ = int(self.n_components)
        return self

    @property
    def _n_features_out(self):
        return self.n_features_out_

    def _run(self, fn, A, dtype):
        with torch.no_grad():
            outs = [fn(torch.from_numpy(A[i : i + 4096].astype(np.float32))) for i in range(0, len(A), 4096)]
        return torch.cat(outs).numpy().astype(dtype) if outs else np.empty((0,), dtype)

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        Z = (X - self.mean_) / self.scale_
        return self._run(lambda t: self.model_.encode(t).z, Z, X.dtype).reshape(len(X), -1)

    def inverse_transform(self, X):
        check_is_fitted(self)
        from sklearn.utils import check_array

        Z = check_array(X, dtype=[np.float64, np.float32])
        if Z.shape[1] != self.n_features_out_:
            raise ValueError(f"expected codes with {self.n_features_out_} columns, got {Z.shape[1]}")
        rec = self._run(self.model_.decode, Z, Z.dtype).reshape(len(Z), -1)
        return rec * self.scale_.astype(Z.dtype) + self.mean_.astype(Z.dtype)
