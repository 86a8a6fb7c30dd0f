"""alae: the equalised learning rate, the three updates of Algorithm 1 (which loss reaches which network),
the GAN losses and R1 against closed forms and finite differences, the weights' moving average, the
style generator's noise and mixing, and training through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

import aezoo
from aezoo.errors import UserError
from aezoo.nn.style import EqualLinear
from aezoo.outputs import Batch

from conftest import run_cli

MLP = dict(widths=[16], latent_dim=3, mapping_layers=2)
STYLE = dict(arch="style", channels=[8, 4], latent_dim=3, mapping_layers=2)
NETS = ("mapping", "generator", "encoder", "discriminator")


def alae(shape=(1, 8, 8), **kw):
    cfg = {**MLP, **kw}
    return aezoo.create("alae", seed=0, input_shape=list(shape), data_kind="image" if len(shape) == 3 else "vector",
                        **cfg).train()


class Updates:
    """A StepContext that records, for each backward, the optimizers named and which networks the loss
    reaches at all (a nonzero gradient), whatever the routing."""

    def __init__(self, model):
        self.model = model
        self.training, self.step_index, self.total_steps = True, 0, 10
        self.calls, self.losses = [], []

    def backward(self, loss, *names, retain_graph=False):
        reached = set()
        for net in NETS:
            params = list(getattr(self.model, net).parameters())
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            if any(g is not None and g.abs().sum() > 0 for g in grads):
                reached.add(net)
        self.calls.append((names, reached))
        self.losses.append(float(loss.detach()))

    def step(self, *names):
        pass

    def mean(self, value):
        return value


def test_equalised_layers_keep_the_scale_and_slow_down_by_lr_mul():
    torch.manual_seed(0)
    x = torch.randn(4096, 256)
    for mul in (1.0, 0.1):
        y = EqualLinear(256, 256, lr_mul=mul)(x)
        assert y.std().item() == pytest.approx(math.sqrt(2), rel=0.1)  # He gain at any lr_mul
    moved = []
    for mul in (1.0, 0.1):  # one Adam step (beta1 = 0) moves the effective weight by lr * c, c proportional to mul
        torch.manual_seed(1)
        layer = EqualLinear(8, 8, lr_mul=mul)
        before = layer.weight.detach() * layer.scale
        opt = torch.optim.Adam(layer.parameters(), lr=0.01, betas=(0.0, 0.99))
        layer(torch.randn(32, 8)).pow(2).sum().backward()
        opt.step()
        moved.append((layer.weight.detach() * layer.scale - before).abs().mean().item())
    assert moved[1] / moved[0] == pytest.approx(0.1, rel=1e-3)


@pytest.mark.parametrize("cfg", [MLP, STYLE], ids=["mlp", "style"])
def test_the_three_updates_reach_the_networks_of_algorithm_1(cfg):
    m = alae(**cfg)
    ctx = Updates(m)
    m.training_step(Batch(torch.rand(6, 1, 8, 8)), ctx)
    (n1, r1), (n2, r2), (n3, r3) = ctx.calls
    assert n1 == ("encoder",) and r1 == {"encoder", "discriminator"}  # generated items are constants here
    assert n2 == ("generator",) and r2 == set(NETS)  # routed to F and G only, through E and D
    assert n3 == ("encoder", "generator") and r3 == {"encoder", "generator"}  # w = F(z) is fixed; no D


def test_gan_losses_are_log_2_when_the_discriminator_is_undecided():
    m = alae(r1_gamma=0.0)
    with torch.no_grad():  # a zero last layer: every logit is 0, D = 1/2 everywhere
        m.discriminator[-1].weight.zero_()
        m.discriminator[-1].bias.zero_()
    ctx = Updates(m)
    metrics = m.training_step(Batch(torch.rand(6, 1, 8, 8)), ctx)
    assert float(metrics["d_loss"]) == pytest.approx(2 * math.log(2), rel=1e-6)
    assert float(metrics["g_loss"]) == pytest.approx(math.log(2), rel=1e-6)
    assert ctx.losses[0] == pytest.approx(2 * math.log(2), rel=1e-6)  # no R1 with gamma 0


def test_r1_is_the_squared_input_gradient_of_the_real_score():
    m = alae(shape=(5,), r1_gamma=10.0).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    ctx = Updates(m)
    metrics = m.training_step(Batch(x), ctx)

    def score(v):
        return m.discriminator(m.encoder(v)).squeeze(1)

    eps, total = 1e-6, 0.0
    for i in range(len(x)):  # central differences, coordinate by coordinate
        g = torch.zeros(5, dtype=torch.float64)
        for j in range(5):
            e = torch.zeros(5, dtype=torch.float64)
            e[j] = eps
            g[j] = (score(x[i : i + 1] + e) - score(x[i : i + 1] - e)).item() / (2 * eps)
        total += g.pow(2).sum().item()
    assert float(metrics["r1"]) == pytest.approx(total / len(x), rel=1e-5)
    d_only = float(metrics["d_loss"])
    assert ctx.losses[0] == pytest.approx(d_only + 5.0 * total / len(x), rel=1e-5)


@pytest.mark.parametrize("half_life, batch", [(100.0, 10), (0.0, 10)])
def test_the_moving_average_has_the_given_half_life_in_items(half_life, batch):
    m = alae(ema_half_life=half_life)
    with torch.no_grad():
        for p in m.ema.parameters():
            p.zero_()
        for net in ("mapping", "generator", "encoder"):
            for p in getattr(m, net).parameters():
                p.fill_(1.0)
    m._batch = batch
    m.after_step(None)
    beta = 0.5 ** (batch / half_life) if half_life else 0.0
    assert all(torch.allclose(p, torch.full_like(p, 1 - beta)) for p in m.ema.parameters())
    assert m.discriminator[0].weight.requires_grad and not any(p.requires_grad for p in m.ema.parameters())


def test_style_generator_mixes_styles_and_fixes_its_noise_in_eval_mode():
    m = alae(shape=(1, 7, 7), **STYLE)
    w, w2 = torch.randn(2, 3), torch.randn(2, 3)
    m.eval()
    a = m._generate(m.generator, w)
    assert a.shape == (2, 1, 8, 8) and torch.equal(a, m._generate(m.generator, w))  # fixed noise
    assert m.decode(w).shape == (2, 1, 7, 7) and 0 <= m.decode(w).min() and m.decode(w).max() <= 1
    with torch.no_grad():
        for layer in m.generator.layers:
            layer.noise_weight.fill_(1.0)
    torch.manual_seed(0)
    mixed = m._generate(m.generator, w, w2)
    assert not torch.allclose(mixed, a) and not torch.allclose(mixed, m._generate(m.generator, w2))
    m.train()
    assert not torch.allclose(m._generate(m.generator, w), m._generate(m.generator, w))  # fresh noise


def test_config_errors_are_user_errors():
    with pytest.raises(UserError, match="larger than arch=style"):
        alae(shape=(1, 28, 28), **STYLE)
    with pytest.raises(UserError, match="arch must be"):
        alae(arch="conv")
    with pytest.raises(UserError, match="style_mixing"):
        alae(style_mixing=1.5)


def test_cli_trains_samples_and_interpolates_in_w(tmp_path):
    sets = [a for k, v in STYLE.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    out = tmp_path / "run"
    r = run_cli("train", "alae", "--data", "digits?limit=256", "--epochs", "1", "--batch-size", "32", "--quiet",
                "--out", out, *sets)
    assert r.returncode == 0, r.stderr
    assert (out / "report.html").exists()
    ev = json.loads((out / "eval.json").read_text())
    assert all(math.isfinite(v) for v in ev.values() if isinstance(v, float))
    r = run_cli("interpolate", out, "--data", "digits", "--out", tmp_path / "interp.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "interp.png").stat().st_size > 0
