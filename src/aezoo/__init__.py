"""aezoo: the autoencoder family, faithful to its papers, fast on a CPU.

>>> import aezoo
>>> model = aezoo.create("ae", input_shape=(1, 28, 28), latent_dim=10)
>>> data = aezoo.data.load("fashion-mnist")
>>> aezoo.Trainer(model, data, aezoo.TrainConfig(epochs=5), run_dir="runs/ae").fit()
>>> model = aezoo.load("runs/ae")
"""

from __future__ import annotations

from . import data
from ._version import __version__
from .errors import UserError
from .models.base import Autoencoder, Model, Prior, load_model, make_config, save_model
from .registry import get as get_model_class
from .registry import names as list_models
from .train import TrainConfig, Trainer, train_config


def create(name: str, preset: str | None = None, seed: int | None = None, **overrides) -> Model:
    """A new model of the registered family ``name``; ``overrides`` set config fields by name. With
    ``seed``, the weights are initialised under that seed (the same seed gives the same weights) without
    touching the global random stream. Your own networks for the family's parts (``encoder=``,
    ``decoder=``, ...): an ``nn.Module``, its class, or an import path ``"module:Name"`` with
    ``encoder_kwargs``; see :mod:`aezoo.models.parts`."""
    from .models.parts import split_given
    from .rng import seeded

    cls = get_model_class(name)
    given, overrides = split_given(cls, overrides)
    config = make_config(cls, preset, overrides)
    if seed is None:
        model = cls(config, **given)
    else:
        with seeded(seed):
            model = cls(config, **given)
    model.preset = preset  # its training settings: aezoo.train_config(model)
    return model


def load(run_dir: str, map_location: str = "cpu", trust_code: bool = False, **parts) -> Autoencoder:
    """The model saved in ``run_dir`` (``config.json`` + ``model.safetensors``). A run whose config names
    your own networks by import path loads only with ``trust_code=True`` (importing runs their module's
    code); networks given as objects when the model was created are passed again as ``parts``
    (``encoder=Encoder(...)``)."""
    return load_model(run_dir, map_location, trust_code=trust_code, parts=parts)


save = save_model

__all__ = ["__version__", "create", "load", "save", "list_models", "Trainer", "TrainConfig", "train_config",
           "UserError", "data",
           "Autoencoder", "Model", "Prior"]
