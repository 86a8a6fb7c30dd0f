"""The protocol every model follows, and saving/loading a model as ``config.json`` + ``model.safetensors``.

A model is an ``nn.Module`` built from one typed config; it owns its initialisation (one seed, one set of
weights). It is of one of three kinds, told apart with ``isinstance``, never a name or ``hasattr``:
:class:`Autoencoder` (``encode``/``decode``; each capability flag names one method the class declares),
:class:`Prior` (``log_prob``/``sample`` over another model's codes) and :class:`Restorer`
(``restore(x, hole, sigma)``; a ``dae`` is both an autoencoder and a restorer).

Training (the trainer supplies devices, precision, clipping, schedules, NaN checks, checkpoints, logging
and the time budget, and never asks which model it trains): ``optimizers()`` declares named
:class:`Optim` s (default: one Adam over everything); ``training_step(batch, ctx)`` runs one step as the
paper's algorithm reads, routing each loss with ``ctx.backward(loss, *names)`` and updating with
``ctx.step(*names)`` (see :class:`StepContext`); by default it minimises ``loss(batch, ctx)``, the one
loss signature (a single-optimizer model that plans over the run reads ``ctx.step_index``/``total_steps``).
``validation_step``, ``after_step``, ``prepare`` and ``attach`` are hooks with their own docstrings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .._version import __version__
from ..config import from_dict, to_dict
from ..errors import UserError
from ..io import make_dir, read_json, save_tensors, write_json
from ..outputs import Batch, Encoded, LossOutput

MODEL_FORMAT = "aezoo-model/2"  # bump when saved configs or weights of an earlier version no longer load


@dataclass
class ModelConfig:
    """Fields every model config has. The trainer fills them from the data."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # one item: (C, H, W) for images, (D,) for vectors
    data_kind: Literal["image", "vector", "text", "codes"] = "image"  # images: values in [0, 1]; text: word counts; codes: VQ-VAE code grids
    vocabulary: tuple[str, ...] = ()  # text: the words counted, in input order (filled from the data)

    def validate(self) -> None:
        if not self.input_shape or min(self.input_shape) < 1:
            raise UserError(f"input_shape must be positive, got {self.input_shape}")


@dataclass
class Optim:
    """One named optimizer of a model. ``params``: parameters, or groups ``{"params": [...], "lr_scale": s}``
    whose learning rate is ``s`` times the optimizer's (a group may also set its own ``weight_decay``). Fields left at None come from the training config
    (then Adam, lr 1e-3, betas (0.9, 0.999), no weight decay)."""

    params: Iterable
    kind: Literal["adam", "adamw", "adamax", "rmsprop"] | None = None
    lr: float | None = None
    betas: tuple[float, float] | None = None  # Adam family only
    alpha: float | None = None  # RMSprop only: decay of its average of squared gradients (torch: 0.99)
    weight_decay: float | None = None
    eps: float | None = None


class StepContext(Protocol):
    """What a training or validation step may ask of the trainer. ``backward(loss, *names)``: gradients of
    ``loss`` into the parameters of the named optimizers only (``retain_graph=True`` when several losses
    share one forward pass); ``step(*names)``: clip, update and zero those optimizers' gradients, as often
    as the algorithm says. Penalties that differentiate gradients (R1) call ``torch.autograd.grad(...,
    create_graph=True)`` themselves. ``step_index``, ``total_steps`` (planned; None on a time budget
    alone) and ``progress`` let a loss change over training; during validation ``training`` is False and ``backward`` and
    ``step`` do nothing."""

    step_index: int  # 0-based index of this batch's step in the run
    total_steps: int | None  # planned steps of the run; None when only a time budget is given
    progress: float  # share of the run's budget used, 0 to 1: of its planned steps or its minutes, whichever is further
    training: bool  # False during validation: backward and step do nothing

    def backward(self, loss: torch.Tensor, *optimizers: str, retain_graph: bool = False) -> None: ...

    def step(self, *optimizers: str) -> None: ...

    def mean(self, value: torch.Tensor) -> torch.Tensor: ...  # averaged over the ranks of a distributed run


