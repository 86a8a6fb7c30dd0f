"""The command line through a subprocess, as a user runs it."""

import errno
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, run_cli_many

COMMANDS = ["train", "eval", "embed", "reconstruct", "list"]


def one_line_error(r, pattern=None):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aezoo: error: "), r.stderr
    assert "Traceback" not in r.stderr
    if pattern:
        assert pattern in lines[0], lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    r = run_cli("train", "ae", "--data", "digits", "--out", out, "--epochs", "3", "--seed", "1",
                "--set", "widths=[64]", "--set", "latent_dim=8", "--set", "train.log_every=5", "--quiet")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_help_for_every_command():
    assert run_cli("--help").returncode == 0
    for cmd in COMMANDS:
        r = run_cli(cmd, "--help")
        assert r.returncode == 0 and "usage: aezoo " + cmd in r.stdout


def test_list():
    r = run_cli("list", "--json")
    listing = json.loads(r.stdout)
    assert "ae" in listing["models"] and "hinton2006" in listing["models"]["ae"]["presets"]
    assert {"fashion-mnist", "mnist", "digits", "lines", "folder", "npy", "npz", "csv"} <= set(listing["datasets"])


def test_train_writes_a_complete_run(run):
    out, metrics = run
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.jsonl", "run.json", "eval.json",
            "reconstructions.png", "checkpoint.safetensors"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left
    assert json.loads((out / "eval.json").read_text()) == metrics
    assert metrics["recon_sse_per_item"] == pytest.approx(64 * metrics["recon_mse"], rel=1e-5)  # 8x8 digits
    # mean of per-image PSNRs >= PSNR of the mean MSE (Jensen: log is concave)
    assert metrics["psnr"] >= 10 * math.log10(1 / metrics["recon_mse"]) - 1e-6
    im = Image.open(out / "reconstructions.png")
    assert im.width > im.height  # two rows of 12


def test_eval_prints_one_json_object(run):
    out, metrics = run
    r = run_cli("eval", out)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["recon_sse_per_item"] == pytest.approx(metrics["recon_sse_per_item"], rel=1e-5)
    assert {"psnr", "recon_mse"} <= set(got)
    assert "probes" in r.stderr  # progress bars on stderr ...
    r = run_cli("eval", out, "--split", "val", "--quiet")
    assert json.loads(r.stdout)["split"] == "val" and r.stderr == ""  # ... and none with --quiet


def test_embed_and_reconstruct(run, tmp_path):
    out, _ = run
    r = run_cli("embed", out, "--data", "digits", "--out", tmp_path / "z.npy", "--labels-out", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    z, y = np.load(tmp_path / "z.npy"), np.load(tmp_path / "y.npy")
    assert z.shape == (180, 8) and y.shape == (180,) and np.isfinite(z).all()
    r = run_cli("reconstruct", out, "--out", tmp_path / "r.png", "-n", "5")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "r.png").size == (7 * (5 * 10 + 2), 7 * (2 * 10 + 2))  # 8x8 digits shown 7x


