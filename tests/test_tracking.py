"""Experiment tracking (aezoo/train/tracking.py), read back with TensorBoard's and MLflow's own readers:
the scalars equal metrics.jsonl's at the same steps, the parameters hold the config, the validation
pictures are there; a resumed run goes on in the same TensorBoard folder and MLflow run without a step
twice; a missing extra is one line and writes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import MANY, run_cli
from PIL import Image

TINY = ["--set", "widths=[32]", "--set", "latent_dim=4", "--batch-size", "32", "--set", "train.log_every=3",
        "--set", "train.val_every=6", "--set", "train.checkpoint_every=6", "--quiet"]
ENV = {"MLFLOW_TRACKING_URI": "", "MLFLOW_EXPERIMENT_NAME": ""}  # the defaults: ./mlruns, experiment "aezoo"
TIMINGS = {"elapsed_s", "samples_per_s"}  # the only values a redone step changes


def lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def expected_scalars(run: Path) -> dict[str, dict[int, float]]:
    """{"train/loss": {step: value}} from metrics.jsonl: every number of a line but its step."""
    out: dict[str, dict[int, float]] = {}
    for rec in lines(run):
        for key, value in rec.items():
            if key not in ("split", "step"):
                out.setdefault(f"{rec['split']}/{key}", {})[rec["step"]] = value
    return out


def tensorboard(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def mlflow_client(root: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when told
    return MlflowClient(tracking_uri=(root / "mlruns").as_uri())


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A run of 6 steps, resumed to 12, then resumed again from its step-6 checkpoint as after a crash at
    step 12: steps 7 to 12 are trained twice, metrics.jsonl keeps the second time."""
    root = tmp_path_factory.mktemp("tracking")
    run = root / "run"
    r = run_cli("train", "ae", "--data", "digits", "--out", run, "--set", "train.max_steps=6", *TINY,
                "--log", "tensorboard,mlflow", cwd=root, env_extra=ENV)
    assert r.returncode == 0, r.stderr
    first_id = json.loads((run / "mlflow.json").read_text())["run_id"]
    shutil.copy(run / "checkpoint.safetensors", root / "step6.safetensors")
    r = run_cli("train", "--out", run, "--resume", "--set", "train.max_steps=12", "--quiet", cwd=root, env_extra=ENV)
    assert r.returncode == 0, r.stderr
    shutil.copy(root / "step6.safetensors", run / "checkpoint.safetensors")
    r = run_cli("train", "--out", run, "--resume", "--quiet", cwd=root, env_extra=ENV)
    assert r.returncode == 0, r.stderr
    return root, run, first_id


def test_scalars_are_metrics_jsonl_at_the_same_steps(tracked, monkeypatch):
    root, run, run_id = tracked
    want = expected_scalars(run)
    assert sorted(want["train/loss"]) == [3, 6, 9, 12] and sorted(want["val/loss"]) == [6, 12]
    acc = tensorboard(run)
    assert set(acc.Tags()["scalars"]) == set(want)
    for key, by_step in want.items():
        events = acc.Scalars(key)
        assert [e.step for e in events] == sorted(by_step), key  # each step once, in order: the old 7-12 purged
        for e in events:  # float32 in event files
            assert e.value == pytest.approx(by_step[e.step], rel=1e-6, abs=1e-6), (key, e.step)
    client = mlflow_client(root, monkeypatch)
    assert set(client.get_run(run_id).data.metrics) == set(want)
    for key, by_step in want.items():
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == sorted(by_step), key  # each step once
        if key.split("/")[1] not in TIMINGS:  # redone steps keep their first timings; the rest is exact
            assert {m.step: m.value for m in history} == pytest.approx(by_step, rel=1e-12), key


def test_parameters_hold_the_config(tracked, monkeypatch):
    from tensorboard.plugins.hparams import plugin_data_pb2

    root, run, run_id = tracked
    meta = json.loads((run / "run.json").read_text())
    config = {"model": meta["model"], "data": meta["data"]}
    for section in ("train", "model_config"):
        for key, value in meta[section].items():
            config[f"{section}.{key}"] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    config["train.max_steps"] = 6  # logged when the tracker's run started; the resume raised it
    assert config["model_config.widths"] == "[32]" and config["train.log"] == '["tensorboard", "mlflow"]'

    params = mlflow_client(root, monkeypatch).get_run(run_id).data.params
    assert params == {k: str(v) for k, v in config.items()}

    content = tensorboard(run).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    got = {k: getattr(v, v.WhichOneof("kind")) for k, v in hparams.items()}
    assert got == {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in config.items()}


