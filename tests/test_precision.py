"""precision=auto and channels_last=auto (aezoo.train.precision): the choice, its probe, cache and record."""

import copy
import json
import shutil

import pytest
import torch

import aezoo
from aezoo.data import Dataset, Split
from aezoo.train import precision as prec
from aezoo.train.trainer import bf16_supported

CPU = torch.device("cpu")
NATIVE_BF16 = bf16_supported(CPU)
ALL = [(False, False), (False, True), (True, False), (True, True)]


def conv_ae(data):
    return aezoo.create("ae", seed=0, input_shape=list(data.shape), arch="conv", channels=[4, 8], latent_dim=3)


def colour(data):
    """The digits in three channels: a channels-last batch differs from a contiguous one only with C > 1."""
    rgb = lambda split: Split(split.x.repeat(1, 3, 1, 1), split.y)  # noqa: E731
    return Dataset("digits-rgb", "image", rgb(data.train), rgb(data.val), rgb(data.test))


def config(**kw):
    return aezoo.TrainConfig(**{"epochs": None, "max_steps": 3, "batch_size": 32, "progress": False,
                                "checkpoint_every": 0, **kw})


def run_json(path):
    return json.loads((path / "run.json").read_text())


@pytest.fixture
def probing(monkeypatch):
    """The probe on (the suite turns it off), on a CPU counted as having bf16 hardware; returns the list
    of candidate lists the timer was asked for (``.asked``); ``.times`` sets what the timer answers."""
    monkeypatch.delenv("AEZOO_PROBE")
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: True)

    class Probe:
        asked, times = [], {}

        @staticmethod
        def measure(runners, **kw):
            Probe.asked.append(sorted(runners))
            for run in runners.values():
                run()  # each candidate's step runs (a broken one fails here)
            return {n: Probe.times.get(n, 1.0) for n in runners}

    Probe.asked, Probe.times = [], {}
    monkeypatch.setattr(prec, "measure", Probe.measure)
    return Probe


# --- the rule --------------------------------------------------------------------------------------
def speeds(fp32_cl, bf16, bf16_cl):
    """Seconds per step from speed-ups over fp32 contiguous."""
    return {(False, False): 1.0, (False, True): 1 / fp32_cl, (True, False): 1 / bf16, (True, True): 1 / bf16_cl}


@pytest.mark.parametrize("ups, expected", [
    ((1.18, 2.65, 3.71), (True, True)),  # the AMX table: photo
    ((1.14, 1.60, 2.02), (True, True)),  # dae conv
    ((1.01, 1.13, 1.29), (True, True)),  # vae conv: bf16 alone is under the margin, with channels-last over it
    ((0.50, 0.78, 0.60), (False, False)),  # bf16 and channels-last lose (as measured without AMX)
    ((1.10, 1.12, 1.14), (False, False)),  # all within the margin: fp32 contiguous
    ((1.20, 0.90, 0.95), (False, True)),  # channels-last pays in fp32 only
    ((1.20, 1.25, 1.30), (False, True)),  # bf16 is not a margin faster than fp32 channels-last
])
def test_pick_leaves_fp32_contiguous_only_by_a_clear_margin(ups, expected):
    assert prec.pick(speeds(*ups)) == expected


def test_pick_within_what_the_user_fixed():
    times = speeds(1.3, 2.0, 3.0)
    assert prec.pick({k: t for k, t in times.items() if k[0]}) == (True, True)  # precision=bf16
    assert prec.pick({k: t for k, t in times.items() if not k[1]}) == (True, False)  # channels_last=false


def test_measure_interleaves_warms_up_and_keeps_each_fastest_call():
    calls, clock = [], iter(range(1000))
    runners = {n: (lambda n=n: calls.append(n)) for n in ("a", "b")}
    best = prec.measure(runners, warmup=2, rounds=3, budget_s=0, clock=lambda: float(next(clock)))
    assert calls[:4] == ["a", "a", "b", "b"] and calls[4:] == ["a", "b"] * 3
    assert best == {"a": 1.0, "b": 1.0}


# --- on this machine -------------------------------------------------------------------------------
def test_the_choice_on_this_machine_is_measured_once_then_cached(tmp_path, digits, monkeypatch):
    """The real probe, on a tiny network: its candidates follow this CPU's flags, its verdict follows
    pick() on its own numbers, and the second run reads it from the cache."""
    monkeypatch.delenv("AEZOO_PROBE")
    aezoo.Trainer(conv_ae(digits), digits, config(), tmp_path / "a").fit()
    rec = run_json(tmp_path / "a")["precision_choice"]
    candidates = [c for c in ALL if prec.cpu_has_bf16() or not c[0]]
    assert sorted(rec["probe"]["seconds_per_step"]) == sorted(prec.name(c) for c in candidates)
    times = {c: rec["probe"]["seconds_per_step"][prec.name(c)] for c in candidates}
    assert (rec["bf16"], rec["channels_last"]) == prec.pick(times) and not rec["probe"]["cached"]
    assert rec["reason"] == {"precision": "probe" if prec.cpu_has_bf16() else
                             "no bf16 hardware (no avx512_bf16 or amx_bf16 in /proc/cpuinfo)",
                             "channels_last": "probe"}
    assert run_json(tmp_path / "a")["precision"] == rec["precision"]
    monkeypatch.setattr(prec, "measure", lambda *a, **k: pytest.fail("measured again"))
    aezoo.Trainer(conv_ae(digits), digits, config(), tmp_path / "b").fit()
    again = run_json(tmp_path / "b")["precision_choice"]
    assert again["probe"]["cached"] and again["probe"]["seconds_per_step"] == rec["probe"]["seconds_per_step"]
    assert (again["bf16"], again["channels_last"]) == (rec["bf16"], rec["channels_last"])


