"""Several processes, one model: ``torch.distributed`` set-up for DistributedDataParallel.

Processes are started by ``torchrun`` (or ``pyro-vae train --nproc N``, which calls it),
which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables. CPU
processes talk over gloo, GPUs over NCCL. Every collective has a timeout, so a process
whose peer died stops with an error instead of waiting for ever.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist

from pyro_vae.errors import ConfigError, PyroVAEError, UsageError

DEFAULT_TIMEOUT_S = 120.0


class PeerFailure(PyroVAEError, RuntimeError):
    """Another process stopped or timed out; this one gave up instead of waiting for ever."""


@contextlib.contextmanager
def collective():
    """Turn the backend's error for a lost or silent peer into :class:`PeerFailure`."""
    try:
        yield
    except PeerFailure:
        raise
    except RuntimeError as e:  # gloo and NCCL report lost peers and timeouts as RuntimeError
        raise PeerFailure(f"another training process failed or timed out ({e})") from e


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Context(0, 1, 0, 1, torch.device("cpu"))


def setup(device: str | torch.device | None = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> Context:
    """Join (or reuse) the default process group described by torchrun's environment."""
    missing = [
        v for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ
    ]
    if missing and not dist.is_initialized():
        raise UsageError(
            f"distributed training needs the variables torchrun sets ({', '.join(missing)} missing): "
            "start it with `torchrun --nproc_per_node=N -m pyro_vae train ...` or `pyro-vae train --nproc N ...`"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    want_cuda = (
        device in ("cuda", "auto", None) and torch.cuda.is_available() or str(device).startswith("cuda")
    )
    if want_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was requested but torch sees no CUDA device")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s)
        )
    return Context(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())),
        device=dev,
    )


def current() -> Context:
    """The context of an initialised process group, else the single-process one."""
    if dist.is_available() and dist.is_initialized():
        return Context(
            dist.get_rank(),
            dist.get_world_size(),
            int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())),
            torch.device("cpu"),
        )
    return SINGLE


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all processes (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    with collective():
        dist.all_reduce(t)
    return t.tolist()


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate each process's rows in rank order (ranks may hold different counts)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    with collective():
        dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    with collective():
        dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def shard_rows(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    """This process's contiguous share of ``x``; shares in rank order make up ``x``."""
    return torch.tensor_split(x, ctx.world_size)[ctx.rank]


def shutdown(barrier: bool = True) -> None:
    """Leave the process group; with ``barrier``, first wait until every process is done,
    so that no process exits while another still talks to it."""
    if dist.is_available() and dist.is_initialized():
        if barrier and dist.get_world_size() > 1:
            with contextlib.suppress(RuntimeError):
                dist.barrier()
        gc.collect()  # frees DDP reducers caught in reference cycles while the group still exists
        dist.destroy_process_group()


def exit_process(code: int = 0, barrier: bool = True) -> NoReturn:
    """End a worker started by torchrun: leave the group, flush output, ``os._exit(code)``.

    Skipping interpreter finalisation is deliberate: if Python tears down while gloo's
    worker threads still hold tensors, the process can abort (SIGABRT) after its work is
    done and torchrun reports the whole run as failed. Call it last in a training script.
    """
    shutdown(barrier=barrier)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``pyro-vae ARGV`` in ``nproc`` processes on this machine with torchrun."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.call([*cmd, "-m", "pyro_vae", *argv])
