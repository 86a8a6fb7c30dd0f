"""VQ-VAE: the quantiser against hand computations, the PixelCNN's causality, and the pair through the CLI."""

import json
import shutil

import pytest
import torch

import aezoo
from aezoo.models.base import LossStep
from aezoo.nn.quantize import VectorQuantizer
from aezoo.outputs import Batch
from conftest import run_cli


def grid(values):
    """(1, D, 1, N) encoder output from a list of N D-vectors."""
    return torch.tensor(values, dtype=torch.float32).t()[None, :, None, :]


def fixed_codebook(vq, rows):
    vq.initialized.fill_(True)  # skip the data-dependent start
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor(rows, dtype=torch.float32))
        if vq.ema:
            vq.ema_sum.copy_(vq.codebook)


def test_nearest_code_assignment_and_straight_through_gradient():
    vq = VectorQuantizer(num_codes=3, dim=2, beta=0.25, ema=False)
    fixed_codebook(vq, [[0, 0], [1, 0], [0, 1]])
    vq.eval()
    z = grid([[0.9, 0.2], [0.1, 0.1], [-0.2, 0.8]]).requires_grad_(True)
    q = vq(z)
    assert q.indices.flatten().tolist() == [1, 0, 2]
    assert torch.equal(q.z_q[0, :, 0].t(), torch.tensor([[1.0, 0], [0, 0], [0, 1]]))
    # straight-through: d(sum w * z_q)/dz = w exactly
    w = torch.randn_like(q.z_q)
    (q.z_q * w).sum().backward()
    assert torch.allclose(z.grad, w)


def test_losses_match_their_formulas():
    vq = VectorQuantizer(num_codes=2, dim=2, beta=0.25, ema=False)
    fixed_codebook(vq, [[0, 0], [2, 2]])
    vq.eval()
    z = grid([[0.5, 0.0], [2.0, 1.0]])
    q = vq(z)
    # nearest codes (0,0) and (2,2): squared errors 0.25 and 1.0 over 4 values -> mean 0.3125
    mse = (0.25 + 1.0) / 4
    assert q.loss.item() == pytest.approx(mse + 0.25 * mse)  # codebook + beta * commitment (same value)
    assert q.perplexity.item() == pytest.approx(2.0)  # two codes, used equally


def test_ema_update_against_a_hand_computation():
    vq = VectorQuantizer(num_codes=2, dim=1, beta=0.25, ema=True, decay=0.5, eps=0.0, dead_threshold=0)
    fixed_codebook(vq, [[0.0], [10.0]])
    vq.train()
    vq(grid([[1.0], [3.0], [9.0]]))  # codes: 0, 0, 1
    # counts: 0.5 * 1 + 0.5 * [2, 1] = [1.5, 1.0]; sums: 0.5 * [0, 10] + 0.5 * [4, 9] = [2, 9.5]
    assert vq.ema_count.tolist() == [1.5, 1.0]
    assert vq.ema_sum.flatten().tolist() == [2.0, 9.5]
    assert vq.codebook.flatten().tolist() == pytest.approx([2 / 1.5, 9.5])


def test_dead_codes_are_restarted_on_encoder_outputs():
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=3, dim=2, ema=True, decay=0.5, dead_threshold=0.1)
    fixed_codebook(vq, [[0, 0], [1, 1], [50, 50]])  # code 2 is never nearest
    vq.train()
    z = grid([[0.1, 0.0], [0.9, 1.0], [0.0, 0.2], [1.0, 0.8]])
    for _ in range(3):  # its count halves each step: 0.5, 0.25, 0.125 (> 0.1): still alive
        vq(z)
    assert vq.codebook[2].tolist() == pytest.approx([50, 50], rel=1e-3)  # (Laplace smoothing moves it a little)
    vq(z)  # 0.0625 < 0.1: restarted onto one of this batch's outputs
    outputs = {tuple(r) for r in z[0, :, 0].t().tolist()}
    assert tuple(vq.codebook[2].tolist()) in outputs and vq.ema_count[2].item() == pytest.approx(0.1)


def test_codebook_starts_from_the_first_batch():
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=4, dim=2, ema=False)  # (with EMA the same step also moves the codes)
    z = torch.randn(2, 2, 3, 3) + 5
    vq.train()
    vq(z)
    rows = {tuple(r) for r in z.permute(0, 2, 3, 1).reshape(-1, 2).tolist()}
    assert all(tuple(c) in rows for c in vq.codebook.tolist())  # every code began on an encoder output
    assert bool(vq.initialized)


def test_quantiser_is_fp32_under_autocast():
    vq = VectorQuantizer(num_codes=4, dim=2)
    vq.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = vq(torch.randn(1, 2, 2, 2).bfloat16())
    assert q.z_q.dtype == torch.float32


# --- PixelCNN ---------------------------------------------------------------------------------------
def test_pixelcnn_output_never_depends_on_later_positions_and_has_no_blind_spot():
    torch.manual_seed(0)
    m = aezoo.create("pixelcnn", input_shape=(6, 6), data_kind="codes", num_codes=5, channels=8, layers=4, kernel=3)
    h, w = 6, 6
    for i, j in [(0, 0), (2, 3), (5, 5), (3, 0)]:
        emb = m.embed(torch.randint(0, 5, (1, h, w))).permute(0, 3, 1, 2).detach().requires_grad_(True)
        v, hh = emb, emb
        for layer in m.layers:
            v, hh = layer(v, hh)
        m.head(hh)[0, :, i, j].sum().backward()
        seen = emb.grad[0].abs().sum(0) > 0
        for a in range(h):
            for b in range(w):
                earlier = a * w + b < i * w + j
                if not earlier:
                    assert not seen[a, b], f"output ({i},{j}) depends on later position ({a},{b})"
        if i >= 1:  # the row above is visible, including to the upper right (no blind spot there)
            assert seen[i - 1, max(0, j - 2) : j + 3].all()
        assert j == 0 or seen[i, max(0, j - 2) : j].all()


