"""VAE-GAN and ACAI: their losses against closed forms and their gradient routing (which loss reaches
which network), on tiny networks."""

import pytest
import torch

import aezoo
from aezoo.models.vaegan import equilibrium_updates
from aezoo.outputs import Batch


class Grads:
    """A StepContext that keeps, per optimizer name, the gradient its loss sends into its parameters."""

    def __init__(self, model):
        self.groups = {n: [q for g in o.params for q in (g["params"] if isinstance(g, dict) else [g])]
                       for n, o in model.optimizers().items()}
        self.training, self.step_index, self.total_steps, self.progress = True, 0, 10, 0.0
        self.grads, self.losses = {}, {}

    def backward(self, loss, *names, retain_graph=False):
        for n in names:
            self.losses[n] = loss.detach()
            self.grads[n] = torch.autograd.grad(loss, self.groups[n], retain_graph=True, allow_unused=True)

    def step(self, *names):
        pass

    def mean(self, value):
        return value


def same(a, b):
    """Equal gradients, parameter by parameter. A parameter without a gradient fails the test: two missing
    gradients are not evidence that a loss does not reach a network, only that nothing does."""
    assert len(a) == len(b) and all(g is not None for g in (*a, *b)), "a parameter got no gradient"
    return all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b))


def vaegan(**kw):
    return aezoo.create("vaegan", seed=0, input_shape=[1, 8, 8], channels=[4, 8], hidden=16, latent_dim=3,
                        decoder_channels=[8, 4], dis_channels=[4, 8, 8], dis_hidden=8, **kw).train()


def acai(**kw):
    return aezoo.create("acai", seed=0, input_shape=[1, 8, 8], depth=4, scales=2, latent_dim=3, **kw).train()


def step(model, x, seed=0):
    ctx = Grads(model)
    torch.manual_seed(seed)
    metrics = model.training_step(Batch(x), ctx)
    return ctx, metrics


@pytest.mark.parametrize("real, fake, expected", [
    (0.69, 0.69, (True, True)),  # near equilibrium: both learn
    (0.20, 0.69, (True, False)),  # the discriminator wins by the margin: it pauses
    (0.69, 1.20, (False, True)),  # the decoder loses by the margin: it pauses
    (0.20, 1.20, (True, True)),  # both would pause: both learn
])
def test_the_equilibrium_rule_pauses_the_side_that_is_ahead(real, fake, expected):
    assert equilibrium_updates(real, fake, 0.68, 0.35) == expected
    assert equilibrium_updates(real, fake, 0.68, -1.0) == (True, True)


@pytest.mark.parametrize("on_recon", [False, True])
def test_vaegan_routes_the_gan_term_to_the_decoder_only(on_recon):
    """Summed over every loss of the step (Sums), with and without the GAN on reconstructions (with it, the
    GAN term has a path to the encoder through x~ = Dec(Enc(x)) that the step must cut)."""
    x = torch.rand(16, 1, 8, 8)
    m = vaegan(margin=-1.0, gan_on_recon=on_recon)
    grads = []
    for _ in range(2):
        ctx = Sums(m)
        torch.manual_seed(0)
        m.training_step(Batch(x), ctx)
        grads.append(ctx.grads)
        with torch.no_grad():  # the head reads Dis_l but does not shape it: only the GAN term changes
            m.discriminator.head[-1].weight.mul_(-3.0)
    a, b = grads
    assert same(a["encoder"], b["encoder"]), "the GAN loss reached the encoder"
    assert not same(a["decoder"], b["decoder"]), "the GAN loss does not reach the decoder"


