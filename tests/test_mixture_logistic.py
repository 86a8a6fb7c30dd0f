"""The discretised mixture of logistics (PixelCNN++; NVAE's likelihood for greyscale and colour)."""

import torch

from aezoo.losses import discretized_logistic_nll, discretized_mixture_logistic_nll

LEVELS = torch.arange(256, dtype=torch.float32) / 255


def test_the_mixture_puts_probability_one_on_the_256_levels():
    g = torch.Generator().manual_seed(0)
    k = 3
    logits, means = torch.randn(1, k, 1, generator=g), torch.rand(1, k, 1, generator=g)
    log_scales = torch.randn(1, k, 1, generator=g) - 3
    nll = discretized_mixture_logistic_nll(logits.expand(256, k, 1), means.expand(256, k, 1),
                                           log_scales.expand(256, k, 1), LEVELS[:, None])
    assert abs(torch.exp(-nll).sum().item() - 1) < 1e-4


def test_the_mixture_is_the_weighted_sum_of_its_components():
    x = torch.tensor([[0.0, 0.3, 0.5, 1.0]])  # one item of 4 values, including both edge bins
    m1, m2 = torch.full_like(x, 0.2), torch.full_like(x, 0.7)
    s1, s2 = torch.full_like(x, -2.0), torch.full_like(x, -3.0)
    w = torch.tensor(0.3)
    # per value: P = w P1 + (1 - w) P2; the item's log-probability sums the values' logs
    p1 = torch.stack([torch.exp(-discretized_logistic_nll(m1[:, i:i + 1], s1[:, i:i + 1], x[:, i:i + 1]))
                      for i in range(4)])
    p2 = torch.stack([torch.exp(-discretized_logistic_nll(m2[:, i:i + 1], s2[:, i:i + 1], x[:, i:i + 1]))
                      for i in range(4)])
    want = -torch.log(w * p1 + (1 - w) * p2).sum()
    logits = torch.stack([torch.full_like(x, torch.log(w).item()), torch.full_like(x, torch.log(1 - w).item())], 1)
    got = discretized_mixture_logistic_nll(logits, torch.stack([m1, m2], 1), torch.stack([s1, s2], 1), x)
    assert torch.allclose(got, want.reshape(1), atol=1e-5)


def test_two_equal_components_are_one():
    x = torch.rand(5, 1, 4, 4)
    mean, log_scale = torch.rand_like(x), torch.randn_like(x) - 2
    one = discretized_logistic_nll(mean, log_scale, x)
    two = discretized_mixture_logistic_nll(torch.randn(5, 2, 1, 4, 4), torch.stack([mean, mean], 1),
                                           torch.stack([log_scale, log_scale], 1), x)
    assert torch.allclose(one, two, atol=1e-4)
