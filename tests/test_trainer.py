import json
from pathlib import Path

import pytest
import torch
from torch import nn

import aezoo
from aezoo.errors import TrainingDiverged, UserError
from aezoo.models.base import Autoencoder, ModelConfig, Optim
from aezoo.outputs import Encoded, LossOutput
from aezoo.rng import seeded
from aezoo.train import checkpoint as ckpt
from aezoo.train.schedules import lr_factor


class Noisy(Autoencoder):
    """A test model whose loss draws random noise, so that resuming must restore the RNG; it can also
    return NaN at a chosen step."""

    name = "noisy-test"

    def __init__(self, nan_at=None):
        super().__init__(ModelConfig(input_shape=(1, 8, 8)))
        with seeded(0):  # the same weights every time it is built
            self.enc = nn.Linear(64, 4)
            self.dec = nn.Linear(4, 64)
        self.nan_at = nan_at

    def encode(self, x):
        return Encoded(self.enc(x.flatten(1)))

    def decode(self, z):
        return self.dec(z).view(-1, 1, 8, 8)

    def optimizers(self):
        return {"a": Optim(self.enc.parameters()), "b": Optim(self.dec.parameters())}

    def loss(self, batch, ctx):
        x = batch.x + 0.1 * torch.randn_like(batch.x)
        loss = (self(x) - batch.x).square().sum((1, 2, 3)).mean()
        if self.nan_at is not None and ctx.step_index >= self.nan_at:
            loss = loss * float("nan")
        return LossOutput(loss, {"loss": loss.detach()})