@pytest.mark.parametrize("on_recon", [False, True])
def test_vaegan_encoder_gets_exactly_the_prior_and_feature_gradient(on_recon):
    """Summed over the step, the encoder's gradient is that of L_prior + L_llike alone (no gamma L_llike
    from the decoder's loss, no GAN term), recomputed from the step's own q and z."""
    x = torch.rand(16, 1, 8, 8)
    m = vaegan(margin=-1.0, gan_on_recon=on_recon)
    seen = {}
    # the first encoder output (q's parameters) and the first decoder input (z), kept; the hooks return None
    m.encoder.register_forward_hook(lambda mod, i, out: None if "h" in seen else seen.update(h=out))
    m.decoder_input.register_forward_pre_hook(lambda mod, args: None if "z" in seen else seen.update(z=args[0]))
    ctx = Sums(m)
    torch.manual_seed(0)
    m.training_step(Batch(x), ctx)
    mean, logvar = seen["h"].chunk(2, -1)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
    b = len(x)
    f = m.discriminator.features(torch.cat([m.generate(seen["z"]), 2 * x - 1]))
    llike = 0.5 * (f[:b] - f[b:]).pow(2).sum(1).mean()
    want = torch.autograd.grad(kl + llike, ctx.groups["encoder"], allow_unused=True)
    assert same(ctx.grads["encoder"], want), "the encoder's gradient is not L_prior + L_llike's alone"


def test_vaegan_feature_loss_reaches_the_encoder():
    x = torch.rand(16, 1, 8, 8)
    m = vaegan(margin=-1.0)
    a, _ = step(m, x)
    with torch.no_grad():  # Dis_l, the features the encoder's loss compares, changes; the KL does not
        m.discriminator.convs[m.config.feature_layer - 1].weight.mul_(2.0)
    b, _ = step(m, x)
    assert not same(a.grads["encoder"], b.grads["encoder"]), "the feature loss does not reach the encoder"


def test_vaegan_discriminator_learns_the_weighted_gan_loss_alone():
    x = torch.rand(16, 1, 8, 8)
    m = vaegan(margin=-1.0, real_weight=0.66)
    logits = []
    m.discriminator.head.register_forward_hook(lambda mod, i, out: logits.append(out.squeeze(1).detach()))
    ctx, metrics = step(m, x)
    d = logits[0]
    b = len(x)
    expected = 0.66 * torch.nn.functional.softplus(-d[:b]).mean() + 0.34 * torch.nn.functional.softplus(d[b:]).mean()
    assert torch.allclose(ctx.losses["discriminator"], expected, atol=1e-5)
    # the decoder's loss: gamma * feature loss - (1 - gamma) * the sum over both kinds of generated items of
    # -log(1 - D), per real item (minimax)
    g = m.config.gamma
    dec = g * metrics["feature_loss"] - (1 - g) * torch.nn.functional.softplus(d[b:]).sum() / b
    assert torch.allclose(ctx.losses["decoder"], dec, atol=1e-4)


def test_vaegan_gan_sees_prior_samples_only_unless_asked_for_reconstructions():
    """The authors' final code keeps x~ out of the GAN (a changed encoder leaves the discriminator's loss
    as it was, for the same draws); ``gan_on_recon`` brings it back, with x~ and x_p sharing the fake side."""
    x = torch.rand(16, 1, 8, 8)
    b = len(x)
    for on_recon in (False, True):
        m = vaegan(margin=-1.0, gan_on_recon=on_recon)
        losses = []
        for scale in (1.0, 3.0):
            with torch.no_grad():
                m.encoder[0].weight.mul_(scale)
            torch.manual_seed(1)
            ctx, _ = step(m, x)
            losses.append(ctx.losses["discriminator"])
        assert torch.equal(losses[0], losses[1]) != on_recon
    logits = []
    m.discriminator.head.register_forward_hook(lambda mod, i, out: logits.append(out.squeeze(1).detach()))
    ctx, metrics = step(m, x)
    d = logits[0]
    assert len(d) == 3 * b  # x, x~, x_p
    sp = torch.nn.functional.softplus
    assert torch.allclose(ctx.losses["discriminator"], 0.5 * sp(-d[:b]).mean() + 0.5 * sp(d[b:]).mean(), atol=1e-5)
    g = m.config.gamma
    assert torch.allclose(ctx.losses["decoder"], g * metrics["feature_loss"] - (1 - g) * sp(d[b:]).sum() / b,
                          atol=1e-4)


def test_vaegan_decays_convolution_and_affine_weights_only():
    m = vaegan(weight_decay=0.01)
    for name, spec in m.optimizers().items():
        for group in spec.params:
            for p in group["params"]:
                decays = p.dim() > 1 and p is not m.encoder[-1].weight
                assert group["weight_decay"] == (0.01 if decays else 0.0), name
    opts = {n: o.params[0]["params"] for n, o in m.optimizers().items()}
    assert {len(v) > 0 for v in opts.values()} == {True}


