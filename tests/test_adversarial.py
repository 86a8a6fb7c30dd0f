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
        self.groups = {n: [p for p in o.params] for n, o in model.optimizers().items()}
        self.training, self.step_index, self.total_steps = True, 0, 10
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
    return all((x is None and y is None) or torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b))


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


def test_vaegan_routes_the_gan_term_to_the_decoder_only():
    x = torch.rand(16, 1, 8, 8)
    m = vaegan(margin=-1.0)
    a, _ = step(m, x)
    with torch.no_grad():  # the head reads Dis_l but does not shape it: only the GAN term changes
        m.discriminator.head[-1].weight.mul_(-3.0)
    b, _ = step(m, x)
    assert same(a.grads["encoder"], b.grads["encoder"]), "the GAN loss reached the encoder"
    assert not same(a.grads["decoder"], b.grads["decoder"]), "the GAN loss does not reach the decoder"


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
