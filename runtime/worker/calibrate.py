"""``meshplan-runtime calibrate``: measure the local devices into a calibration profile.

All ranks measure at once (on a shared host that is how a job runs: two CPU processes share
memory bandwidth, GPUs of a node share the host), each with its own device:

* **GEMM** — for every (m, n, k) of the grid, the three GEMMs of a linear layer in training:
  forward ``F.linear(x, W)`` (m×k by k×n), input gradient ``dy·W`` and weight gradient
  ``dyᵀ·x``, in the job's dtype (bf16 on CUDA, fp32 on a CPU); the rate is 6·m·n·k / time.
  Small ``F.linear`` calls with autograd recording give the per-kernel time (fitted in
  :mod:`runtime.profile_build`).
* **attention** — ``scaled_dot_product_attention(causal=True)`` forward, and backward from its
  output gradient, over (batch·heads, sequence) shapes.
* **memory bandwidth** — a large tensor copy (bytes read + written per second).
* **collectives** — all_reduce, all_gather (into one tensor), reduce_scatter (from one tensor)
  and send/recv (a ring exchange, as nccl-tests' sendrecv) over the world group — and, on
  several nodes, over each node's ranks — for message sizes in nccl-tests' convention; the
  slowest rank's median time per size.
* **transformer block** — forward and backward of one block of each ``--block`` shape, at
  tp = 1 (every rank alone) and at tp = world size (tensor parallel over all ranks, the
  worker's own TP plan), the shapes the runs will use.

Rank 0 builds the profile (:func:`runtime.profile_build.build_profile`). Every measurement is
the median of its repetitions after a warm-up; CUDA work is synchronised before each clock
read.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from costmodel.specs.model import ModelSpec
from runtime.devices import catalog_gpu
from runtime.profile_build import Raw, build_profile
from runtime.worker import dist as wdist


@dataclass(frozen=True)
class BlockShape:
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    seq: int
    micro_batch: int

    @classmethod
    def parse(cls, text: str) -> BlockShape:
        """``HIDDENxFFNxHEADSxKV_HEADSxSEQxMICRO_BATCH``, e.g. ``256x704x4x2x128x2``."""
        parts = text.lower().split("x")
        if len(parts) != 6 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--block {text!r}: expected HIDDENxFFNxHEADSxKVxSEQxMICROBATCH "
                             "of positive integers, e.g. 256x704x4x2x128x2")
        return cls(*(int(p) for p in parts))


@dataclass
class CalibrateOptions:
    name: str | None = None
    gpu: str | None = None
    """Catalog name to record instead of the detected one."""
    gemm_m: list[int] = field(default_factory=list)
    gemm_n: list[int] = field(default_factory=list)
    gemm_k: list[int] = field(default_factory=list)
    latency_sizes: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    attn_seq: list[int] = field(default_factory=list)
    attn_batch_heads: list[int] = field(default_factory=list)
    head_dim: int = 64
    coll_bytes: list[int] = field(default_factory=list)
    collectives: list[str] = field(default_factory=lambda: [
        "all_reduce", "all_gather", "reduce_scatter", "send_recv"])
    blocks: list[BlockShape] = field(default_factory=list)
    hidden_act: str = "silu"
    copy_mib: int | None = None
    reps: int = 5
    device: str = "auto"
    threads: int | None = None
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    result_path: str | None = None


CPU_DEFAULTS: dict[str, Any] = {
    "gemm_m": [128, 512], "gemm_n": [256, 1024, 4096], "gemm_k": [256, 1024],
    "attn_seq": [128, 256, 512], "attn_batch_heads": [4, 16], "copy_mib": 256,
    "coll_bytes": [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20,
                   32 << 20],
}
"""A short CPU grid (≈20–40 s on a loaded 2-core host with two ranks)."""

CUDA_DEFAULTS: dict[str, Any] = {
    "gemm_m": [1024, 4096, 16384], "gemm_n": [1024, 4096, 8192, 16384],
    "gemm_k": [1024, 4096, 8192],
    "attn_seq": [1024, 2048, 4096, 8192], "attn_batch_heads": [16, 64], "copy_mib": 4096,
    "coll_bytes": [1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28, 1 << 30],
}
"""The GPU grid: transformer-sized GEMMs and attention, NCCL sizes up to 1 GiB."""


def with_defaults(opts: CalibrateOptions, device_type: str) -> CalibrateOptions:
    d = CUDA_DEFAULTS if device_type == "cuda" else CPU_DEFAULTS
    for key, value in d.items():
        if not getattr(opts, key):
            setattr(opts, key, list(value) if isinstance(value, list) else value)
    return opts


def worker_main(opts: CalibrateOptions) -> dict[str, Any] | None:
    """Measure on this rank; rank 0 returns the profile (JSON dict)."""
    env = wdist.init(opts.device, opts.threads)
    try:
        opts = with_defaults(opts, env.device.type)
        raw = measure(env, opts)
    finally:
        wdist.shutdown()
    if env.rank != 0:
        return None
    assert raw is not None
    gpu = opts.gpu or (catalog_gpu(raw.device_name) if env.is_cuda else None)
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    name = opts.name or f"{'cpu' if not env.is_cuda else (gpu or raw.device_name)}-" \
        f"{platform.node()}-{created[:10]}"
    prof = build_profile(raw, name, gpu, created, {}).model_dump(mode="json")
    if opts.result_path:
        import json

        with open(opts.result_path, "w") as f:
            json.dump(prof, f)
    return prof


def _dtype(env: wdist.Env) -> tuple[torch.dtype, str]:
    return (torch.bfloat16, "bf16") if env.is_cuda else (torch.float32, "fp32")


def measure(env: wdist.Env, opts: CalibrateOptions) -> Raw | None:
    dtype, dname = _dtype(env)
    nodes = int(env.world_size // int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size)))
    raw = Raw(device_name=_device_name(env), device_type=env.device.type, dtype=dname,
              world_size=env.world_size, nodes=max(1, nodes), memory_gib=_memory_gib(env),
              compute_units=_compute_units(env))
    raw.provenance = _provenance(env, opts)
    raw.gemm = _gemm(env, opts, dtype)
    raw.latency = _latency(env, opts, dtype)
    raw.attention = _attention(env, opts, dtype)
    raw.copy_GBps = _copy(env, opts)
    raw.collectives = _collectives(env, opts)
    raw.overlap = _overlap(env, opts, dtype)
    raw.layers = _blocks(env, opts, dtype)
    return raw if env.rank == 0 else None


# ------------------------------------------------------------------ environment
def _device_name(env: wdist.Env) -> str:
    if env.is_cuda:
        return env.device_name
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _memory_gib(env: wdist.Env) -> float:
    if env.is_cuda:
        return torch.cuda.get_device_properties(env.device).total_memory / 2**30
    local = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total / 2**30 / max(1, local)


def _compute_units(env: wdist.Env) -> int:
    if env.is_cuda:
        return int(torch.cuda.get_device_properties(env.device).multi_processor_count)
    return 1


def _provenance(env: wdist.Env, opts: CalibrateOptions) -> dict[str, Any]:
    out: dict[str, Any] = {
        "gpu": env.device_name, "torch": torch.__version__, "host": platform.node(),
        "command": shlex.join(opts.argv), "world_size": env.world_size,
        "backend": env.backend, "threads_per_rank": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "gemm": ("rate of the forward, input-gradient and weight-gradient GEMMs of a linear "
                 "layer (m x k input, n x k weight): 6*m*n*k / time, median of the "
                 "repetitions, mean over ranks measuring at once"),
        "reps": opts.reps,
    }
    if env.is_cuda:
        out["cuda"] = torch.version.cuda
        out["driver"] = _driver()
        out["device_name"] = env.device_name
    else:
        out["device_name"] = _device_name(env)
        out["driver"] = None
    return out


def _driver() -> str | None:
    import subprocess

    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


# ------------------------------------------------------------------ compute
def _gemm(env: wdist.Env, opts: CalibrateOptions, dtype: torch.dtype) -> list[dict[str, Any]]:
    shapes = [(m, n, k) for m in opts.gemm_m for n in opts.gemm_n for k in opts.gemm_k]
    fns = []
    for m, n, k in shapes:
        x = torch.randn(m, k, device=env.device, dtype=dtype)
        w = torch.randn(n, k, device=env.device, dtype=dtype)
        dy = torch.randn(m, n, device=env.device, dtype=dtype)

        def three(x: torch.Tensor = x, w: torch.Tensor = w, dy: torch.Tensor = dy) -> None:
            F.linear(x, w)
            torch.mm(dy, w)
            torch.mm(dy.t(), x)
        fns.append(three)
    dist.barrier()
    times = wdist.round_robin(env, fns, opts.reps)
    secs = wdist.mean_over_ranks(env, [wdist.median(t) for t in times])
    return [{"m": m, "n": n, "k": k, "seconds": t} for (m, n, k), t in zip(shapes, secs,
                                                                          strict=True)]


def _latency(env: wdist.Env, opts: CalibrateOptions, dtype: torch.dtype
             ) -> list[dict[str, Any]]:
    fns = []
    for size in opts.latency_sizes:
        x = torch.randn(size, size, device=env.device, dtype=dtype, requires_grad=True)
        w = torch.randn(size, size, device=env.device, dtype=dtype, requires_grad=True)
        fns.append(lambda x=x, w=w: F.linear(x, w))
    dist.barrier()
    times = wdist.round_robin(env, fns, max(20, opts.reps), warmup=3)
    secs = wdist.mean_over_ranks(env, [wdist.median(t) for t in times])
    return [{"m": s, "n": s, "k": s, "seconds": t}
            for s, t in zip(opts.latency_sizes, secs, strict=True)]


def _attention(env: wdist.Env, opts: CalibrateOptions, dtype: torch.dtype
               ) -> list[dict[str, Any]]:
    shapes = [(bh, s) for bh in opts.attn_batch_heads for s in opts.attn_seq]
    d = opts.head_dim
    fwd_fns, bwd_fns = [], []
    state: dict[int, Any] = {}
    for i, (bh, s) in enumerate(shapes):
        q, k, v = (torch.randn(1, bh, s, d, device=env.device, dtype=dtype, requires_grad=True)
                   for _ in range(3))
        go = torch.randn(1, bh, s, d, device=env.device, dtype=dtype)

        def fwd(i: int = i, q: torch.Tensor = q, k: torch.Tensor = k,
                v: torch.Tensor = v) -> None:
            state[i] = F.scaled_dot_product_attention(q, k, v, is_causal=True)

        def bwd(i: int = i, q: torch.Tensor = q, k: torch.Tensor = k, v: torch.Tensor = v,
                go: torch.Tensor = go) -> None:
            state.pop(i).backward(go)
            q.grad = k.grad = v.grad = None
        fwd_fns.append(fwd)
        bwd_fns.append(bwd)
    # forward then backward of the same shape, in turn over the shapes
    fns = [f for pair in zip(fwd_fns, bwd_fns, strict=True) for f in pair]
    dist.barrier()
    times = wdist.round_robin(env, fns, opts.reps, warmup=1)
    meds = wdist.mean_over_ranks(env, [wdist.median(t) for t in times])
    return [{"batch": 1, "heads": bh, "seq": s, "head_dim": d, "fwd_s": meds[2 * i],
             "bwd_s": meds[2 * i + 1]} for i, (bh, s) in enumerate(shapes)]


def _copy(env: wdist.Env, opts: CalibrateOptions) -> float | None:
    if not opts.copy_mib:
        return None
    n = opts.copy_mib * 2**20 // 4
    src = torch.ones(n, device=env.device, dtype=torch.float32)
    dst = torch.empty_like(src)
    dist.barrier()
    t = wdist.median(wdist.timed(env, lambda: dst.copy_(src), max(3, opts.reps // 2)))
    rate = 2.0 * n * 4 / t / 1e9  # read + write
    return wdist.mean_over_ranks(env, [rate])[0]


def _now() -> float:
    import time

    return time.perf_counter()


# ------------------------------------------------------------------ collectives
def _groups(env: wdist.Env) -> list[tuple[Any, int, str]]:
    """(process group, size, link class): the world, and each node's ranks when the job
    spans several nodes."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))
    nodes = env.world_size // max(1, local)
    out: list[tuple[Any, int, str]] = [
        (None, env.world_size, "intra_node" if nodes <= 1 else "inter_node")]
    if nodes > 1 and local > 1:
        mine = None
        for node in range(nodes):
            ranks = list(range(node * local, (node + 1) * local))
            g = dist.new_group(ranks)
            if env.rank in ranks:
                mine = g
        out.append((mine, local, "intra_node"))
    return out


