"""Data-parallel training over torch.distributed: gloo over the loopback interface, two ranks on CPU."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli

TINY = ["--data", "digits?limit=256", "--quiet", "--set", "widths=[32]", "--set", "latent_dim=4", "--set", "norm=none",
        "--set", "train.threads=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra) -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "AEZOO_DIST_TIMEOUT": "60", "PYTHONUNBUFFERED": "1"}
    e.update({k: str(v) for k, v in extra.items()})
    return e


def torchrun(*args, nproc: int = 2, script: str | None = None) -> subprocess.CompletedProcess:
    what = [script] if script else ["-m", "aezoo"]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--master-port={free_port()}",
           *what, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)


def weights(run: Path) -> dict:
    return load_file(run / "model.safetensors")


def test_two_ranks_of_batch_b_train_as_one_process_of_batch_2b_and_only_rank_0_writes(tmp_path):
    import aezoo
    from aezoo.apps.runs import build

    data = aezoo.data.load("digits?limit=256")  # the reference: one process, twice the batch, in memory
    model = build("ae", data, None, ["widths=[32]", "latent_dim=4", "norm=none"], 0)
    aezoo.Trainer(model, data, aezoo.TrainConfig(epochs=2, batch_size=32, threads=1, progress=False),
                  tmp_path / "one").fit()
    two = torchrun("train", "ae", *TINY, "--out", tmp_path / "two", "--epochs", "2", "--batch-size", "16")
    assert two.returncode == 0, two.stderr + two.stdout
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        ["checkpoint.safetensors", "config.json", "eval.json", "gmm.safetensors", "metrics.jsonl", "model.safetensors",
         "reconstructions.png", "report.html", "run.json"])
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((tmp_path / "one" / "metrics.jsonl").read_text().splitlines())  # one writer
    assert two.stdout.count('"recon_mse"') == 1 and two.stderr.count("run written to") == 1  # rank 0 reports
    import json

    assert json.loads((tmp_path / "two" / "run.json").read_text())["processes"] == 2
    # resuming with another number of processes is refused, in one line
    r = run_cli("train", "--out", tmp_path / "two", "--resume", "--epochs", "3", "--quiet")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "trained on 2 process(es), this one has 1" in r.stderr


NAN_ON_RANK_1 = """
import os, sys
import aezoo
from aezoo.errors import TrainingDiverged
data = aezoo.data.load("digits?limit=256")
model = aezoo.create("ae", seed=0, input_shape=list(data.shape), widths=[16], latent_dim=2, norm="none")
step = model.training_step
def poisoned(batch, ctx):
    if ctx.step_index == 3 and os.environ["RANK"] == "1":
        out = model.loss(batch, ctx)
        ctx.backward(out.loss * float("nan"))
        ctx.step()
        return out.metrics
    return step(batch, ctx)
model.training_step = poisoned
cfg = aezoo.TrainConfig(epochs=5, batch_size=8, threads=1, checkpoint_every=2, progress=False)
try:
    aezoo.Trainer(model, data, cfg, sys.argv[1]).fit()
except TrainingDiverged as e:
    sys.stdout.write(f"rank {os.environ['RANK']}: {e}\\n")  # one write per line: the ranks share the pipe
    sys.stdout.flush()
# the time budget: rank 0's clock decides, so both ranks stop after the same step, and it paces both
# ranks' cosine decay, so their weights stay identical although rank 1's clock runs twice as fast
if os.environ["RANK"] == "1":
    import time
    real = time.perf_counter
    time.perf_counter = lambda: 2 * real()
