"""The same checks for every registered model, on tiny configs."""

import pytest
import torch

import aezoo
from aezoo.errors import UserError
from aezoo.outputs import Batch

# A tiny config for each registered model; a model without one fails test_every_model_has_a_tiny_config.
TINY = {
    "ae": [dict(widths=[16], latent_dim=3), dict(arch="conv", channels=[4, 8], latent_dim=3)],
    "dae": [dict(channels=[4, 8], latent_dim=3), dict(arch="fullconv", channels=[4, 8], latent_dim=3),
            dict(arch="skip", channels=[4, 8], latent_dim=3), dict(arch="mlp", widths=[16], latent_dim=3, corruption="masking:0.3"),
            dict(channels=[4, 8], latent_dim=3, corruption="boxes:0.3")],
    "vqvae": [dict(hidden=8, num_codes=16, code_dim=4), dict(hidden=8, num_codes=16, code_dim=4, ema=False,
                                                             likelihood="bernoulli")],
    "hash": [dict(widths=[16], bits=8), dict(arch="conv", channels=[4, 8], bits=16)],
    "vae": [dict(widths=[16], latent_dim=3), dict(arch="conv", channels=[4, 8], latent_dim=3, likelihood="logistic"),
            dict(widths=[16], latent_dim=3, likelihood="gaussian", learned_variance=True),
            dict(widths=[16], latent_dim=3, iw_samples=4, kl_warmup_steps=10)],
}
SHAPE = (1, 8, 8)
CASES = [(name, i) for name, cfgs in TINY.items() for i in range(len(cfgs))]


def make(name, i, seed=0):
    torch.manual_seed(seed)
    return aezoo.create(name, input_shape=SHAPE, **TINY[name][i])


PRIORS = ["pixelcnn"]  # models of code grids, not autoencoders of items: tests/test_vqvae.py


def test_every_model_has_a_tiny_config():
    assert sorted([*TINY, *PRIORS]) == aezoo.list_models()


@pytest.mark.parametrize("name,i", CASES)
def test_shapes(name, i):
    m = make(name, i)
    x = torch.rand(5, *SHAPE)
    enc = m.encode(x)
    assert enc.z.shape[0] == 5
    if m.decodes_codes:
        assert m.decode(enc.z).shape == x.shape
    else:
        with pytest.raises(UserError, match="skip features"):
            m.decode(enc.z)
    assert m(x).shape == x.shape


@pytest.mark.parametrize("name,i", CASES)
def test_loss_finite_and_every_phase_trains_its_parameters(name, i):
    m = make(name, i)
    batch = Batch(torch.rand(6, *SHAPE), torch.zeros(6, dtype=torch.long))
    for phase in m.phases:
        m.zero_grad()
        out = m.loss(batch, phase, step=0)
        assert out.loss.dim() == 0 and torch.isfinite(out.loss)
        out.loss.backward()
        params = list(m.phase_parameters(phase))
        assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
        assert any(p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("name,i", CASES)
def test_save_load_round_trip(name, i, tmp_path):
    m = make(name, i)
    x = torch.rand(4, *SHAPE)
    aezoo.save(m, tmp_path / "run")
    m2 = aezoo.load(tmp_path / "run")
    assert type(m2) is type(m) and m2.config == m.config
    m.eval(), m2.eval()
    assert torch.equal(m(x), m2(x))


# A model as an earlier version saved it: the settings it had, and the config keys it did not know yet.
LEGACY = [
    ("ae", dict(input_shape=SHAPE, widths=[16], latent_dim=3, norm="none"), ["norm"], {"norm": "batch"}),
    ("hash", dict(input_shape=(30,), data_kind="text", bits=16, widths=[20], text_input="counts", whiten=False,
                  balance=False, decoder_widths=None, neighbours=0),
     ["whiten", "text_input", "balance", "decoder_widths", "neighbours"], {"whiten": True, "balance": True}),
]


@pytest.mark.parametrize("name,settings,absent,other", LEGACY, ids=[case[0] for case in LEGACY])
def test_a_model_saved_before_later_fields_existed_loads_as_it_was_trained(name, settings, absent, other,
                                                                           tmp_path):
    """Absent keys take the value the earlier version used (Config.LEGACY_DEFAULTS), not today's default,
    which would build a model (batch norm, a whitened code layer) that the saved weights do not fit."""
    import json

    torch.manual_seed(0)
    old = aezoo.create(name, **settings).eval()
    aezoo.save(old, tmp_path)
    path = tmp_path / "config.json"
    meta = json.loads(path.read_text())
    for key in absent:
        del meta["config"][key]
    path.write_text(json.dumps(meta))
    loaded = aezoo.load(tmp_path)
    assert all(getattr(loaded.config, key) == getattr(old.config, key) for key in absent)
    x = torch.rand(5, *settings["input_shape"])
    assert torch.equal(loaded.encode(x).z, old.encode(x).z)
    # a key that is present keeps its saved value, even where it differs from the legacy one
    meta["config"].update(other)
    path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="weights do not match"):
        aezoo.load(tmp_path)


@pytest.mark.parametrize("name,i", CASES)
def test_load_rejects_weights_of_another_config(name, i, tmp_path):
    aezoo.save(make(name, i), tmp_path / "a")
    key = next(k for k in ("latent_dim", "bits", "num_codes") if k in TINY[name][i])
    other = dict(TINY[name][i], **{key: TINY[name][i][key] + 8})
    aezoo.save(aezoo.create(name, input_shape=SHAPE, **other), tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(UserError, match="do not match"):
        aezoo.load(tmp_path / "a")


@pytest.mark.parametrize("name,i", CASES)
def test_training_is_deterministic_under_a_seed(name, i, tmp_path, digits):
    finals = []
    for run in range(2):
        m = make(name, i, seed=run)  # a different init RNG state must not matter: the trainer reseeds
        cfg = aezoo.TrainConfig(epochs=1, batch_size=64, seed=3, progress=False, checkpoint_every=0)
        aezoo.Trainer(m, digits, cfg, tmp_path / f"r{run}").fit()
        finals.append({k: v.clone() for k, v in m.state_dict().items()})
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
