"""The CUDA and NCCL paths, reached on a CPU-only machine with the device facts faked (issue 33): what a
GPU run would do is asserted here; scripts/gpu-check.sh checks the real thing where a GPU is present."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

import aezoo
from aezoo.errors import UserError
from aezoo.train import checkpoint as ckpt
from aezoo.train import distributed
from conftest import run_cli

NCCL_ENV = ("TORCH_NCCL_BLOCKING_WAIT", "TORCH_NCCL_ASYNC_ERROR_HANDLING")
REAL_INIT, REAL_BACKEND = dist.init_process_group, dist.distributed_c10d.get_backend  # before any fake


class Stop(Exception):
    """Raised by a faked ``model.to``: set-up got as far as choosing the device."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_cuda(monkeypatch, count: int = 2):
    """torch believes ``count`` GPUs are visible; set_device records its ordinals."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def unset_later(monkeypatch, *names):
    """Absent now, and absent again after the test, whatever the code under test sets."""
    for name in names:
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)


# --- lead 1: leaving a gloo + NCCL group; lead 8: lost peers under NCCL --------------------------------
def joined_as_if_with_cuda(monkeypatch, environ_at_init: dict):
    """join() on a machine with two GPUs: the group is asked for "cpu:gloo,cuda:nccl"; a one-process gloo
    group stands in for it, and torch reports the mixed backend for it, as it would with NCCL built in."""
    fake_cuda(monkeypatch, 2)
    port = free_port()
    for k, v in dict(WORLD_SIZE=2, RANK=0, LOCAL_RANK=0, MASTER_ADDR="127.0.0.1", MASTER_PORT=port).items():
        monkeypatch.setenv(k, str(v))
    asked = []

    def init(backend, timeout):
        asked.append(backend)
        environ_at_init.update({k: os.environ.get(k) for k in NCCL_ENV})
        REAL_INIT("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1, timeout=timeout)

    def backend_of(group=None):
        world = dist.distributed_c10d._get_default_group()
        return "cpu:gloo,cuda:nccl" if group is None or group is world else REAL_BACKEND(group)

    monkeypatch.setattr(dist, "init_process_group", init)
    monkeypatch.setattr(dist.distributed_c10d, "get_backend", backend_of)
    group = distributed.join()
    assert asked == ["cpu:gloo,cuda:nccl"]
    return group


def test_leaving_a_gloo_and_nccl_group_meets_the_others_in_a_plain_gloo_group(monkeypatch):
    """monitored_barrier accepts plain gloo only: on the mixed group it raised ValueError at the end of every
    multi-GPU run. The barrier must run, in a gloo group, and leaving must not raise."""
    unset_later(monkeypatch, *NCCL_ENV)
    met = []
    real_barrier = dist.monitored_barrier
    monkeypatch.setattr(dist, "monitored_barrier", lambda *a, **k: met.append(a) or real_barrier(*a, **k))
    try:
        group = joined_as_if_with_cuda(monkeypatch, {})
        with pytest.raises(ValueError):  # the fake is faithful: the mixed group refuses a monitored barrier
            real_barrier(timeout=datetime.timedelta(seconds=5))
        distributed.leave()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        distributed._GROUP = None
    assert len(met) == 1 and met[0] and met[0][0] is group.leaving  # the leave barrier ran in the gloo group
    assert not dist.is_initialized()


def test_nccl_timeouts_are_asked_to_raise_in_the_waiting_thread_and_a_users_setting_wins(monkeypatch):
    unset_later(monkeypatch, *NCCL_ENV)

    def join_and_leave() -> dict:
        seen: dict = {}
        try:
            joined_as_if_with_cuda(monkeypatch, seen)
            distributed.leave()
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
            distributed._GROUP = None
        return seen

    assert join_and_leave() == {"TORCH_NCCL_BLOCKING_WAIT": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")
    assert join_and_leave()["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3"
    # what a blocking wait raises on a timeout (DistBackendError) is the one-line PeerLost
    group = distributed.Group(0, 2, 0, torch.device("cpu"))

    def timed_out(*_):
        raise dist.DistBackendError("[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(...)\nmore")

    with pytest.raises(distributed.PeerLost, match=r"^rank 0 of 2 lost the other processes .*Watchdog caught"):
        group._run(timed_out)


# --- lead 2: which GPU a rank trains on --------------------------------------------------------------
def test_a_rank_trains_on_its_local_rank_or_on_the_only_gpu_it_sees(monkeypatch):
    fake_cuda(monkeypatch, 1)
    assert [distributed.cuda_index(r) for r in (0, 1, 5)] == [0, 0, 0]  # one GPU per process
    fake_cuda(monkeypatch, 4)
    assert [distributed.cuda_index(r) for r in (0, 3, 4)] == [0, 3, None]  # more processes than GPUs: none


def setup_on_faked_gpus(monkeypatch, rank: int, local_rank: int, count: int, uuids: list[str]):
    """The trainer's set-up as rank ``rank`` of len(uuids), each rank seeing ``count`` GPUs; uuids[r] is the
    GPU rank r ends up on. Returns the device the model was moved to, or raises the set-up's error."""
    fake_cuda(monkeypatch, count)
    group = distributed.Group(rank, len(uuids), local_rank, torch.device("cpu"))
    monkeypatch.setattr(distributed, "join", lambda: group)
    monkeypatch.setattr(distributed, "gpu_uuid", lambda index: uuids[rank])

    def all_gather(out, mine):  # every rank's id, this rank's own from the code under test
        for r, t in enumerate(out):
            t.copy_(mine if r == rank else torch.tensor(list(uuids[r].encode().ljust(64, b"\0")), dtype=torch.uint8))

    monkeypatch.setattr(distributed.dist, "all_gather", all_gather)
    data = aezoo.data.load("digits?limit=64")
    model = aezoo.create("ae", seed=0, input_shape=list(data.shape), widths=[8], latent_dim=2)
    moved = []

    def to(device):
        moved.append(device)
        raise Stop

    model.to = to
    trainer = aezoo.Trainer(model, data, aezoo.TrainConfig(device="cuda", precision="fp32", batch_size=8,
                                                                  progress=False), None)
    with pytest.raises(Stop):
        trainer._setup()
    return moved[0]