model = aezoo.create("ae", seed=0, input_shape=list(data.shape), widths=[16], latent_dim=2, norm="none")
cfg = aezoo.TrainConfig(epochs=None, max_minutes=0.03, batch_size=8, threads=1, progress=False, schedule="cosine")
res = aezoo.Trainer(model, data, cfg, None).fit()
total = sum(float(p.double().sum()) for p in model.parameters())
sys.stdout.write(f"stopped {res.stopped_by} {res.step} weights {total!r}\\n")
sys.stdout.flush()
"""

def test_ranks_stop_together_on_a_nan_on_one_rank_and_on_the_time_budget(tmp_path):
    script = tmp_path / "nan.py"
    script.write_text(NAN_ON_RANK_1)
    r = torchrun(tmp_path / "run", script=str(script))
    assert r.returncode == 0, r.stderr
    lines = sorted(line for line in r.stdout.splitlines() if line.startswith("rank "))
    assert len(lines) == 2, r.stdout + r.stderr
    assert lines[0].startswith("rank 0: a loss became nan or inf on another rank at step 3 (optimizer main)")
    assert lines[1].startswith("rank 1: loss became nan at step 3 (optimizer main)")
    assert "last good checkpoint" in lines[0]
    stops = [line for line in r.stdout.splitlines() if line.startswith("stopped")]
    assert len(stops) == 2 and stops[0] == stops[1] and stops[0].startswith("stopped time "), r.stdout


def test_a_dead_rank_and_a_port_in_use_are_one_line_errors(tmp_path):
    port = free_port()
    base = dict(WORLD_SIZE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    args = [sys.executable, "-m", "aezoo", "train", "ae", *TINY, "--out", tmp_path / "run", "--epochs", "1000",
            "--batch-size", "8"]
    ranks = [subprocess.Popen(list(map(str, args)), env=env(RANK=r, LOCAL_RANK=r, **base), stderr=subprocess.PIPE,
                              text=True) for r in (0, 1)]
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "run" / "metrics.jsonl").exists(), "the two ranks did not start training"
        ranks[1].send_signal(signal.SIGKILL)
        assert ranks[0].wait(timeout=120) == 2
        err = ranks[0].stderr.read()
    finally:
        for p in ranks:
            p.kill()
            p.wait()
    assert err.count("\n") == 1 and err.startswith("aezoo: error: rank 0 of 2 lost the other processes"), err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        r = subprocess.run(list(map(str, args)), env=env(RANK=0, LOCAL_RANK=0, WORLD_SIZE=2, MASTER_ADDR="127.0.0.1",
                                                         MASTER_PORT=taken), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"the rendezvous port 127.0.0.1:{taken} is in use" in r.stderr


TRAIN = """
import sys
import aezoo
data = aezoo.data.load("digits?limit=256")
model = aezoo.create("vae", seed=0, input_shape=list(data.shape), widths=[16], latent_dim=2)
cfg = aezoo.TrainConfig(epochs=12, batch_size=4, seed=1, threads=1, checkpoint_every=7, progress=False)
aezoo.Trainer(model, data, cfg, sys.argv[1]).fit(resume=sys.argv[2] == "resume")
"""


def test_a_two_rank_run_killed_and_resumed_ends_with_the_uninterrupted_weights(tmp_path):
    """Each rank draws its own noise (a VAE): the resumed ranks must take up their own random streams."""
    import random

    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    ref = torchrun(tmp_path / "ref", "fresh", script=str(script))
    assert ref.returncode == 0, ref.stderr
    reference = weights(tmp_path / "ref")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
           str(script), str(run), "fresh"]
    child = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random().uniform(0, 1.0))  # somewhere after the first checkpoint
    os.killpg(child.pid, signal.SIGKILL)  # torchrun and both ranks at once
    child.wait()
    assert (run / "checkpoint.safetensors").exists()
    resumed = torchrun(run, "resume", script=str(script))
    assert resumed.returncode == 0, resumed.stderr
    got = weights(run)
    assert all(torch.equal(got[k], reference[k]) for k in reference)


EVERY_FAMILY = """
import sys
sys.path.insert(0, sys.argv[1])
import torch
import torch.distributed as dist
import aezoo
from aezoo.data import Dataset, Split
from aezoo.train import distributed
from test_contract import CASES, SLICE, make

