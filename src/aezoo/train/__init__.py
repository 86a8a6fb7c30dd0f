"""Training: the loop, its config, schedules and checkpoints."""

from .config import TrainConfig
from .trainer import Trainer, TrainResult, train_config

__all__ = ["TrainConfig", "Trainer", "TrainResult", "train_config"]
