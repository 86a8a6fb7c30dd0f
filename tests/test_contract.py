"""The same checks for every registered model, on tiny configs and on every kind of data it takes:
images, vectors, text, code grids. Autoencoders and priors share the training contract; each kind then
has its own checks."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import aezoo
from aezoo.data import Dataset, Split
from aezoo.errors import TrainingDiverged, UserError
from aezoo.models.base import Autoencoder, Prior, Restorer
from aezoo.outputs import Batch
from aezoo.train.trainer import StepRunner

SLICE = Path(__file__).parent / "data" / "debian_slice.jsonl.gz"

# (model, tiny config, data); a registered model without a case fails test_every_model_has_a_case.
CASES = [
    ("ae", dict(widths=[16], latent_dim=3), "image"),
    ("ae", dict(arch="conv", channels=[4, 8], latent_dim=3), "image"),
    ("ae", dict(widths=[16], latent_dim=3), "vector"),
    ("dae", dict(channels=[4, 8], latent_dim=3), "image"),
    ("dae", dict(arch="fullconv", channels=[4, 8], latent_dim=3), "image"),
    ("dae", dict(arch="mlp", widths=[16], latent_dim=3, corruption="masking:0.3"), "image"),
    ("dae", dict(channels=[4, 8], latent_dim=3, corruption="boxes:0.3"), "image"),
    ("dae", dict(arch="mlp", widths=[16], latent_dim=3, corruption="gaussian:0.1"), "vector"),
    ("vqvae", dict(hidden=8, num_codes=16, code_dim=4), "image"),
    ("vqvae", dict(hidden=8, num_codes=16, code_dim=4, ema=False, likelihood="bernoulli"), "image"),
    ("hash", dict(widths=[16], bits=8), "image"),
    ("hash", dict(arch="conv", channels=[4, 8], bits=16), "image"),
    ("hash", dict(bits=8, neighbours=3), "text"),  # TF-IDF and neighbour tables from prepare()
    ("hash", dict(widths=[16], bits=32), "vector"),
    ("vae", dict(widths=[16], latent_dim=3), "image"),
    ("vae", dict(arch="conv", channels=[4, 8], latent_dim=3, likelihood="logistic"), "image"),
    ("vae", dict(widths=[16], latent_dim=3, learned_variance=True), "vector"),
    ("vae", dict(widths=[16], latent_dim=3, iw_samples=4, kl_warmup_steps=10), "image"),
    ("vaegan", dict(channels=[4, 8], hidden=16, latent_dim=3, decoder_channels=[8, 4], dis_channels=[4, 8, 8],
                    dis_hidden=8), "image"),
    ("acai", dict(depth=4, scales=2, latent_dim=3), "image"),
    ("alae", dict(widths=[16], latent_dim=3, mapping_layers=2), "image"),
    ("alae", dict(widths=[16], latent_dim=3, mapping_layers=2), "vector"),
    ("alae", dict(arch="style", channels=[8, 4], latent_dim=3, mapping_layers=2), "image"),
    ("nvae", dict(channels=4, pre_blocks=1, scales=2, groups_per_scale=1, latent_channels=3, expand=2,
                  bn_samples=20, kl_warmup=0), "image"),
    ("nvae", dict(channels=4, pre_blocks=1, pre_cells=1, scales=2, groups_per_scale=2, latent_channels=2,
                  expand=2, likelihood="logistic_mixture", mixtures=2, bn_samples=20, kl_warmup=0), "image"),
    ("photo", dict(depth=3, width=4), "image"),
    ("photo", dict(depth=3, width=4, task="inpaint", batch_norm=False), "image"),
    # your own networks (tests/user_nets.py, by import path): an autoencoder, a restorer, two multi-optimizer models
    ("vae", dict(latent_dim=3, encoder="user_nets:Encoder", encoder_kwargs=dict(shape=[1, 8, 8], out=6),
                 decoder="user_nets:Decoder", decoder_kwargs=dict(latent=3, shape=[1, 8, 8])), "image"),
    ("dae", dict(arch="mlp", latent_dim=3, corruption="boxes:0.3", encoder="user_nets:Encoder",
                 encoder_kwargs=dict(shape=[2, 8, 8], out=3), decoder="user_nets:Decoder",
                 decoder_kwargs=dict(latent=3, shape=[1, 8, 8])), "image"),
    ("vaegan", dict(latent_dim=3, encoder="user_nets:Encoder", encoder_kwargs=dict(shape=[1, 8, 8], out=6),
                    decoder="user_nets:Decoder", decoder_kwargs=dict(latent=3, shape=[1, 8, 8]),
                    discriminator="user_nets:Discriminator", discriminator_kwargs=dict(shape=[1, 8, 8])), "image"),
    ("alae", dict(latent_dim=3, encoder="user_nets:Encoder", encoder_kwargs=dict(shape=[1, 8, 8], out=3),
                  decoder="user_nets:Decoder", decoder_kwargs=dict(latent=3, shape=[1, 8, 8]),
                  mapping="user_nets:Mapping", mapping_kwargs=dict(latent=3),
                  discriminator="user_nets:Decoder", discriminator_kwargs=dict(latent=3, shape=[1])), "image"),
    ("pixelcnn", dict(num_codes=16, channels=8, layers=2), "codes"),
]
IDS = [f"{name}-{i}-{kind}" for i, (name, _, kind) in enumerate(CASES)]
AUTOENCODERS = [c for c in CASES if c[0] != "pixelcnn"]
AE_IDS = [i for i, c in zip(IDS, CASES) if c[0] != "pixelcnn"]


@pytest.fixture(scope="session")
def datasets(digits):
    g = torch.Generator().manual_seed(0)

    def vectors(split):  # the digits as plain vectors, standardised
        x = split.x.flatten(1)
        return Split((x - 0.3) / 0.3, split.y)

    codes = {n: Split(torch.randint(0, 16, (m, 4, 4), generator=g).float()) for n, m in
             (("train", 256), ("val", 64), ("test", 64))}
    return {
        "image": digits,
        "vector": Dataset("vectors", "vector", vectors(digits.train), vectors(digits.val), vectors(digits.test)),
        "text": aezoo.data.load(f"text:{SLICE}?vocab=300"),
        "codes": Dataset("codes", "codes", codes["train"], codes["val"], codes["test"]),
    }


def make(case, data, seed=0):
    name, config, _ = case
    return aezoo.create(name, seed=seed, input_shape=list(data.shape), data_kind=data.kind,
                        vocabulary=list(data.meta.get("vocabulary", ())), **config)


def load(run):
    """A saved model; a case with your own networks imports them (tests/user_nets.py), so it is trusted."""
    return aezoo.load(run, trust_code=True)


def declared(model):
    """{optimizer name: [parameters]} as the model declares them."""
    out = {}
    for name, spec in model.optimizers().items():
        params = []
        for g in spec.params:
            params += list(g["params"]) if isinstance(g, dict) else [g]
        out[name] = params
    return out


class RecordingStep:
    """A StepContext outside the trainer: backward into the named optimizers' parameters, no updates."""

    def __init__(self, model, training=True):
        self.groups = declared(model)
        self.training, self.step_index, self.total_steps, self.progress = training, 0, 100, 0.0
        self.losses = []

    def backward(self, loss, *names, retain_graph=False):
        self.losses.append(float(loss.detach()))
        if self.training:
            params = [p for n in (names or self.groups) for p in self.groups[n]]
            torch.autograd.backward(loss, inputs=params, retain_graph=retain_graph)

    def step(self, *names):
        pass

    def mean(self, value):
        return value


