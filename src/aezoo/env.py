"""Facts about the machine, recorded in run.json and benchmark results."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def host_reads_free(device) -> bool:
    """Whether reading a tensor's value into Python (``float(t)``, ``bool(t)``, ``.tolist()``) costs nothing on
    ``device`` (the CPU), or makes the host wait for every queued kernel (a GPU). Code on a training step's
    path reads values only where this is true, and keeps them as tensors until logging time elsewhere."""
    return getattr(device, "type", device) == "cpu"


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags as /proc/cpuinfo lists them (``avx512_bf16``, ``amx_bf16``, ...); None where
    there is no /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):  # x86, ARM
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return frozenset()
