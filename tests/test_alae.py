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
        self.training, self.step_index, self.total_steps, self.progress = True, 0, 10, 0.0
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
    assert n3 == ("encoder", "generator") and r3 == {"encoder", "generator", "mapping"}  # F through G's input; no D


class ThirdLossGrads(Updates):
    """Keeps the gradient of update 3's loss in F's parameters."""

    def backward(self, loss, *names, retain_graph=False):
        if len(self.calls) == 2:
            self.grads = torch.autograd.grad(loss, list(self.model.mapping.parameters()), retain_graph=True)
        super().backward(loss, *names, retain_graph=retain_graph)


def test_the_latent_reconstruction_reaches_f_through_g_with_a_constant_target():
    """As the authors' code: Lae = mean((E(G(w)) - w.detach())^2) with w = F(z), so F's gradient comes
    through G's input alone (with the target in the graph too, it would differ)."""
    m = alae()
    zs = []
    m.mapping.register_forward_pre_hook(lambda mod, args: zs.append(args[0].detach()))
    ctx = ThirdLossGrads(m)
    m.training_step(Batch(torch.rand(6, 1, 8, 8)), ctx)
    params = list(m.mapping.parameters())
    w = m.mapping(zs[-1])
    out = m.encoder(m._generate(m.generator, w))
    for target, same in ((w.detach(), True), (w, False)):
        expected = torch.autograd.grad((out - target).pow(2).mean(), params, retain_graph=True)
        close = all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(ctx.grads, expected))
        assert close == same


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


def _softplus(v):  # log(1 + e^v), written out: the closed forms below do not call the code under test
    return torch.log1p(torch.exp(v.double()))


def test_gan_losses_match_their_closed_forms_at_non_zero_logits():
    """Away from logit 0, where softplus(l) = softplus(-l) hides a swapped sign."""
    m = alae(r1_gamma=0.0)
    with torch.no_grad():  # a decided discriminator: logits of a few units, unlike for real and fake items
        m.discriminator[-1].weight.mul_(20.0)
        m.discriminator[-1].bias.fill_(10.0)  # an equalised layer: 1.0 after its lr_mul (0.1)
    logits, codes, ws = [], [], []
    m.discriminator.register_forward_hook(lambda mod, i, out: logits.append(out.squeeze(1).detach().double()))
    m.encoder.register_forward_hook(lambda mod, i, out: codes.append(out.detach().double()))
    m.mapping.register_forward_hook(lambda mod, i, out: ws.append(out.detach().double()))
    ctx = Updates(m)
    torch.manual_seed(2)
    metrics = m.training_step(Batch(torch.rand(6, 1, 8, 8)), ctx)
    real, fake, gen = logits  # D(E(x)), D(E(G(F(z)))) in update 1, then D(E(G(F(z')))) in update 2
    # softplus(l) - softplus(-l) = l: each swapped sign below would move a loss by a mean logit
    assert min(real.mean().abs(), fake.mean().abs(), gen.mean().abs(), (real.mean() - fake.mean()).abs()) > 0.3
    # update 1: -log D(E(x)) - log(1 - D(E(G(F(z))))), D = sigmoid; update 2: -log D(E(G(F(z'))))
    d_loss = (-torch.log(torch.sigmoid(real))).mean() + (-torch.log(1 - torch.sigmoid(fake))).mean()
    g_loss = (-torch.log(torch.sigmoid(gen))).mean()
    assert float(metrics["d_loss"]) == pytest.approx(float(d_loss), rel=1e-5)
    assert ctx.losses[0] == pytest.approx(float(d_loss), rel=1e-5)  # gamma 0: no R1
    assert float(metrics["g_loss"]) == pytest.approx(float(g_loss), rel=1e-5)
    assert ctx.losses[1] == pytest.approx(float(g_loss), rel=1e-5)
    assert float(d_loss) != pytest.approx(float(_softplus(real).mean() + _softplus(-fake).mean()), rel=1e-3)
    # update 3: ||w - E(G(w))||^2, mean over the batch and the latent_dim values, w = F(z'') (the last F call)
    latent = (codes[-1] - ws[-1]).pow(2).mean()
    assert float(metrics["latent_mse"]) == pytest.approx(float(latent), rel=1e-5)
    assert ctx.losses[2] == pytest.approx(float(latent), rel=1e-5)


class FirstLossGrads(Updates):
    """Keeps the gradient of update 1's loss in the encoder's and the discriminator's weights."""

    def backward(self, loss, *names, retain_graph=False):
        if not self.calls:
            self.grads = torch.autograd.grad(loss, [self.model.encoder.weight, self.model.discriminator.weight],
                                             retain_graph=True)
        super().backward(loss, *names, retain_graph=retain_graph)


@pytest.mark.parametrize("gamma", [10.0, 3.0])
def test_r1_of_a_linear_encoder_and_discriminator_is_its_hand_computed_gradient_norm(gamma):
    """E(x) = A x + a and D(w) = v.w + c: grad_x D(E(x)) = A^T v for every x, so R1 = ||A^T v||^2, and the
    penalty gamma / 2 v^T A A^T v adds gamma A A^T v to D's gradient and gamma v v^T A to E's."""
    g = torch.Generator().manual_seed(3)
    A, a = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    v, c = torch.randn(1, 3, generator=g, dtype=torch.float64), 0.4
    x = torch.randn(4, 5, generator=g, dtype=torch.float64)
    runs = []
    for r1_gamma in (0.0, gamma):
        m = alae(shape=(5,), r1_gamma=r1_gamma).double()
        m.encoder, m.discriminator = torch.nn.Linear(5, 3).double(), torch.nn.Linear(3, 1).double()
        with torch.no_grad():
            m.encoder.weight.copy_(A)
            m.encoder.bias.copy_(a)
            m.discriminator.weight.copy_(v)
            m.discriminator.bias.fill_(c)
        ctx = FirstLossGrads(m)
        torch.manual_seed(1)  # the same generated items in both runs
        runs.append((m.training_step(Batch(x), ctx), ctx))
    (_, c0), (m1, c1) = runs
    r1 = float(((A.t() @ v.t()) ** 2).sum())
    assert float(m1["r1"]) == pytest.approx(r1, rel=1e-6)  # R1 is summed in fp32
    assert c1.losses[0] - c0.losses[0] == pytest.approx(gamma / 2 * r1, rel=1e-6)
    (e0, d0), (e1, d1) = c0.grads, c1.grads
    assert torch.allclose(d1 - d0, gamma * (A @ A.t() @ v.t()).t(), rtol=1e-6, atol=1e-9)
    assert torch.allclose(e1 - e0, gamma * v.t() @ v @ A, rtol=1e-6, atol=1e-9)


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