# --- the probe's answer forced -----------------------------------------------------------------------
@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16: the trainer refuses bf16 on it")
def test_a_probe_that_finds_bf16_channels_last_faster_trains_so(tmp_path, digits, probing, monkeypatch):
    probing.times.update({"bf16+channels_last": 0.5})
    digits = colour(digits)
    model = conv_ae(digits)
    seen = []
    step = type(model).training_step
    monkeypatch.setattr(type(model), "training_step", lambda self, batch, ctx: seen.append(
        (batch.x.is_contiguous(memory_format=torch.channels_last), torch.is_autocast_enabled("cpu"))) or step(self, batch, ctx))
    aezoo.Trainer(model, digits, config(), tmp_path / "r").fit()
    seen = seen[-3:]  # the run's 3 steps, after the probe's
    rec = run_json(tmp_path / "r")
    assert rec["precision"] == "bf16" and rec["channels_last"] is True
    assert rec["precision_choice"]["probe"]["speedup"]["bf16+channels_last"] == 2.0
    assert probing.asked == [sorted(prec.name(c) for c in ALL)]
    assert seen and all(seen_x and autocast for seen_x, autocast in seen)  # the inputs too, under autocast
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32 under autocast


def test_a_probe_that_finds_nothing_faster_keeps_fp32_contiguous(tmp_path, digits, probing):
    probing.times.update({"bf16": 0.9, "fp32+channels_last": 0.95, "bf16+channels_last": 1.5})
    model = conv_ae(digits)
    aezoo.Trainer(model, digits, config(), tmp_path / "r").fit()
    rec = run_json(tmp_path / "r")
    assert rec["precision"] == "fp32" and rec["channels_last"] is False
    assert rec["precision_choice"]["reason"] == {"precision": "probe", "channels_last": "probe"}
    assert all(p.is_contiguous() for p in model.parameters())


def test_channels_last_trains_the_same_network_to_tolerance(tmp_path, digits, probing):
    probing.times.update({"fp32+channels_last": 0.5})
    runs = {}
    for name, cl in (("cl", "auto"), ("plain", False)):
        model = conv_ae(digits)
        aezoo.Trainer(model, digits, config(channels_last=cl, precision="fp32"), tmp_path / name).fit()
        runs[name] = model
    assert run_json(tmp_path / "cl")["channels_last"] is True and run_json(tmp_path / "plain")["channels_last"] is False
    x = digits.test.x[:16]
    with torch.no_grad():
        a, b = (m.eval().decode(m.encode(x).z) for m in (runs["cl"], runs["plain"]))
        plain = copy.deepcopy(runs["cl"]).to(memory_format=torch.contiguous_format)
        assert all(p.is_contiguous() for p in plain.parameters())
        same = plain.decode(plain.encode(x).z)
    torch.testing.assert_close(a, same, atol=1e-5, rtol=1e-5)  # one set of weights, either layout
    torch.testing.assert_close(a, b, atol=5e-3, rtol=0)  # 3 Adam steps apart: lr-sized differences at most


# --- the cache -------------------------------------------------------------------------------------
def test_the_cache_is_keyed_by_the_machine_torch_threads_network_and_batch(tmp_path, digits, probing):
    def fit(name, **kw):
        aezoo.Trainer(conv_ae(digits), digits, config(**kw), tmp_path / name).fit()
        return run_json(tmp_path / name)["precision_choice"]["probe"]["cached"]

    assert not fit("a") and fit("b")  # a miss, then a hit
    assert len(probing.asked) == 1
    assert not fit("c", batch_size=16)  # another batch size
    assert not fit("d", precision="fp32")  # other candidates
    assert len(list(prec.cache_dir().iterdir())) == 3
    fp = prec.fingerprint(conv_ae(digits), 32, None, CPU, ALL)
    assert prec.cached_times(fp) is not None
    for key, other in (("torch", "0.0"), ("threads", fp["threads"] + 1), ("cpu", "another CPU"),
                       ("cpu_flags", ["avx2"])):
        assert prec.cached_times({**fp, key: other}) is None, key
    assert prec.cached_times(prec.fingerprint(aezoo.create("ae", seed=0, input_shape=list(digits.shape), arch="conv",
                                                          channels=[4, 16], latent_dim=3), 32, None, CPU, ALL)) is None
    prec.cache_path(fp).write_text("{not json")  # a corrupt entry is a miss, and is replaced
    assert not fit("e") and fit("f")


