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
    monkeypatch.setenv("AEZOO_PROBE", "0")  # precision=auto: fp32 contiguous, no timing (tests/test_precision.py probes)
    torch.set_num_threads(1)
    yield


def run_cli(*args, cwd=None, env_extra=None):
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "aezoo.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


MANY = """
import contextlib, io, json, sys
from aezoo.cli import main
done = []
for argv in json.loads(sys.stdin.read()):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
    done.append([code, out.getvalue(), err.getvalue()])
sys.stdout.write(json.dumps(done))
"""


def run_cli_many(*argvs) -> list[subprocess.CompletedProcess]:
    """Several CLI commands run one after another in one Python process (one start-up instead of many), each
    with its own exit status, stdout and stderr: for commands that fail early, such as user errors."""
    import json

    argvs = [list(map(str, a)) for a in argvs]
    r = subprocess.run([sys.executable, "-c", MANY], input=json.dumps(argvs), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return [subprocess.CompletedProcess(a, code, out, err) for a, (code, out, err) in zip(argvs, json.loads(r.stdout))]


@pytest.fixture(scope="session")
def digits():
    from aezoo import data

    return data.load("digits")
