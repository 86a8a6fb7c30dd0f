"""The training protocol (aezoo.models.base) through the real Trainer, with a test-only adversarial model
shaped like VAE-GAN and ALAE: one forward pass, three optimizers, routed gradients, a gradient penalty,
a second update of two optimizers in the same step, and a weight EMA after each step."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import aezoo
from aezoo.errors import TrainingDiverged
from aezoo.models.base import Autoencoder, ModelConfig, Optim
from aezoo.outputs import Encoded
from aezoo.rng import seeded


class TinyAdversarial(Autoencoder):
    name = "tiny-adversarial-test"
    GAMMA = 0.5
    EMA = 0.9

    def __init__(self, record_at=None, nan_at=None):
        super().__init__(ModelConfig(input_shape=(1, 8, 8)))
        with seeded(0):  # the same weights every time it is built
            self.enc = nn.Linear(64, 4)
            self.dec = nn.Linear(4, 64)
            self.disc_features = nn.Linear(64, 8)
            self.disc_head = nn.Linear(8, 1)
        self.register_buffer("dec_ema", self.dec.weight.detach().clone())
        self.record_at, self.nan_at = record_at, nan_at
        self.recorded = None

    def optimizers(self):
        return {"encoder": Optim(self.enc.parameters(), kind="rmsprop", lr=3e-4),
                "decoder": Optim(self.dec.parameters(), kind="rmsprop", lr=3e-4),
                "disc": Optim([{"params": self.disc_features.parameters(), "lr_scale": 0.5},
                               {"params": self.disc_head.parameters()}], kind="adam", betas=(0.0, 0.99))}

    def encode(self, x):
        return Encoded(self.enc(x.flatten(1)))

    def decode(self, z):
        return torch.sigmoid(self.dec(z)).view(-1, 1, 8, 8)

    def losses(self, x):
        """One forward pass; the three losses of VAE-GAN's Algorithm 1 (in miniature) plus R1."""
        x = x.flatten(1).detach().requires_grad_(True)
        z = self.enc(x) + 0.1 * torch.randn(len(x), 4)
        rec = torch.sigmoid(self.dec(z))
        fake = torch.sigmoid(self.dec(torch.randn(len(x), 4)))
        f_real, f_rec, f_fake = self.disc_features(x), self.disc_features(rec), self.disc_features(fake)
        d_real, d_rec, d_fake = self.disc_head(f_real), self.disc_head(f_rec), self.disc_head(f_fake)
        feature = (f_real - f_rec).square().sum(1).mean()
        gan = F.softplus(-d_real).mean() + F.softplus(d_rec).mean() + F.softplus(d_fake).mean()
        (grad_x,) = torch.autograd.grad(d_real.sum(), x, create_graph=True)
        r1 = grad_x.square().sum(1).mean()
        prior = z.square().sum(1).mean()
        return {"encoder": prior + feature, "decoder": self.GAMMA * feature - gan, "disc": gan + 5.0 * r1}, r1

    def training_step(self, batch, ctx):
        losses, r1 = self.losses(batch.x)
        if self.nan_at is not None and ctx.step_index >= self.nan_at:
            losses["disc"] = losses["disc"] * float("nan")
        if ctx.training and ctx.step_index == self.record_at:
            self.recorded = {"expected": {}, "all": {}, "seen": {}}
            total = sum(losses.values())
            for name, params in self.groups().items():
                self.recorded["expected"][name] = torch.autograd.grad(losses[name], params, retain_graph=True)
                self.recorded["all"][name] = torch.autograd.grad(total, params, retain_graph=True)
        ctx.backward(losses["encoder"], "encoder", retain_graph=True)
        ctx.backward(losses["decoder"], "decoder", retain_graph=True)
        ctx.backward(losses["disc"], "disc")
        if self.recorded is not None and ctx.training and ctx.step_index == self.record_at:
            self.recorded["seen"] = {n: [p.grad.clone() for p in ps] for n, ps in self.groups().items()}
        ctx.step()
        # a second update of two of the optimizers in the same step (as ALAE's latent reconstruction)
        z = torch.randn(len(batch.x), 4)
        cycle = (self.enc(torch.sigmoid(self.dec(z))) - z).square().sum(1).mean()
        ctx.backward(cycle, "encoder", "decoder")
        ctx.step("encoder", "decoder")
        return {"encoder": losses["encoder"].detach(), "disc": losses["disc"].detach(), "r1": r1.detach(),
                "cycle": cycle.detach()}

    def validation_step(self, batch, ctx):
        return self.training_step(batch, ctx)  # R1 differentiates a gradient: keep autograd on

    def after_step(self, ctx):
        self.dec_ema.lerp_(self.dec.weight, 1 - self.EMA)

    def groups(self):
        return {"encoder": list(self.enc.parameters()), "decoder": list(self.dec.parameters()),
                "disc": [*self.disc_features.parameters(), *self.disc_head.parameters()]}