def test_resume_extends_a_finished_run(run, tmp_path):
    import shutil

    out, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    r = run_cli("train", "--out", copy, "--resume", "--epochs", "4", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((copy / "run.json").read_text())["epoch"] == 4


def test_user_errors_are_one_line_and_write_nothing(run, tmp_path):
    out, _ = run
    new = tmp_path / "new"
    cases = [
        (("train", "vea", "--data", "digits", "--out", new), "unknown model 'vea'"),
        (("train", "ae", "--data", "nope", "--out", new), "unknown dataset"),
        (("train", "ae", "--data", "digits", "--out", new, "--set", "arch=rnn"), "arch must be one of"),
        (("train", "ae", "--data", "digits", "--out", new, "--epochs", "0"), "epochs"),
        (("train", "ae", "--data", f"folder:{tmp_path / 'none'}", "--out", new), "no such folder"),
        (("train", "ae", "--out", new), "--data is required"),
        (("train", "ae", "--data", "digits", "--out", out), "--resume"),
        (("train", "--out", new, "--resume"), "nothing to resume"),
        (("train", "ae", "--data", "digits"), "--out"),  # argparse errors too
        (("train", "ae", "--data", "digits", "--out", new, "--epochs", "x"), "invalid int"),
        (("eval", tmp_path / "missing"), "no such run directory"),
        (("eval", out, "--data", "lines?n=100&test=10"), "shape"),
        (("embed", out, "--out", tmp_path / "z.txt"), ".npy"),
        (("reconstruct", out, "--out", tmp_path / "r.gif"), ".png"),
    ]
    for r, (_, pattern) in zip(run_cli_many(*(argv for argv, _ in cases)), cases):
        one_line_error(r, pattern)
    assert not new.exists()
    assert not (tmp_path / "z.txt").exists() and not (tmp_path / "r.gif").exists()
    # and through a process of its own, as a user meets it
    one_line_error(run_cli("train", "vea", "--data", "digits", "--out", new), "unknown model 'vea'")


def test_corrupt_run_files_are_user_errors(run, tmp_path):
    import shutil

    out, _ = run
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    one_line_error(run_cli("eval", bad), "model.safetensors")
    (bad / "config.json").write_text("{not json")
    one_line_error(run_cli("eval", bad), "config.json")


def test_debug_shows_the_traceback(tmp_path):
    r = run_cli("eval", tmp_path / "missing", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr and "UserError" in r.stderr


def test_train_on_a_csv_table(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["f1,f2,f3,label"] + [f"{a:.3f},{b:.3f},{a + b:.3f},{int(a > 0)}" for a, b in rng.normal(size=(200, 2))]
    (tmp_path / "t.csv").write_text("\n".join(rows))
    r = run_cli("train", "ae", "--data", f"csv:{tmp_path / 't.csv'}?label=label", "--out", tmp_path / "run",
                "--epochs", "2", "--set", "widths=[16]", "--set", "latent_dim=2", "--quiet")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert cfg["input_shape"] == [3] and cfg["data_kind"] == "vector"


def test_overwrite_replaces_only_runs(run, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    one_line_error(run_cli("train", "ae", "--data", "digits", "--out", tmp_path / "precious", "--overwrite"),
                   "not an aezoo run directory")
    assert (tmp_path / "precious" / "thesis.tex").exists()


def test_eval_with_refined_codes_reconstructs_better(run):
    out, metrics = run
    r = run_cli("eval", out, "--refine-steps", "30", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["recon_sse_per_item"] < metrics["recon_sse_per_item"]
    one_line_error(run_cli("eval", out, "--refine-steps", "-3"), "must be >= 0")


def test_unwritable_outputs_are_one_line_errors(run, tmp_path):
    out, _ = run
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    (tmp_path / "z.npy").mkdir()
    one_line_error(run_cli("train", "ae", "--data", "digits", "--out", blocker / "run"),
                   f"{blocker / 'run'}: cannot write ({blocker} is a file, not a folder)")
    one_line_error(run_cli("embed", out, "--out", tmp_path / "z.npy"), "z.npy: cannot write (it is a folder)")
    one_line_error(run_cli("reconstruct", out, "--out", blocker / "r.png"), "r.png: cannot write")
    assert blocker.read_text() == "x" and not list((tmp_path / "z.npy").iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_a_user_error(run, tmp_path):
    out, _ = run
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        one_line_error(run_cli("reconstruct", out, "--out", locked / "r.png"), "cannot write (no permission")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("full", ["checkpoint", "metrics"])
def test_full_disk_is_a_user_error_and_leaves_no_partial_file(full, tmp_path, capsys, monkeypatch):
    from aezoo import cli

    def half_then_enospc(write):
        def fake(target, data):
            write(target, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fake

    if full == "checkpoint":  # atomic files (safetensors, JSON, images) are written with Path.write_bytes
        real = Path.write_bytes
        monkeypatch.setattr(Path, "write_bytes", lambda self, data: (half_then_enospc(real) if "checkpoint" in self.name
                                                                     else real)(self, data))
        victim = "checkpoint.safetensors"
    else:  # metrics.jsonl is appended to with os.write
        monkeypatch.setattr(os, "write", half_then_enospc(os.write))
        victim = "metrics.jsonl"
    out = tmp_path / "run"
    status = cli.main(["train", "ae", "--data", "digits", "--out", str(out), "--epochs", "1", "--set", "widths=[16]",
                       "--set", "latent_dim=4", "--quiet"])
    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        f"aezoo: error: {out / victim}: cannot write (no space left on the device)"]
    names = {p.name for p in out.iterdir()}
    assert not [n for n in names if n.startswith(".")]  # no temporary file left
    if full == "checkpoint":
        assert victim not in names
    else:
        assert (out / victim).read_bytes() == b""  # the half-written line was removed
