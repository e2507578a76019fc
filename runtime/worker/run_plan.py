"""``meshplan-runtime run PLAN``: execute a plan's layout for a few steps and report measured
against predicted.

Every rank builds its part of the (optionally scaled-down) model as the plan lays it out
(:mod:`runtime.worker.layout`), trains on synthetic tokens with AdamW (fused, global
gradient-norm clipping at 1.0 as Megatron and torchtitan do), and times each step: a barrier,
the step, a device synchronisation, then the slowest rank's wall time (a synchronous job waits
for it). Warm-up steps are dropped; the median of the measured steps is the figure. Peak
allocated memory per rank is read on CUDA (``torch.cuda.max_memory_allocated``). On the CPU
each rank's process CPU time per step is its compute with its waits left out (gloo waits
without the cores): the report's ``measured.rank_compute_s``, which a run posted to the
service turns into straggler attribution.

The prediction is :func:`costmodel.estimate` of the same scaled model, batch, sequence length
and layout on one pool of the device the calibration profile measured (``gpu`` = the profile's
device, as many per node as this job has local ranks), with that profile — the cost model's
ordinary code path. A run with ``--schedule-csv`` is predicted when the cost model accepts a
custom schedule (``plan.custom_schedule``), otherwise reported without a prediction.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import gc
import json
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

import costmodel
from costmodel.profile import CalibrationProfile
from costmodel.runs import MeasuredRun, PredictedRun, RunEnvironment, RunReport
from costmodel.specs.request import EstimateRequest, num_microbatches, parse
from runtime import plan_file
from runtime.worker import dist as wdist
from runtime.worker.layout import Layout, build, global_grad_norm_clip, unsupported
from runtime.worker.model import causal_lm_loss

GIB = float(2**30)


@dataclass
class RunOptions:
    plans: list[str]
    overrides: dict[str, int | None] = field(default_factory=dict)
    steps: int = 5
    warmup: int = 2
    calibration: dict[str, Any] | None = None
    """The calibration profile (JSON) the prediction uses; None = no prediction."""
    schedule_csv: str | None = None
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    lr: float = 3e-4
    result_path: str | None = None
    """Where rank 0 writes the reports (JSON list) for a parent process (``--nproc``)."""


@dataclass
class PreparedPlan:
    path: str
    body: dict[str, Any]
    overrides: dict[str, int]
    req: EstimateRequest


def prepare(opts: RunOptions) -> list[PreparedPlan]:
    """Read, scale and check every plan before any process group exists (pure; raises
    :class:`~costmodel.errors.SpecError`)."""
    out = []
    for path in opts.plans:
        body = plan_file.read_plan(path)
        body, changed = plan_file.scale(body, **opts.overrides)
        req: EstimateRequest = parse(EstimateRequest, body)
        out.append(PreparedPlan(path, body, changed, req))
    return out


def check_layout(prepared: list[PreparedPlan], world_size: int) -> list[str]:
    problems = []
    for p in prepared:
        for rule in unsupported(p.req.plan, p.req.model, world_size):
            problems.append(f"{p.path}: {rule}")
        plan = p.req.plan
        if p.req.training.grad_reduce_dtype == "bf16" and plan.dp > 1 and plan.zero_stage == 0:
            problems.append(f"{p.path}: training.grad_reduce_dtype: bf16 gradient reduction "
                            "runs with FSDP2 (zero_stage >= 1); the worker's DDP reduces in "
                            "the parameters' dtype")
    return problems


def worker_main(opts: RunOptions) -> list[dict[str, Any]] | None:
    """Run every plan of ``opts`` on this rank; rank 0 returns the reports (JSON dicts)."""
    prepared = prepare(opts)
    env = wdist.init(opts.device, opts.threads)
    try:
        problems = check_layout(prepared, env.world_size)
        if problems:
            raise ValueError("; ".join(problems))
        results = [_run_one(env, p, opts) for p in prepared]
    finally:
        wdist.shutdown()
    if env.rank != 0:
        return None
    reports = [_report(env, p, r, opts).model_dump(mode="json") for p, r in
               zip(prepared, results, strict=True)]
    if opts.result_path:
        with open(opts.result_path, "w") as f:
            json.dump(reports, f)
    return reports


@dataclass
class _Measured:
    step_times: list[float]
    losses: list[float]
    peak_gib: list[float]
    peak_rss_gib: list[float]
    micro_batches: int
    rank_compute_s: list[float] | None = None
    """Per global rank: the median over measured steps of its process CPU time (CPU only)."""


def _run_one(env: wdist.Env, p: PreparedPlan, opts: RunOptions) -> _Measured:
    req = p.req
    plan, model, training = req.plan, req.model, req.training
    rows = _read_csv(opts.schedule_csv) if opts.schedule_csv else None
    if rows is not None:
        stages = plan_file.csv_split(rows, model.num_hidden_layers, plan.layers_per_stage)
        m = plan_file.csv_microbatches(rows)
    else:
        stages = plan_file.split(p.body)
        m = num_microbatches(training, plan)
    torch.manual_seed(opts.seed)
    layout = build(env, model, training.seq_len, plan, stages, m, opts.schedule_csv,
                   opts.seed, plan.recompute,
                   reduce_bf16=training.grad_reduce_dtype == "bf16")
    opt = torch.optim.AdamW([{"params": g} for g in layout.param_groups()], lr=opts.lr,
                            fused=True)
    mb = plan.micro_batch_size
    # one synthetic global batch, the same for every layout; each data-parallel rank its slice
    gen = torch.Generator().manual_seed(opts.seed + 1)
    part = slice(layout.dp_rank * m * mb, (layout.dp_rank + 1) * m * mb)
    shape = (training.global_batch_size, training.seq_len)
    tokens = torch.randint(0, model.vocab_size, shape, generator=gen)[part].to(env.device)
    targets = torch.randint(0, model.vocab_size, shape, generator=gen)[part].to(env.device)
    n_stages = len(stages.layers)

    times: list[float] = []
    losses: list[float] = []
    busy: list[float] = []
    for step in range(opts.warmup + opts.steps):
        if step == opts.warmup and env.is_cuda:
            torch.cuda.reset_peak_memory_stats(env.device)
        dist.barrier()
        wdist.sync(env)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = _step(layout, opt, tokens, targets, m, mb, n_stages)
        wdist.sync(env)
        c1 = time.process_time()
        dt = wdist.slowest(env, time.perf_counter() - t0)
        if step >= opts.warmup:
            times.append(dt)
            losses.append(loss)
            busy.append(c1 - c0)
    peak = torch.cuda.max_memory_allocated(env.device) / GIB if env.is_cuda else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux: KiB
    # per-rank compute: on the CPU a rank computes with its own cores and waits in gloo
    # without them, so its process CPU time in a step is its compute with the waits left out;
    # a CUDA rank's CPU time says nothing of its kernels, so none is reported there
    compute = None if env.is_cuda else statistics.median(busy)
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, (peak, rss, losses, compute))
    last_losses = next((g[2] for g in gathered if any(x == x for x in g[2])), losses)
    del layout, opt
    gc.collect()
    ranks = [g[3] for g in gathered]
    return _Measured(times, [float(x) for x in last_losses],
                     [g[0] for g in gathered if g[0] is not None],
                     [g[1] for g in gathered], m,
                     None if any(c is None or c <= 0 for c in ranks) else ranks)


def _step(layout: Layout, opt: torch.optim.Optimizer, tokens: torch.Tensor,
          targets: torch.Tensor, m: int, mb: int, n_stages: int) -> float:
    """One optimizer step over ``m`` micro-batches; the mean loss (NaN where this rank does
    not compute the loss)."""
    opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=tokens.device)
    counted = 0
    with layout.compute():
        if layout.schedule is not None:
            losses: list[torch.Tensor] = []
            args = (tokens,) if layout.first else ()
            last = layout.last(n_stages)
            layout.schedule.step(*args, target=targets if last else None,
                                 losses=losses if last else None)
            for x in losses:
                total = total + x.detach()
            counted = len(losses)
        else:
            module = layout.modules[0]
            for i in range(m):
                sl = slice(i * mb, (i + 1) * mb)
                with _accumulate(layout, module, last=i == m - 1):
                    loss = causal_lm_loss(module(tokens[sl]), targets[sl]) / m
                    loss.backward()
                total = total + loss.detach() * m
            counted = m
    global_grad_norm_clip(layout)
    opt.step()
    # the global batch's mean loss: the loss-computing ranks' means, averaged over dp
    t = total / counted if counted else torch.full((), float("nan"), device=tokens.device)
    t = t.full_tensor() if hasattr(t, "full_tensor") else t
    if layout.plan.dp > 1 and layout.mesh is not None and counted:
        t = t.clone()
        dist.all_reduce(t, group=layout.mesh["dp"].get_group())
        t = t / layout.plan.dp
    return float(t)


@contextlib.contextmanager
def _accumulate(layout: Layout, module: Any, last: bool) -> Any:
    """Gradient accumulation as the cost model prices it: DDP reduces once per step
    (``no_sync`` before the last micro-batch); FSDP2 with ZeRO 1/2 reduce-scatters and
    reshards once per step, with ZeRO 3 after every micro-batch."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    if isinstance(module, DDP) and not last:
        with module.no_sync():
            yield
        return
    if hasattr(module, "set_requires_gradient_sync") and layout.plan.zero_stage < 3:
        module.set_requires_gradient_sync(last)
        module.set_reshard_after_backward(last)
    yield


