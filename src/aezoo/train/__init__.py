"""Training: the loop, its config, schedules and checkpoints."""

from .config import TrainConfig
from .trainer import Trainer, TrainResult, build_optimizer, train_config

__all__ = ["TrainConfig", "Trainer", "TrainResult", "build_optimizer", "train_config"]
