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


def test_the_training_config_holds_the_one_learning_rate_and_earlier_saves_with_a_model_lr_still_load(tmp_path):
    """lr left the model configs (acai, alae, vaegan, nvae): --lr / train.lr is the one knob; a family keeps
    its paper's rate as its optimizers' default, a preset's own rate sits under its "train" key, and a
    saved config.json or run of an earlier version that still has "lr" loads (a resume keeps that rate)."""
    import json

    import torch

    from aezoo.apps.runs import train_run
    from aezoo.models.base import train_defaults
    from aezoo.registry import get

    tiny = dict(depth=4, scales=2, latent_dim=3)
    with pytest.raises(UserError, match="unknown acai config key 'lr'"):
        aezoo.create("acai", input_shape=(1, 8, 8), lr=1e-4, **tiny)
    assert train_defaults(get("acai"), "berthelot2019") == {"lr": 1e-4} and train_defaults(get("acai"), None) == {}
    assert "train" not in to_dict(aezoo.make_config(get("acai"), "berthelot2019"))
    m = aezoo.create("acai", input_shape=(1, 8, 8), seed=0, **tiny)
    aezoo.save(m, tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    meta["config"]["lr"] = 1e-4  # as an earlier version wrote it
    (tmp_path / "model" / "config.json").write_text(json.dumps(meta))
    loaded = aezoo.load(tmp_path / "model")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), loaded.state_dict().values()))
    # a run: the preset's rate becomes train.lr; an earlier run's model lr is resumed as train.lr
    out = tmp_path / "run"
    train_run("acai", "digits?limit=64", str(out), preset="berthelot2019", model_overrides=["scales=2"],
              train_overrides={"epochs": 1, "batch_size": 32}, progress=False, eval_options={"metrics": []})
    run = json.loads((out / "run.json").read_text())
    assert run["train"]["lr"] == 1e-4 and run["optimizers"]["critic"]["lr"] == 1e-4
    run["train"]["lr"], run["model_config"]["lr"] = None, 2e-4
    (out / "run.json").write_text(json.dumps(run))
    train_run(None, None, str(out), resume=True, train_overrides={"epochs": 2}, progress=False,
              eval_options={"metrics": []})
    run = json.loads((out / "run.json").read_text())
    assert run["train"]["lr"] == 2e-4 and run["optimizers"]["autoencoder"]["lr"] == 2e-4
    # the resumed run keeps its preset, in run.json and in the saved model
    assert run["preset"] == "berthelot2019" and aezoo.load(out).preset == "berthelot2019"


def test_a_library_trainer_gets_the_family_and_preset_training_settings_unless_given_a_config(tmp_path):
    """aezoo.train_config(model) is what `aezoo train` would use: the family's schedule, then the preset's
    learning rate, then the caller's fields; Trainer(model, data) without a config uses it; a TrainConfig
    built by hand is used as it is."""
    import json

    import torch

    from aezoo.data import Dataset, Split

    tiny = dict(depth=4, scales=2, latent_dim=3)
    acai = aezoo.create("acai", preset="berthelot2019", input_shape=(1, 8, 8), **tiny)
    assert acai.preset == "berthelot2019" and aezoo.train_config(acai).lr == 1e-4
    assert aezoo.train_config(acai, lr=3e-4, epochs=2).lr == 3e-4
    assert aezoo.train_config(aezoo.create("acai", input_shape=(1, 8, 8), **tiny)).lr is None
    nvae = aezoo.train_config(aezoo.create("nvae", input_shape=(1, 8, 8)), batch_size=16)
    assert (nvae.schedule, nvae.warmup_steps, nvae.min_lr_ratio, nvae.batch_size) == ("cosine", 200, 0.01, 16)
    with pytest.raises(UserError, match="unknown train config key 'learning_rate'"):
        aezoo.train_config(acai, learning_rate=1e-3)
    with pytest.raises(UserError, match="epochs"):
        aezoo.train_config(acai, epochs=0)
    x = torch.rand(128, 1, 8, 8)
    data = Dataset("tensors", "image", Split(x), Split(x[:32]), Split(x[:32]))
    assert aezoo.Trainer(acai, data, run_dir=None).config == aezoo.train_config(acai)
    assert aezoo.Trainer(acai, data, aezoo.TrainConfig(epochs=1), run_dir=None).config.lr is None
    # a saved model keeps its preset, so its training settings follow it
    aezoo.save(acai, tmp_path / "acai")
    assert aezoo.train_config(aezoo.load(tmp_path / "acai")).lr == 1e-4
    meta = json.loads((tmp_path / "acai" / "config.json").read_text())
    # a preset the family no longer has (renamed by a later version) is dropped: the model still loads;
    # a value that is no name at all is one line
    (tmp_path / "acai" / "config.json").write_text(json.dumps({**meta, "preset": "renamed"}))
    assert aezoo.load(tmp_path / "acai").preset is None
    (tmp_path / "acai" / "config.json").write_text(json.dumps({**meta, "preset": ["berthelot2019"]}))
    with pytest.raises(UserError, match="preset must be a preset's name"):
        aezoo.load(tmp_path / "acai")