def _read_csv(path: str) -> list[list[str]]:
    with open(path, newline="") as f:
        return [row for row in csv.reader(f)]


# ------------------------------------------------------------------ report (rank 0)
def _report(env: wdist.Env, p: PreparedPlan, r: _Measured, opts: RunOptions) -> RunReport:
    step = statistics.median(r.step_times)
    tokens = p.req.training.tokens_per_step
    measured = MeasuredRun(step_time_s=step, step_times_s=r.step_times,
                           tokens_per_s=tokens / step, peak_memory_gib=r.peak_gib,
                           losses=r.losses, peak_rss_gib=r.peak_rss_gib,
                           rank_compute_s=r.rank_compute_s)
    predicted, notes = None, []
    if opts.calibration is not None:
        predicted, note = predict(p, opts.calibration, env.world_size, nodes(env),
                                  precision(env, p), opts.schedule_csv)
        if note:
            notes.append(note)
    if p.overrides:
        notes.append("scaled down: " + ", ".join(f"{k}={v}" for k, v in p.overrides.items()))
    environment = RunEnvironment(
        device=env.device_name, backend=env.backend, world_size=env.world_size,
        torch=torch.__version__, hostname=platform.node(), driver=_driver(env),
        date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        threads_per_rank=torch.get_num_threads(), plan_file=p.path,
        precision=precision(env, p), micro_batches=r.micro_batches,
        schedule_csv=opts.schedule_csv)
    return RunReport(measured=measured, predicted=predicted, environment=environment,
                     steps=len(r.step_times), warmup_steps=opts.warmup,
                     model_overrides=p.overrides, notes="; ".join(notes) or None)