def first_batch(data, n=32):
    return Batch(data.train.x[:n], None if data.train.y is None else data.train.y[:n], torch.arange(n))


def weights(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def train_cfg(**kw):
    return aezoo.TrainConfig(**{**dict(epochs=1, batch_size=64, seed=3, progress=False, checkpoint_every=0,
                                       log_every=5), **kw})


def test_every_model_has_a_case():
    assert sorted({c[0] for c in CASES}) == aezoo.list_models()


# --- the training contract: every model ----------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_seed_fixes_the_initial_weights(case, datasets):
    data = datasets[case[2]]
    a, b, c = make(case, data, 1), make(case, data, 1), make(case, data, 2)
    wa, wb, wc = weights(a), weights(b), weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_parameter_is_reached_by_exactly_one_optimizer(case, datasets):
    m = make(case, datasets[case[2]])
    seen = [id(p) for params in declared(m).values() for p in params]
    assert len(seen) == len(set(seen)), "a parameter is declared in two optimizers"
    assert set(seen) == {id(p) for p in m.parameters() if p.requires_grad}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_step_gives_finite_losses_and_gradients_for_every_parameter(case, precision, datasets):
    data = datasets[case[2]]
    m = make(case, data).train()
    m.prepare(data.train)
    ctx = RecordingStep(m)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with autocast:
        metrics = m.training_step(first_batch(data), ctx)
    assert ctx.losses and all(math.isfinite(v) for v in ctx.losses)
    assert metrics and all(math.isfinite(float(v)) for v in metrics.values())
    for name, params in ctx.groups.items():
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params), name
        assert any(p.grad.abs().sum() > 0 for p in params), name


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_loss_reaches_only_the_optimizers_it_is_routed_to(case, datasets, monkeypatch):
    """One step through the trainer's own StepRunner, watched call by call. Each ctx.backward(loss, *names)
    adds to the named optimizers' parameters exactly that loss's gradient, and to no other parameter
    anything; each ctx.step(*names) finds in .grad exactly the losses routed to those optimizers since
    their last update (nothing writes .grad behind the context's back), updates them only, and has some
    gradient to apply; every optimizer gets a gradient and an update, and none is left with a gradient
    it never applied. (Summing every backward into .grad, as RecordingStep does, cannot see any of this.)"""
    data = datasets[case[2]]
    data = dataclasses.replace(data, train=data.train.head(32), val=data.val.head(32))  # one step of 32
    m = make(case, data)
    groups = {n: [p for p in ps if p.requires_grad] for n, ps in declared(m).items()}
    owner = [n for n, ps in groups.items() for _ in ps]
    params = [p for ps in groups.values() for p in ps]
    routed = [None] * len(params)  # per parameter: the gradients routed to it since its optimizer's update
    reached, updated = set(), set()
    backward, step = StepRunner.backward, StepRunner.step

    def close(a, b):  # None: no gradient, the same as zeros
        if a is None or b is None:
            return (a is None or not a.any()) and (b is None or not b.any())
        return torch.allclose(a, b, rtol=1e-4, atol=1e-6)

    def grads_are_routed(when):
        for i, p in enumerate(params):
            assert close(p.grad, routed[i]), f"{owner[i]}'s .grad is not the losses routed to it, {when}"

    def watched_backward(self, loss, *names, retain_graph=False):
        if not self.training:
            return backward(self, loss, *names, retain_graph=retain_graph)
        to = names or tuple(groups)
        grads_are_routed("before a backward")
        own = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        before = [None if p.grad is None else p.grad.clone() for p in params]
        backward(self, loss, *names, retain_graph=retain_graph)
        for i, (p, b, g) in enumerate(zip(params, before, own)):
            if owner[i] in to:
                want = g if b is None else b if g is None else b + g
                assert close(p.grad, want), f"a loss routed to {to} did not add its gradient to {owner[i]}"
                routed[i] = want
            else:
                assert (p.grad is None and b is None) or torch.equal(p.grad, b), \
                    f"a loss routed to {to} changed the gradient of optimizer {owner[i]}"
        for n in to:
            assert any(g is not None and g.any() for g, o in zip(own, owner) if o == n), \
                f"a loss is routed to {n} but does not reach its parameters"
            reached.add(n)

    def watched_step(self, *names):
        if not self.training:
            return step(self, *names)
        to = names or tuple(groups)
        grads_are_routed("when stepped")
        for n in to:
            assert any(r is not None and r.any() for r, o in zip(routed, owner) if o == n), \
                f"optimizer {n} is stepped with no gradient routed to it"
        before = [p.detach().clone() for p in params]
        step(self, *names)
        for i, (p, b) in enumerate(zip(params, before)):
            if owner[i] in to:
                routed[i] = None  # applied, and zeroed by the step
            else:
                assert torch.equal(p.detach(), b), f"ctx.step{to} moved the parameters of {owner[i]}"
        updated.update(to)

    monkeypatch.setattr(StepRunner, "backward", watched_backward)
    monkeypatch.setattr(StepRunner, "step", watched_step)
    aezoo.Trainer(m, data, train_cfg(batch_size=32), None).fit()
    assert reached == updated == set(groups)
    left = {o for r, o in zip(routed, owner) if r is not None and r.any()}
    assert not left, f"gradients routed to {left} were never applied"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_validation_step_changes_nothing(case, datasets):
    data = datasets[case[2]]
    m = make(case, data).eval()
    m.prepare(data.train)
    before = weights(m)
    metrics = m.validation_step(first_batch(data), RecordingStep(m, training=False))
    assert metrics and all(math.isfinite(float(v)) for v in metrics.values())
    assert all(p.grad is None for p in m.parameters())
    after = weights(m)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_training_is_deterministic_and_resume_reproduces_it(case, datasets, tmp_path):
    data = datasets[case[2]]
    full = make(case, data)
    aezoo.Trainer(full, data, train_cfg(epochs=2), tmp_path / "full").fit()
    again = make(case, data)
    aezoo.Trainer(again, data, train_cfg(epochs=2), tmp_path / "again").fit()
    a, b = weights(full), weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a), "two runs under one seed differ"
    # interrupted after its first epoch, then resumed in a fresh process-like state
    part = make(case, data)
    aezoo.Trainer(part, data, train_cfg(epochs=1), tmp_path / "part").fit()
    torch.manual_seed(1234)
    resumed = make(case, data, seed=99)  # the checkpoint must restore everything
    aezoo.Trainer(resumed, data, train_cfg(epochs=2), tmp_path / "part").fit(resume=True)
    c = weights(resumed)
    assert all(torch.equal(a[k], c[k]) for k in a), "resume differs from the uninterrupted run"
    assert any(not torch.equal(a[k], weights(make(case, data))[k]) for k in a), "training changed nothing"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_non_finite_loss_in_any_optimizer_stops_the_run_and_resume_goes_on(case, datasets, tmp_path, monkeypatch):
    """A NaN injected into the loss of each optimizer in turn, at step 3: the run stops naming it, the
    checkpoint of step 2 stays, and resuming from it (the last optimizer's run) finishes the epoch."""
    data = datasets[case[2]]
    names = list(make(case, data).optimizers())
    backward = StepRunner.backward
    cfg = train_cfg(epochs=1, batch_size=32, checkpoint_every=2)
    for target in names:
        def poisoned(self, loss, *opts, retain_graph=False):
            if self.step_index == 3 and target in (opts or names):
                loss = loss * float("nan")
            return backward(self, loss, *opts, retain_graph=retain_graph)

        monkeypatch.setattr(StepRunner, "backward", poisoned)
        run = tmp_path / target
        with pytest.raises(TrainingDiverged, match=rf"loss became nan at step 3 \(optimizer .*{target}.*last good checkpoint"):
            aezoo.Trainer(make(case, data), data, cfg, run).fit()
    monkeypatch.setattr(StepRunner, "backward", backward)
    res = aezoo.Trainer(make(case, data, seed=5), data, cfg, run).fit(resume=True)  # the last one's run
    assert res.step == len(data.train.x) // 32 and res.epoch == 1
    assert all(torch.isfinite(v).all() for v in weights(load(run)).values() if v.is_floating_point())


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_save_load_round_trip(case, datasets, tmp_path):
    data = datasets[case[2]]
    m = make(case, data).eval()
    m.prepare(data.train)
    aezoo.save(m, tmp_path / "run")
    m2 = load(tmp_path / "run")
    assert type(m2) is type(m) and m2.config == m.config
    x = data.test.x[:4]
    if isinstance(m, Prior):
        assert torch.equal(m.log_prob(x), m2.log_prob(x))
    else:
        assert torch.equal(m(x), m2(x))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_load_rejects_weights_of_another_config(case, datasets, tmp_path):
    name, config, kind = case
    data = datasets[kind]
    aezoo.save(make(case, data), tmp_path / "a")
    key = next(k for k in ("latent_dim", "bits", "num_codes", "latent_channels", "width") if k in config)
    other = (name, dict(config, **{key: config[key] + 8}), kind)
    if "encoder" in config:  # your own networks are built for their latent_dim: a wider encoder instead
        other = (name, dict(config, encoder_kwargs=dict(config["encoder_kwargs"], width=24)), kind)
    aezoo.save(make(other, data), tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(UserError, match="do not match"):
        load(tmp_path / "a")


def test_a_model_of_another_format_version_is_refused(tmp_path, datasets):
    aezoo.save(make(CASES[0], datasets["image"]), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["format"] = "aezoo-model/1"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="incompatible aezoo version .model format aezoo-model/1"):
        aezoo.load(tmp_path)


# --- autoencoders ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", AUTOENCODERS, ids=AE_IDS)
def test_shapes(case, datasets):
    data = datasets[case[2]]
    m = make(case, data).eval()
    m.prepare(data.train)
    x = data.test.x[:5]
    if not isinstance(m, Autoencoder):  # a restorer maps pictures to pictures
        assert isinstance(m, Restorer) and m(x).shape == x.shape
        return
    enc = m.encode(x)
    assert enc.z.shape[0] == 5
    if m.decodes_codes:
        assert m.decode(enc.z).shape == x.shape
    else:
        with pytest.raises(UserError, match="skip features"):
            m.decode(enc.z)
    assert m(x).shape == x.shape
    if m.can_sample:
        assert m.sample(3).shape == (3, *x.shape[1:])


# --- priors ----------------------------------------------------------------------------------------
def test_priors_give_densities_and_samples(datasets):
    data = datasets["codes"]
    m = make(CASES[-1], data).eval()
    assert isinstance(m, Prior)
    lp = m.log_prob(data.test.x[:6])
    assert lp.shape == (6,) and (lp < 0).all()
    s = m.sample(3)
    assert s.shape == (3, 4, 4) and s.min() >= 0 and s.max() < 16