def _collectives(env: wdist.Env, opts: CalibrateOptions) -> list[dict[str, Any]]:
    """Every (collective, size) point is timed as nccl-tests times it: a batch of back-to-back
    calls divided by the batch length (small messages get more calls), so the skew between
    ranks that the previous point leaves behind is paid once per batch, not once per call."""
    if env.world_size < 2:
        return []
    out: list[dict[str, Any]] = []
    fns = []
    for group, n, link in _groups(env):
        for coll in opts.collectives:
            for nbytes in opts.coll_bytes:
                one = _collective_fn(env, coll, nbytes, n, group)
                calls = _batch(nbytes)
                fns.append(_batched(one, calls))
                out.append({"collective": coll, "group_size": n,
                            "bytes": _size(coll, nbytes, n), "link": link, "calls": calls})
    dist.barrier()
    times = wdist.round_robin(env, fns, opts.reps)
    secs = _max_over_ranks(env, [wdist.median(t) / c["calls"] for t, c in zip(times, out,
                                                                                 strict=True)])
    for c, s in zip(out, secs, strict=True):
        c["seconds"] = s
        del c["calls"]
    return out


def _batch(nbytes: int) -> int:
    """Calls per timed batch: 8 below 256 KiB, 4 below 4 MiB, else 2."""
    return 8 if nbytes < 1 << 18 else 4 if nbytes < 1 << 22 else 2