def test_one_visible_gpu_per_process_trains_on_cuda_0_whatever_the_local_rank(monkeypatch):
    """SLURM --gpus-per-task: each process sees one GPU (its own), as cuda:0; LOCAL_RANK 1 is no ordinal."""
    assert setup_on_faked_gpus(monkeypatch, 1, 1, 1, ["GPU-a", "GPU-b"]) == torch.device("cuda", 0)
    assert setup_on_faked_gpus(monkeypatch, 1, 1, 2, ["GPU-a", "GPU-b"]) == torch.device("cuda", 1)


def test_two_ranks_on_one_gpu_or_a_rank_without_one_is_one_line_on_every_rank(monkeypatch):
    with pytest.raises(UserError, match=r"^ranks 0 and 1 would share one GPU \(GPU-a\); NCCL needs one GPU per "
                                        r"process: .*--nproc-per-node.*--device cpu$") as e:
        setup_on_faked_gpus(monkeypatch, 0, 0, 1, ["GPU-a", "GPU-a"])
    assert type(e.value) is UserError and "\n" not in str(e.value)
    with pytest.raises(distributed.RankZeroRefused):  # rank 0 says it; the others stop quietly
        setup_on_faked_gpus(monkeypatch, 1, 1, 1, ["GPU-a", "GPU-a"])
    with pytest.raises(UserError, match=r"^rank 2 has no GPU of its own"):
        setup_on_faked_gpus(monkeypatch, 0, 0, 2, ["GPU-a", "GPU-b", ""])


# --- lead 3: CUDA random state in checkpoints -----------------------------------------------------
def fake_rng(monkeypatch):
    """Each faked GPU's RNG state is 16 bytes holding its ordinal; set_rng_state records (state, device)."""
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [gpu_state(i) for i in range(3)])
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": gpu_state(torch.device(device).index))
    restored, seeded = [], []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((state, device)))
    monkeypatch.setattr(torch.cuda, "manual_seed", seeded.append)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    return restored, seeded


