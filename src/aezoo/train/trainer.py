"""The training loop. It knows the model protocol (``optimizers``, ``training_step``, ``validation_step``,
``after_step``: see :mod:`aezoo.models.base`), never which model it trains.

Per batch the trainer sets each optimizer's learning rate from the schedule, zeroes every gradient, and
calls ``model.training_step(batch, ctx)`` under the run's precision; ``ctx`` (a :class:`StepRunner`)
checks each loss for NaN/inf before its backward pass, routes gradients to the named optimizers'
parameters, and clips and steps them on request. The run directory receives
``checkpoint.safetensors`` (every ``checkpoint_every`` steps and at the end), ``metrics.jsonl``,
``config.json`` + ``model.safetensors`` (the final model) and ``run.json`` (what was run, where, how long).
With ``config.log``, the lines of ``metrics.jsonl``, the config and the pictures of ``val_images`` go to
TensorBoard or MLflow as well (:mod:`.tracking`).
Resuming restores weights, optimizer states, RNG state and the position in the data order, so a resumed
run ends with the same weights as an uninterrupted one (CPU, same seed and thread count).

On a GPU a step reads nothing back to the host (a read waits for every queued kernel): metrics are summed
on the device and the NaN/inf check reads the losses at logging, validation and checkpoint time, naming
the first bad loss's step and optimizers; no checkpoint is written past a bad loss.

Under ``torchrun`` (WORLD_SIZE > 1; :mod:`.distributed`) the run is data-parallel: ``batch_size`` is per
rank, each rank takes its contiguous share of every global batch of the single-process order, and each
optimizer update averages its gradients over ranks in one all-reduce (with the NaN/inf flag, so every rank
stops together). State that is not a gradient: floating buffers are rank 0's, broadcast before each
step (batch norm normalises with each rank's own batch, and keeps rank 0's running statistics); VQ-VAE's
codebook statistics are summed over ranks (:mod:`aezoo.nn.quantize`), dead codes restart from rank 0's
batch; VAE-GAN's equilibrium rule reads costs averaged with ``ctx.mean``; moving-average weights (ALAE)
follow identical weights, so they agree. Rank 0 alone writes; its clock decides the time budget. Each
rank draws its own noise; checkpoints hold every rank's RNG state.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import env
from .._version import __version__
from ..env import machine_info
from ..config import from_dict, to_dict
from ..data import Dataset, batches, num_batches
from ..errors import TrainingDiverged, UserError
from ..io import cannot_write, make_dir, read_json, write_bytes, write_json
from ..models.base import Model, Optim, load_state, save_model, train_defaults
from ..outputs import Batch
from ..rng import seeded
from . import checkpoint as ckpt
from . import distributed
from . import tracking
from . import precision as prec
from .config import TrainConfig
from .schedules import lr_factor

CHECKPOINT = "checkpoint.safetensors"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda requested but no CUDA device is available")
    return dev


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        # native bf16 only (compute capability 8.0+: A100, RTX 30xx on); V100 and T4 emulate it, slower than fp32
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        # Native bf16 matmul (AVX-512 BF16 / AMX); without it bf16 autocast is slower than fp32.
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adamax": torch.optim.Adamax,
              "rmsprop": torch.optim.RMSprop}
FUSED = {"adam", "adamw"}  # classes with a fused kernel (one call for all parameters)


def build_optimizer(spec: Optim, c: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """A torch optimizer from a model's declaration; the training config's fields, when set, win."""
    kind = c.optimizer or spec.kind or "adam"
    lr = c.lr if c.lr is not None else (spec.lr if spec.lr is not None else 1e-3)
    items = list(spec.params)
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad], "lr": lr * g.get("lr_scale", 1.0)}
              for g in items if isinstance(g, dict)]
    groups.append({"params": [p for p in items if not isinstance(p, dict) and p.requires_grad]})
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("an optimizer was declared over no trainable parameter")
    opts = {"lr": lr}
    wd = c.weight_decay if c.weight_decay is not None else spec.weight_decay
    if wd is not None:
        opts["weight_decay"] = wd
    if kind != "rmsprop":
        betas = c.betas if c.betas is not None else spec.betas
        if betas is not None:
            opts["betas"] = tuple(betas)
    elif spec.alpha is not None:
        opts["alpha"] = spec.alpha
    if spec.eps is not None:
        opts["eps"] = spec.eps
    # The fused kernel updates all parameters in one call: 1.3-1.6x faster steps for small models on CPU
    # (bench/vs_pythae.py), where the per-parameter loop of the default dominates.
    if kind in FUSED and device.type in ("cpu", "cuda") and all(p.dtype.is_floating_point for g in groups
                                                                 for p in g["params"]):
        opts["fused"] = True
    return OPTIMIZERS[kind](groups, **opts)


def describe_optimizer(opt: torch.optim.Optimizer) -> dict:
    g = opt.param_groups[0]
    out = {"class": type(opt).__name__, "lr": g["lr"], "parameters": sum(p.numel() for g in opt.param_groups
                                                                         for p in g["params"])}
    for key in ("betas", "weight_decay", "eps", "alpha"):
        if key in g:
            out[key] = list(g[key]) if isinstance(g[key], tuple) else g[key]
    return out


class StepRunner:
    """The :class:`~aezoo.models.base.StepContext` the trainer hands to a model's step."""

    def __init__(self, trainer: "Trainer", step: int, training: bool):
        self._trainer = trainer
        self.step_index = step
        self.total_steps = trainer.total_steps
        self.training = training
        self.progress = trainer.progress(step)

    def _names(self, names) -> tuple[str, ...]:
        opts = self._trainer.optimizers
        if not names:
            return tuple(opts)
        unknown = [n for n in names if n not in opts]
        if unknown:
            raise KeyError(f"no optimizer named {unknown[0]!r}; the model declares {', '.join(opts)}")
        return names

    def _params(self, names: tuple[str, ...]) -> list[torch.nn.Parameter]:
        lists = self._trainer.opt_params
        return lists[names[0]] if len(names) == 1 else [p for n in names for p in lists[n]]

    def backward(self, loss: torch.Tensor, *optimizers: str, retain_graph: bool = False) -> None:
        """Gradients of ``loss`` into the parameters of the named optimizers only (all when none is named)."""
        if not self.training:
            return
        names = self._names(optimizers)
        if not self._trainer.check_at_once:  # a GPU: checked with the other losses at the next read-back
            self._trainer._pending.append((loss.detach(), self.step_index, names))
        elif not math.isfinite(value := float(loss.detach())):
            if self._trainer.dist is None:
                self._trainer._diverged(value, self.step_index, names)
            self._trainer._bad = self._trainer._bad or (value, names)  # every rank stops at the next step()
            return
        # the backward pass outside autocast, as torch recommends
        outside = torch.autocast(self._trainer.device.type, enabled=False) if self._trainer.use_bf16 else _NO_CONTEXT
        with outside:
            torch.autograd.backward(loss, inputs=self._params(names), retain_graph=retain_graph)

    def step(self, *optimizers: str) -> None:
        """Clip (``grad_clip``), update and zero the gradients of the named optimizers (all when none is named)."""
        if not self.training:
            return
        clip = self._trainer.config.grad_clip
        names = self._names(optimizers)
        if self._trainer.dist is not None:
            self._average(names)
        for name in names:
            params = self._trainer.opt_params[name]
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            self._trainer.optimizers[name].step()
            _zero_grads(params)

    def _average(self, names: tuple[str, ...]) -> None:
        """Every rank's gradients for this update, averaged in one all-reduce with a flag per parameter (a
        parameter no rank reached keeps no gradient, as in one process) and the NaN flag."""
        t = self._trainer
        params = [p for n in names for p in t.opt_params[n]]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        reached = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=t.device)
        bad = t.dist.average_([*grads, reached], flag=1.0 if t._bad else 0.0)
        if bad:
            value, where = t._bad or (float("nan"), names)
            t._diverged(value, self.step_index, where, elsewhere=t._bad is None)
        for p, g, r in zip(params, grads, reached.tolist()):
            p.grad = g if r > 0 else None

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over the ranks of a distributed run (itself in one process): for decisions a
        step takes from its batch, which every rank must take alike."""
        d = self._trainer.dist
        return value if d is None or not self.training else d.mean(value)


_NO_CONTEXT = contextlib.nullcontext()


def _zero_grads(params) -> None:
    """What ``optimizer.zero_grad(set_to_none=True)`` does, without its per-call profiler record."""
    for p in params:
        p.grad = None


@dataclass
class TrainResult:
    step: int
    epoch: int
    elapsed_s: float
    stopped_by: str  # "epochs", "time" or "steps"
    last_metrics: dict


class MetricsLog:
    """Appends one JSON object per line; on resume, drops lines written after the checkpoint (and a line
    a crash cut short). A write that fails (a full disk) is a user error and leaves no partial line."""

    def __init__(self, path: Path | None, resume_step: int | None):
        self.path = path
        self._fd = None
        if path is None:
            return
        try:
            if resume_step is not None and path.exists():
                kept = [ln for ln in path.read_text().splitlines() if (s := _step_of(ln)) is not None and s <= resume_step]
                write_bytes(path, "".join(ln + "\n" for ln in kept).encode())
            elif resume_step is None and path.exists():
                path.unlink()
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as e:
            raise cannot_write(path, e) from None

    def write(self, record: dict) -> None:
        if self._fd is None:
            return
        data = (json.dumps(record) + "\n").encode()
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            done = 0
            while done < len(data):  # unbuffered: the whole line reaches the file, or none of it
                done += os.write(self._fd, data[done:])
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, end)  # no partial line
            self.close()
            raise cannot_write(self.path, e) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _step_of(line: str) -> int | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record.get("step", 0) if isinstance(record, dict) else None


def train_config(model: Model, **fields) -> TrainConfig:
    """The training config ``aezoo train`` gives ``model``: its family's settings (e.g. nvae's warm-up and
    cosine decay), then its preset's (e.g. acai's ``berthelot2019`` learning rate), then ``fields``.
    A ``TrainConfig(...)`` you build yourself is used as it is."""
    values = {**train_defaults(type(model), model.preset), **fields}
    return from_dict(TrainConfig, json.loads(json.dumps(values)), "train config")


class Trainer:
    """Train ``model`` on ``data`` with ``config`` (default: :func:`train_config` of the model), writing
    everything into ``run_dir``."""

    def __init__(self, model: Model, data: Dataset, config: TrainConfig | None = None,
                 run_dir: str | os.PathLike | None = "runs/run", extra_meta: dict | None = None,
                 val_images: Callable[[Model], dict] | None = None):
        self.model = model
        # pictures the trackers (config.log) get at each validation: model -> {name: (H, W, 3) uint8 array}
        self.val_images = val_images
        self.data = data
        self.config = config or train_config(model)
        self.config.validate()
        # run_dir=None: train in memory only (no checkpoints, logs or saved model; no resume)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.extra_meta = extra_meta or {}
        self._clock = None  # fit(): when the run's time began (counted across resumes)
        self._rank0_elapsed = None  # distributed: rank 0's elapsed seconds, shared at each step
        if tuple(data.shape) != tuple(model.config.input_shape):
            raise UserError(f"the data's items have shape {data.shape}, the model expects {tuple(model.config.input_shape)}")
        if len(data.train) < self.config.batch_size:
            raise UserError(f"the training split has {len(data.train)} items, fewer than batch_size={self.config.batch_size}")

    # --- set-up ----------------------------------------------------------------------------------
    def _setup(self):
        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        self.dist = distributed.join()  # a no-op in one process; joined once per process (left at exit)
        self._bad = None
        self._pending: list = []  # (loss, step, optimizer names) not checked yet (check_at_once False)
        self.device = resolve_device(c.device)
        if self.dist is not None:
            if self.device.type == "cuda":  # one GPU per rank (distributed.cuda_index), the same as join() set
                self.device = self.dist.claim_gpu()
            self.dist.device = self.device
        # precision and layout are chosen in fit() (train/precision.py), once the model is prepared
        self.use_bf16, self.channels_last, self.choice = False, False, None
        if c.precision == "bf16" and not bf16_supported(self.device):
            raise UserError(f"precision=bf16 is not supported on this {self.device.type} device; use fp32 or auto")
        self.model.to(self.device)
        # Each loss is checked for NaN/inf before its backward pass where reading it back is free (the CPU)
        # and in distributed runs (which read back once per update anyway: the reached-parameter flags). One
        # process on a GPU reads the losses back at logging, validation and checkpoint time instead.
        self.check_at_once = self.dist is not None or env.host_reads_free(self.device)
        self.world = self.dist.world if self.dist else 1
        self.main = self.dist is None or self.dist.main
        # the state a step changes without gradients, kept identical on every rank (rank 0's)
        self._synced = [b for b in self.model.buffers() if b.dtype.is_floating_point] if self.dist else []
        if self.dist is not None:
            self.dist.broadcast_(list(self.model.state_dict().values()))
            if len(self.data.train) < c.batch_size * self.world:
                raise UserError(f"the training split has {len(self.data.train)} items, fewer than one global batch "
                                f"({c.batch_size} per rank x {self.world} ranks)")
        self.optimizers = {name: build_optimizer(spec, c, self.device) for name, spec in self.model.optimizers().items()}
        if not self.optimizers:
            raise ValueError(f"{type(self.model).__name__}.optimizers() declares no optimizer")
        self.base_lrs = {ph: [g["lr"] for g in opt.param_groups] for ph, opt in self.optimizers.items()}
        # each optimizer's parameters, listed once: routed to by ctx.backward, zeroed every step. With
        # _zero_grads this halved the trainer's own cost per step (~60 -> ~30 us on a tiny model; the
        # mlp VAE's step at batch 64 takes ~2.5 ms: bench/overhead.py)
        self.opt_params = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in self.optimizers.items()}
        self.steps_per_epoch = num_batches(len(self.data.train), c.batch_size * self.world, drop_last=True)
        self.total_steps = c.epochs * self.steps_per_epoch if c.epochs else None
        if c.max_steps is not None:  # the planned steps (schedules, warm-ups) end at the step limit
            self.total_steps = c.max_steps if self.total_steps is None else min(self.total_steps, c.max_steps)

    # --- precision and memory layout ------------------------------------------------------------------
    def _choose_precision(self, resume: bool) -> None:
        """Rank 0's choice, on every rank: the one run.json records when resuming, else a new one."""
        c = self.config
        choice = None
        if self.main:
            recorded = self.run_dir / "run.json" if resume and self.run_dir is not None else None
            if recorded is not None and recorded.is_file():
                run = read_json(recorded, "run (run.json)")
                same = str(run.get("device", "")).split(":")[0] == self.device.type  # bit-exact on one device only
                choice = prec.Choice.recorded(run) if same else None
            if choice is None:
                hardware = prec.cpu_has_bf16() if self.device.type == "cpu" else bf16_supported(self.device)
                choice = prec.choose(c.precision, c.channels_last, self.device, bf16_hardware=hardware,
                                     convolutions=prec.has_convolutions(self.model, self.data.shape),
                                     measure=self._probe)
        if self.dist is not None:
            choice = prec.Choice(**json.loads(self.dist.share_text(json.dumps(choice.__dict__) if self.main else None)))
        self.choice = choice
        self.use_bf16 = choice.bf16
        if choice.bf16 and not bf16_supported(self.device):
            raise UserError(f"this run trains in bf16, which this {self.device.type} device does not support; "
                            "resume it on a machine with native bf16")
        self.channels_last = choice.channels_last
        if choice.channels_last:
            to_channels_last(self.model, self.optimizers.values())

    def _probe(self, candidates: list) -> tuple[dict, bool]:
        """Seconds per training step of each candidate (bf16, channels-last), from the cache or measured on
        copies of the model and its optimizers (the run's own are untouched), with the run's RNG stream kept."""
        c = self.config
        fp = prec.fingerprint(self.model, c.batch_size, c.optimizer, self.device, candidates)
        times = prec.cached_times(fp)
        if times is not None:
            return times, True
        batch = next(iter(batches(self.data.train, c.batch_size, drop_last=True)))
        with seeded(c.seed + 2, self.device):
            times = prec.measure({prec.name(k): self._shadow_step(batch, *k) for k in candidates})
        prec.store_times(fp, times)
        return times, False

    def _shadow_step(self, batch: Batch, bf16: bool, channels_last: bool):
        """One training step of a copy of this trainer over a copy of the model, as a function."""
        shadow = copy.copy(self)
        shadow.model = copy.deepcopy(self.model)
        shadow.optimizers = {n: build_optimizer(spec, self.config, self.device)
                             for n, spec in shadow.model.optimizers().items()}
        shadow.opt_params = {n: [p for g in o.param_groups for p in g["params"]] for n, o in shadow.optimizers.items()}
        shadow.base_lrs = {n: [g["lr"] for g in o.param_groups] for n, o in shadow.optimizers.items()}
        shadow.use_bf16, shadow.channels_last = bf16, channels_last
        shadow.dist, shadow._synced, shadow._pending, shadow._bad, shadow.check_at_once = None, [], [], None, True
        if channels_last:
            to_channels_last(shadow.model, shadow.optimizers.values())
        batch = shadow._to_device(batch)
        return lambda: shadow._train_step(batch, 0)

    def _autocast(self):
        if not self.use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    # --- one step --------------------------------------------------------------------------------
    def progress(self, step: int) -> float:
        """The fraction of the run's budget used before ``step``: of its planned steps, of its time budget, or
        the larger of both (whichever ends the run first); a time budget makes it follow the clock."""
        done = step / self.total_steps if self.total_steps else 0.0
        on_clock = self._time_share()
        return min(1.0, done if on_clock is None else max(done, on_clock))

    def _time_share(self) -> float | None:
        """The share of the time budget used (None without one). Ranks read one clock, rank 0's as shared at
        the last step: their own would give them other learning rates and KL weights, and their weights
        would drift apart."""
        c = self.config
        if not c.max_minutes or self._clock is None:
            return None
        elapsed = self._rank0_elapsed
        if elapsed is None:
            elapsed = time.perf_counter() - self._clock
        return elapsed / (60 * c.max_minutes)

    def _train_step(self, batch: Batch, step: int) -> dict:
        c = self.config
        factor = lr_factor(step, self.total_steps, c.schedule, c.warmup_steps, c.min_lr_ratio, self._time_share())
        for name, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self.base_lrs[name]):
                group["lr"] = base * factor
            _zero_grads(self.opt_params[name])
        if self._synced:
            self.dist.broadcast_(self._synced)
        ctx = StepRunner(self, step, training=True)
        with self._autocast():
            metrics = self.model.training_step(batch, ctx)
        with torch.no_grad():
            self.model.after_step(ctx)
        if self.check_at_once:
            return {k: float(v) for k, v in metrics.items()}
        # a GPU: no read-back per step; summed on the device in float64 (as Python sums the floats above)
        return {k: v.detach().double() if torch.is_tensor(v) else float(v) for k, v in metrics.items()}

    def _check_losses(self) -> None:
        """The deferred NaN/inf check (one process on a GPU): the losses since the last check, read back at
        once; the first bad one stops the run, naming its step and optimizers as the check at each backward
        pass does on the CPU. It runs before every checkpoint, so the last good checkpoint is kept."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        values = torch.stack([v.float().reshape(()) for v, _, _ in pending])
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            self._diverged(float(values[i]), pending[i][1], pending[i][2])

    def _diverged(self, value: float, step: int, names, elsewhere: bool = False) -> None:
        path = self.run_dir / CHECKPOINT if self.run_dir else None
        kept = f"the last good checkpoint ({path}) is kept" if path and path.exists() else "no checkpoint was written yet"
        what = "a loss became nan or inf on another rank" if elsewhere else f"loss became {value}"
        raise TrainingDiverged(
            f"{what} at step {step} (optimizer {', '.join(names)}); training stopped and {kept}; "
            "try a lower learning rate (--lr) or gradient clipping (--set train.grad_clip=1.0)"
        )

    def validate(self, step: int) -> dict:
        """Mean metrics over the validation split. Its randomness comes from a fixed seed in a forked RNG,
        so validating never changes the training run."""
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        ctx = StepRunner(self, step, training=False)
        with seeded(self.config.seed + 1, self.device):
            for batch in batches(self.data.val, max(self.config.batch_size, 500)):
                batch = self._to_device(batch)
                with self._autocast():
                    metrics = self.model.validation_step(batch, ctx)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
                n += len(batch)
        self.model.train()
        return {k: v / n for k, v in sums.items()}

    def _to_device(self, batch: Batch) -> Batch:
        x = batch.x
        if self.channels_last and x.dim() == 4:  # (B, C, H, W) stored as (B, H, W, C)
            x = x.contiguous(memory_format=torch.channels_last)
        if self.device.type == "cpu":
            return batch if x is batch.x else Batch(x, batch.y, batch.index)
        y = None if batch.y is None else batch.y.to(self.device, non_blocking=True)
        return Batch(x.to(self.device, non_blocking=True), y, batch.index)

    # --- the loop --------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        from tqdm import tqdm

        self._setup()
        c = self.config
        if self.run_dir is None and resume:
            raise UserError("resuming needs a run directory")
        if self.run_dir is None and c.log:
            raise UserError(f"logging to {', '.join(c.log)} needs a run directory")
        if self.run_dir is not None and self.main:
            make_dir(self.run_dir)
        state = {"step": 0, "epoch": 0, "batch": 0, "elapsed_s": 0.0}
        if resume:
            state = self._restore()
        else:  # data order and noise (each rank its own); the weights are the model's, as built
            torch.manual_seed(c.seed if self.main else rank_seed(c.seed, self.dist.rank))
        # Data-dependent state that gradients do not learn (e.g. a hash model's neighbour table). It is
        # deterministic and draws no random numbers, so a resumed run rebuilds what the first run had.
        self.model.prepare(self.data.train)
        self.model.train()
        self._choose_precision(resume)
        writes = self.run_dir is not None and self.main
        log = MetricsLog(self.run_dir / "metrics.jsonl" if writes else None, state["step"] if resume else None)
        self._trackers = tracking.Trackers()
        if writes and c.log:
            self._trackers = tracking.open_trackers(c.log, self.run_dir, state["step"] if resume else None)
            self._trackers.log_params({"model": self.model.name, "data": self.data.spec,
                                       "model_config": to_dict(self.model.config), "train": to_dict(c)})
        finished = False
        self._write_run_json(state, finished=False)
        t0 = time.perf_counter() - state["elapsed_s"]
        self._clock = t0
        self._rank0_elapsed = state["elapsed_s"] if self.dist is not None else None
        bar = tqdm(total=self.total_steps, initial=state["step"], disable=not (c.progress and self.main), unit="step",
                   desc=f"{self.model.name} on {self.data.spec}", dynamic_ncols=True)
        acc: dict[str, float] = {}
        acc_n = 0
        t_log, items_log = time.perf_counter(), 0
        last_val: dict = {}
        stopped_by = "epochs"
        try:
            while (c.epochs is None or state["epoch"] < c.epochs) and (c.max_steps is None or state["step"] < c.max_steps):
                out_of_time = False
                shard = (self.dist.rank, self.world) if self.dist else (0, 1)
                for batch in batches(self.data.train, c.batch_size * self.world, shuffle=True, seed=c.seed,
                                     epoch=state["epoch"], start=state["batch"], drop_last=True, shard=shard):
                    metrics = self._train_step(self._to_device(batch), state["step"])
                    state["step"] += 1
                    state["batch"] += 1
                    for k, v in metrics.items():
                        acc[k] = acc.get(k, 0.0) + v
                    acc_n += 1
                    items_log += len(batch) * self.world
                    bar.update(1)
                    if len(self._pending) >= 1024:  # bounded, also with a rare log_every
                        self._check_losses()
                    if state["step"] % c.log_every == 0 or state["step"] == self.total_steps:
                        self._check_losses()
                        now = time.perf_counter()
                        rate = items_log / max(now - t_log, 1e-9)
                        record = self._mean_over_ranks({k: float(v) / acc_n for k, v in acc.items()})
                        self._log(log, "train", state, now - t0, record, rate=rate)
                        bar.set_postfix(loss=f"{record.get('loss', next(iter(record.values()), 0)):.4g}",
                                        samples_s=f"{rate:,.0f}")
                        acc, acc_n, t_log, items_log = {}, 0, now, 0
                    if c.val_every and state["step"] % c.val_every == 0 and self.main:
                        self._check_losses()
                        last_val = self.validate(state["step"])
                        self._log(log, "val", state, time.perf_counter() - t0, last_val)
                    if c.checkpoint_every and state["step"] % c.checkpoint_every == 0:
                        state["elapsed_s"] = time.perf_counter() - t0
                        self._checkpoint(state)
                    if c.max_steps is not None and state["step"] >= c.max_steps:  # the same on every rank
                        out_of_time, stopped_by = True, "steps"
                        break
                    if c.max_minutes is not None:
                        elapsed = time.perf_counter() - t0
                        if self.dist is not None:  # rank 0's clock decides, and paces every rank's schedule
                            elapsed = self._rank0_elapsed = self.dist.share_float(elapsed)
                        out_of_time = elapsed >= 60 * c.max_minutes
                        if out_of_time:
                            stopped_by = "time"
                            break
                if out_of_time:
                    break
                state["epoch"] += 1
                state["batch"] = 0
                if not c.val_every and self.main:
                    self._check_losses()
                    last_val = self.validate(state["step"])
                    self._log(log, "val", state, time.perf_counter() - t0, last_val)
            finished = True
        except Exception:
            self._check_losses()  # a loss that went bad before the error explains it better
            raise
        finally:
            bar.close()
            log.close()
            self._trackers.close(ok=finished)
        self._check_losses()
        state["elapsed_s"] = time.perf_counter() - t0
        self._checkpoint(state)
        if writes:
            save_model(self.model, self.run_dir)
        self._write_run_json(state, finished=True, stopped_by=stopped_by, val=last_val)
        if self.dist is not None:
            self.dist.barrier()  # the other ranks wait for rank 0's files
        return TrainResult(state["step"], state["epoch"], state["elapsed_s"], stopped_by, last_val)

    def _checkpoint(self, state: dict) -> None:
        if self.run_dir is None:
            return
        self._check_losses()  # never a checkpoint of weights a bad loss has reached
        gpu = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None  # its own GPU only
        if self.dist is None:
            ckpt.save_checkpoint(self.run_dir / CHECKPOINT, self.model, self.optimizers, state,
                                 cuda_rng=None if gpu is None else [gpu])
            return
        states = self.dist.gather_bytes(torch.get_rng_state())  # every rank's noise goes on after a resume
        gpus = self.dist.gather_bytes(gpu) if gpu is not None else None  # every rank's GPU stream, too
        if self.main:
            ckpt.save_checkpoint(self.run_dir / CHECKPOINT, self.model, self.optimizers,
                                 {**state, "world_size": self.world}, rank_rng=states, cuda_rng=gpus)

    def _mean_over_ranks(self, record: dict) -> dict:
        if self.dist is None or not record:
            return record
        keys = sorted(record)
        values = self.dist.mean(torch.tensor([record[k] for k in keys], dtype=torch.float64, device=self.device))
        return dict(zip(keys, values.tolist()))

    def _log(self, log: MetricsLog, split: str, state: dict, elapsed: float, metrics: dict, rate=None):
        record = {"split": split, "step": state["step"], "epoch": state["epoch"], "elapsed_s": round(elapsed, 3)}
        if rate is not None:
            record["samples_per_s"] = round(rate, 1)
            record["lr"] = next(iter(self.optimizers.values())).param_groups[0]["lr"]
        record.update(metrics)
        log.write(record)
        if self._trackers:
            self._trackers.log_scalars(tracking.scalars_of(record), state["step"])
            if split == "val" and self.val_images is not None:
                self._track_images(state["step"])

    def _track_images(self, step: int) -> None:
        """The pictures of ``val_images``, drawn in evaluation mode from a forked RNG (the run's own stream is
        untouched, so a run with trackers trains as one without)."""
        self.model.eval()
        try:
            with seeded(self.config.seed + 1, self.device), torch.no_grad():
                pictures = self.val_images(self.model)
        finally:
            self.model.train()
        for name, image in pictures.items():
            self._trackers.log_image(name, image, step)

    def _restore(self) -> dict:
        path = self.run_dir / CHECKPOINT
        tensors, state, opt_meta = ckpt.read_checkpoint(path)
        saved = state.get("world_size", 1)
        if saved != self.world:
            raise UserError(f"{path}: the run was trained on {saved} process(es), this one has {self.world}; resume "
                            f"it with as many (torchrun --nproc-per-node and --nnodes)")
        model_state = {k[len("model."):]: v.to(self.device) for k, v in tensors.items() if k.startswith("model.")}
        load_state(self.model, model_state, path)
        for name, opt in self.optimizers.items():
            ckpt.restore_optimizer(opt, name, tensors, opt_meta, self.device)
        ckpt.restore_rng(tensors, self.dist.rank if self.dist else 0, self.device)
        return state

    def _write_run_json(self, state: dict, finished: bool, stopped_by: str | None = None, val: dict | None = None):
        if self.run_dir is None or not self.main:
            return
        meta = {
            "aezoo_version": __version__,
            "model": self.model.name,
            "data": self.data.spec,
            "train": to_dict(self.config),
            "finished": finished,
            "stopped_by": stopped_by,
            "step": state["step"],
            "epoch": state["epoch"],
            "elapsed_s": round(state["elapsed_s"], 2),
            "parameters": self.model.num_parameters(),
            "optimizers": {name: describe_optimizer(opt) for name, opt in self.optimizers.items()},
            "precision": "bf16" if self.use_bf16 else "fp32",
            "channels_last": self.channels_last,
            "precision_choice": self.choice.to_json() if self.choice else None,
            "device": str(self.device),
            "processes": self.world,
            "hardware": machine_info(),
            "val": val or {},
        }
        meta.update(self.extra_meta)
        write_json(self.run_dir / "run.json", meta)


def to_channels_last(model: torch.nn.Module, optimizers) -> None:
    """4-D weights and buffers in channels-last, in place (the optimizers keep their parameters), and the
    optimizer states that follow a weight in its layout: the fused Adam kernel assumes one layout for a
    parameter and its moments, and gives wrong numbers (no error) when they differ."""
    model.to(memory_format=torch.channels_last)
    for opt in optimizers:
        for p, st in opt.state.items():
            for key, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[key] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of a rank other than 0 in a distributed run (rank 0 uses ``seed``)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