@dataclass
class LossStep:
    """A :class:`StepContext` for calling ``loss(batch, ctx)`` outside the trainer (tests, notebooks, your
    own loop): where in the run the loss is taken. It runs no training step: ``backward`` and ``step``
    refuse (call ``loss.backward()`` and your optimizer yourself)."""

    step_index: int = 0
    total_steps: int | None = None
    progress: float = 0.0  # share of the run's budget used, 0 to 1
    training: bool = True

    def backward(self, loss: torch.Tensor, *optimizers: str, retain_graph: bool = False) -> None:
        raise RuntimeError("LossStep runs no training step; call loss.backward() yourself")

    def step(self, *optimizers: str) -> None:
        raise RuntimeError("LossStep runs no training step; step your optimizer yourself")

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        return value


class Model(nn.Module):
    """Base of every registered model: its config, optimizers and training step."""

    name: ClassVar[str] = "?"
    Config: ClassVar[type] = ModelConfig
    PRESETS: ClassVar[dict[str, dict]] = {}  # named sets of config overrides, e.g. a paper's settings
    TRAIN_DEFAULTS: ClassVar[dict] = {}  # TrainConfig fields the family trains with unless the user sets them
    PARTS: ClassVar[dict] = {}  # networks a user may replace: name -> parts.Part (see aezoo.models.parts)
    preset: str | None = None  # the preset this model was made with (aezoo.create, aezoo train --preset)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    # --- training protocol -----------------------------------------------------------------------
    def optimizers(self) -> dict[str, Optim]:
        return {"main": Optim(self.parameters())}

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        """The loss the default ``training_step`` minimises; ``ctx`` says where in the run it is taken
        (``step_index``, ``total_steps``) and whether it trains (False in validation)."""
        raise NotImplementedError(f"{type(self).__name__} defines neither loss() nor training_step()")

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Any]:
        out = self.loss(batch, ctx)
        ctx.backward(out.loss)
        ctx.step()
        return out.metrics

    def validation_step(self, batch: Batch, ctx: StepContext) -> dict[str, Any]:
        """Metrics on held-out data: ``training_step`` under ``no_grad`` (a model whose step needs gradients,
        such as a gradient penalty, overrides this to run with them)."""
        with torch.no_grad():
            return self.training_step(batch, ctx)

    def after_step(self, ctx: StepContext) -> None:
        """Called after each training step, without gradients. Nothing by default."""

    def prepare(self, train) -> None:
        """Called by the trainer before the first step of a run (fresh or resumed) with the training
        :class:`~aezoo.data.Split`: fit data-dependent state that gradients do not learn. It must be
        deterministic and draw no random numbers, so a resumed run matches an uninterrupted one; buffers
        it sets are saved with the model. Nothing by default."""

    def attach(self, directory: Path) -> None:
        """Called by :func:`load_model` after the weights are in: load companion files of the run
        (e.g. a separately trained prior). Nothing by default."""

    # --- conveniences ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Autoencoder(Model):
    """A model of items: ``encode(x)`` -> :class:`Encoded`, ``decode(z)`` -> data space, ``forward(x)``
    reconstructs. Capabilities are declared by the properties below (False unless a family says so)."""

    def encode(self, x: torch.Tensor) -> Encoded:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).z)

    # --- capabilities: what generic code may ask (a family overrides a value, or with a property when it
    # depends on the config or on an attached prior); each names the method below that it promises -----
    can_sample = False  # sample(n, temperature) draws items from a prior
    decodes_codes = True  # decode(z) works from a code alone (interpolation); False if it needs skip features
    binary_codes = False  # codes(x) gives binary words and continuous codes (a hash index holds them)
    has_likelihood = False  # log_importance_weights(x, k): ELBO and importance-sampled NLL apply
    discrete_codes = False  # code_indices(x): grids of indices into config.num_codes codes, for a Prior
    prior: "Prior | None" = None  # the second-stage Prior over the codes, once attached (see attach)
    refines_codes = False  # the config's refine_steps improves codes through the decoder at inference
    traversal_dims = 0  # latent dimensions a traversal sweeps (a standard-normal prior over a vector)
    latent_groups = 0  # hierarchical latent groups: reconstruct_groups(x, keep, temperature) fixes the top ones

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``can_sample``: n items (n, *input_shape) drawn from the model's prior."""
        raise NotImplementedError(f"{self.name} does not sample (can_sample is False)")

    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """``has_likelihood``: (k, B) values log p(x, z_i) - log q(z_i | x), z_i ~ q(z | x)."""
        raise NotImplementedError(f"{self.name} has no likelihood (has_likelihood is False)")

    def code_indices(self, x: torch.Tensor) -> torch.Tensor:
        """``discrete_codes``: (B, h, w) indices into the codebook."""
        raise NotImplementedError(f"{self.name} has no discrete codes (discrete_codes is False)")

    def codes(self, x: torch.Tensor):
        """``binary_codes``: (binary words (B, bits) in {0, 1}, continuous codes (B, bits))."""
        raise NotImplementedError(f"{self.name} has no binary codes (binary_codes is False)")

    def reconstruct_groups(self, x: torch.Tensor, keep: int, temperature: float = 0.6) -> torch.Tensor:
        """``latent_groups``: x's top ``keep`` latent groups from its posterior, the rest from the prior."""
        raise NotImplementedError(f"{self.name} has no latent groups (latent_groups is 0)")


