"""Model kinds: every family is an Autoencoder, a Prior or a Restorer (a dae is both an autoencoder and a
restorer), and every capability it declares names a method that works on it. The restoration commands
refuse a run of the wrong kind in one line."""

from importlib.resources import files

import pytest
import torch
from PIL import Image

from aezoo.errors import UserError
from aezoo.models.base import Autoencoder, Prior, Restorer
from conftest import run_cli_many
from test_contract import CASES, IDS, datasets, make  # noqa: F401  (datasets: the shared fixture)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_declared_capabilities_work(case, datasets):  # noqa: F811
    data = datasets[case[2]]
    model = make(case, data).eval()
    x = data.test.x[:4]
    assert isinstance(model, (Autoencoder, Prior, Restorer))
    assert not (isinstance(model, Prior) and isinstance(model, (Autoencoder, Restorer)))
    with torch.no_grad():
        if isinstance(model, Autoencoder):
            z = model.encode(x).z
            assert len(z) == 4 and torch.isfinite(z).all()
            if model.decodes_codes:
                assert model.decode(z).shape == x.shape
            if model.can_sample:
                assert model.sample(3).shape == (3, *data.shape)
            if model.has_likelihood:
                w = model.log_importance_weights(x, 2)
                assert w.shape == (2, 4) and torch.isfinite(w).all()
            if model.discrete_codes:
                idx = model.code_indices(x)
                assert not idx.dtype.is_floating_point and 0 <= idx.min() and idx.max() < model.config.num_codes
            if model.binary_codes:
                bits, cont = model.codes(x)
                assert set(bits.unique().tolist()) <= {0.0, 1.0} and bits.shape == cont.shape
            if model.latent_groups:
                assert model.reconstruct_groups(x, 1).shape == x.shape
            if model.traversal_dims:
                assert model.decode(torch.zeros(2, model.traversal_dims)).shape == (2, *data.shape)
        else:
            assert not hasattr(model, "encode")  # a kind has only the methods it declares
        if isinstance(model, Restorer):
            noisy, hole = model.corruption(x)
            assert model.restore(noisy, hole).shape == x.shape
            if model.takes_sigma:
                assert model.restore(noisy, hole, sigma=0.1).shape == x.shape
            else:
                with pytest.raises(UserError, match="not told the noise level"):
                    model.restore(noisy, hole, sigma=0.1)
        if isinstance(model, Prior):
            assert model.log_prob(x).shape == (4,)
            assert model.sample(2).shape == (2, *data.shape)


def test_restoration_commands_refuse_the_wrong_kind_of_run(tmp_path):
    shipped = files("aezoo") / "weights"
    denoiser, inpainter = str(shipped / "photo-denoise"), str(shipped / "photo-inpaint")
    picture = tmp_path / "p.png"
    Image.new("L", (20, 16), 128).save(picture)
    results = run_cli_many(
        ["inpaint", denoiser, picture, "--box", "2,2,4,4", "--out", tmp_path / "a.png"],
        ["denoise", inpainter, picture, "--out", tmp_path / "b.png"],
        ["sample", denoiser, "--out", tmp_path / "c.png"],
    )
    wants = ["trained to denoise", "trained to inpaint", "restoration model, which does not sample"]
    for r, want in zip(results, wants):
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("aezoo: error: ") and r.stderr.count("\n") == 1 and want in r.stderr, r.stderr
    assert not any(tmp_path.glob("[abc].png"))