def test_an_unwritable_cache_does_not_stop_a_run(tmp_path, digits, probing, monkeypatch):
    blocker = tmp_path / "cache-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where the folder should be
    aezoo.Trainer(conv_ae(digits), digits, config(), tmp_path / "r").fit()
    assert run_json(tmp_path / "r")["precision_choice"]["probe"]["cached"] is False


# --- what is not probed ---------------------------------------------------------------------------
def test_user_settings_win(tmp_path, digits, probing):
    probing.times.update({"bf16+channels_last": 0.1, "fp32+channels_last": 0.1})
    aezoo.Trainer(conv_ae(digits), digits, config(precision="fp32", channels_last=False), tmp_path / "a").fit()
    rec = run_json(tmp_path / "a")
    assert rec["precision"] == "fp32" and rec["channels_last"] is False and probing.asked == []
    assert rec["precision_choice"]["reason"] == {"precision": "user setting", "channels_last": "user setting"}
    aezoo.Trainer(conv_ae(digits), digits, config(precision="fp32"), tmp_path / "b").fit()  # layout still auto
    rec = run_json(tmp_path / "b")
    assert probing.asked == [["fp32", "fp32+channels_last"]] and rec["channels_last"] is True and rec["precision"] == "fp32"


def test_no_probe_without_bf16_hardware_for_a_network_without_convolutions(tmp_path, digits, probing, monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: False)
    mlp = aezoo.create("ae", seed=0, input_shape=list(digits.shape), widths=[8], latent_dim=2)
    aezoo.Trainer(mlp, digits, config(), tmp_path / "r").fit()
    rec = run_json(tmp_path / "r")["precision_choice"]
    assert probing.asked == [] and not rec["bf16"] and not rec["channels_last"] and rec["probe"] is None
    assert rec["reason"] == {"precision": "no bf16 hardware (no avx512_bf16 or amx_bf16 in /proc/cpuinfo)",
                             "channels_last": "no convolutions"}


def test_the_suite_turns_the_probe_off_and_cuda_follows_native_bf16(monkeypatch):
    never = lambda c: pytest.fail("probed")  # noqa: E731
    off = prec.choose("auto", "auto", CPU, bf16_hardware=True, convolutions=True, measure=never)
    assert (off.bf16, off.channels_last) == (False, False) and off.reason["precision"] == "probe off (AEZOO_PROBE=0)"
    cuda = torch.device("cuda")
    for native in (True, False):
        c = prec.choose("auto", "auto", cuda, bf16_hardware=native, convolutions=True, measure=never)
        assert (c.bf16, c.channels_last) == (native, False)


# --- resume -----------------------------------------------------------------------------------------
def test_resume_reuses_the_recorded_choice_and_stays_bit_exact(tmp_path, digits, probing):
    """Channels-last chosen by the probe: the resumed run never probes, trains channels-last again (its
    optimizer moments in the weights' layout) and ends with the uninterrupted run's weights."""
    probing.times.update({"fp32+channels_last": 0.5})
    base = dict(max_steps=12, checkpoint_every=5, precision="fp32", seed=3)
    full = conv_ae(digits)
    aezoo.Trainer(full, digits, config(**base), tmp_path / "full").fit()
    part = conv_ae(digits)
    aezoo.Trainer(part, digits, config(**{**base, "max_steps": 5}), tmp_path / "part").fit()
    before = run_json(tmp_path / "part")
    assert before["channels_last"] is True
    probing.asked.clear()
    probing.times.clear()  # the probe would now answer contiguous; it must not be asked
    shutil.rmtree(prec.cache_dir())  # nor the cache
    resumed = conv_ae(digits)
    aezoo.Trainer(resumed, digits, config(**base), tmp_path / "part").fit(resume=True)
    assert probing.asked == []
    rec = run_json(tmp_path / "part")
    assert rec["channels_last"] is True and rec["step"] == 12
    assert rec["precision_choice"] == before["precision_choice"]
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_recorded_before_the_choice_resumes_as_it_was(tmp_path, digits, probing):
    aezoo.Trainer(conv_ae(digits), digits, config(precision="fp32", channels_last=False), tmp_path / "r").fit()
    run = run_json(tmp_path / "r")
    del run["precision_choice"], run["channels_last"]
    run["train"].pop("channels_last")
    (tmp_path / "r" / "run.json").write_text(json.dumps(run))
    aezoo.Trainer(conv_ae(digits), digits, config(precision="fp32", max_steps=5), tmp_path / "r").fit(resume=True)
    assert probing.asked == [] and run_json(tmp_path / "r")["precision_choice"]["reason"]["channels_last"] == "recorded"