def _batched(fn: Any, calls: int) -> Any:
    def run() -> None:
        for _ in range(calls):
            fn()
    return run


def _size(coll: str, nbytes: int, n: int) -> int:
    """nccl-tests' message size of the buffers :func:`_collective_fn` allocates."""
    per = nbytes // 4 // n * n * 4
    return per if coll in ("all_gather", "reduce_scatter") else nbytes // 4 * 4


def _collective_fn(env: wdist.Env, coll: str, nbytes: int, n: int, group: Any) -> Any:
    """One call of ``coll`` with nccl-tests' size ``nbytes`` (see :func:`_size`)."""
    dev = env.device
    count = nbytes // 4
    if coll == "all_reduce":
        buf = torch.ones(count, device=dev)
        return lambda: dist.all_reduce(buf, group=group)
    if coll == "all_gather":
        out = torch.empty(count // n * n, device=dev)
        inp = torch.ones(count // n, device=dev)
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        return lambda: gather(out, inp, group=group)
    if coll == "reduce_scatter":
        inp = torch.ones(count // n * n, device=dev)
        out = torch.empty(count // n, device=dev)
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        return lambda: scatter(out, inp, group=group)
    if coll == "send_recv":
        send = torch.ones(count, device=dev)
        recv = torch.empty(count, device=dev)
        ranks = dist.get_process_group_ranks(group) if group is not None \
            else list(range(env.world_size))
        me = ranks.index(env.rank)
        nxt, prv = ranks[(me + 1) % n], ranks[(me - 1) % n]

        def exchange() -> None:
            ops = [dist.P2POp(dist.isend, send, nxt, group=group),
                   dist.P2POp(dist.irecv, recv, prv, group=group)]
            for w in dist.batch_isend_irecv(ops):
                w.wait()
        return exchange
    raise ValueError(f"unknown collective {coll!r}")


def _overlap(env: wdist.Env, opts: CalibrateOptions, dtype: torch.dtype
             ) -> dict[str, Any] | None:
    """How much an overlapped collective slows the compute it hides behind (the cost model's
    ``overlap_compute_cost``, Calculon's ``processor_usage``): the time of an all-gather alone
    (t_c), of a GEMM loop about twice as long alone (t_g), and of both at once — the
    all-gather started asynchronously, then the GEMMs (t_b); u = (t_b − t_g) / t_c, clipped to
    [0, 1]. On a GPU NCCL's kernels take a few SMs (u small); on a CPU the collective runs on
    the cores that compute (u near 1)."""
    if env.world_size < 2:
        return None
    nbytes = max(opts.coll_bytes) // 2
    gather = _collective_fn(env, "all_gather", nbytes, env.world_size, None)
    count = nbytes // 4
    out = torch.empty(count // env.world_size * env.world_size, device=env.device)
    inp = torch.ones(count // env.world_size, device=env.device)
    m, n, k = max(opts.gemm_m), max(opts.gemm_n), max(opts.gemm_k)
    x = torch.randn(m, k, device=env.device, dtype=dtype)
    w = torch.randn(n, k, device=env.device, dtype=dtype)
    dist.barrier()
    t_c = wdist.median(wdist.timed(env, gather, opts.reps))
    t_one = wdist.median(wdist.timed(env, lambda: F.linear(x, w), 3))
    t_c, t_one = _max_over_ranks(env, [t_c, t_one])
    loops = max(1, round(2.0 * t_c / max(t_one, 1e-9)))

    def gemms() -> None:
        for _ in range(loops):
            F.linear(x, w)

    def both() -> None:
        work = _async_all_gather(out, inp)
        gemms()
        work.wait()

    dist.barrier()
    times = wdist.round_robin(env, [gemms, both], opts.reps)
    t_g, t_b = _max_over_ranks(env, [wdist.median(t) for t in times])
    u = min(1.0, max(0.0, (t_b - t_g) / t_c))
    return {"collective": "all_gather", "bytes": _size("all_gather", nbytes, env.world_size),
            "group_size": env.world_size, "collective_s": t_c, "compute_s": t_g,
            "both_s": t_b, "overlap_compute_cost": u}


def _async_all_gather(out: torch.Tensor, inp: torch.Tensor) -> Any:
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return gather(out, inp, async_op=True)


def _max_over_ranks(env: wdist.Env, values: list[float]) -> list[float]:
    if not values:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=env.device if env.is_cuda else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [float(x) for x in t.tolist()]


# ------------------------------------------------------------------ transformer block
def _blocks(env: wdist.Env, opts: CalibrateOptions, dtype: torch.dtype
            ) -> list[dict[str, Any]]:
    from runtime.worker.layout import apply_tp_block
    from runtime.worker.model import Block, rope_tables

    out = []
    for shape in opts.blocks:
        spec = ModelSpec(num_hidden_layers=1, hidden_size=shape.hidden,
                         num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                         intermediate_size=shape.ffn, vocab_size=1, hidden_act=opts.hidden_act)
        tps = [1]
        w = env.world_size
        if (w > 1 and shape.heads % w == 0 and shape.kv_heads % w == 0 and shape.ffn % w == 0):
            tps.append(w)
        for tp in tps:
            torch.manual_seed(0)
            block = Block(spec, tp).to(env.device)
            if tp > 1:
                from torch.distributed.device_mesh import init_device_mesh

                mesh = init_device_mesh(env.device.type, (tp,), mesh_dim_names=("tp",))
                apply_tp_block(block, mesh, sequence_parallel=False)
            x = torch.randn(shape.micro_batch, shape.seq, shape.hidden, device=env.device,
                            requires_grad=True)
            gy = torch.randn_like(x)
            rope = rope_tables(shape.seq, spec.head_size, env.device)
            # a block is short and noisy (its tensor-parallel form waits on 4 collectives):
            # three times the repetitions of the other points
            times = _time_block(env, block, x, gy, rope, dtype, 3 * opts.reps)
            meds = [wdist.median(t) for t in times]
            meds = _max_over_ranks(env, meds) if tp > 1 else wdist.mean_over_ranks(env, meds)
            out.append({"hidden_size": shape.hidden, "intermediate_size": shape.ffn,
                        "num_attention_heads": shape.heads, "num_key_value_heads": shape.kv_heads,
                        "seq_len": shape.seq, "micro_batch_size": shape.micro_batch, "tp": tp,
                        "fwd_s": meds[0], "bwd_s": meds[1], "bwd_input_s": meds[2],
                        "bwd_weight_s": meds[3]})
    return out


def _time_block(env: wdist.Env, block: Any, x: torch.Tensor, gy: torch.Tensor, rope: Any,
                dtype: torch.dtype, reps: int) -> list[list[float]]:
    """[forward, backward, input-gradient pass, weight-gradient pass] times of ``block``: the
    backward once in one pass (``y.backward``) and once split in two as
    ``torch.distributed.pipelining`` runs it for zero-bubble schedules
    (``stage_backward_input`` then ``stage_backward_weight``), alternating. Parameter
    gradients accumulate from one repetition to the next, as they do over the micro-batches
    of a step (with tensor parallelism each accumulation is a DTensor operation)."""
    from torch.distributed.pipelining._backward import (
        stage_backward_input,
        stage_backward_weight,
    )

    out: list[list[float]] = [[], [], [], []]
    for i in range(reps + 1):
        for split in (False, True):
            with _run_context(block):
                _time_once(env, block, x, gy, rope, dtype, split, i, out,
                           stage_backward_input, stage_backward_weight)
    return out


def _run_context(block: Any) -> Any:
    """The context the worker's tensor-parallel runs execute blocks in: ``loss_parallel``
    (vocabulary-parallel loss) around forward and backward — it routes every DTensor
    operation through its own handler, which costs host time per operation."""
    import contextlib

    if any(hasattr(p, "device_mesh") for p in block.parameters()):
        from torch.distributed.tensor.parallel import loss_parallel

        return loss_parallel()
    return contextlib.nullcontext()


def _time_once(env: wdist.Env, block: Any, x: torch.Tensor, gy: torch.Tensor, rope: Any,
               dtype: torch.dtype, split: bool, i: int, out: list[list[float]],
               stage_backward_input: Any, stage_backward_weight: Any) -> None:
    """One forward and one backward (whole, or split in input and weight passes); appended
    to ``out`` unless ``i`` is 0 (warm-up)."""
    wdist.sync(env)
    t0 = _now()
    with torch.autocast("cuda", dtype=dtype, enabled=env.is_cuda):
        y = block(x, rope)
    _complete(y)
    wdist.sync(env)
    t1 = _now()
    if not split:
        y.backward(gy)
        _complete(x.grad)
        wdist.sync(env)
        t2 = _now()
        if i:
            out[0].append(t1 - t0)
            out[1].append(t2 - t1)
    else:
        grads, groups = stage_backward_input([y], [gy], [x], block.parameters())
        _complete(grads[0])
        wdist.sync(env)
        t2 = _now()
        stage_backward_weight(block.parameters(), groups)
        wdist.sync(env)
        t3 = _now()
        if i:
            out[0].append(t1 - t0)
            out[2].append(t2 - t1)
            out[3].append(t3 - t2)
    x.grad = None  # the block's own gradients accumulate, as over a step's micro-batches


def _complete(t: Any) -> None:
    """Wait for the collective that produces ``t``: tensor-parallel outputs are
    ``AsyncCollectiveTensor``s whose all-reduce finishes on first use (gloo runs it on its own
    thread; a CUDA synchronisation does not cover it either) — read one element."""
    if t is not None:
        t.reshape(-1)[:1].tolist()


def raw_dict(raw: Raw) -> dict[str, Any]:
    return asdict(raw)