def weights(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, digits, schedule):
    base = dict(epochs=3, batch_size=64, seed=5, progress=False, schedule=schedule, warmup_steps=4,
                checkpoint_every=7, log_every=5)
    full = Noisy()
    aezoo.Trainer(full, digits, aezoo.TrainConfig(**base), tmp_path / "full").fit()

    # Interrupted: a time budget that runs out after the first step, then resumed to the end.
    part = Noisy()
    r1 = aezoo.Trainer(part, digits, aezoo.TrainConfig(**base, max_minutes=1e-9), tmp_path / "part").fit()
    assert r1.stopped_by == "time" and r1.step < 3 * (len(digits.train) // 64)
    resumed = Noisy()
    r2 = aezoo.Trainer(resumed, digits, aezoo.TrainConfig(**base), tmp_path / "part").fit(resume=True)
    assert r2.step == 3 * (len(digits.train) // 64)
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(l)["step"] for l in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
             if json.loads(l)["split"] == "train"]
    assert steps == sorted(set(steps)), "metrics.jsonl repeats or reorders steps after a resume"


def test_resume_mid_epoch_from_a_periodic_checkpoint(tmp_path, digits):
    base = dict(epochs=2, batch_size=64, seed=1, progress=False, checkpoint_every=9)
    full = Noisy()
    aezoo.Trainer(full, digits, aezoo.TrainConfig(**base), tmp_path / "full").fit()
    crashed = Noisy(nan_at=13)  # dies at step 13; the checkpoint of step 9 survives
    with pytest.raises(TrainingDiverged, match="step 13"):
        aezoo.Trainer(crashed, digits, aezoo.TrainConfig(**base), tmp_path / "c").fit()
    _, state, _ = ckpt.read_checkpoint(tmp_path / "c" / "checkpoint.safetensors")
    assert state["step"] == 9
    resumed = Noisy()
    aezoo.Trainer(resumed, digits, aezoo.TrainConfig(**base), tmp_path / "c").fit(resume=True)
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    m = Noisy(nan_at=10)
    cfg = aezoo.TrainConfig(epochs=5, batch_size=64, progress=False, checkpoint_every=4)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 10 \(optimizer a, b\).*last good checkpoint"):
        aezoo.Trainer(m, digits, cfg, tmp_path / "run").fit()
    tensors, state, _ = ckpt.read_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert state["step"] == 8
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if v.is_floating_point())
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_crash_during_checkpoint_write_leaves_previous_checkpoint(tmp_path, digits, monkeypatch):
    m = Noisy()
    cfg = aezoo.TrainConfig(epochs=1, batch_size=64, progress=False, checkpoint_every=5)
    calls = {"n": 0}
    real = Path.write_bytes

    def dying_write(self, data):  # files are written atomically through Path.write_bytes of a temporary file
        if "checkpoint" in self.name:
            calls["n"] += 1
            if calls["n"] == 2:  # the second checkpoint: write half a file, then "crash"
                real(self, data[: len(data) // 2])
                raise KeyboardInterrupt("power cut")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", dying_write)
    with pytest.raises(KeyboardInterrupt):
        aezoo.Trainer(m, digits, cfg, tmp_path / "run").fit()
    _, state, _ = ckpt.read_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert state["step"] == 5
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []
    monkeypatch.setattr(Path, "write_bytes", real)
    aezoo.Trainer(Noisy(), digits, cfg, tmp_path / "run").fit(resume=True)


def test_corrupt_checkpoint_is_a_user_error(tmp_path, digits):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt checkpoint"):
        aezoo.Trainer(Noisy(), digits, aezoo.TrainConfig(epochs=1, progress=False), tmp_path / "run").fit(resume=True)


def test_validation_does_not_disturb_training(tmp_path, digits):
    runs = []
    for val_every in (0, 3):
        m = Noisy()
        aezoo.Trainer(m, digits, aezoo.TrainConfig(epochs=1, batch_size=64, progress=False, val_every=val_every),
                      tmp_path / f"v{val_every}").fit()
        runs.append(weights(m))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_metrics_log_and_run_json(tmp_path, digits):
    m = aezoo.create("ae", input_shape=(1, 8, 8), widths=[16], latent_dim=2)
    cfg = aezoo.TrainConfig(epochs=2, batch_size=32, progress=False, log_every=10)
    aezoo.Trainer(m, digits, cfg, tmp_path / "run").fit()
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if l["split"] == "train"]
    val = [l for l in lines if l["split"] == "val"]
    assert len(val) == 2 and all("recon_sse" in l for l in val)
    assert train[0]["step"] == 10 and train[0]["samples_per_s"] > 0
    assert train[-1]["loss"] < train[0]["loss"]  # it learns
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["finished"] and run["step"] == 2 * (len(digits.train) // 32)


def test_each_declared_optimizer_updates_its_own_parameters(tmp_path, digits):
    m = Noisy()
    t = aezoo.Trainer(m, digits, aezoo.TrainConfig(epochs=1, progress=False), tmp_path / "r")
    t.fit()
    assert set(t.optimizers) == {"a", "b"}
    ids = {ph: {id(p) for g in o.param_groups for p in g["params"]} for ph, o in t.optimizers.items()}
    assert ids["a"] == {id(p) for p in m.enc.parameters()} and not ids["a"] & ids["b"]


def test_lr_schedules_closed_forms():
    assert lr_factor(0, 100, "constant") == 1.0
    assert lr_factor(4, 100, "cosine", warmup=10) == pytest.approx(0.5)  # (4 + 1) / 10
    assert lr_factor(10, 110, "cosine", warmup=10) == pytest.approx(1.0)
    assert lr_factor(60, 110, "cosine", warmup=10) == pytest.approx(0.5)  # halfway: (1 + cos(pi/2)) / 2
    assert lr_factor(110, 110, "cosine", warmup=10, floor=0.1) == pytest.approx(0.1)
    assert lr_factor(50, 100, "linear") == pytest.approx(0.5)
    # on a time budget alone the decay follows the share of the minutes used; the warm-up stays in steps
    assert lr_factor(500, None, "cosine", warmup=10, progress=0.5) == pytest.approx(0.5)
    assert lr_factor(5, None, "cosine", warmup=10, progress=0.9) == pytest.approx(0.6)
    assert lr_factor(500, None, "linear", floor=0.2, progress=0.75) == pytest.approx(0.4)
    assert lr_factor(500, None, "cosine") == 1.0  # nothing to plan by


def test_bad_train_configs_are_user_errors(digits):
    m = aezoo.create("ae", input_shape=(1, 8, 8), widths=[8], latent_dim=2)
    for bad in (dict(epochs=0), dict(epochs=None), dict(lr=-1.0), dict(epochs=None, max_minutes=None, schedule="cosine"),
                dict(batch_size=100000)):
        with pytest.raises(UserError):
            aezoo.Trainer(m, digits, aezoo.TrainConfig(**bad), "unused")
    wrong = aezoo.create("ae", input_shape=(1, 28, 28), widths=[8], latent_dim=2)
    with pytest.raises(UserError, match="shape"):
        aezoo.Trainer(wrong, digits, aezoo.TrainConfig(), "unused")


def test_max_steps_stops_there_plans_the_schedule_and_resumes_past_it(tmp_path, digits):
    per_epoch = len(digits.train) // 64
    base = dict(epochs=None, batch_size=64, seed=2, progress=False, schedule="cosine", checkpoint_every=0)
    t = aezoo.Trainer(Noisy(), digits, aezoo.TrainConfig(**base, max_steps=per_epoch + 3), tmp_path / "a")
    r = t.fit()
    assert r.step == per_epoch + 3 and r.stopped_by == "steps"  # across an epoch boundary
    assert t.total_steps == per_epoch + 3  # the cosine decay ends at the step limit
    assert json.loads((tmp_path / "a" / "run.json").read_text())["stopped_by"] == "steps"
    # the same steps in one run and in two (the second extends max_steps) give the same weights
    full = Noisy()
    aezoo.Trainer(full, digits, aezoo.TrainConfig(**{**base, "schedule": "constant"}, max_steps=12), tmp_path / "f").fit()
    part = Noisy()
    aezoo.Trainer(part, digits, aezoo.TrainConfig(**{**base, "schedule": "constant"}, max_steps=5), tmp_path / "p").fit()
    resumed = Noisy()
    again = aezoo.Trainer(resumed, digits, aezoo.TrainConfig(**{**base, "schedule": "constant"}, max_steps=12),
                          tmp_path / "p").fit(resume=True)
    assert again.step == 12
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="max_steps must be at least 1"):
        aezoo.TrainConfig(epochs=None, max_steps=0).validate()