class Restorer(Model):
    """A model that undoes a corruption: ``restore(x, hole, sigma)`` returns items like ``x``. ``corruption``
    is the one ``aezoo eval`` measures with; ``inpaints`` says whether it fills holes (``hole`` marks them)
    or removes noise (``sigma``, on the [0, 1] scale, for a model told the noise level; None: estimated)."""

    any_size = False  # restore takes pictures of any size whole (fully convolutional)
    takes_sigma = False  # restore's sigma is used (a noise-level map); otherwise it must be None

    @property
    def corruption(self):
        raise NotImplementedError

    @property
    def inpaints(self) -> bool:
        raise NotImplementedError

    def restore(self, x: torch.Tensor, hole: torch.Tensor | None = None, sigma=None) -> torch.Tensor:
        raise NotImplementedError


class Prior(Model):
    """A density over the codes of another model (a second stage): ``log_prob(codes)`` and
    ``sample(n, temperature)``. Its data is ``codes:RUN_DIR``."""

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        raise NotImplementedError


# --- saving and loading ------------------------------------------------------------------------
def make_config(cls: type[Model], preset: str | None = None, overrides: dict | None = None,
                sets: Iterable[str] = (), where: str | None = None):
    """The config of ``cls`` from its defaults, then ``preset``, then ``overrides`` (field values), then
    ``sets`` (``KEY=VALUE`` strings, as ``--set``); validated once, after all of them."""
    from ..config import apply_overrides

    values = {}
    if preset is not None:
        if preset not in cls.PRESETS:
            known = ", ".join(sorted(cls.PRESETS)) or "none"
            raise UserError(f"model {cls.name!r} has no preset {preset!r} (presets: {known})")
        values.update({k: v for k, v in cls.PRESETS[preset].items() if k != "train"})  # train: see train_defaults
    values.update(overrides or {})
    where = where or f"{cls.name} config"
    config = from_dict(cls.Config, json.loads(json.dumps(values)), where, validate=False)
    return apply_overrides(config, list(sets), where)


def train_defaults(cls: type[Model], preset: str | None) -> dict:
    """The TrainConfig fields the family trains with (its ``TRAIN_DEFAULTS``, e.g. its paper's schedule),
    then those its preset sets under ``"train"`` (e.g. the paper's learning rate); the user's settings win
    over both."""
    return {**cls.TRAIN_DEFAULTS, **(cls.PRESETS.get(preset, {}).get("train", {}) if preset else {})}


def saved_preset(cls: type[Model], value, where) -> str | None:
    """The preset a saved model or run was made with; one its family no longer has (renamed by a later
    version) is dropped, so the model still loads and trains with the family's own settings."""
    if value is not None and not isinstance(value, str):
        raise UserError(f"{where}: preset must be a preset's name, got {value!r}")
    return value if value in cls.PRESETS else None


