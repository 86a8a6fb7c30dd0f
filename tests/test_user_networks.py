"""Your own networks for a model's parts (aezoo.models.parts): by import path from the command line, as
objects from Python; checked at build time; imported from a saved run only when trusted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import aezoo
from aezoo.errors import UserError

from conftest import run_cli_many
from user_nets import Decoder, Encoder

TESTS = Path(__file__).parent
DATA = "digits?limit=64"
SHAPE = [1, 8, 8]
NETS = {  # --set values of tiny user networks (tests/user_nets.py) per family
    "vae": {"latent_dim": 3, "encoder": "user_nets:Encoder", "encoder_kwargs": {"shape": SHAPE, "out": 6},
            "decoder": "user_nets:Decoder", "decoder_kwargs": {"latent": 3, "shape": SHAPE}},
    "vaegan": {"latent_dim": 3, "encoder": "user_nets:Encoder", "encoder_kwargs": {"shape": SHAPE, "out": 6},
               "decoder": "user_nets:Decoder", "decoder_kwargs": {"latent": 3, "shape": SHAPE},
               "discriminator": "user_nets:Discriminator", "discriminator_kwargs": {"shape": SHAPE}},
    "alae": {"latent_dim": 3, "encoder": "user_nets:Encoder", "encoder_kwargs": {"shape": SHAPE, "out": 3},
             "decoder": "user_nets:Decoder", "decoder_kwargs": {"latent": 3, "shape": SHAPE},
             "mapping": "user_nets:Mapping", "mapping_kwargs": {"latent": 3}},
}


@pytest.fixture(autouse=True)
def _user_nets_importable(monkeypatch):
    # as a user's package would be: on the path of the aezoo processes the tests start
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


def sets(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]


def one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("aezoo: error: ") and r.stderr.count("\n") == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.mark.parametrize("name", sorted(NETS))
def test_a_run_with_your_networks_trains_resumes_bit_exactly_evaluates_and_reports(name, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train = ["train", name, "--data", DATA, "--batch-size", "32", "--quiet", *sets(NETS[name])]
    resume = ["train", "--out", part, "--resume", "--epochs", "2", "--quiet"]
    report = [["report", full, "--quiet", "--trust-code"]] if name == "vae" else []  # train writes one too
    r = run_cli_many([*train, "--out", full, "--epochs", "2"], [*train, "--out", part, "--epochs", "1"],
                     resume, [*resume, "--trust-code"],
                     ["eval", full, "--metrics", "recon", "--quiet"],
                     ["eval", full, "--metrics", "recon", "--quiet", "--trust-code"], *report)
    assert [x.returncode for x in r[:2]] == [0, 0], r[0].stderr + r[1].stderr
    one_line_error(r[2], "run.json", "importing it runs code", "--trust-code")
    assert r[3].returncode == 0, r[3].stderr
    a, b = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs"
    saved = json.loads((full / "config.json").read_text())["config"]
    assert {k: saved[k] for k in NETS[name]} == NETS[name]  # import paths and arguments, as given
    one_line_error(r[4], "config.json", "importing it runs code", "trust_code=True", "--trust-code")
    assert r[5].returncode == 0 and "recon" in r[5].stdout, r[5].stderr
    assert all(x.returncode == 0 for x in r[6:]) and (full / "report.html").is_file() and (full / "eval.json").is_file()
    with pytest.raises(UserError, match=f"the encoder is your own network user_nets:Encoder; importing it runs"):
        aezoo.load(full)
    model = aezoo.load(full, trust_code=True)
    assert type(model.encoder).__name__ == "Encoder" and model(torch.rand(2, *SHAPE)).shape == (2, *SHAPE)


def test_a_wrong_network_is_one_line_naming_the_part_and_the_shapes_and_writes_nothing(tmp_path):
    base = ["train", "vae", "--data", DATA, "--epochs", "1", "--quiet", *sets(NETS["vae"])]
    r = run_cli_many([*base, "--set", "encoder=user_nets:WrongEncoder", "--out", tmp_path / "a"],
                     [*base, "--set", "decoder_kwargs={\"latent\": 4, \"shape\": [1, 8, 8]}", "--out", tmp_path / "b"],
                     [*base, "--set", "encoder=user_nets:Nope", "--out", tmp_path / "c"],
                     [*base, "--set", "encoder=no_such_module:Net", "--out", tmp_path / "d"],
                     [*base, "--set", "encoder=user_nets.Encoder", "--out", tmp_path / "e"])
    one_line_error(r[0], "vae encoder (user_nets:WrongEncoder)", "takes (B, 1, 8, 8)", "must return (B, 6)",
                   "returned (B, 3)", "mean and log-variance")
    one_line_error(r[1], "vae decoder (user_nets:Decoder)", "failed on a dummy batch (B, 3)", "mat1 and mat2")
    one_line_error(r[2], "vae encoder", "'user_nets' has no 'Nope'")
    one_line_error(r[3], "vae encoder", "cannot import 'no_such_module'", "PYTHONPATH")
    one_line_error(r[4], "vae encoder", "not an import path 'module:Name'")
    assert not [p for p in "abcde" if (tmp_path / p).exists()]  # nothing written
    with pytest.raises(UserError, match=r"alae discriminator \(user_nets:Mapping\): takes \(B, 3\) and must return "
                                        r"\(B, 1\)"):
        aezoo.create("alae", input_shape=SHAPE, latent_dim=3, discriminator="user_nets:Mapping",
                     discriminator_kwargs={"latent": 3})
    with pytest.raises(UserError, match="use arch=conv"):
        aezoo.create("dae", input_shape=SHAPE, encoder=Encoder(SHAPE, 32))  # arch=skip's networks cannot be replaced


def test_networks_given_as_objects_train_save_and_load_again_when_given_again(tmp_path):
    data = aezoo.data.load(DATA)
    model = aezoo.create("vae", seed=0, input_shape=SHAPE, latent_dim=3, encoder=Encoder(SHAPE, 6),
                         decoder=Decoder(3, SHAPE))
    assert model.config.encoder == "python-object:user_nets:Encoder"
    aezoo.Trainer(model, data, aezoo.TrainConfig(max_steps=3, batch_size=32, progress=False), tmp_path / "run").fit()
    with pytest.raises(UserError, match=r"the encoder was given as a Python object \(user_nets:Encoder\) and cannot be "
                                        r"rebuilt from the config; load it in Python with aezoo.load\(RUN, encoder=...\)"):
        aezoo.load(tmp_path / "run", trust_code=True)
    again = aezoo.load(tmp_path / "run", encoder=Encoder(SHAPE, 6), decoder=Decoder(3, SHAPE))  # no import: no trust
    x = data.test.x[:4]
    assert torch.equal(again(x), model.eval()(x))
    with pytest.raises(UserError, match="has no part 'encodr'"):
        aezoo.load(tmp_path / "run", encodr=Encoder(SHAPE, 6))
    with pytest.raises(UserError, match="does not match|do not match"):
        aezoo.load(tmp_path / "run", encoder=Encoder(SHAPE, 6, width=8), decoder=Decoder(3, SHAPE))
    # a class is recorded by its import path: the run reloads by itself (trusted)
    by_class = aezoo.create("vae", seed=0, input_shape=SHAPE, latent_dim=3, encoder=Encoder,
                            encoder_kwargs={"shape": SHAPE, "out": 6}, decoder="user_nets:Decoder",
                            decoder_kwargs={"latent": 3, "shape": SHAPE})
    assert by_class.config.encoder == "user_nets:Encoder"
    aezoo.save(by_class, tmp_path / "saved")
    assert torch.equal(aezoo.load(tmp_path / "saved", trust_code=True)(x), by_class.eval()(x))


class NoisyEncoder(Encoder):
    """Batch norm (its running statistics move in train mode) and noise drawn in every forward pass."""

    def __init__(self):
        super().__init__(SHAPE, 6)
        self.norm = torch.nn.BatchNorm1d(6)

    def forward(self, x):
        h = self.norm(super().forward(x))
        return h + 0 * torch.randn_like(h)


def test_the_dry_run_leaves_the_weights_and_random_streams_as_they_were():
    torch.manual_seed(5)
    enc, dec = NoisyEncoder(), Decoder(3, SHAPE)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    state = torch.get_rng_state()
    enc.train()
    aezoo.create("vae", input_shape=SHAPE, latent_dim=3, encoder=enc, decoder=dec)
    assert torch.equal(torch.get_rng_state(), state) and enc.training
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