def gpu_state(index: int) -> torch.Tensor:
    return torch.full((16,), index, dtype=torch.uint8)


def test_a_checkpoint_keeps_the_rng_state_of_the_gpu_it_trained_on_only(monkeypatch, tmp_path):
    fake_cuda(monkeypatch, 3)
    restored, _ = fake_rng(monkeypatch)
    data = aezoo.data.load("digits?limit=64")
    model = aezoo.create("ae", seed=0, input_shape=list(data.shape), widths=[8], latent_dim=2)
    trainer = aezoo.Trainer(model, data, aezoo.TrainConfig(device="cpu", batch_size=8, progress=False), tmp_path)
    trainer._setup()
    trainer.device = torch.device("cuda", 2)  # as if it trained on the third of three GPUs
    trainer._checkpoint({"step": 1, "epoch": 0, "batch": 1, "elapsed_s": 0.0})
    tensors, _, _ = ckpt.read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert sorted(k for k in tensors if k.startswith("rng.cuda")) == ["rng.cuda"]
    assert torch.equal(tensors["rng.cuda"], gpu_state(2))
    fake_cuda(monkeypatch, 1)  # resumed where one GPU is visible: its state goes onto that one
    ckpt.restore_rng(tensors, 0, torch.device("cuda", 0))
    assert len(restored) == 1 and torch.equal(restored[0][0], gpu_state(2))
    assert restored[0][1] == torch.device("cuda", 0)


def test_each_rank_resumes_its_own_gpu_stream_and_a_cpu_checkpoint_seeds_it(monkeypatch, tmp_path):
    fake_cuda(monkeypatch, 12)
    restored, seeded = fake_rng(monkeypatch)
    model = aezoo.create("ae", seed=0, input_shape=[4], data_kind="vector", widths=[8], latent_dim=2)
    cpu = [torch.get_rng_state() for _ in range(12)]
    cuda = [gpu_state(r) for r in range(12)]
    ckpt.save_checkpoint(tmp_path / "c", model, {}, {"step": 0}, rank_rng=cpu, cuda_rng=cuda)
    tensors, _, _ = ckpt.read_checkpoint(tmp_path / "c")
    for rank in (2, 10):  # cuda.10 after cuda.2: states are found by rank, never by sorting names
        restored.clear()
        ckpt.restore_rng(tensors, rank, torch.device("cuda", rank))
        assert len(restored) == 1 and torch.equal(restored[0][0], gpu_state(rank))
        assert restored[0][1] == torch.device("cuda", rank)
    restored.clear()
    ckpt.restore_rng(tensors, 3, torch.device("cpu"))  # moved to the CPU: the GPU states are unused
    assert restored == []
    ckpt.save_checkpoint(tmp_path / "cpu", model, {}, {"step": 0})  # trained on the CPU, resumed on a GPU
    tensors, _, _ = ckpt.read_checkpoint(tmp_path / "cpu")
    torch.manual_seed(1234)
    ckpt.restore_rng(tensors, 0, torch.device("cuda", 0))
    assert restored == [] and seeded == [torch.initial_seed()]


