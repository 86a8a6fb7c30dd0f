"""Learning-rate schedules as pure functions of the step, or of the share of a time budget used: nothing to
save; a resume is exact on planned steps."""

from __future__ import annotations

import math


def lr_factor(step: int, total: int | None, schedule: str, warmup: int = 0, floor: float = 0.0,
              progress: float | None = None) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based) of ``total`` planned steps; without
    planned steps, the decay follows ``progress`` (0 to 1, the share of a time budget used). Planned steps
    win over a time budget: there the budget is a cap, which a run trained in chunks raises at each resume."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or (not total and progress is None):
        return 1.0
    if total:
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    elif schedule == "linear":
        decay = 1.0 - progress
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return floor + (1 - floor) * decay
