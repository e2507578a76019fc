"""Process group, device and timing helpers shared by ``calibrate`` and ``run``.

Under ``torchrun`` the environment carries ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address; ``--nproc N`` (a CPU convenience) spawns N local processes itself with the
same variables. CUDA devices use NCCL, one device per local rank; otherwise the CPU with gloo.

Timing: on CUDA every timed region ends with ``torch.cuda.synchronize()`` (kernels are
asynchronous; a host clock read without it measures the launch, not the work); step times are
barrier-synchronised wall times, the slowest rank's (``all_reduce`` MAX of each rank's time).
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Env:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def device_name(self) -> str:
        """What torch calls the device: the CUDA name, or 'cpu'."""
        if self.is_cuda:
            return torch.cuda.get_device_name(self.device)
        return "cpu"


def pick_device(local_rank: int, want: str = "auto") -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is present (or asked for), else the CPU."""
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: torch sees no CUDA device")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init(device: str = "auto", threads: int | None = None) -> Env:
    """Join the process group of this job (or a one-process group when run alone)."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = pick_device(local, device)
    if threads:
        torch.set_num_threads(threads)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        kw: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world}
        if dev.type == "cuda":
            kw["device_id"] = dev
        dist.init_process_group(**kw)
    return Env(rank, world, local, dev, backend)


def shutdown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sync(env: Env) -> None:
    """Wait for this rank's queued device work."""
    if env.is_cuda:
        torch.cuda.synchronize(env.device)


def timed(env: Env, fn: Callable[[], Any], reps: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn`` on this rank (after ``warmup`` calls),
    device work included."""
    for _ in range(warmup):
        fn()
    sync(env)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(env)
        out.append(time.perf_counter() - t0)
    return out


def round_robin(env: Env, fns: Sequence[Callable[..., Any]], reps: int, warmup: int = 1
                ) -> list[list[float]]:
    """Seconds of ``reps`` calls of each of ``fns``, called in turn (one call of each, then the
    next round): a burst of foreign load on a shared host then spreads over all points instead
    of spoiling a few. Every rank calls the same sequence (collectives may be among ``fns``)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync(env)
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            sync(env)
            out[i].append(time.perf_counter() - t0)
    return out


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def slowest(env: Env, seconds: float) -> float:
    """The largest of every rank's ``seconds`` (what a synchronous step waits for)."""
    if env.world_size == 1:
        return seconds
    t = torch.tensor([seconds], dtype=torch.float64,
                     device=env.device if env.is_cuda else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def mean_over_ranks(env: Env, values: list[float]) -> list[float]:
    """Element-wise mean of a list of floats over all ranks (same length on every rank)."""
    if env.world_size == 1 or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=env.device if env.is_cuda else "cpu")
    dist.all_reduce(t)
    return [float(x) / env.world_size for x in t.tolist()]


def renice(increment: int | None) -> str | None:
    """Change this process's scheduling priority by ``increment`` (negative = more CPU on a
    shared host: benchmark hygiene; negative values need CAP_SYS_NICE). Returns a warning when
    the change is refused (the process goes on at normal priority).

    Call it first thing in a worker, before torch or gloo start threads (Linux applies nice
    per thread; new threads inherit it). Where the kernel groups processes by session
    (``sched_autogroup``, on by default on most distributions), CPU is shared fairly between
    sessions and nice only orders processes inside one; so the worker first starts a session
    of its own and sets that group's nice too (``/proc/self/autogroup``)."""
    if not increment:
        return None
    try:
        if os.getsid(0) != os.getpid():
            os.setsid()
        autogroup = "/proc/self/autogroup"
        if os.path.exists(autogroup):
            with open(autogroup, "w") as f:
                f.write(str(increment))
        os.nice(increment)
    except OSError as exc:
        return f"--nice {increment} refused ({exc.strerror}); running at normal priority"
    return None


def spawn(nproc: int, target: Callable[..., Any], *args: Any, nice: int | None = None) -> None:
    """Run ``target(*args)`` in ``nproc`` local processes that form one gloo/NCCL job, as
    torchrun would (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT``)."""
    import torch.multiprocessing as mp

    port = free_port()
    mp.start_processes(_spawned, args=(nproc, port, target, args, nice), nprocs=nproc,
                       start_method="spawn", join=True)


def _spawned(rank: int, nproc: int, port: int, target: Callable[..., Any],
             args: tuple[Any, ...], nice: int | None = None) -> None:
    warning = renice(nice)
    if warning and rank == 0:
        import sys

        print(warning, file=sys.stderr)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    target(*args)
