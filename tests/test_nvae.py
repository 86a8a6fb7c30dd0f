"""nvae: KL balancing and warm-up against their definitions, the spectral penalty's reach, batch-norm
re-estimation at sampling time, importance weights, and the family's training defaults through the CLI."""

from __future__ import annotations

import json
import pytest
import torch

import aezoo
from aezoo.errors import UserError
from aezoo.outputs import Batch

from conftest import run_cli

TINY = dict(channels=4, pre_blocks=1, scales=2, groups_per_scale=2, latent_channels=3, expand=2, bn_samples=40)


@pytest.fixture(scope="module")
def model():
    return aezoo.create("nvae", seed=0, input_shape=(1, 8, 8), **TINY)


def test_groups_have_the_sizes_of_their_codes(model):
    x = torch.rand(5, 1, 8, 8)
    _, groups = model.top_down(5, model.features(x))
    assert [q.mean[0].numel() for q, _, _ in groups] == model.group_sizes == [12, 12, 48, 48]
    assert model.encode(x).z.shape == (5, 3, 2, 2)  # the top group


def test_kl_balancing_is_mean_kl_over_size_normalised_to_the_number_of_groups(model):
    kls = torch.tensor([[1.0, 0.0, 8.0, 2.0], [3.0, 0.0, 8.0, 6.0]])
    gamma = model.balance(kls)
    raw = (torch.tensor([2.0, 0.0, 8.0, 4.0]) + 0.01) / torch.tensor([12.0, 12.0, 48.0, 48.0])
    assert torch.allclose(gamma, 4 * raw / raw.sum())
    assert gamma.sum().item() == pytest.approx(4.0)
    assert gamma[1] < gamma[0] and not gamma.requires_grad


def test_kl_weight_rises_linearly_over_the_warm_up_fraction(model):
    c = model.config
    assert model.kl_weight(0.0) == c.kl_min
    assert model.kl_weight(0.15) == pytest.approx(0.15 / c.kl_warmup)
    assert model.kl_weight(c.kl_warmup) == model.kl_weight(0.999) == 1.0


def test_a_run_on_a_time_budget_alone_warms_up_over_its_minutes_and_ends_on_the_full_objective(tmp_path, monkeypatch):
    """No planned steps: the run's progress is its share of --max-minutes, read from the clock."""
    m = aezoo.create("nvae", seed=0, input_shape=(1, 8, 8), **TINY)
    data = aezoo.data.load("digits")
    trainer = aezoo.Trainer(m, data, aezoo.TrainConfig(epochs=None, max_minutes=10, progress=False), None)
    now = [100.0]
    monkeypatch.setattr("aezoo.train.trainer.time.perf_counter", lambda: now[0])
    trainer._clock, trainer.total_steps = 100.0, None  # as fit() plans them
    assert trainer.progress(5) == 0.0
    now[0] = 100.0 + 0.15 * 600
    assert trainer.progress(5) == pytest.approx(0.15) and m.kl_weight(trainer.progress(5)) == pytest.approx(0.5)
    now[0] = 100.0 + 0.5 * 600
    assert m.kl_weight(trainer.progress(5)) == 1.0
    # planned steps and a time budget: whichever is further along
    trainer = aezoo.Trainer(m, data, aezoo.TrainConfig(epochs=None, max_steps=100, max_minutes=10, progress=False), None)
    trainer._clock, trainer.total_steps = 100.0, 100
    assert trainer.progress(80) == pytest.approx(0.8) and trainer.progress(20) == pytest.approx(0.5)
    assert trainer.progress(300) == 1.0


def test_nvae_trains_on_minutes_alone_and_its_last_steps_take_the_whole_kl(tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "nvae", "--data", "digits", "--out", out, "--max-minutes", "0.05", "--quiet",
                *sum((["--set", f"{k}={json.dumps(v)}"] for k, v in TINY.items()), []),
                "--set", "train.log_every=1", "--set", "train.checkpoint_every=0")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in rows if x["split"] == "train"]
    assert train[0]["kl_weight"] < 1 and train[-1]["kl_weight"] == 1.0


def test_spectral_penalty_reaches_every_convolution_and_batch_norm_scale():
    m = aezoo.create("nvae", seed=0, input_shape=(1, 8, 8), **TINY)
    m.spectral_loss().backward()
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    norms = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    assert convs and norms
    assert all(x.weight.grad is not None and x.weight.grad.abs().sum() > 0 for x in convs + norms)


def test_sampling_re_estimates_batch_norm_and_restores_the_trained_statistics():
    m = aezoo.create("nvae", seed=0, input_shape=(1, 8, 8), **TINY)
    m.train()
    with torch.no_grad():
        for _ in range(3):  # training statistics from posterior codes
            m.top_down(16, m.features(torch.rand(16, 1, 8, 8) * 3))
    m.eval()
    before = [n.running_mean.clone() for n in m.decoder_norms]
    m.readjust_norms(0.5)
    readjusted = [n.running_mean.clone() for n in m.decoder_norms]
    assert any(not torch.allclose(a, b) for a, b in zip(before, readjusted))
    for n, b in zip(m.decoder_norms, before):
        n.running_mean.copy_(b)
    torch.manual_seed(1)
    s = m.sample(6, temperature=0.5)
    assert s.shape == (6, 1, 8, 8) and 0 <= s.min() and s.max() <= 1
    assert all(torch.equal(n.running_mean, b) for n, b in zip(m.decoder_norms, before))
    assert not m.training