# --- lead 4: --device on --resume ----------------------------------------------------------------
def test_a_run_trained_on_a_gpu_resumes_on_the_cpu_with_device_cpu(tmp_path):
    run = tmp_path / "run"
    tiny = ["--data", "digits?limit=128", "--quiet", "--set", "widths=[8]", "--set", "latent_dim=2",
            "--set", "train.threads=1"]
    r = run_cli("train", "ae", *tiny, "--out", run, "--epochs", "1", "--batch-size", "32")
    assert r.returncode == 0, r.stderr
    meta = json.loads((run / "run.json").read_text())
    meta["train"]["device"] = "cuda"  # as written by a run on a GPU machine
    (run / "run.json").write_text(json.dumps(meta))
    r = run_cli("train", "--out", run, "--resume", "--epochs", "2", "--quiet")
    assert r.returncode == 2 and r.stderr == "aezoo: error: device cuda requested but no CUDA device is available\n"
    r = run_cli("train", "--out", run, "--resume", "--epochs", "2", "--quiet", "--set", "train.lr=0.5")
    assert r.returncode == 2 and "--set train.lr cannot change" in r.stderr, r.stderr  # only the budget and device
    r = run_cli("train", "--out", run, "--resume", "--epochs", "2", "--quiet", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    meta = json.loads((run / "run.json").read_text())
    assert meta["train"]["device"] == "cpu" and meta["device"] == "cpu" and meta["epoch"] == 2


# --- lead 5: bf16 where the GPU only emulates it ------------------------------------------------------
def test_auto_precision_counts_native_bf16_only(monkeypatch):
    from aezoo.train.trainer import bf16_supported

    v100 = lambda including_emulation=True: including_emulation  # noqa: E731  (bf16 by emulation only)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", v100)
    assert not bf16_supported(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # A100
    assert bf16_supported(torch.device("cuda"))


# --- lead 6: NVAE's power iteration in fp32 under autocast ---------------------------------------------
def test_the_spectral_power_iteration_and_sigmas_are_fp32_under_bf16_autocast():
    from aezoo.nn.spectral import SpectralPenalty
    from aezoo.rng import seeded

    def build():
        with seeded(0):
            layers = [torch.nn.Conv2d(16, 32, 3), torch.nn.Conv2d(32, 8, 1)]
            return SpectralPenalty(layers, warmup_iterations=0)

    plain, under = build(), build()
    for _ in range(3):
        want = plain()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = under()
    assert got.dtype == torch.float32
    for name, buf in plain.named_buffers():
        assert getattr(under, name).dtype == torch.float32
        assert torch.equal(getattr(under, name), buf), name  # not bf16 products rounded into fp32 buffers
    assert torch.equal(got, want)


# --- lead 7: models on another device -------------------------------------------------------------
def test_a_vqvae_moves_its_prior_with_it():
    vq = aezoo.create("vqvae", input_shape=(1, 8, 8), hidden=8, num_codes=16, code_dim=4)
    prior = aezoo.create("pixelcnn", input_shape=(2, 2), data_kind="codes", num_codes=16, channels=8, layers=2)
    vq.set_prior(prior)
    vq.to(torch.float64)  # a dtype stands in for a device: both go through Module._apply
    assert {p.dtype for p in vq.prior.parameters()} == {torch.float64}
    assert vq.prior.device == vq.device


def test_load_puts_the_model_on_map_location(monkeypatch, tmp_path):
    model = aezoo.create("ae", seed=0, input_shape=[4], data_kind="vector", widths=[8], latent_dim=2)
    aezoo.save(model, tmp_path)
    moved = []
    real_to = torch.nn.Module.to
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moved.append((self, a)) or real_to(self, *a, **k))
    loaded = aezoo.load(tmp_path, map_location="cpu")
    assert (loaded, ("cpu",)) in [(m, a) for m, a in moved]


def test_interpolation_builds_its_inputs_on_the_models_device():
    from aezoo.eval.generate import interpolation_rows

    class OnMeta:  # a model on another device ("meta" stands in for "cuda")
        decodes_codes = True
        device = torch.device("meta")

        def eval(self):
            return self

        def encode(self, x):
            assert x.device == self.device, x.device
            return SimpleNamespace(z=torch.zeros(len(x), 3, device=self.device))

        def decode(self, z):
            assert z.device == self.device, z.device
            return torch.zeros(len(z), 5)

    rows, labels = interpolation_rows(OnMeta(), torch.rand(6, 5), pairs=2, steps=4, mode="both")
    assert len(rows) == 4 and labels == ["linear", "spherical"] * 2


# --- lead 10: the scikit-learn wrapper ----------------------------------------------------------------
def test_the_sklearn_reducer_trains_on_the_cpu_in_fp32_even_where_cuda_is_available(monkeypatch):
    import numpy as np

    from aezoo.sklearn import AutoencoderReducer

    X = np.random.default_rng(0).normal(size=(64, 5))
    kwargs = dict(n_components=2, hidden_layer_sizes=(8,), max_epochs=2, batch_size=16, random_state=0)
    want = AutoencoderReducer(**kwargs).fit_transform(X)
    assert AutoencoderReducer().get_params()["device"] == "cpu"
    fake_cuda(monkeypatch, 1)
    configs = []

    class Recording(aezoo.Trainer):
        def __init__(self, model, data, config, *a, **k):
            configs.append(config)
            super().__init__(model, data, config, *a, **k)

    monkeypatch.setattr(aezoo, "Trainer", Recording)
    got = AutoencoderReducer(**kwargs).fit_transform(X)
    np.testing.assert_array_equal(got, want)
    assert configs[0].device == "cpu" and configs[0].precision == "fp32"
    assert AutoencoderReducer(device="cuda").get_params()["device"] == "cuda"


# --- lead 9: no host read-back on a training step's path where a GPU would wait ------------------------
READS = ("__float__", "__int__", "__bool__", "__index__", "item", "tolist")


def as_on_a_gpu(monkeypatch):
    """Code that asks whether reading a value back to the host is free is told no, as on a GPU."""
    monkeypatch.setattr(aezoo.env, "host_reads_free", lambda device: False, raising=False)


def count_reads_in_steps(monkeypatch) -> list:
    """Every read of a tensor's value into Python made inside Trainer._train_step after its first call
    (a run's first step may read once: VQ-VAE's codebook starts from it), by name."""
    from aezoo.train.trainer import Trainer

    reads, inside, calls = [], [False], [0]
    for name in READS:
        real = getattr(torch.Tensor, name)

        def read(self, *a, _real=real, _name=name, **k):
            if inside[0]:
                reads.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, read)
    step = Trainer._train_step

    def counted(self, *a, **k):
        calls[0] += 1
        inside[0] = calls[0] > 1
        try:
            return step(self, *a, **k)
        finally:
            inside[0] = False

    monkeypatch.setattr(Trainer, "_train_step", counted)
    return reads, calls


