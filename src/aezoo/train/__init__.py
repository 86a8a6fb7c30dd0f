"""Training: the loop, its config, schedules and checkpoints."""

from .config import TrainConfig
from .trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "Trainer", "TrainResult"]
