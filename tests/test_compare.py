"""aezoo compare: a tiny compare of three families end to end, a killed compare run again, and its errors."""

import json
import shutil
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import needs_fmnist, run_cli, run_cli_many

from aezoo.apps.compare import _status


@needs_fmnist
def test_tiny_compare_ranks_three_families(tmp_path):
    out = tmp_path / "cmp"
    r = run_cli("compare", "--data", "fashion-mnist?limit=1000", "--out", out, "--minutes", "0.05",
                "--models", "ae,vae,acai", "--samples", "200", "--items", "500", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "[2/3] training vae seed 0" in r.stderr and "leaderboard written" in r.stderr
    board = json.loads((out / "leaderboard.json").read_text())
    runs = {x["model"]: x for x in board["runs"]}
    assert set(runs) == {"ae", "vae", "acai"}
    for name, run in runs.items():
        assert run["items"] == 500 and run["sample_items"] == 200  # the same items and draws for every model
        assert run["commands"][0].startswith(f"aezoo train {name} --data \"fashion-mnist?limit=1000\"")
        assert run["features"] == "fmnist-classifier"
        assert "gmm_sample_fd" in run  # every family here decodes codes: a mixture sampler each
        assert (out / f"{name}-seed0" / "gmm.safetensors").is_file()
    assert "sample_fd" in runs["vae"] and "sample_fd" not in runs["ae"]  # only vae has its own prior
    assert "nll_nats" in runs["vae"] and "linear_probe_acc" in runs["acai"]
    md = (out / "leaderboard.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert "GMM sample FD" in header and "NLL nats" in header and "lines distance" not in header
    assert md.count("**") >= 2 * 5  # the best of each ranked column is bold
    page = (out / "report.html").read_text()
    for view in ("Reconstructions", "Samples", "Interpolations"):
        assert f"<h2>{view}</h2>" in page
    assert page.count("<th>vae (prior)</th>") == 1 and page.count("(GMM)</th>") == 3


def _start(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "aezoo.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
                            start_new_session=True)


def _kill_when(p, path, seconds=180):
    deadline = time.time() + seconds
    while not path.is_file() and p.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert path.is_file(), p.stderr.read().decode() if p.poll() is not None else "timed out"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def test_a_killed_compare_reuses_finished_runs_and_resumes_the_unfinished_one(tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--data", "digits", "--out", out, "--minutes", "0.1", "--models", "ae,vae",
            "--samples", "100", "--quiet"]
    _kill_when(_start(args), out / "results" / "ae-seed0.json")  # killed once ae is done
    assert not (out / "leaderboard.json").exists()
    first = (out / "ae-seed0" / "model.safetensors").stat().st_mtime_ns
    # vae killed mid-run after a checkpoint: its recorded command, checkpointing every 5 steps
    # (the kill may have met vae's folder before its run.json: begun again here as compare itself would)
    shutil.rmtree(out / "vae-seed0", ignore_errors=True)
    cmd = ["train", "vae", "--data", "digits", "--out", out / "vae-seed0", "--max-minutes", "0.1", "--quiet",
           "--set", "train.checkpoint_every=5"]
    _kill_when(_start(cmd), out / "vae-seed0" / "checkpoint.safetensors")
    log = (out / "vae-seed0" / "metrics.jsonl").read_text().splitlines()
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "ae seed 0: finished earlier, reused" in r.stderr and "resuming vae-seed0" in r.stderr
    assert (out / "ae-seed0" / "model.safetensors").stat().st_mtime_ns == first
    resumed = (out / "vae-seed0" / "metrics.jsonl").read_text().splitlines()
    # continued, not begun again: lines past the checkpoint are redone with the same numbers, other times
    untimed = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in lines]
    assert untimed(resumed[: len(log)]) == untimed(log) and len(resumed) >= len(log)
    board = json.loads((out / "leaderboard.json").read_text())
    assert [x["model"] for x in board["runs"]] == ["ae", "vae"]
    # other settings for the same folder are refused; so are bad arguments, in one line each, writing nothing
    errors = run_cli_many(["compare", "--data", "digits", "--out", out, "--minutes", "0.2", "--models", "ae,vae"],
                          ["compare", "--data", "digits", "--out", tmp_path / "x", "--models", "ae,pixelcnn"],
                          ["compare", "--data", "digits", "--out", tmp_path / "y", "--models", "nope"],
                          ["compare", "--data", "digits", "--out", tmp_path / "z", "--seeds", "0"],
                          ["compare", "--data", "nosuchdata", "--out", tmp_path / "w"],
                          ["compare", "--data", "digits?limit=100", "--out", tmp_path / "v", "--models", "ae"])
    for e, want in zip(errors, ["other settings", "not an autoencoder family", "unknown model 'nope'", "--seeds",
                                "nosuchdata", "fewer than ae's batch size 128"], strict=True):
        assert e.returncode == 2 and e.stderr.startswith("aezoo: error:") and want in e.stderr, e.stderr
    assert not any((tmp_path / d).exists() for d in "xyzwv")


def test_a_run_folder_killed_before_its_run_json_is_trained_again(tmp_path, monkeypatch):
    from aezoo.apps import compare

    run = tmp_path / "vae-seed0"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")  # what a kill can leave before run.json: train --overwrite refuses it
    seen = []
    monkeypatch.setattr(compare, "train_run", lambda *a, **k: seen.append((run.exists(), k)))
    monkeypatch.setattr(compare, "_train_sets", lambda *a: ({"epochs": None}, ["epochs=null"]))
    compare._train_one("vae", "digits", None, run, 0.1, None, None, 0, False)
    assert seen == [(False, seen[0][1])] and not seen[0][1].get("resume") and not seen[0][1].get("overwrite")


def test_the_batch_size_of_a_compare_is_its_priors_too(tmp_path, monkeypatch):
    from aezoo.apps import compare

    seen = {}
    monkeypatch.setattr(compare, "train_run", lambda *a, **k: seen.update(model=k["train_overrides"]))
    monkeypatch.setattr(compare, "train_prior", lambda *a, **k: seen.update(prior=k["train_overrides"]))
    commands = compare._train_one("vqvae", "digits", None, tmp_path / "vqvae-seed0", 1.0, None, 32, 0, False)
    assert seen["model"]["batch_size"] == seen["prior"]["batch_size"] == 32
    assert all("--batch-size 32" in c for c in commands) and len(commands) == 2


def test_run_states(tmp_path):
    run = tmp_path / "r"
    assert _status(run) == "new"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"finished": False}))
    assert _status(run) == "new"  # killed before its first checkpoint: trained again
    (run / "checkpoint.safetensors").write_bytes(b"x")
    assert _status(run) == "partial"  # resumed
    (run / "run.json").write_text(json.dumps({"finished": True}))
    assert _status(run) == "partial"  # finished but its model not yet written
    (run / "model.safetensors").write_bytes(b"x")
    assert _status(run) == "trained"
    (run / "run.json").write_text("{not json")
    assert _status(run) == "new"