def test_vaegan_skips_the_update_the_rule_pauses():
    x = torch.rand(16, 1, 8, 8)
    m = vaegan(equilibrium=5.0, margin=0.1)  # every cost is far below: the discriminator is "winning"
    ctx, metrics = step(m, x)
    assert "discriminator" not in ctx.grads and "decoder" in ctx.grads
    assert metrics["discriminator_updated"] == 0.0


def test_vaegan_decodes_to_the_unit_range_and_samples():
    m = vaegan().eval()
    s = m.sample(5)
    assert s.shape == (5, 1, 8, 8) and s.min() >= 0 and s.max() <= 1


def test_acai_critic_loss_is_the_mean_square_of_alpha_when_the_critic_says_zero():
    m = acai()
    with torch.no_grad():
        m.critic.out.weight.zero_()
        m.critic.out.bias.zero_()
    x = torch.rand(4000, 1, 8, 8)
    ctx, metrics = step(m, x)
    # alpha = 0.5 - |u - 0.5|, u ~ U(0, 1) is uniform on [0, 1/2]: E[alpha^2] = 1/12
    assert abs(float(metrics["critic_loss"]) - 1 / 12) < 0.01
    assert torch.allclose(metrics["loss"], 4 * metrics["recon_mse"])  # no adversarial term; [-1, 1] units


class Sums(Grads):
    """A StepContext that adds up, per optimizer name, the gradients of every loss routed to it."""

    def backward(self, loss, *names, retain_graph=False):
        for n in names:
            g = torch.autograd.grad(loss, self.groups[n], retain_graph=True, allow_unused=True)
            old = self.grads.get(n, [None] * len(g))
            self.grads[n] = [b if a is None else a if b is None else a + b for a, b in zip(old, g)]


def acai_step(m, x, ctx_class=Grads, seed=0):
    """One ACAI step, seen from outside: the code z, the decoder's and the critic's outputs, and alpha
    (the step's first random draw, u ~ U(0, 1), alpha = 0.5 - |u - 0.5|)."""
    seen = {}

    def keep(name):  # a hook that keeps the first output (returning None leaves the output alone)
        def hook(mod, inputs, out):
            if name not in seen:
                seen[name], seen[name + "_in"] = out, inputs[0]
        return hook

    m.encoder.register_forward_hook(keep("z"))
    m.decoder.register_forward_hook(keep("out"))
    m.critic.register_forward_hook(keep("critic_out"))
    ctx = ctx_class(m)
    torch.manual_seed(seed)
    metrics = m.training_step(Batch(x), ctx)
    torch.manual_seed(seed)
    u = torch.rand(len(x), 1, 1, 1)
    seen["alpha"] = 0.5 - (u - 0.5).abs()
    return ctx, metrics, seen


def acai_closed_forms(m, x, seen):
    """eq. 2 and eq. 1 from the step's own tensors: (autoencoder loss, critic loss), differentiable."""
    b, lam = len(x), m.config.advweight
    xs = 2 * x - 1  # the paper's [-1, 1]
    rec = seen["out"][:b]
    d = seen["critic_out"].mean((1, 2, 3))  # the critic's map averaged to one number per item
    d_mix, d_blend = d[:b], d[b:]
    ae = (rec - xs).pow(2).mean() + lam * d_mix.pow(2).mean()
    critic = (d_mix - seen["alpha"].view(-1)).pow(2).mean() + d_blend.pow(2).mean()
    return ae, critic


def nonzero_critic(**kw):
    m = acai(**kw)
    with torch.no_grad():  # its outputs well away from 0 and from alpha in [0, 1/2]
        m.critic.out.bias.fill_(-0.4)
    return m


