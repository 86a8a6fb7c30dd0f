import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                                  reason="Fashion-MNIST not installed (make test installs it where apt is usable)")


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    # Keep downloads and caches out of the user's home; small, repeatable thread count.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("AEZOO_DATA", raising=False)
    torch.set_num_threads(1)
    yield


def run_cli(*args, cwd=None, env_extra=None):
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "aezoo.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="session")
def digits():
    from aezoo import data

    return data.load("digits")