USER_VAE = ["--set", "vae.latent_dim=3", "--set", "vae.encoder=user_nets:Encoder",  # tests/user_nets.py
            "--set", 'vae.encoder_kwargs={"shape": [1, 8, 8], "out": 6}', "--set", "vae.decoder=user_nets:Decoder",
            "--set", 'vae.decoder_kwargs={"latent": 3, "shape": [1, 8, 8]}']


def test_compare_trains_your_own_networks_by_import_path_only_when_trusted(tmp_path, monkeypatch):
    tests = str(Path(__file__).parent)  # as a user's package would be: on the path of the aezoo processes
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    out = tmp_path / "cmp"
    args = ["compare", "--data", "digits?limit=64", "--models", "vae", "--steps", "3", "--batch-size", "16",
            "--samples", "10", "--items", "10", "--quiet", *USER_VAE]
    r = run_cli_many([*args, "--out", tmp_path / "a"],
                     [*args, "--out", tmp_path / "b", "--trust-code", "--set", "ae.latent_dim=2"],
                     [*args, "--out", tmp_path / "c", "--trust-code", "--set", "vae.encodr=user_nets:Encoder"],
                     [*args, "--out", tmp_path / "d", "--trust-code", "--set", "vae:latent_dim=2"],
                     [*args, "--out", out, "--trust-code"])
    for e, want in zip(r, ["--set vae: the encoder is your own network user_nets:Encoder; importing it runs code",
                           "'ae' is not among the compared families (vae)", "unknown vae config key 'encodr'",
                           "--set expects NAME.KEY=VALUE"]):
        assert e.returncode == 2 and e.stderr.startswith("aezoo: error:") and e.stderr.count("\n") == 1, e.stderr
        assert want in e.stderr, e.stderr
    assert not any((tmp_path / d).exists() for d in "abcd")  # nothing written
    assert r[0].stderr.rstrip().endswith("(command line: --trust-code)")
    assert r[4].returncode == 0, r[4].stderr
    config = json.loads((out / "vae-seed0" / "config.json").read_text())["config"]
    assert config["encoder"] == "user_nets:Encoder" and config["encoder_kwargs"] == {"shape": [1, 8, 8], "out": 6}
    board = json.loads((out / "leaderboard.json").read_text())
    [run] = board["runs"]
    assert run["model"] == "vae" and run["step"] == 3 and "recon_mse" in run
    command = run["commands"][0]
    assert "--set encoder=user_nets:Encoder --set 'encoder_kwargs={\"shape\": [1, 8, 8], \"out\": 6}'" in command
    assert board["settings"]["sets"] == {"vae": [s.split(".", 1)[1] for s in USER_VAE[1::2]]}
    # run again: without --trust-code it is refused (its runs are loaded); other settings are refused
    r = run_cli_many([*args, "--out", out], [*args, "--out", out, "--trust-code", "--set", "vae.latent_dim=3"])
    assert r[0].returncode == 2 and "--set vae: the encoder is your own network" in r[0].stderr, r[0].stderr
    assert r[1].returncode == 2 and "holds a compare with other settings" in r[1].stderr, r[1].stderr


def test_a_resumed_run_keeps_its_model_settings_and_records_them_in_its_command(tmp_path, monkeypatch):
    from aezoo.apps import compare

    run = tmp_path / "vae-seed0"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"finished": False, "train": {"max_steps": 7}}))
    (run / "checkpoint.safetensors").write_bytes(b"x")  # killed after a checkpoint: resumed
    seen = []
    monkeypatch.setattr(compare, "train_run", lambda *a, **k: seen.append((a, k)))
    sets = ["encoder=user_nets:Encoder", 'encoder_kwargs={"out": 6}']
    [command] = compare._train_one("vae", "digits", None, run, 0.1, None, None, 0, False, sets)
    [(args, kwargs)] = seen
    assert args[0] is None and kwargs["resume"] and kwargs["model_overrides"] == []  # the run keeps its config
    assert command.startswith(f"aezoo train vae --data digits --out {run} --max-minutes 0.1 --set "
                              "encoder=user_nets:Encoder --set 'encoder_kwargs={\"out\": 6}' --set train.max_steps=7")
    shutil.rmtree(run)
    compare._train_one("vae", "digits", None, run, 0.1, 5, None, 0, False, sets)  # a new run takes them
    assert seen[1][0][0] == "vae" and seen[1][1]["model_overrides"] == sets and not seen[1][1]["resume"]
