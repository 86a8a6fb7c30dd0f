import json
import math

import torch
from PIL import Image

from aezoo.eval.generate import lerp, slerp
from conftest import run_cli, run_cli_many
from test_cli import one_line_error


def test_slerp_closed_form():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0]])
    t = torch.tensor([0.0, 0.5, 1.0])
    p = slerp(a, b, t)[0]
    assert torch.allclose(p[0], a[0]) and torch.allclose(p[2], b[0], atol=1e-6)
    # halfway along the quarter circle, norm halfway between 1 and 2
    assert torch.allclose(p[1], 1.5 * torch.tensor([1.0, 1.0]) / math.sqrt(2), atol=1e-6)
    assert torch.allclose(lerp(a, b, t)[0, 1], torch.tensor([0.5, 1.0]))


def test_sample_interpolate_and_eval_a_vae(tmp_path):
    run = tmp_path / "vae"
    r = run_cli("train", "vae", "--data", "digits", "--out", run, "--epochs", "2", "--quiet", "--set", "latent_dim=3")
    assert r.returncode == 0, r.stderr
    assert "nll_nats" not in json.loads(r.stdout)  # training ends with the cheap metrics
    sample, again, interp, traverse, ev, big_k, zero, gif = run_cli_many(
        ("sample", run, "-n", "10", "--out", tmp_path / "s.png", "--seed", "3"),
        ("sample", run, "-n", "10", "--out", tmp_path / "s2.png", "--seed", "3"),
        ("interpolate", run, "--pairs", "3", "--steps", "5", "--out", tmp_path / "i.png"),
        ("interpolate", run, "--traverse", "--out", tmp_path / "t.png"),
        ("eval", run, "--nll-k", "50", "--nll-items", "1000"),
        ("eval", run, "--nll-k", "6000"),
        ("sample", run, "-n", "0", "--out", tmp_path / "z.png"),
        ("sample", run, "--out", tmp_path / "z.gif"))
    assert sample.returncode == 0 and again.returncode == 0, sample.stderr + again.stderr
    assert (tmp_path / "s.png").read_bytes() == (tmp_path / "s2.png").read_bytes()  # seeded
    assert interp.returncode == 0, interp.stderr
    im = Image.open(tmp_path / "i.png")
    assert im.height > 5 * (im.width // 5) // 2  # six rows of five (3 pairs x 2 modes)
    assert traverse.returncode == 0, traverse.stderr
    m = json.loads(ev.stdout)
    assert m["nll_items"] == m["elbo_items"] == m["items"]  # the whole split: the bound holds item for item
    assert m["nll_nats"] <= -m["elbo"] + 1e-3 and m["nll_bits_per_dim"] > 0
    one_line_error(big_k, "--nll-k")
    one_line_error(zero, "-n")
    one_line_error(gif, ".png")


def test_sample_refuses_a_model_without_a_prior(tmp_path):
    run = tmp_path / "ae"
    assert run_cli("train", "ae", "--data", "digits", "--out", run, "--epochs", "1", "--quiet",
                   "--set", "widths=[8]", "--set", "latent_dim=2").returncode == 0
    one_line_error(run_cli("sample", run, "--out", tmp_path / "s.png", "--sampler", "prior"), "no prior to sample from")
    gmm = run_cli("sample", run, "--out", tmp_path / "g.png", "-n", "4")  # by default: the mixture over its codes
    assert gmm.returncode == 0 and Image.open(tmp_path / "g.png").size[0] > 0, gmm.stderr
    r = run_cli("interpolate", run, "--out", tmp_path / "i.png", "--pairs", "1")
    assert r.returncode == 0, r.stderr
