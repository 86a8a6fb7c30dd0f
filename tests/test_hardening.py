"""Failure surface: one writer per output folder (a lock that dies with its holder)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aezoo.errors import UserError
from aezoo.io import one_writer

from conftest import run_cli

HOLD = """
import sys, time
from aezoo.io import one_writer
with one_writer(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def hold(path: Path) -> subprocess.Popen:
    """A child process holding the write lock of ``path`` (returns once it holds it)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_by_pid_and_a_dead_holder_blocks_nobody(tmp_path):
    out = tmp_path / "new" / "deeper" / "run"
    child = hold(out)
    try:
        with pytest.raises(UserError, match=rf"in use by another aezoo process \(pid {child.pid}\)"):
            with one_writer(out):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (out.parent / ".run.lock").exists()  # left behind by the killed holder...
    with one_writer(out):  # ...and ignored: the kernel released its lock
        assert (out.parent / ".run.lock").read_text() == str(os.getpid())
    assert not (out.parent / ".run.lock").exists()  # a clean exit removes it
    fresh = tmp_path / "a" / "b" / "run"
    with one_writer(fresh):
        assert (fresh.parent / ".run.lock").exists()
    assert not (tmp_path / "a").exists()  # the folders made for the lock went with it


def test_train_refuses_a_run_directory_in_use_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    child = hold(out)
    try:
        r = run_cli("train", "ae", "--data", "digits?limit=64", "--epochs", "1", "--out", out, "--quiet")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"aezoo: error: {out}: in use by another aezoo process (pid {child.pid})")
    assert not out.exists()


def test_a_running_training_holds_its_directory_until_it_is_killed(tmp_path):
    out = tmp_path / "run"
    args = ["train", "ae", "--data", "digits?limit=256", "--epochs", "1000", "--batch-size", "8", "--out", out, "--quiet",
            "--set", "widths=[8]", "--set", "latent_dim=2", "--set", "train.checkpoint_every=50"]
    first = subprocess.Popen([sys.executable, "-m", "aezoo.cli", *map(str, args)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (out / "checkpoint.safetensors").exists(), "the first run wrote no checkpoint"
        second = run_cli("train", "ae", "--data", "digits?limit=256", "--epochs", "1", "--out", out, "--resume", "--quiet")
        assert second.returncode == 2 and f"in use by another aezoo process (pid {first.pid})" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (tmp_path / ".run.lock").exists()  # the killed run could not clean up, and blocks nobody:
    r = run_cli("train", "ae", "--data", "digits?limit=256", "--epochs", "1", "--out", out, "--resume", "--quiet")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / ".run.lock").exists()


TRAIN = """
import sys
import aezoo
data = aezoo.data.load("digits?limit=256")
model = aezoo.create("ae", seed=0, input_shape=list(data.shape), widths=[8], latent_dim=2)
cfg = aezoo.TrainConfig(epochs=10, batch_size=8, seed=1, threads=1, checkpoint_every=7, progress=False)
aezoo.Trainer(model, data, cfg, sys.argv[1]).fit(resume=sys.argv[2] == "resume")
"""


def train_child(run: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TRAIN, str(run), mode], stderr=subprocess.PIPE, text=True)


def test_a_run_killed_at_a_random_step_and_resumed_ends_with_the_uninterrupted_weights(tmp_path):
    from safetensors.torch import load_file

    full = train_child(tmp_path / "full", "new")
    assert full.wait(timeout=300) == 0, full.stderr.read()
    reference = load_file(tmp_path / "full" / "model.safetensors")
    rng = random.Random(0)
    for trial in range(1):
        run = tmp_path / f"killed{trial}"
        child = train_child(run, "new")
        while not (run / "checkpoint.safetensors").exists() and child.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))  # somewhere in the 320 steps (about a second), checkpoints every 7
        child.send_signal(signal.SIGKILL)
        child.wait()
        resumed = train_child(run, "resume")
        assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
        weights = load_file(run / "model.safetensors")
        assert all(torch.equal(weights[k], reference[k]) for k in reference), f"trial {trial}"


def test_running_out_of_space_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    """A real write failure from the kernel: the resumed run may only write files smaller than half the
    checkpoint (RLIMIT_FSIZE; Python ignores SIGXFSZ, so the write fails with EFBIG)."""
    import resource

    run = tmp_path / "run"
    args = ["train", "ae", "--data", "digits?limit=256", "--out", run, "--quiet"]
    assert run_cli(*args, "--epochs", "1", "--set", "widths=[64]").returncode == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    limit = len(before["checkpoint.safetensors"]) // 2

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run([sys.executable, "-m", "aezoo.cli", *map(str, args), "--epochs", "2", "--resume"],
                       capture_output=True, text=True, preexec_fn=limited, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"aezoo: error: {run / 'checkpoint.safetensors'}: cannot write (file too large")
    assert (run / "checkpoint.safetensors").read_bytes() == before["checkpoint.safetensors"]
    assert (run / "model.safetensors").read_bytes() == before["model.safetensors"]
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert not (tmp_path / ".run.lock").exists()
    assert run_cli(*args, "--epochs", "2", "--resume").returncode == 0  # with space again, it goes on


def test_crafted_folders_are_read_only_inside_themselves(tmp_path, monkeypatch):
    """An index manifest that names files outside its folder is refused before any of them is read; a run
    that names a prior elsewhere (an old aezoo's prior.json link) does not load it."""
    import json

    import numpy as np

    import aezoo
    from aezoo import hashing

    idx = hashing.HashIndex(16)
    idx.add(np.random.default_rng(0).integers(0, 2, (5, 16)), [f"i{i}" for i in range(5)], None)
    idx.save(tmp_path / "index")
    (tmp_path / "secret").write_text("not yours")
    man = json.loads((tmp_path / "index" / "manifest.json").read_text())
    man["files"]["../secret"] = "0" * 64
    (tmp_path / "index" / "manifest.json").write_text(json.dumps(man))
    opened = []
    monkeypatch.setattr(hashing, "sha256", lambda p: opened.append(p) or "0" * 64)
    with pytest.raises(UserError, match="not a valid index manifest"):
        hashing.HashIndex.load(tmp_path / "index")
    assert opened == []

    data = aezoo.data.load("digits?limit=64")
    vq = aezoo.create("vqvae", seed=0, input_shape=list(data.shape), hidden=8, num_codes=16, code_dim=4)
    aezoo.save(vq, tmp_path / "vq")
    prior = aezoo.create("pixelcnn", seed=0, input_shape=list(vq.config.grid), num_codes=16, channels=8, layers=2)
    aezoo.save(prior, tmp_path / "elsewhere")
    (tmp_path / "vq" / "prior.json").write_text(json.dumps({"prior_dir": str(tmp_path / "elsewhere")}))
    assert aezoo.load(tmp_path / "vq").prior is None
    from aezoo.models.base import copy_model

    copy_model(tmp_path / "elsewhere", tmp_path / "vq" / "prior")  # what --prior-of does: a copy inside the run
    assert aezoo.load(tmp_path / "vq").prior is not None


def test_an_index_build_killed_midway_leaves_nothing_that_loads_and_the_next_build_succeeds(tmp_path):
    run, out = tmp_path / "run", tmp_path / "ix"
    r = run_cli("train", "hash", "--data", "digits?limit=256", "--out", run, "--epochs", "1", "--set", "bits=8",
                "--set", "widths=[16]", "--quiet")
    assert r.returncode == 0, r.stderr
    args = ["index", "build", run, "--out", out, "--quiet"]
    child = subprocess.Popen([sys.executable, "-m", "aezoo.cli", *map(str, args)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".ix.*.tmp")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)  # while it writes its temporary folder (or just after)
    child.wait()
    if not out.exists():  # killed in time: what it left is never taken for an index
        with pytest.raises(UserError, match="not an aezoo index"):
            from aezoo.hashing import HashIndex

            HashIndex.load(out)
    r = run_cli(*args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert not list(tmp_path.glob(".ix.*")), "a killed build's leftovers or the lock remain"


def test_running_out_of_space_during_an_index_build_leaves_no_index_and_no_debris(tmp_path):
    import resource

    run, out = tmp_path / "run", tmp_path / "ix"
    r = run_cli("train", "hash", "--data", "digits?limit=256", "--out", run, "--epochs", "1", "--set", "bits=8",
                "--set", "widths=[256]", "--quiet")
    assert r.returncode == 0, r.stderr
    limit = (run / "model.safetensors").stat().st_size // 2  # the index's copy of the model cannot be written

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run([sys.executable, "-m", "aezoo.cli", "index", "build", str(run), "--out", str(out), "--quiet"],
                       capture_output=True, text=True, preexec_fn=limited, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot write (file too large" in r.stderr, r.stderr
    assert not out.exists() and not list(tmp_path.glob(".ix*"))


READ_ONLY = 'mount --bind -o ro "$0" "$0" && exec "$@"'


def read_only(folder: Path, *args) -> subprocess.CompletedProcess:
    """Run the CLI with ``folder`` read-only: a read-only bind mount in a private mount namespace for root
    (whom permissions do not stop), permissions otherwise."""
    cmd = [sys.executable, "-m", "aezoo.cli", *map(str, args)]
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        finally:
            folder.chmod(mode)
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", READ_ONLY, str(folder),
                            "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"no private read-only mount here: {probe.stderr.decode().strip()}")
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", READ_ONLY, str(folder), *cmd],
                          capture_output=True, text=True, timeout=300)


def test_read_only_folders_and_a_full_disk_during_a_report_are_one_line_and_leave_the_run_as_it_was(tmp_path):
    import resource

    run = tmp_path / "run"
    args = ["train", "hash", "--data", "digits?limit=256", "--out", run, "--quiet"]
    assert run_cli(*args, "--epochs", "1", "--set", "bits=8", "--set", "widths=[16]").returncode == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}

    def one_line(r, what: str) -> None:
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("aezoo: error: ") and "cannot write" in r.stderr and what in r.stderr, r.stderr

    # a read-only mount says so; a folder without permission (not root) says that
    why = "read-only file system" if os.geteuid() == 0 else "no permission to write"
    one_line(read_only(run, *args, "--epochs", "2", "--resume"), f"{run}: cannot write ({why}")  # a checkpoint
    one_line(read_only(run, "report", run, "--quiet"), f"{run / 'report.html'}: cannot write")
    ro_parent = tmp_path / "shelf"
    ro_parent.mkdir()
    one_line(read_only(ro_parent, "index", "build", run, "--out", ro_parent / "ix", "--quiet"),
             f"{ro_parent / 'ix'}: cannot write ({why}")
    assert not list(ro_parent.iterdir())

    def limited():  # a full disk while the report is written: room for less than a figure
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    r = subprocess.run([sys.executable, "-m", "aezoo.cli", "report", str(run), "--quiet"], capture_output=True,
                       text=True, preexec_fn=limited, timeout=300)
    one_line(r, "file too large")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing new, nothing changed
    assert not list(tmp_path.glob(".run*"))
    assert run_cli(*args, "--epochs", "2", "--resume").returncode == 0  # writable again, it goes on