@pytest.mark.parametrize("family", ["vae", "vqvae"])
def test_a_training_step_reads_nothing_back_where_reads_wait(monkeypatch, family):
    data = aezoo.data.load("digits?limit=64")
    kw = {"widths": [16], "latent_dim": 2} if family == "vae" else {"hidden": 8, "num_codes": 16, "code_dim": 4}
    cfg = aezoo.TrainConfig(epochs=2, batch_size=16, progress=False, log_every=3)
    reads, calls = count_reads_in_steps(monkeypatch)
    model = aezoo.create(family, seed=0, input_shape=list(data.shape), **kw)
    aezoo.Trainer(model, data, cfg, None).fit()
    assert reads, "the counter sees the CPU's reads"  # the CPU reads each loss: it costs nothing there
    reads.clear()
    calls[0] = 0
    as_on_a_gpu(monkeypatch)
    model = aezoo.create(family, seed=0, input_shape=list(data.shape), **kw)
    aezoo.Trainer(model, data, cfg, None).fit()
    assert reads == []


def nan_at_step_3(model):
    step = model.training_step

    def poisoned(batch, ctx):
        if ctx.step_index == 3:
            out = model.loss(batch, ctx)
            ctx.backward(out.loss * float("nan"))
            ctx.step()
            return out.metrics
        return step(batch, ctx)

    model.training_step = poisoned
    return model


@pytest.mark.parametrize("gpu", [False, True])
def test_a_nan_stops_the_run_naming_its_step_and_optimizer_and_keeps_the_last_good_checkpoint(monkeypatch, tmp_path,
                                                                                               gpu):
    from aezoo.errors import TrainingDiverged

    if gpu:
        as_on_a_gpu(monkeypatch)
    data = aezoo.data.load("digits?limit=64")
    model = nan_at_step_3(aezoo.create("ae", seed=0, input_shape=list(data.shape), widths=[8], latent_dim=2))
    cfg = aezoo.TrainConfig(epochs=5, batch_size=8, checkpoint_every=2, log_every=50, progress=False)
    with pytest.raises(TrainingDiverged, match=r"^loss became nan at step 3 \(optimizer main\); training stopped "
                                               r"and the last good checkpoint \(.*\) is kept"):
        aezoo.Trainer(model, data, cfg, tmp_path).fit()
    tensors, state, _ = ckpt.read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))