def test_acai_losses_match_eq_1_and_2_with_a_critic_that_does_not_say_zero():
    """With a zero critic, the lambda term and the blend term vanish and a sign in (d - alpha) cannot show."""
    m = nonzero_critic(advweight=0.7, reg=0.3)
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ctx, metrics, seen = acai_step(m, x)
    b, alpha, gamma = len(x), seen["alpha"], m.config.reg
    xs = 2 * x - 1
    rec, mix = seen["out"][:b].detach(), seen["out"][b:].detach()
    z = seen["z"].detach()
    with torch.no_grad():  # the interpolant decodes alpha z_1 + (1 - alpha) z_2, z_2 the batch reversed
        assert torch.allclose(mix, m.decoder(alpha * z + (1 - alpha) * z.flip(0)), atol=1e-5)
    critic_in = seen["critic_out_in"].detach()  # interpolants, then blends gamma x + (1 - gamma) x~
    assert torch.allclose(critic_in[:b], mix) and torch.allclose(critic_in[b:], gamma * xs + (1 - gamma) * rec, atol=1e-6)
    d = seen["critic_out"].detach().mean((1, 2, 3))
    assert d.abs().min() > 0.1  # (d - alpha)^2 - (d + alpha)^2 = -4 d alpha: a swapped sign shows
    ae, critic = (float(t.detach()) for t in acai_closed_forms(m, x, seen))
    assert float(ctx.losses["autoencoder"]) == pytest.approx(ae, rel=1e-5)
    assert float(ctx.losses["critic"]) == pytest.approx(critic, rel=1e-5)
    assert float(metrics["critic_loss"]) == pytest.approx(critic, rel=1e-5)
    assert float(metrics["loss"]) == pytest.approx(ae, rel=1e-5)


def test_acai_critic_loss_never_reaches_the_autoencoder():
    """Over the whole step, the autoencoder's parameters receive exactly eq. 2's gradient and the critic's
    exactly eq. 1's, although eq. 1 depends on the decoder through the interpolants."""
    m = nonzero_critic(advweight=0.7)
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    ctx, _, seen = acai_step(m, x, Sums)
    ae, critic = acai_closed_forms(m, x, seen)
    want_ae = torch.autograd.grad(ae, ctx.groups["autoencoder"], retain_graph=True)
    want_critic = torch.autograd.grad(critic, ctx.groups["critic"], retain_graph=True)
    assert same(ctx.grads["autoencoder"], want_ae), "the autoencoder's gradient is not eq. 2's alone"
    assert same(ctx.grads["critic"], want_critic), "the critic's gradient is not eq. 1's alone"
    assert not same(torch.autograd.grad(critic, ctx.groups["autoencoder"][-2:], retain_graph=True),
                    [torch.zeros_like(p) for p in ctx.groups["autoencoder"][-2:]])  # eq. 1 does depend on it


def test_acai_lambda_reaches_the_autoencoder_not_the_critic():
    x = torch.rand(16, 1, 8, 8)
    a, _ = step(acai(advweight=0.5), x)
    b, _ = step(acai(advweight=5.0), x)
    assert same(a.grads["critic"], b.grads["critic"])
    assert not same(a.grads["autoencoder"], b.grads["autoencoder"])


def test_acai_codes_are_maps_and_decode_back_to_the_item_size():
    m = aezoo.create("acai", seed=0, input_shape=[1, 28, 28], depth=4, scales=3, latent_dim=2).eval()
    z = m.encode(torch.rand(2, 1, 28, 28)).z
    assert z.shape == (2, 2, 4, 4)  # 28 -> 14 -> 7 -> 4 (pooling rounds up)
    assert m.decode(z).shape == (2, 1, 28, 28)


def test_acai_initialises_convolutions_as_the_authors_code():
    """std 1 / sqrt(1.04 fan_in) (brain-research/acai's He modified normal, slope 0.2), zero biases."""
    m = aezoo.create("acai", seed=0, input_shape=[1, 16, 16], depth=16, scales=2, latent_dim=8)
    conv = m.encoder.top  # 64 x 64 x 3 x 3: 36,864 weights
    fan_in = conv.weight[0].numel()
    assert abs(conv.weight.std().item() * (1.04 * fan_in) ** 0.5 - 1) < 0.02
    assert abs(conv.weight.mean().item()) < 0.01 * conv.weight.std().item() * 3
    assert all(float(c.bias.abs().max()) == 0 for c in m.modules() if isinstance(c, torch.nn.Conv2d))