def test_pixelcnn_rows_depend_only_on_rows_above():
    """What sampling relies on: the logits of the first r rows are the same whether later rows exist."""
    torch.manual_seed(0)
    m = aezoo.create("pixelcnn", input_shape=(5, 5), data_kind="codes", num_codes=7, channels=8, layers=3)
    x = torch.randint(0, 7, (2, 5, 5))
    with torch.no_grad():
        assert torch.allclose(m.logits(x)[:, :, :3], m.logits(x[:, :3]), atol=1e-6)


def naive_sample(m, n, temperature=1.0):
    """The reference: the whole network on the rows up to the current one, at every position."""
    h, w = m.config.input_shape
    codes = torch.zeros(n, h, w, dtype=torch.long)
    for i in range(h):
        for j in range(w):
            logits = m.logits(codes[:, : i + 1])[:, :, i, j].float() / temperature
            codes[:, i, j] = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(1)
    return codes


@pytest.mark.parametrize("shape,layers,kernel", [((7, 7), 8, 3), ((5, 6), 2, 5), ((12, 4), 3, 3)])
def test_pixelcnn_sample_draws_what_the_naive_method_draws(shape, layers, kernel):
    """Same seed, same samples; the shapes include grids wider and taller than the receptive field."""
    torch.manual_seed(0)
    m = aezoo.create("pixelcnn", input_shape=shape, data_kind="codes", num_codes=16, channels=16, layers=layers,
                     kernel=kernel).eval()
    for p in m.parameters():  # trained-looking weights: peaked, varied distributions
        p.data.mul_(3)
    with torch.no_grad():
        for temperature in (1.0, 0.7):
            torch.manual_seed(1)
            want = naive_sample(m, 64, temperature)
            torch.manual_seed(1)
            assert torch.equal(m.sample(64, temperature), want)
    assert len(want.unique()) > 4  # not a degenerate distribution


def test_pixelcnn_log_prob_is_a_normalised_distribution():
    torch.manual_seed(0)
    m = aezoo.create("pixelcnn", input_shape=(1, 3), data_kind="codes", num_codes=3, channels=4, layers=2, kernel=3)
    m.eval()
    every = torch.cartesian_prod(*[torch.arange(3)] * 3).view(-1, 1, 3)  # all 27 grids
    with torch.no_grad():
        total = torch.logsumexp(m.log_prob(every), 0)
    assert total.item() == pytest.approx(0.0, abs=1e-5)
    codes = m.sample(2000, temperature=1.0)
    # sampled frequencies follow the model's probabilities
    with torch.no_grad():
        p = m.log_prob(every).exp()
    freq = torch.stack([(codes.view(-1, 3) == g.view(3)).all(1).float().mean() for g in every])
    assert (freq - p).abs().max() < 0.05


def test_vqvae_loss_and_gradients():
    m = aezoo.create("vqvae", input_shape=(1, 8, 8), hidden=8, num_codes=16, code_dim=4)
    out = m.loss(Batch(torch.rand(4, 1, 8, 8)), LossStep())
    out.loss.backward()
    assert m.encoder[0].weight.grad.abs().sum() > 0  # reached through the straight-through estimator
    assert 1 <= out.metrics["perplexity"] <= 16
    m.eval()
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(m(x), m.decode_indices(m.code_indices(x)), atol=1e-6)
    with pytest.raises(aezoo.errors.UserError, match="no prior"):
        m.sample(2)


# --- the CLI ----------------------------------------------------------------------------------------
def test_cli_vqvae_then_prior_then_sample(tmp_path):
    vq, prior = tmp_path / "vq", tmp_path / "prior"
    r = run_cli("train", "vqvae", "--data", "digits", "--out", vq, "--epochs", "4", "--set", "hidden=16",
                "--set", "num_codes=32", "--set", "code_dim=4", "--quiet")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["codebook_perplexity"] > 1 and "prior_bits_per_code" not in ev
    r = run_cli("sample", vq, "-n", "4", "--out", tmp_path / "s.png")
    assert r.returncode == 2 and "no prior has been trained" in r.stderr and "--prior-of" in r.stderr
    r = run_cli("train", "pixelcnn", "--prior-of", vq, "--out", prior, "--epochs", "3", "--set", "channels=16",
                "--set", "layers=3", "--quiet")
    assert r.returncode == 0, r.stderr
    pm = json.loads(r.stdout)
    assert pm["prior_bits_per_code"] > 0
    refreshed = json.loads((vq / "eval.json").read_text())
    assert refreshed["prior_bits_per_code"] == pytest.approx(pm["prior_bits_per_code"], rel=1e-4)
    shutil.rmtree(prior)  # the run keeps a copy of its prior (vq/prior/) and needs nothing outside itself
    r = run_cli("sample", vq, "-n", "9", "--out", tmp_path / "s.png", "--temperature", "0.8")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s.png").is_file()
    r = run_cli("interpolate", vq, "--pairs", "2", "--steps", "5", "--out", tmp_path / "i.png")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "pixelcnn", "--data", "digits", "--out", tmp_path / "p2")
    assert r.returncode == 2 and "--prior-of" in r.stderr
    r = run_cli("train", "pixelcnn", "--prior-of", tmp_path / "nothing", "--out", tmp_path / "p3")
    assert r.returncode == 2 and r.stderr.startswith("aezoo: error:")