group = distributed.join()
torch.manual_seed(0)
digits = aezoo.data.load("digits?limit=64")
vec = lambda s: Split((s.x.flatten(1) - 0.3) / 0.3, s.y)
codes = lambda n: Split(torch.randint(0, 16, (n, 4, 4), generator=torch.Generator().manual_seed(n)).float())
data = {"image": digits, "vector": Dataset("vectors", "vector", vec(digits.train), vec(digits.val), vec(digits.test)),
        "text": aezoo.data.load(f"text:{SLICE}?vocab=300&limit=96"),
        "codes": Dataset("codes", "codes", codes(64), codes(16), codes(16))}
for i, case in enumerate(CASES):
    ds = data[case[2]]
    model = make(case, ds)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    cfg = aezoo.TrainConfig(epochs=1, batch_size=8, threads=1, progress=False, log_every=1)
    aezoo.Trainer(model, ds, cfg, None).fit()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    both = [torch.empty_like(after) for _ in range(2)]
    dist.all_gather(both, after)
    if group.main:
        print(case[0], i, "same" if torch.equal(both[0], both[1]) else "DIFFERENT",
              "trained" if not torch.equal(before, after) else "UNCHANGED", flush=True)

# aezoo train on the same ranks with your own networks named by import path (tests/user_nets.py): each rank
# builds them from --set, rank 0 writes the run; the weights are compared as the run ends
fit = aezoo.Trainer.fit
def fit_and_compare(self, resume=False):
    result = fit(self, resume)
    after = torch.cat([p.detach().flatten() for p in self.model.parameters()])
    both = [torch.empty_like(after) for _ in range(2)]
    dist.all_gather(both, after)
    if group.main:
        print("aezoo train vae", "same" if torch.equal(both[0], both[1]) else "DIFFERENT",
              "trained" if result.step > 0 else "UNCHANGED", flush=True)
    return result
aezoo.Trainer.fit = fit_and_compare
from aezoo.cli import main
sys.exit(main(["train", "vae", "--data", "digits?limit=64", "--epochs", "1", "--batch-size", "8", "--quiet",
               "--set", "latent_dim=3", "--set", "encoder=user_nets:Encoder",
               "--set", 'encoder_kwargs={"shape": [1, 8, 8]}', "--set", "decoder=user_nets:Decoder",
               "--set", 'decoder_kwargs={"shape": [1, 8, 8]}', "--set", "train.threads=1", "--out", sys.argv[2],
               "--trust-code"]))  # leaves the group
"""


def test_every_family_trains_on_two_ranks_and_its_ranks_keep_identical_weights(tmp_path):
    """Multi-optimizer steps, partial backward passes, batch decisions (VAE-GAN's rule), codebooks (VQ-VAE)
    and moving averages (ALAE) under two ranks: each update's averaged gradients leave both ranks with the
    same weights. So do your own networks, also from the command line by import path, and that run loads
    again when trusted."""
    import aezoo
    from aezoo.errors import UserError
    from test_contract import CASES

    script = tmp_path / "families.py"
    script.write_text(EVERY_FAMILY)
    run = tmp_path / "yours"
    r = torchrun(Path(__file__).parent, run, script=str(script))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if not line.startswith("{")]  # rank 0's metrics: JSON
    assert len(lines) == len(CASES) + 1 and lines[-1].startswith("aezoo train vae"), r.stdout + r.stderr[-2000:]
    assert all(line.endswith("same trained") for line in lines), r.stdout
    assert json.loads((run / "run.json").read_text())["processes"] == 2
    with pytest.raises(UserError, match="the encoder is your own network user_nets:Encoder"):
        aezoo.load(run)
    model = aezoo.load(run, trust_code=True)  # tests/ is on this process's path too
    assert type(model.encoder).__name__ == "Encoder" and type(model.decoder).__name__ == "Decoder"
    saved = weights(run)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