def weights(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def cfg(**kw):
    return aezoo.TrainConfig(**{**dict(epochs=1, batch_size=64, seed=2, progress=False, checkpoint_every=0), **kw})


def test_each_optimizer_receives_exactly_its_routed_gradient(tmp_path, digits):
    m = TinyAdversarial(record_at=3)
    aezoo.Trainer(m, digits, cfg(), tmp_path / "r").fit()
    rec = m.recorded
    for name in ("encoder", "decoder", "disc"):
        for seen, expected, unrouted in zip(rec["seen"][name], rec["expected"][name], rec["all"][name]):
            assert torch.allclose(seen, expected, atol=1e-6), name
            assert not torch.allclose(seen, unrouted, atol=1e-4), f"{name}: routing made no difference"


def test_declared_optimizers_classes_groups_and_repeated_updates(tmp_path, digits):
    m = TinyAdversarial()
    t = aezoo.Trainer(m, digits, cfg(), tmp_path / "r")
    t.fit()
    assert type(t.optimizers["encoder"]) is torch.optim.RMSprop and type(t.optimizers["disc"]) is torch.optim.Adam
    lrs = [g["lr"] for g in t.optimizers["disc"].param_groups]
    assert lrs == pytest.approx([5e-4, 1e-3])  # lr_scale 0.5 of the training config's default
    assert t.optimizers["disc"].param_groups[0]["betas"] == (0.0, 0.99)
    steps = len(digits.train) // 64
    enc_state = t.optimizers["encoder"].state[m.enc.weight]
    assert int(enc_state["step"]) == 2 * steps  # two updates per batch
    assert int(t.optimizers["disc"].state[m.disc_head.weight]["step"]) == steps
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["optimizers"]["encoder"]["class"] == "RMSprop"


def test_training_config_overrides_every_declared_optimizer(tmp_path, digits):
    t = aezoo.Trainer(TinyAdversarial(), digits, cfg(lr=0.01, optimizer="adamax"), tmp_path / "r")
    t.fit()
    assert all(type(o) is torch.optim.Adamax for o in t.optimizers.values())
    assert [g["lr"] for g in t.optimizers["disc"].param_groups] == pytest.approx([0.005, 0.01])


def test_validation_runs_a_gradient_penalty(tmp_path, digits):
    m = TinyAdversarial()
    t = aezoo.Trainer(m, digits, cfg(), tmp_path / "r")
    result = t.fit()
    assert result.last_metrics["r1"] > 0 and all(map(lambda v: v == v, result.last_metrics.values()))
    before = weights(m)
    t.validate(0)
    after = weights(m)
    assert all(torch.equal(before[k], after[k]) for k in before), "validation changed the weights"


def test_after_step_hook_keeps_an_ema(tmp_path, digits):
    m = TinyAdversarial()
    start = m.dec.weight.detach().clone()
    aezoo.Trainer(m, digits, cfg(), tmp_path / "r").fit()
    assert not torch.equal(m.dec_ema, start) and not torch.equal(m.dec_ema, m.dec.weight)
    assert (m.dec_ema - m.dec.weight).abs().max() < (start - m.dec.weight).abs().max()


def test_resume_with_three_optimizers_reproduces_the_uninterrupted_run(tmp_path, digits):
    base = dict(epochs=2, checkpoint_every=5)
    full = TinyAdversarial()
    aezoo.Trainer(full, digits, cfg(**base), tmp_path / "full").fit()
    crashed = TinyAdversarial(nan_at=12)  # dies at step 12; the checkpoint of step 10 survives
    with pytest.raises(TrainingDiverged, match="step 12 .optimizer disc"):
        aezoo.Trainer(crashed, digits, cfg(**base), tmp_path / "c").fit()
    resumed = TinyAdversarial()
    aezoo.Trainer(resumed, digits, cfg(**base), tmp_path / "c").fit(resume=True)
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