def test_pictures_at_each_validation(tracked, monkeypatch):
    root, run, run_id = tracked
    size = Image.open(run / "reconstructions.png").size  # the same grid, of test items
    images = tensorboard(run).Images("reconstructions")
    assert [(e.step, e.width, e.height) for e in images] == [(6, *size), (12, *size)]
    names = [a.path for a in mlflow_client(root, monkeypatch).list_artifacts(run_id, "images")]
    pngs = [n for n in names if n.endswith(".png") and not n.endswith("compressed.png")]
    assert sorted(n.split("+")[2] for n in pngs) == ["12", "6"], names  # step 12 once, although trained twice
    assert all(n.startswith("images/reconstructions+step+") for n in pngs)


def test_a_resume_continues_the_same_runs(tracked, monkeypatch):
    root, run, run_id = tracked
    assert json.loads((run / "mlflow.json").read_text()) == {"run_id": run_id}
    client = mlflow_client(root, monkeypatch)
    experiment = client.get_experiment_by_name("aezoo")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id] and runs[0].info.status == "FINISHED"
    assert runs[0].info.run_name == "run"
    assert [p.name for p in (run / "tensorboard").iterdir() if p.is_dir()] == []  # one folder, no sub-runs
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 3  # one file per process


def test_missing_extra_or_unknown_tracker_is_one_line_and_writes_nothing(tracked, tmp_path):
    blocked = "import sys\nsys.modules['mlflow'] = None\nsys.modules['tensorboard'] = None\n"  # as if not installed
    work = tmp_path / "work"
    work.mkdir()
    old = tmp_path / "old"  # a run that logged to both, resumed where they are missing
    shutil.copytree(tracked[1], old)
    before = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}
    train = ["train", "ae", "--data", "digits", "--out", str(work / "run"), "--quiet", "--log"]
    argvs = [train + ["mlflow"], train + ["tensorboard,mlflow"], train + ["wandb"],
             ["train", "--out", str(old), "--resume", "--set", "train.max_steps=20", "--quiet"]]
    r = subprocess.run([sys.executable, "-c", blocked + MANY], input=json.dumps(argvs), capture_output=True,
                       text=True, cwd=work, timeout=600)
    assert r.returncode == 0, r.stderr
    wanted = ["pip install 'aezoo[mlflow]'", "pip install 'aezoo[tensorboard]'", "unknown tracker 'wandb'",
              "pip install 'aezoo[tensorboard]'"]
    for (code, out, err), want in zip(json.loads(r.stdout), wanted, strict=True):
        assert code == 2 and out == "", err
        assert len(err.splitlines()) == 1 and err.startswith("aezoo: error: ") and want in err, err
    assert list(work.iterdir()) == []  # no run folder, no lock, no mlruns
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file()} == before


def test_python_api_tracks_and_trains_as_without(digits, tmp_path):
    """TrainConfig(log=[...]) from Python; drawing the pictures (a VAE's samples too) leaves the run's own
    random stream alone, so the weights equal those of a run without trackers."""
    import aezoo
    from aezoo.report.grid import validation_pictures

    weights = []
    for name, log in (("plain", []), ("tracked", ["tensorboard"])):
        model = aezoo.create("vae", input_shape=digits.shape, widths=[32], latent_dim=4, seed=0)
        cfg = aezoo.TrainConfig(max_steps=8, batch_size=32, log_every=4, val_every=4, progress=False, log=log)
        aezoo.Trainer(model, digits, cfg, run_dir=tmp_path / name,
                      val_images=lambda m: validation_pictures(m, digits)).fit()
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not (tmp_path / "plain" / "tensorboard").exists()
    acc = tensorboard(tmp_path / "tracked")
    assert [e.step for e in acc.Scalars("val/loss")] == [4, 8]
    assert [e.step for e in acc.Images("samples")] == [4, 8] and [e.step for e in acc.Images("reconstructions")] == [4, 8]
    with pytest.raises(aezoo.UserError, match="unknown tracker 'tensorbord'"):
        aezoo.TrainConfig(log=["tensorbord"]).validate()
    with pytest.raises(aezoo.UserError, match="list of tracker names"):
        aezoo.TrainConfig(log="tensorboard").validate()
