"""The protocol every model follows, and saving/loading a model as ``config.json`` + ``model.safetensors``.

A model is an ``nn.Module`` built from one typed config. The trainer only uses this protocol:

- ``phases``: the optimizer steps per batch, one optimizer each (``("main",)`` for most models;
  adversarial models name more, e.g. ``("ae", "critic")``);
- ``phase_parameters(phase)``: the parameters that phase's optimizer updates;
- ``loss(batch, phase, step)``: a :class:`LossOutput` (scalar loss and metrics); ``step`` lets a loss
  change over training (warm-ups, schedules);
- ``encode(x)`` -> :class:`Encoded`, ``decode(z)`` -> data-space reconstruction, ``forward(x)`` reconstructs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .._version import __version__
from ..config import from_dict, to_dict
from ..errors import UserError
from ..io import atomic_path, read_json, write_json
from ..outputs import Batch, Encoded, LossOutput

MODEL_FORMAT = "aezoo-model/1"


@dataclass
class ModelConfig:
    """Fields every model config has. The trainer fills both from the data."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # one item: (C, H, W) for images, (D,) for vectors
    data_kind: Literal["image", "vector", "text", "codes"] = "image"  # images: values in [0, 1]; text: word counts; codes: VQ-VAE code grids
    vocabulary: tuple[str, ...] = ()  # text: the words counted, in input order (filled from the data)
    # Fields added after a model was first released whose default changes the weights or the training,
    # with the value that matches what earlier versions did; a saved config without the key gets that value.
    LEGACY_DEFAULTS: ClassVar[dict] = {}

    def validate(self) -> None:
        if not self.input_shape or min(self.input_shape) < 1:
            raise UserError(f"input_shape must be positive, got {self.input_shape}")


class Autoencoder(nn.Module):
    name: ClassVar[str] = "?"
    Config: ClassVar[type] = ModelConfig
    phases: ClassVar[tuple[str, ...]] = ("main",)
    PRESETS: ClassVar[dict[str, dict]] = {}  # named sets of config overrides, e.g. a paper's settings

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    # --- the protocol --------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Encoded:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).z)

    def loss(self, batch: Batch, phase: str, step: int) -> LossOutput:
        raise NotImplementedError

    def phase_parameters(self, phase: str) -> Iterable[nn.Parameter]:
        return self.parameters()

    def optimizer_overrides(self, phase: str) -> dict:
        """Per-phase optimizer settings that differ from the training config (e.g. a critic's lr)."""
        return {}

    @property
    def can_sample(self) -> bool:
        """True when the model has a prior to draw samples from (``sample(n, temperature)``)."""
        return callable(getattr(self, "sample", None))

    @property
    def decodes_codes(self) -> bool:
        """True when ``decode(z)`` works from a code alone (interpolation needs it); False for decoders
        that also need the encoder's skip features."""
        return True

    def prepare(self, train) -> None:
        """Called by the trainer before the first step of a run (fresh or resumed) with the training
        :class:`~aezoo.data.Split`: fit data-dependent state that gradients do not learn (statistics,
        neighbour tables). It must be deterministic and draw no random numbers, so that a resumed run
        matches an uninterrupted one; buffers it sets are saved with the model. Nothing by default."""

    def attach(self, directory: Path) -> None:
        """Called by :func:`load_model` after the weights are in: load companion files of the run
        (e.g. a separately trained prior). Nothing by default."""

    # --- conveniences ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --- saving and loading ------------------------------------------------------------------------
def make_config(cls: type[Autoencoder], preset: str | None = None, **overrides):
    values = {}
    if preset is not None:
        if preset not in cls.PRESETS:
            known = ", ".join(sorted(cls.PRESETS)) or "none"
            raise UserError(f"model {cls.name!r} has no preset {preset!r} (presets: {known})")
        values.update(cls.PRESETS[preset])
    values.update(overrides)
    return from_dict(cls.Config, json.loads(json.dumps(values)))


def save_model(model: Autoencoder, directory: str | Path, extra: dict | None = None) -> None:
    """Write ``config.json`` and ``model.safetensors`` (each atomically) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(tensors, tmp, metadata={"format": MODEL_FORMAT, "model": model.name})
    meta = {"format": MODEL_FORMAT, "aezoo_version": __version__, "model": model.name,
            "config": to_dict(model.config)}
    meta.update(extra or {})
    write_json(directory / "config.json", meta)


def saved_config(cls: type[Autoencoder], values: dict, where: str = "config"):
    """The config of a saved model. A key that is absent was saved by a version without that field, so it
    takes the value that version used (``Config.LEGACY_DEFAULTS``), not today's default."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected an object, got {type(values).__name__}")
    return from_dict(cls.Config, {**cls.Config.LEGACY_DEFAULTS, **values}, where)


def load_model(directory: str | Path, map_location: str | torch.device = "cpu") -> Autoencoder:
    """Rebuild a model saved by :func:`save_model`; no pickle is ever read."""
    from .. import registry

    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such run directory")
    meta = read_json(directory / "config.json", "model config (config.json)")
    if meta.get("format") != MODEL_FORMAT or "model" not in meta or "config" not in meta:
        raise UserError(f"{directory / 'config.json'}: not an aezoo model config")
    cls = registry.get(meta["model"])
    model = cls(saved_config(cls, meta["config"]))
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{weights}: missing; the run has no saved model yet (did training finish?)")
    try:
        state = load_file(weights, device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{weights}: cannot read the weights ({e})") from None
    load_state(model, state, weights)
    model.attach(directory)
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


__all__ = ["ModelConfig", "Autoencoder", "save_model", "load_model", "make_config", "saved_config"]