def nodes(env: wdist.Env) -> int:
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(env.world_size)))
    return max(1, env.world_size // max(1, local))


def precision(env: wdist.Env, p: PreparedPlan) -> str:
    """The dtype the run computes in: the plan's bf16 on CUDA, fp32 on a CPU."""
    return p.req.training.precision if env.is_cuda else "fp32"


def predict(p: PreparedPlan, calibration: dict[str, Any], world_size: int, n_nodes: int,
            prec: str, schedule_csv: str | None = None) -> tuple[PredictedRun | None, str]:
    """The cost model's prediction of this run with ``calibration`` (see the module
    docstring), and a note when there is none."""
    profile = CalibrationProfile.model_validate(calibration)
    body = plan_file.local_request(p.body, profile, world_size, n_nodes, prec)
    if schedule_csv is not None:
        if "custom_schedule" not in costmodel.ParallelPlan.model_fields:
            return None, ("no prediction: this cost model does not take a custom schedule "
                          "(plan.custom_schedule)")
        rows = _read_csv(schedule_csv)
        body["plan"] = {**body["plan"], "schedule": "custom",
                        "custom_schedule": [[c for c in row if c.strip()] for row in rows]}
    est = costmodel.estimate(body)
    # the same prediction from the primitives alone (GEMM, attention, memory, collectives),
    # without the measured blocks: how much the block measurement carries
    ops_only = None
    if profile.measurements.layers:
        cal = profile.model_dump(mode="json")
        cal["measurements"]["layers"] = []
        ops_only = costmodel.estimate({**body, "calibration": cal}).step_time_s
    return PredictedRun(step_time_s=est.step_time_s, peak_memory_gib=est.memory.peak_gib,
                        calibration=profile.name, cost_model_version=est.cost_model_version,
                        breakdown=est.breakdown.model_dump(),
                        pipeline_makespan_s=est.pipeline.makespan_s,
                        step_time_without_block_measurements_s=ops_only), ""


def _driver(env: wdist.Env) -> str | None:
    if not env.is_cuda:
        return None
    with contextlib.suppress(Exception):
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip().splitlines()[0]
    return f"cuda {torch.version.cuda}"
