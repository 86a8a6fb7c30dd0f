import pytest

import aezoo
from aezoo.config import apply_overrides, from_dict, to_dict
from aezoo.errors import UserError
from aezoo.models.ae import AEConfig
from aezoo.train import TrainConfig


def test_overrides_parse_and_check_types():
    c = apply_overrides(AEConfig(), ["widths=[512,256]", "latent_dim=7", "arch=conv", "activation=gelu"])
    assert c.widths == (512, 256) and c.latent_dim == 7 and c.arch == "conv" and c.activation == "gelu"
    t = apply_overrides(TrainConfig(), ["lr=3", "grad_clip=null", "epochs=null", "max_minutes=2"])
    assert t.lr == 3.0 and isinstance(t.lr, float) and t.grad_clip is None and t.epochs is None


@pytest.mark.parametrize("item,message", [
    ("latent_dim=1.5", "must be an integer"),
    ("arch=rnn", "must be one of"),
    ("widths=12", "must be a list"),
    ("latnt_dim=3", "did you mean 'latent_dim'"),
    ("latent_dim", "KEY=VALUE"),
    ("latent_dim=0", "at least 1"),
    ("widths.x=1", "no sub-keys"),
])
def test_bad_overrides(item, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(AEConfig(), [item])


def test_json_round_trip():
    c = AEConfig(widths=(3, 2), input_shape=(5,), data_kind="vector")
    assert from_dict(AEConfig, to_dict(c)) == c
    with pytest.raises(UserError, match="unknown"):
        from_dict(AEConfig, {"nope": 1})


def test_create_with_preset_and_unknown_model():
    m = aezoo.create("ae", preset="hinton2006")
    sizes = [l.out_features for l in m.encoder if hasattr(l, "out_features")]
    assert sizes == [1000, 500, 250, 30] and m.config.likelihood == "bernoulli"
    with pytest.raises(UserError, match="no preset"):
        aezoo.create("ae", preset="nope")
    with pytest.raises(UserError, match="unknown model"):
        aezoo.create("vea")


def test_a_config_is_validated_after_its_preset_and_overrides():
    """The dae default (arch=skip) needs images; vector data with --set arch=mlp is a valid whole."""
    from aezoo.data import Dataset, Split
    from aezoo.apps.runs import build
    import torch

    x = Split(torch.rand(40, 6))
    vectors = Dataset("csv:t.csv", "vector", x, x, x)
    m = build("dae", vectors, None, ["arch=mlp", "widths=[8]", "latent_dim=2", "corruption=gaussian:0.1"])
    assert m.config.arch == "mlp" and m.config.input_shape == (6,)
    with pytest.raises(UserError, match="needs image data"):
        build("dae", vectors, None, ["widths=[8]"])
    # a preset's value can be overridden before the check: inpaint (boxes) then gaussian noise on vectors
    m = build("dae", vectors, "inpaint", ["arch=mlp", "corruption=gaussian:0.1"])
    assert m.config.latent_dim == 128 and m.config.arch == "mlp"