def test_deferring_the_reads_changes_no_weight_and_no_logged_metric(monkeypatch, tmp_path):
    data = aezoo.data.load("digits?limit=128")

    def run(where):
        model = aezoo.create("vae", seed=0, input_shape=list(data.shape), widths=[16], latent_dim=2)
        cfg = aezoo.TrainConfig(epochs=2, batch_size=16, log_every=3, checkpoint_every=5, progress=False)
        aezoo.Trainer(model, data, cfg, tmp_path / where).fit()
        lines = [json.loads(ln) for ln in (tmp_path / where / "metrics.jsonl").read_text().splitlines()]
        return model.state_dict(), [{k: v for k, v in r.items() if k not in ("elapsed_s", "samples_per_s")}
                                    for r in lines]

    cpu_weights, cpu_log = run("cpu")
    as_on_a_gpu(monkeypatch)
    gpu_weights, gpu_log = run("gpu")
    assert gpu_log == cpu_log and len(cpu_log) > 3
    assert all(torch.equal(gpu_weights[k], cpu_weights[k]) for k in cpu_weights)


def test_the_masked_restart_moves_dead_codes_only_onto_this_batchs_outputs():
    from aezoo.nn.quantize import VectorQuantizer

    q = VectorQuantizer(num_codes=6, dim=3, dead_threshold=1.0)
    before = q.codebook.clone()
    q.ema_count.copy_(torch.tensor([2.0, 0.5, 3.0, 0.1, 1.0, 0.9]))
    dead = q.ema_count < q.dead_threshold
    flat = torch.randn(10, 3) + 100
    q._restart_masked(dead, flat)
    assert torch.equal(q.codebook[~dead], before[~dead])
    rows = {tuple(r.tolist()) for r in flat}
    assert all(tuple(r.tolist()) in rows for r in q.codebook[dead])
    assert q.ema_count.tolist() == [2.0, 1.0, 3.0, 1.0, 1.0, 1.0]
    assert torch.allclose(q.ema_sum[dead], q.codebook[dead] * 1.0)


def test_a_training_pass_without_host_reads_restarts_dead_codes_with_masks(monkeypatch):
    from aezoo.nn.quantize import VectorQuantizer

    monkeypatch.setattr(aezoo.env, "host_reads_free", lambda device: False, raising=False)
    q = VectorQuantizer(num_codes=6, dim=3, dead_threshold=1.0).train()
    z = torch.randn(2, 3, 2, 2)
    q(z)  # the first pass starts the codebook on these outputs
    q.ema_count.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0, 0.0, 0.0]))  # codes 1-5 dead
    far = torch.randn(2, 3, 2, 2) + 100
    q(far)
    rows = {tuple(r.tolist()) for r in far.permute(0, 2, 3, 1).reshape(-1, 3)}
    assert sum(tuple(c.tolist()) in rows for c in q.codebook[1:]) >= 4  # restarted onto this batch's outputs


# --- scripts/gpu-check.sh: its CPU fallbacks -------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, run scripts/gpu-check.sh itself (minutes)")
def test_the_gpu_check_script_passes_its_cpu_fallbacks(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check.sh"
    env = {**os.environ, "GPU_CHECK_TINY": "1", "GPU_CHECK_OUT": str(tmp_path), "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln.split() for ln in r.stdout.splitlines()]
    assert {ln[0] for ln in lines} == {"NOTE", "PASS", "SKIP", "all"}, r.stdout
    assert [ln[1] for ln in lines if ln[0] == "PASS"] == [
        "mlp-train-cpu", "mlp-resume", "mlp-resumed-state", "mlp-eval", "mlp-report", "conv-train-cpu-fp32",
        "conv-resume", "conv-resumed-state", "conv-eval", "conv-report", "load-map-location-cpu",
        "torchrun-2-cpu-gloo-killed-and-resumed"]
    state = json.loads((tmp_path / "dist" / "run.json").read_text())
    assert state["finished"] and state["processes"] == 2  # killed, then resumed to the end
