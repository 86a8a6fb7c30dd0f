"""Seeded randomness that leaves the global RNG stream untouched."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu"):
    """Run the block with torch's RNG seeded to ``seed``, then restore the previous state: evaluation
    and figures draw the same numbers every time and never change a training run's stream."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