RETIRED = ("lr",)  # model config keys of earlier versions' saves, now the training config's (train.lr)


def read_config(cls: type[Model], data: dict, where: str):
    """A saved model config, validated; keys in RETIRED are left out (a resumed run takes its ``lr`` over
    into train.lr, see apps.runs)."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in RETIRED}
    return from_dict(cls.Config, data, where)


def save_model(model: Model, directory: str | Path, extra: dict | None = None) -> None:
    """Write ``config.json`` and ``model.safetensors`` (each atomically) into ``directory``."""
    directory = make_dir(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_tensors(directory / "model.safetensors", tensors, metadata={"format": MODEL_FORMAT, "model": model.name})
    meta = {"format": MODEL_FORMAT, "aezoo_version": __version__, "model": model.name,
            "config": to_dict(model.config)}
    if model.preset is not None:  # its training settings (aezoo.train_config) follow it
        meta["preset"] = model.preset
    meta.update(extra or {})
    write_json(directory / "config.json", meta)


def copy_model(run_dir: str | Path, dest: str | Path) -> None:
    """Copy a saved model (``config.json``, ``model.safetensors``) into the folder ``dest``, atomically, so
    that a run or an index that needs it holds it (and reads nothing outside itself)."""
    import shutil

    from ..io import atomic_dir

    with atomic_dir(dest) as tmp:
        for name in ("config.json", "model.safetensors"):
            shutil.copyfile(Path(run_dir) / name, tmp / name)


def check_format(found, path, what: str = "model", current: str = MODEL_FORMAT) -> None:
    """Refuse a file written in another format version, saying so."""
    family = current.rsplit("/", 1)[0]
    if found == current:
        return
    if isinstance(found, str) and found.startswith(family + "/"):
        raise UserError(f"{path}: saved by an incompatible aezoo version ({what} format {found}; this version "
                        f"reads {current}); retrain it with this version")
    raise UserError(f"{path}: not an aezoo {what}")


def load_model(directory: str | Path, map_location: str | torch.device = "cpu", trust_code: bool | None = None,
               parts: dict | None = None) -> Model:
    """Rebuild a model saved by :func:`save_model`; no pickle is ever read. A config that names your own
    networks by import path is imported only with ``trust_code`` (None: as :func:`parts.trusting_code`
    says); ``parts``: networks given as objects (see :mod:`aezoo.models.parts`)."""
    from .. import registry
    from . import parts as parts_mod

    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such run directory")
    meta = read_json(directory / "config.json", "model config (config.json)")
    check_format(meta.get("format"), directory / "config.json")
    if "model" not in meta or "config" not in meta:
        raise UserError(f"{directory / 'config.json'}: not an aezoo model config")
    cls = registry.get(meta["model"])
    config = read_config(cls, meta["config"], f"{meta['model']} config")
    preset = saved_preset(cls, meta.get("preset"), directory / "config.json")
    given = parts_mod.given_at_load(cls, parts or {})
    parts_mod.check_trust(cls, config, directory / "config.json", trust_code, given)
    model = cls(config, **given)
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{weights}: missing; the run has no saved model yet (did training finish?)")
    try:
        state = load_file(weights, device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{weights}: cannot read the weights ({e})") from None
    load_state(model, state, weights)
    model.preset = preset
    model.attach(directory)
    model.to(map_location)  # load_state_dict copies into the CPU-built model; its companions move with it
    return model.eval()  # inference mode (batch norm uses its running statistics); the trainer sets train()


def load_state(model: nn.Module, state: dict, where) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{'...' if len(unexpected) > 3 else ''}")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {tuple(state[k].shape)}, the model needs {tuple(own[k].shape)}")
        raise UserError(f"{where}: weights do not match the model config ({'; '.join(parts)})")
    model.load_state_dict(state)


__all__ = ["ModelConfig", "Model", "Autoencoder", "Prior", "Restorer", "Optim", "StepContext", "LossStep", "save_model", "load_model",
           "copy_model", "make_config", "check_format", "train_defaults", "saved_preset", "read_config"]
