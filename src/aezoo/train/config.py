"""Training settings (``--set train.KEY=VALUE`` on the command line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import UserError


@dataclass
class TrainConfig:
    epochs: int | None = 10  # passes over the training split; None: run until max_minutes
    max_minutes: float | None = None  # wall-clock budget, counted across resumes; stops after the current step
    max_steps: int | None = None  # stop after this many optimizer steps (counted across resumes); None: no limit
    batch_size: int = 128
    # None below: what the model declares for each of its optimizers (most: Adam, lr 1e-3, no weight decay);
    # a value set here applies to every optimizer of the model
    lr: float | None = None  # peak learning rate
    optimizer: Literal["adam", "adamw", "adamax", "rmsprop"] | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None  # Adam family
    schedule: Literal["constant", "cosine", "linear"] = "constant"  # decay of lr over the planned steps
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    min_lr_ratio: float = 0.0  # floor of the decay, as a fraction of lr
    grad_clip: float | None = None  # max global gradient norm per optimizer update; None: no clipping
    # auto: chosen for this machine (train/precision.py): on a CPU bf16 autocast and channels-last only where
    # a short probe of this network's steps measures them faster; on CUDA bf16 where native. Recorded in run.json.
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # bf16: autocast; weights and optimizer states stay fp32
    channels_last: Literal["auto"] | bool = "auto"  # memory layout of 4-D weights and image batches
    device: str = "auto"  # auto: cuda when available, else cpu
    threads: int | None = None  # CPU threads for torch; None: torch's default
    seed: int = 0  # fixes initialisation, data order and noise
    val_every: int = 0  # validate every N steps; 0: at the end of each epoch
    checkpoint_every: int = 1000  # steps between checkpoints (also written at the end)
    log_every: int = 50  # steps between lines of metrics.jsonl
    progress: bool = True  # tqdm progress bar on stderr
    # trackers that get a copy of metrics.jsonl, the config and validation pictures (train/tracking.py)
    log: list[str] = field(default_factory=list)  # "tensorboard" (RUN/tensorboard/), "mlflow" (./mlruns)

    def validate(self) -> None:
        if self.epochs is None and self.max_minutes is None and self.max_steps is None:
            raise UserError("give a number of epochs, a time budget (max_minutes) or a number of steps (max_steps)")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.epochs is not None and self.epochs < 1:
            raise UserError(f"epochs must be at least 1, got {self.epochs}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise UserError(f"max_minutes must be positive, got {self.max_minutes}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if self.schedule != "constant" and self.epochs is None and self.max_steps is None and self.max_minutes is None:
            raise UserError(f"schedule={self.schedule} needs epochs, max_steps or max_minutes to plan the decay")
        for name in ("warmup_steps", "checkpoint_every", "log_every", "val_every"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must not be negative")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise UserError(f"weight_decay must not be negative, got {self.weight_decay}")
        if self.betas is not None and not all(0 <= b < 1 for b in self.betas):
            raise UserError(f"betas must be in [0, 1), got {self.betas}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise UserError(f"grad_clip must be positive, got {self.grad_clip}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads must be at least 1, got {self.threads}")
        from .tracking import check_trackers

        check_trackers(self.log)
