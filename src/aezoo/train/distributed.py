"""Data parallelism over ``torch.distributed``, for runs started by ``torchrun`` (or anything that sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT: SLURM, Kubernetes operators, Ray, accelerate).

A :class:`Group` is the trainer's view of the process group: gloo for CPU tensors, NCCL for CUDA ones. Gradients are
averaged with one explicit all-reduce per optimizer update (a flat buffer of that update's gradients), not
a DDP wrapper, so models with several optimizers and partial backward passes need no change. Without
WORLD_SIZE > 1 nothing here is used and training is single-process as before. A collective waits at most
AEZOO_DIST_TIMEOUT seconds (default 600) for the other ranks.

GPUs: each process trains on one GPU of its own (:func:`cuda_index`): ``cuda:LOCAL_RANK``, or ``cuda:0`` when
a process sees exactly one GPU (SLURM ``--gpus-per-task``, one-GPU pods). Two ranks on one GPU are refused
(NCCL cannot run them). None of this has run on a real GPU yet (README, "GPUs").
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class PeerLost(UserError):
    """A collective failed: another rank died or the network went away."""


class RankZeroRefused(UserError):
    """Rank 0 refused the command (its own error says why); the other ranks stop with it, silently."""


def requested() -> bool:
    """Whether the environment asks for more than one process (WORLD_SIZE > 1)."""
    return _int_env("WORLD_SIZE", 1) > 1


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


@dataclass
class Group:
    rank: int
    world: int
    local_rank: int
    device: torch.device  # where collectives put their small tensors (the training device)
    leaving: object = None  # a plain gloo group for the barrier at leave() (monitored_barrier needs one)

    @property
    def main(self) -> bool:
        return self.rank == 0

    # --- collectives (every rank must call them in the same order) ------------------------------
    def _run(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, dist.DistError) as e:  # gloo/NCCL: a peer closed the connection or timed out
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PeerLost(f"rank {self.rank} of {self.world} lost the other processes (one died or the network "
                           f"failed): {first}") from None

    def average_(self, tensors: list[torch.Tensor], flag: float = 0.0) -> float:
        """Replace each tensor by its mean over ranks, in one all-reduce; returns the sum of ``flag`` over
        ranks (how many ranks raised it)."""
        flat = torch.cat([t.reshape(-1).float() for t in tensors] + [torch.tensor([flag], device=self.device)])
        self._run(dist.all_reduce, flat)
        total = float(flat[-1])
        flat = flat[:-1] / self.world
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n
        return total

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        out = t.detach().float().clone()
        self._run(dist.all_reduce, out)
        return (out / self.world).to(t.dtype)

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Rank 0's values into every rank's ``tensors`` (in place)."""
        if not tensors:
            return
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        self._run(dist.broadcast, flat, 0)
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t).to(t.dtype))
            offset += n

    def share_float(self, value: float) -> float:
        """Rank 0's ``value``, on every rank (the time budget: one clock decides and paces the schedules).
        A CPU float64 tensor (gloo): read back every step, it must not wait for a GPU's queue."""
        t = torch.tensor([value], dtype=torch.float64)
        self._run(dist.broadcast, t, 0)
        return float(t.item())

    def gather_bytes(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's uint8 tensor of one shape (RNG states), in rank order."""
        t = t.to(self.device)
        out = [torch.empty_like(t) for _ in range(self.world)]
        self._run(dist.all_gather, out, t)
        return [o.cpu() for o in out]

    def share_text(self, text: str | None) -> str | None:
        """Rank 0's text (or None) on every rank: a check only rank 0 makes, such as an error."""
        data = torch.tensor(list(text.encode()) if text is not None else [], dtype=torch.uint8)
        size = torch.tensor([len(data) if text is not None else -1], dtype=torch.int64, device=self.device)
        self._run(dist.broadcast, size, 0)
        n = int(size.item())
        if n < 0:
            return None
        buf = data.to(self.device) if self.main else torch.empty(n, dtype=torch.uint8, device=self.device)
        if n:
            self._run(dist.broadcast, buf, 0)
        return bytes(buf.cpu().tolist()).decode()

    def barrier(self) -> None:
        self._run(dist.barrier)

    def claim_gpu(self) -> torch.device:
        """This rank's own GPU (:func:`cuda_index`), checked against every rank's over gloo. NCCL cannot run
        two ranks on one GPU: that, or a rank with no GPU of its own, stops every rank with the same one-line
        error (rank 0 says it)."""
        index = cuda_index(self.local_rank)
        mine = (gpu_uuid(index) if index is not None else "").encode()[:64].ljust(64, b"\0")
        out = [torch.empty(64, dtype=torch.uint8) for _ in range(self.world)]
        self._run(dist.all_gather, out, torch.tensor(list(mine), dtype=torch.uint8))  # CPU tensors: gloo
        ids = [bytes(t.tolist()).rstrip(b"\0").decode() for t in out]
        problem, seen = None, {}
        for rank, uuid in enumerate(ids):
            if not uuid:
                problem = (f"rank {rank} has no GPU of its own (its LOCAL_RANK is not below the number of GPUs it "
                           "sees)")
                break
            if uuid in seen:
                problem = f"ranks {seen[uuid]} and {rank} would share one GPU ({uuid})"
                break
            seen[uuid] = rank
        if problem is not None:
            text = (f"{problem}; NCCL needs one GPU per process: start at most as many processes per machine as it "
                    "has GPUs (torchrun --nproc-per-node), or train on the CPU with --device cpu")
            raise UserError(text) if self.main else RankZeroRefused(text)
        return torch.device("cuda", index)


def cuda_index(local_rank: int) -> int | None:
    """The GPU a process of LOCAL_RANK ``local_rank`` trains on: its LOCAL_RANK among the GPUs it sees, or
    the only one when it sees exactly one (one GPU per process: SLURM ``--gpus-per-task``, one-GPU pods,
    CUDA_VISIBLE_DEVICES set per process). None when it has none of its own (more processes than GPUs)."""
    count = torch.cuda.device_count()
    if count == 1:
        return 0
    return local_rank if local_rank < count else None


def gpu_uuid(index: int) -> str:
    """The GPU's identity, the same in every process that sees it (whatever its ordinal there)."""
    return str(torch.cuda.get_device_properties(index).uuid)


_GROUP: Group | None = None


def current() -> Group | None:
    """The process group this process belongs to, once :func:`join` has run (None: single process)."""
    return _GROUP


def join() -> Group | None:
    """Join the process group the environment describes (once per process); None without WORLD_SIZE > 1.
    CPU tensors go through gloo and, when CUDA is available, CUDA tensors through NCCL (each process on
    the GPU of its LOCAL_RANK)."""
    global _GROUP
    if _GROUP is not None or not requested():
        return _GROUP
    missing = [k for k in ENV if not os.environ.get(k)]
    if missing:
        raise UserError(f"WORLD_SIZE > 1 but {', '.join(missing)} not set; start with torchrun (see README)")
    world, rank, local = _int_env("WORLD_SIZE", 1), _int_env("RANK", 0), _int_env("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise UserError(f"RANK={rank} is outside WORLD_SIZE={world}")
    backend = "gloo"
    if torch.cuda.is_available():
        index = cuda_index(local)
        if index is not None:  # none of its own: refused once the trainer asks for CUDA (Group.claim_gpu)
            torch.cuda.set_device(index)
        backend = "cpu:gloo,cuda:nccl"
        # A lost peer under NCCL: by default a watchdog thread tears the process down after the timeout (a
        # C++ abort, no Python error). With blocking waits PyTorch starts no watchdog and wait() raises in
        # the waiting thread, so the timeout becomes PeerLost (the cost: the host waits for each collective,
        # as it already does once per update for the reached-parameter flags). 2, where a user turns
        # blocking waits off: the watchdog aborts the communicator without killing the process. A user's
        # own setting wins.
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
    timeout = datetime.timedelta(seconds=float(os.environ.get("AEZOO_DIST_TIMEOUT", 600)))
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(backend, timeout=timeout)
    except (RuntimeError, ValueError, dist.DistError) as e:
        text = str(e)
        if "EADDRINUSE" in text or "address already in use" in text.lower():
            raise UserError(f"the rendezvous port {where} is in use; pick a free --master-port") from None
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise UserError(f"could not join the process group at {where} as rank {rank} of {world}: {first}") from None
    _GROUP = Group(rank, world, local, torch.device("cpu"))  # the trainer sets the device it trains on
    if backend != "gloo":  # monitored_barrier accepts plain gloo only (a ValueError otherwise)
        try:
            _GROUP.leaving = dist.new_group(backend="gloo", timeout=timeout)
        except (RuntimeError, ValueError, dist.DistError) as e:
            _GROUP = None
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PeerLost(f"rank {rank} of {world} lost the other processes while joining: {first}") from None
    atexit.register(leave)  # one group per process, for every trainer it runs
    return _GROUP


def leave(wait: bool = True) -> None:
    """Leave the process group (at the end of a command, and at exit). ``wait``: first meet the other ranks
    (at most 30 s), so that no rank tears down connections another is still reading from (gloo aborts the
    process then); skipped when a rank is known to be gone."""
    global _GROUP
    if _GROUP is not None and dist.is_initialized():
        if wait:
            try:
                dist.monitored_barrier(_GROUP.leaving, timeout=datetime.timedelta(seconds=30))
            except (RuntimeError, ValueError, dist.DistError):
                pass  # another rank is gone (or no gloo group to wait in): leave anyway
        dist.destroy_process_group()
    _GROUP = None
