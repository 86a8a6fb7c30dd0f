"""Small result types shared by every model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Batch:
    """One minibatch: inputs ``x`` (B, *shape), labels ``y`` (B,) when the data has them, and ``index``
    (B,), the items' positions in their split (a model that prepared per-item tables looks them up)."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    index: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class Encoded:
    """What ``encode`` returns: the code ``z`` used downstream (a posterior's mode for stochastic models)
    and, for stochastic models, the ``posterior`` object itself (``sample``, ``mode``, ``kl``, ``log_prob``)."""

    z: torch.Tensor
    posterior: Any = None
    skips: list[torch.Tensor] | None = None  # encoder features a skip-connected decoder adds back (dae arch=skip)


@dataclass
class LossOutput:
    """The scalar a model's default training step minimises and the metrics to log (floats or 0-d tensors)."""

    loss: torch.Tensor
    metrics: dict[str, Any] = field(default_factory=dict)