def test_importance_bound_tightens_with_k_and_matches_the_elbo_at_k_1(model):
    model.eval()
    x = (torch.rand(8, 1, 8, 8) < 0.4).float()
    torch.manual_seed(0)
    with torch.no_grad():
        w1 = torch.cat([model.log_importance_weights(x, 1) for _ in range(200)])  # (200, 8)
        w50 = model.log_importance_weights(x, 50)
        log_px, kls = model._elbo_parts(x)
    iwae50 = torch.logsumexp(w50, 0) - torch.log(torch.tensor(50.0))
    assert torch.isfinite(w50).all()
    assert (iwae50.mean() > w1.mean()).item()
    # E_q[log p(x,z) - log q(z|x)] is the ELBO whose KL the model takes in closed form
    analytic = (log_px - kls.sum(1)).mean()
    assert w1.mean().item() == pytest.approx(analytic.item(), rel=0.02)


def test_cli_trains_with_the_family_defaults_and_the_user_wins(tmp_path):
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    out = tmp_path / "run"
    r = run_cli("train", "nvae", "--data", "digits?limit=256", "--epochs", "1", "--batch-size", "64", "--quiet",
                "--out", out, *sets, "--set", "train.warmup_steps=2")
    assert r.returncode == 0, r.stderr
    train = json.loads((out / "run.json").read_text())["train"]
    assert train["schedule"] == "cosine" and train["warmup_steps"] == 2
    report = (out / "report.html").read_text()
    assert "Samples by temperature" in report and "What each latent group encodes" in report
    ev = json.loads((out / "eval.json").read_text())
    assert all(torch.isfinite(torch.tensor(float(v))) for v in ev.values() if isinstance(v, float))


class Step:
    """A StepContext at step ``step_index`` of ``total_steps``: keeps the loss and its gradient in the
    stem's weights, updates nothing."""

    def __init__(self, model, step_index, total_steps=100):
        self.model, self.step_index, self.total_steps, self.training = model, step_index, total_steps, True
        self.progress = step_index / total_steps
        self.losses, self.grads = [], []

    def backward(self, loss, *names, retain_graph=False):
        self.losses.append(float(loss.detach()))
        self.grads.append(torch.autograd.grad(loss, self.model.stem.weight, retain_graph=True)[0])

    def step(self, *names):
        pass

    def mean(self, value):
        return value


def nvae_step(step_index, seed=0, **kw):
    """One training step of a fresh model; returns (its loss, its metrics, log p(x|z) (B,), KLs (B, L))."""
    m = aezoo.create("nvae", seed=0, input_shape=(1, 8, 8), **{**TINY, **kw}).train()
    parts = {}
    elbo_parts = m._elbo_parts

    def spy(x):  # the reconstruction term and each group's KL of the step, as the model computed them
        log_px, kls = elbo_parts(x)
        parts.update(log_px=log_px.detach().double(), kls=kls.detach().double())
        return log_px, kls

    m._elbo_parts = spy
    x = (torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    ctx = Step(m, step_index)
    torch.manual_seed(seed)
    metrics = m.training_step(Batch(x), ctx)
    assert len(ctx.losses) == 1 and float(metrics["loss"]) == pytest.approx(ctx.losses[0], rel=1e-6)
    return ctx, metrics, parts["log_px"], parts["kls"]


SIZES = torch.tensor([12.0, 12.0, 48.0, 48.0], dtype=torch.float64)  # latent values per group, top first


def test_a_step_during_warm_up_weighs_the_balanced_kl_by_beta():
    ctx, metrics, log_px, kls = nvae_step(10, kl_warmup=0.3, kl_min=1e-4, kl_balance=True)  # step 10 of 100, warm-up 30
    beta = 10 / 30
    per_value = (kls.mean(0) + 0.01) / SIZES  # gamma_l: batch-mean KL over the group's size, summing to L
    gamma = 4 * per_value / per_value.sum()
    assert (gamma - 1).abs().max() > 0.1  # balancing changes the weights of these groups
    sr = float(metrics["spectral"])
    want = float((-log_px + beta * (gamma * kls).sum(1)).mean()) + 1e-2 * sr
    assert float(metrics["kl_weight"]) == pytest.approx(beta)
    assert ctx.losses[0] == pytest.approx(want, rel=1e-5)
    unbalanced = float((-log_px + beta * kls.sum(1)).mean()) + 1e-2 * sr
    assert abs(want - unbalanced) > 1e-3 * abs(want)


def test_a_step_after_warm_up_takes_the_whole_unweighted_kl():
    ctx, metrics, log_px, kls = nvae_step(40, kl_warmup=0.3)  # 40 of 100 steps: past the warm-up
    sr = float(metrics["spectral"])
    assert float(metrics["kl_weight"]) == 1.0
    assert ctx.losses[0] == pytest.approx(float((-log_px + kls.sum(1)).mean()) + 1e-2 * sr, rel=1e-5)
    assert float(metrics["elbo"]) == pytest.approx(float((log_px - kls.sum(1)).mean()), rel=1e-5)


def test_the_spectral_term_enters_the_loss_with_its_weight():
    (c0, m0, lp0, _), (c1, m1, lp1, _) = (nvae_step(40, sr_lambda=lam, kl_warmup=0.3) for lam in (0.0, 0.5))
    assert torch.equal(lp0, lp1)  # the same step otherwise
    sr = float(m1["spectral"])
    assert sr > 1.0 and float(m0["spectral"]) == pytest.approx(sr, rel=1e-6)
    assert c1.losses[0] - c0.losses[0] == pytest.approx(0.5 * sr, rel=1e-4)
    assert not torch.allclose(c1.grads[0], c0.grads[0])  # and its gradient reaches the convolutions
