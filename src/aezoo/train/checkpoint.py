"""Checkpoints: one safetensors file holding weights, optimizer states and RNG states, with the trainer's
position (step, epoch, batch, elapsed time) as JSON metadata. Written to a temporary file and renamed,
so a crash during a write leaves the previous checkpoint intact."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..errors import UserError
from ..io import save_tensors
from ..models.base import check_format

FORMAT = "aezoo-checkpoint/2"  # /2: optimizers named by the model (protocol v2)


def save_checkpoint(path: Path, model: torch.nn.Module, optimizers: dict, state: dict,
                    rank_rng: list[torch.Tensor] | None = None, cuda_rng: list[torch.Tensor] | None = None) -> None:
    """``rank_rng``: the CPU RNG state of every rank of a distributed run, in rank order. ``cuda_rng``: the
    RNG state of each rank's own GPU, in rank order (one process: one state; None when training on the CPU).
    Only the training GPU's state is kept, never every visible GPU's: a resume may see other GPUs."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_meta = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        scalars = {}
        for pid, st in sd["state"].items():
            for key, value in st.items():
                if torch.is_tensor(value):
                    tensors[f"opt.{name}.{pid}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{pid}.{key}"] = value
        opt_meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    tensors["rng.cpu"] = torch.get_rng_state()
    for rank, st in enumerate((rank_rng or [])[1:], start=1):
        tensors[f"rng.cpu.rank{rank}"] = st
    for rank, st in enumerate(cuda_rng or []):
        tensors[f"rng.cuda.rank{rank}" if rank else "rng.cuda"] = st
    meta = {"format": FORMAT, "state": json.dumps(state), "optimizers": json.dumps(opt_meta)}
    save_tensors(path, tensors, metadata=meta)


def read_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """Returns (tensors, trainer state, optimizer metadata)."""
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint to resume from")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        check_format(meta.get("format"), path, "checkpoint", FORMAT)
        return tensors, json.loads(meta["state"]), json.loads(meta["optimizers"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: corrupt checkpoint ({e})") from None


def restore_optimizer(opt: torch.optim.Optimizer, name: str, tensors: dict, meta: dict, device) -> None:
    if name not in meta:
        raise UserError(f"the checkpoint has no state for optimizer {name!r}; it was written by another model")
    state: dict = {}
    prefix = f"opt.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, field = key[len(prefix):].split(".", 1)
            # Adam keeps 'step' on the CPU; moments live with the parameters.
            state.setdefault(int(pid), {})[field] = value if field == "step" else value.to(device)
    for key, value in meta[name]["scalars"].items():
        pid, field = key.split(".", 1)
        state.setdefault(int(pid), {})[field] = value
    opt.load_state_dict({"state": state, "param_groups": meta[name]["param_groups"]})


def restore_rng(tensors: dict, rank: int = 0, device: torch.device = torch.device("cpu")) -> None:
    """The rank's CPU state, and on a GPU the state its rank's GPU had, onto ``device`` (whatever its ordinal
    and however many GPUs are visible). A run moved from the CPU to a GPU has no GPU state: that GPU's stream
    starts from the rank's seed, as a new run's would. Moved the other way, the saved GPU state is unused.
    Bit-exact resumes are promised on the same device only."""
    key = f"rng.cpu.rank{rank}" if rank else "rng.cpu"
    if key not in tensors:
        raise UserError(f"the checkpoint holds no random state for rank {rank}")
    torch.set_rng_state(tensors[key])
    if device.type != "cuda":
        return
    cuda = tensors.get(f"rng.cuda.rank{rank}" if rank else "rng.cuda")
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)
    else:
        with torch.cuda.device(device):
            torch.cuda.manual_seed(torch.initial_seed())  # the seed the restored CPU state started from
