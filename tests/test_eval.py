import math

import pytest
import torch

from aezoo.eval import reconstruction_metrics
from aezoo.models.base import Autoencoder, ModelConfig
from aezoo.outputs import Encoded
from aezoo.losses import bernoulli_nll, squared_error


class Shift(Autoencoder):
    """Reconstructs x + delta exactly: its errors are known in closed form."""

    def __init__(self, delta):
        super().__init__(ModelConfig(input_shape=(1, 4, 4)))
        self.delta = delta
        self.p = torch.nn.Parameter(torch.zeros(1))

    def encode(self, x):
        return Encoded(x)

    def decode(self, z):
        return z + self.delta


def test_reconstruction_metrics_closed_form():
    x = torch.rand(10, 1, 4, 4) * 0.5
    m = reconstruction_metrics(Shift(0.1), x)
    assert m["recon_sse_per_item"] == pytest.approx(16 * 0.01, rel=1e-5)
    assert m["recon_mse"] == pytest.approx(0.01, rel=1e-5)
    assert m["psnr"] == pytest.approx(20.0, rel=1e-4)  # 10 log10(1 / 0.01)
    assert reconstruction_metrics(Shift(0.1), x, data_range=2.0)["psnr"] == pytest.approx(20 + 20 * math.log10(2), rel=1e-4)


def test_loss_functions_closed_forms():
    x = torch.tensor([[0.0, 1.0, 0.5]])
    logits = torch.tensor([[0.0, 0.0, 2.0]])
    p = torch.sigmoid(torch.tensor(2.0))
    want = 2 * math.log(2) - (0.5 * math.log(p) + 0.5 * math.log(1 - p))
    assert bernoulli_nll(logits, x).item() == pytest.approx(want, rel=1e-6)
    assert squared_error(torch.tensor([[1.0, 1.0, 1.0]]), x).item() == pytest.approx(1 + 0 + 0.25)
    # bf16 inputs are computed in fp32
    assert bernoulli_nll(logits.bfloat16(), x).dtype == torch.float32


def test_path_length_of_a_linear_decoder_is_the_squared_speed():
    from aezoo.eval.generative import path_length

    torch.manual_seed(0)
    a = torch.randn(300, 4, dtype=torch.float64)
    b = a + 0.5 * torch.nn.functional.normalize(torch.randn(300, 4, dtype=torch.float64), dim=1)  # |b - a| = 0.5
    # decode doubles the code: every linear path moves at speed 2 * 0.5 = 1 in feature space
    out = path_length(lambda c: 2 * c, lambda x: x, a, b, eps=1e-4)
    assert out["ppl"] == pytest.approx(1.0, rel=1e-6) and out["pairs"] == 300
    # a mapping before the decoder (to_code) is part of the path: tripled, the squared speed is 9
    assert path_length(lambda c: 2 * c, lambda x: x, a, b, to_code=lambda c: 3 * c)["ppl"] == pytest.approx(9.0, rel=1e-6)
    # on the sphere between two points of equal norm r at angle omega the speed is r * omega
    r, omega = 2.0, math.pi / 3
    p = torch.tensor([[r, 0.0]] * 10, dtype=torch.float64)
    q = torch.tensor([[r * math.cos(omega), r * math.sin(omega)]] * 10, dtype=torch.float64)
    sph = path_length(lambda c: c, lambda x: x, p, q, spherical=True, eps=1e-5)
    assert sph["ppl"] == pytest.approx((r * omega) ** 2, rel=1e-4)
