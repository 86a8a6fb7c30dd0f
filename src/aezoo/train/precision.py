"""Precision and memory layout of a training run, chosen for the machine in front of it.

``train.precision`` (auto, fp32, bf16: autocast) and ``train.channels_last`` (auto, true, false). A value
the user sets always wins. On the CPU, ``auto`` is decided by a short probe: a few real training steps of
the run's own network at its batch size, in each candidate combination, timed in interleaved rounds after
a warm-up (the fastest of each candidate's steps counts). A candidate leaves fp32 contiguous only with a
clear margin (:data:`MARGIN`), and bf16 must beat the better fp32 layout by that margin too: bf16 costs
precision, a noisy 5% is not worth it. Candidates: bf16 only on a CPU with bf16 hardware (``avx512_bf16``
or ``amx_bf16`` in /proc/cpuinfo; without it, no probe: "no bf16 hardware"), channels-last only for a
network with 4-D (convolution) weights and image items. The measured times are cached per machine, torch
version, thread count, family and config under ``$XDG_CACHE_HOME/aezoo/precision/``, so the same command
makes the same choice. ``AEZOO_PROBE=0`` skips the probe (auto means fp32 contiguous), as the test suite
does. On CUDA, auto is bf16 autocast where the GPU has native bf16 (compute capability 8.0+), contiguous.

A resumed run reuses the choice its run.json records and never probes (bit-exact resumes). Only what runs
under autocast changes: weights and optimizer states stay fp32, and the likelihoods, KL terms, quantiser
and NaN checks compute in fp32 under it (``aezoo.losses``, ``nn.quantize``). BENCHMARKS.md ("Precision")
has the measurements behind the margin.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..config import to_dict
from ..env import cpu_flags, cpu_model
from ..errors import UserError
from ..io import write_json

MARGIN = 1.15  # a candidate must be this much faster than the default to be chosen
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # /proc/cpuinfo flags of bf16 arithmetic in hardware (x86, ARM)
Combo = tuple[bool, bool]  # (bf16 autocast, channels-last)


@dataclass
class Choice:
    """What a run trains with, and why (recorded in run.json as ``precision_choice``)."""

    bf16: bool
    channels_last: bool
    reason: dict = field(default_factory=dict)  # {"precision": why, "channels_last": why}
    probe: dict | None = None  # seconds per step of each candidate, the margin, and whether cached

    def to_json(self) -> dict:
        return {"precision": "bf16" if self.bf16 else "fp32", **asdict(self)}

    @classmethod
    def recorded(cls, run: dict) -> "Choice":
        """The choice a run.json records (a run from before this record: its ``precision``, contiguous)."""
        rec = run.get("precision_choice")
        if isinstance(rec, dict) and isinstance(rec.get("bf16"), bool) and isinstance(rec.get("channels_last"), bool):
            return cls(rec["bf16"], rec["channels_last"], dict(rec.get("reason") or {}), rec.get("probe"))
        return cls(run.get("precision") == "bf16", False, {"precision": "recorded", "channels_last": "recorded"})


def name(combo: Combo) -> str:
    return ("bf16" if combo[0] else "fp32") + ("+channels_last" if combo[1] else "")


def cpu_has_bf16() -> bool:
    flags = cpu_flags()
    if flags is None:  # no /proc/cpuinfo (not Linux): what oneDNN says
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return any(f in flags for f in BF16_FLAGS)


def has_convolutions(model: torch.nn.Module, item_shape) -> bool:
    """Whether channels-last can change anything: image items (C, H, W) and some 4-D weight."""
    return len(tuple(item_shape)) == 3 and any(p.dim() == 4 for p in model.parameters())


def choose(precision: str, channels_last, device: torch.device, *, bf16_hardware: bool, convolutions: bool,
           measure: Callable[[list[Combo]], tuple[dict[str, float], bool]]) -> Choice:
    """The choice for a new run. ``bf16_hardware``: the CPU's (:func:`cpu_has_bf16`) or the GPU's native
    bf16. ``measure(candidates)`` returns each candidate's seconds per step (by
    :func:`name`) and whether they came from the cache; it is called only when there is a choice to make."""
    reason = {}
    if precision != "auto":
        precisions, reason["precision"] = [precision == "bf16"], "user setting"
    elif device.type == "cuda":
        precisions = [bf16_hardware]
        reason["precision"] = "cuda: native bf16" if bf16_hardware else "cuda: no native bf16 (emulated is slower)"
    elif device.type != "cpu":
        precisions, reason["precision"] = [False], f"{device.type}: fp32"
    elif os.environ.get("AEZOO_PROBE") == "0":
        precisions, reason["precision"] = [False], "probe off (AEZOO_PROBE=0)"
    elif not bf16_hardware:
        precisions, reason["precision"] = [False], "no bf16 hardware (no avx512_bf16 or amx_bf16 in /proc/cpuinfo)"
    else:
        precisions = [False, True]
    if channels_last != "auto":
        layouts, reason["channels_last"] = [bool(channels_last)], "user setting"
    elif not convolutions:
        layouts, reason["channels_last"] = [False], "no convolutions"
    elif device.type != "cpu":
        layouts, reason["channels_last"] = [False], f"{device.type}: contiguous"
    elif os.environ.get("AEZOO_PROBE") == "0":
        layouts, reason["channels_last"] = [False], "probe off (AEZOO_PROBE=0)"
    else:
        layouts = [False, True]
    candidates = list(itertools.product(precisions, layouts))
    if len(candidates) == 1:
        return Choice(*candidates[0], reason)
    times, cached = measure(candidates)
    bf16, cl = pick({c: times[name(c)] for c in candidates})
    for key in ("precision", "channels_last"):
        reason.setdefault(key, "probe")
    default = min(candidates)  # fp32 before bf16, contiguous before channels-last, within what the user fixed
    speedup = {n: round(times[name(default)] / t, 3) for n, t in times.items()}
    return Choice(bf16, cl, reason, {"seconds_per_step": {n: round(t, 6) for n, t in times.items()},
                                     "speedup": speedup, "margin": MARGIN, "cached": cached})


def pick(times: dict[Combo, float], margin: float = MARGIN) -> Combo:
    """fp32 first: channels-last if it is ``margin`` faster than contiguous; then bf16 (its faster layout)
    only if ``margin`` faster than that fp32 choice."""
    chosen = None
    for bf16 in (False, True):
        group = {c: t for c, t in times.items() if c[0] == bf16}
        if not group:
            continue
        fastest = min(group, key=group.get)
        if chosen is None:
            default = min(group)
            chosen = fastest if group[default] >= margin * group[fastest] else default
        elif times[chosen] >= margin * group[fastest]:
            chosen = fastest
    return chosen


def measure(runners: dict[str, Callable[[], object]], warmup: int = 2, rounds: int = 3, budget_s: float = 2.0,
            max_rounds: int = 10, clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds per call of each runner: ``warmup`` calls each, then rounds of one call each in turn (others'
    load hits every candidate alike), at least ``rounds`` and more while under ``budget_s``; the fastest call
    of each counts (the one least disturbed)."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    best = {n: math.inf for n in runners}
    start, done = clock(), 0
    while done < rounds or (done < max_rounds and clock() - start < budget_s):
        for n, run in runners.items():
            t = clock()
            run()
            best[n] = min(best[n], clock() - t)
        done += 1
    return best


# --- the cache -------------------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aezoo" / "precision"


def fingerprint(model, batch_size: int, optimizer: str | None, device: torch.device, candidates: list[Combo]) -> dict:
    """What a step's speed depends on: the machine, torch, the threads, the network, its batch and optimizer."""
    flags = cpu_flags()
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "cpu_flags": sorted(f for f in (flags or ()) if f.startswith(("avx", "amx", "fma"))),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device.type,
            "model": model.name, "model_config": to_dict(model.config), "batch_size": batch_size,
            "optimizer": optimizer, "candidates": [name(c) for c in candidates]}


def cache_path(fp: dict) -> Path:
    key = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"{fp['model']}-{key}.json"


def cached_times(fp: dict) -> dict[str, float] | None:
    try:
        entry = json.loads(cache_path(fp).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(entry, dict) or entry.get("fingerprint") != fp:
        return None
    times = entry.get("seconds_per_step")
    if not isinstance(times, dict) or set(times) != set(fp["candidates"]):
        return None
    return times


def store_times(fp: dict, times: dict[str, float]) -> None:
    """Atomic; a cache that cannot be written is skipped (the run goes on, the next one probes again)."""
    try:
        write_json(cache_path(fp), {"fingerprint": fp, "seconds_per_step": times,
                                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    except UserError:
        pass
