"""Failure-aware goodput: the share of wall time that advances training, given how often the
job's GPUs fail, what a restart costs and how state is recovered.

The model (per unit of useful training time, first order in the failure rate, as Young 1974,
"A first order approximation to the optimum checkpoint interval", CACM 17(9), and Daly 2006,
"A higher order estimate of the optimum checkpoint interval for restart dumps", FGCS 22(3)):

* a checkpoint of δ seconds is written every τ seconds of training: overhead δ/τ;
* failures recovered from a checkpoint arrive at rate λ_c per wall second and each costs the
  restart R plus, on average, half a period of lost work, (τ + δ)/2;
* failures recovered without a checkpoint (CheckFree's intermediate stages) arrive at rate
  λ_n and each costs R, the neighbour copy r_n and half a step of lost work.

Wall seconds per useful second: ``W(τ) = (1 + δ/τ) / (1 − λ_c (R + (τ+δ)/2) − λ_n c_n)``;
goodput is ``1/W``. Writing the denominator as ``λ_c (a − τ/2)``, ``dW/dτ = 0`` gives the
exact optimum of this model, ``τ* = −δ + sqrt(δ² + 2 δ a)``, which for ``a ≫ δ`` is Daly's
first-order ``sqrt(2 δ M) − δ`` and Young's ``sqrt(2 δ M)`` (M = 1/λ_c).

Checkpoint size is the training state (weights in the compute dtype plus the optimizer's
fp32 master weights and moments: 2 + 4 + 4 + 4 bytes per parameter for Adam in mixed precision, the
layout of Megatron-Core's distributed checkpoint and of torch.distributed.checkpoint of an
FSDP2 model), written by every node of the plan in parallel (Megatron's fully parallel save,
DCP): the write takes the larger of total/aggregate and per-node-share/node bandwidth.

Interruptions are the GPUs' failures (``num_gpus / gpu_mtbf_hours`` per hour) plus the
preemptions of spot / preemptible nodes (``cluster.pools[].preemption_per_hour`` per node of
the pool the plan uses): a preemption costs what a failure costs (the restart, then the work
since the last checkpoint, or CheckFree's neighbour copy) and is recovered the same way.

What depends on the plan, and so what a search ranking by goodput trades against throughput:
the failure rate grows with the GPUs it uses (and the preemption rate with its nodes), the
write time falls with its nodes (the checkpoint is the same bytes, written in parallel) and
CheckFree's share of neighbour-recovered failures grows with pp. :func:`goodput_fraction` is
the model on arrays (the search's bulk bounds); :func:`goodput` is the same computation for
one plan, with everything the estimate reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from costmodel.specs.cluster import GPUPool
from costmodel.specs.model import ModelSpec
from costmodel.specs.reliability import ReliabilitySpec
from costmodel.specs.training import TrainingSpec

__all__ = ["Goodput", "GoodputModel", "checkpoint_bytes", "goodput", "goodput_fraction",
           "goodput_model", "gpu_failures_per_hour", "optimal_interval", "plan_nodes",
           "preemptions_per_hour", "time_to_train_s", "wall_per_useful"]

GB = 1e9
DAY = 86400.0


class Goodput(BaseModel):
    """What failures and their recovery cost the plan (``training.reliability`` given)."""

    scheme: str
    failures_per_day: float = Field(description="Expected job interruptions per day from GPU "
                                    "failures.")
    preemptions_per_day: float = Field(
        0.0, description="Expected job interruptions per day from preempted spot / "
        "preemptible nodes (cluster.pools[].preemption_per_hour × the nodes used).",
        examples=[9.6])
    job_mtbf_hours: float = Field(description="Mean hours between interruptions of the job "
                                  "(failures and preemptions).")
    checkpoint_bytes: float = Field(description="Bytes of one checkpoint (weights and "
                                                "optimizer state).")
    checkpoint_write_s: float = Field(description="Seconds one checkpoint takes to write.")
    checkpoint_interval_s: float | None = Field(
        description="Seconds of training between checkpoints (null: no checkpoints are "
        "needed for recovery).")
    interval_rule: str
    lost_hours_per_day: float = Field(
        description="Wall hours per day not advancing training: checkpoint writes, restarts "
        "and lost work.")
    goodput: float = Field(description="Share of wall time that advances training (0–1).")
    tokens_per_s: float = Field(description="Throughput over wall time, failures included.")
    time_to_train_s: float | None = Field(
        None, description="training.train_tokens at that throughput, in seconds: the "
        "steady-state time divided by goodput (checkpoint writes, restarts and lost work "
        "included). The search's time_to_train objective.")
    time_to_train_days: float | None = None
    cost_to_train: float | None = Field(
        None, description="$ for time_to_train_s (its hours × the plan's $/hour). The "
        "search's cost_to_train objective.")
    notes: list[str] = []


def checkpoint_bytes(model: ModelSpec, training: TrainingSpec) -> float:
    """Bytes of a full training checkpoint: weights in the compute dtype plus the optimizer's
    fp32 master weights and moments (Adam: 2 + 4 + 4 + 4 bytes per parameter in mixed
    precision, 4 + 4 + 4 in fp32; SGD with momentum one moment fewer)."""
    moments = 1 if training.optimizer == "sgd" else 2
    per_param = (4 + 4 * moments) if training.precision == "fp32" else (2 + 4 + 4 * moments)
    return float(model.num_params() * per_param)


def _wall(tau: Any, delta: Any, restart: float, rate_ckpt: Any, rate_other: Any,
          cost_other: Any) -> np.ndarray:
    """W(τ) on arrays; ``inf`` where failures leave no progress."""
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = 1.0 - rate_ckpt * (restart + (tau + delta) / 2) - rate_other * cost_other
        w = (1 + delta / tau) / denominator
    return np.where(denominator > 0, w, np.inf)


def _tau(delta: Any, restart: float, rate_ckpt: Any, rate_other: Any,
         cost_other: Any) -> np.ndarray:
    """The optimal τ on arrays (``inf`` where there is none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (1.0 - rate_ckpt * (restart + delta / 2) - rate_other * cost_other) / rate_ckpt
        tau = -delta + np.sqrt(delta * delta + 2 * delta * np.maximum(a, 0.0))
    return np.where(a > 0, tau, np.inf)


def wall_per_useful(tau: float, delta: float, restart: float, rate_ckpt: float,
                    rate_other: float, cost_other: float) -> float:
    """W(τ) of the module docstring; ``inf`` when failures leave no progress."""
    return float(_wall(tau, delta, restart, rate_ckpt, rate_other, cost_other))


def optimal_interval(delta: float, restart: float, rate_ckpt: float, rate_other: float,
                     cost_other: float) -> float:
    """The τ that minimises :func:`wall_per_useful` (closed form; module docstring)."""
    return float(_tau(delta, restart, rate_ckpt, rate_other, cost_other))


def time_to_train_s(train_tokens: float, tokens_per_s: Any, share: Any = 1.0) -> Any:
    """Seconds to train ``train_tokens`` at ``tokens_per_s`` (steady state) with goodput
    ``share``: ``train_tokens / (tokens_per_s · share)`` — the one formula the estimate's
    goodput and the search's time_to_train / cost_to_train objectives use."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return train_tokens / (tokens_per_s * share)


def plan_nodes(gpus_by_pool: Iterable[tuple[GPUPool, Any]]) -> Any:
    """Nodes a plan occupies: its GPUs of each pool in whole nodes of that pool (GPU counts
    may be arrays, one entry per plan of one pool)."""
    return sum((-(-np.asarray(n) // pool.gpus_per_node) for pool, n in gpus_by_pool),
               np.asarray(0))


def gpu_failures_per_hour(rel: ReliabilitySpec, gpus_by_pool: Iterable[tuple[GPUPool, Any]]
                          ) -> Any:
    """Expected GPU interruptions of the plan per hour: each pool's GPUs over that pool's
    GPU-hours per interruption (``pool_gpu_mtbf_hours``, else ``gpu_mtbf_hours``)."""
    return sum((np.asarray(n, dtype=float) / rel.mtbf_hours(pool.name)
                for pool, n in gpus_by_pool), np.asarray(0.0))


def preemptions_per_hour(gpus_by_pool: Iterable[tuple[GPUPool, Any]]) -> Any:
    """Expected preemptions of the plan's nodes per hour: each pool's
    ``preemption_per_hour`` (per node) × the nodes of it the plan uses."""
    return sum((pool.preemption_per_hour * plan_nodes([(pool, n)]) for pool, n in gpus_by_pool),
               np.asarray(0.0))


@dataclass
class _Terms:
    """The model's quantities, on arrays (one entry per plan)."""

    size: float
    write: np.ndarray
    rate_failures: np.ndarray
    rate_preemptions: np.ndarray
    neighbour_share: np.ndarray
    tau: np.ndarray
    share: np.ndarray
    given_interval: bool
    rate_ckpt: np.ndarray
    rate_other: np.ndarray
    cost_other: np.ndarray


def _terms(model: ModelSpec, training: TrainingSpec, rel: ReliabilitySpec, *, num_gpus: Any,
           nodes: Any, pp: Any, nic_GBps_per_node: Any, step_time_s: Any,
           preemptions_per_hour: Any = 0.0, failures_per_hour: Any = None) -> _Terms:
    size = checkpoint_bytes(model, training)
    nodes_a = np.maximum(np.asarray(nodes, dtype=float), 1.0)
    pp_a = np.asarray(pp, dtype=float)
    nic = np.asarray(nic_GBps_per_node, dtype=float) * GB
    per_node = size / nodes_a
    if rel.scheme == "in_memory":
        # each node copies its share to a peer node's host memory over its NICs
        write = per_node / nic
    else:
        aggregate = (rel.checkpoint_GBps_aggregate
                     or rel.checkpoint_GBps_per_node * nodes_a) * GB
        write = np.maximum(size / aggregate, per_node / (rel.checkpoint_GBps_per_node * GB))
    # job interruptions per wall second: any GPU failing, any of its nodes preempted
    rate_f = (np.asarray(num_gpus, dtype=float) / (rel.gpu_mtbf_hours * 3600.0)
              if failures_per_hour is None else np.asarray(failures_per_hour) / 3600.0)
    rate_p = np.asarray(preemptions_per_hour, dtype=float) / 3600.0
    rate = rate_f + rate_p
    neighbour = np.zeros_like(pp_a)
    if rel.scheme == "checkfree":
        if rel.checkfree_plus:
            neighbour = np.where(pp_a >= 2, 1.0, 0.0)
        else:
            neighbour = np.where(pp_a >= 3, (pp_a - 2) / np.maximum(pp_a, 1.0), 0.0)
    rate_ckpt, rate_other = rate * (1 - neighbour), rate * neighbour
    stage_bytes = size / np.maximum(pp_a, 1.0)
    cost_other = rel.restart_s + stage_bytes / nic + np.asarray(step_time_s, dtype=float) / 2
    if rel.checkpoint_interval_s is not None:
        tau = np.broadcast_to(np.asarray(rel.checkpoint_interval_s, dtype=float),
                              np.shape(rate_ckpt)).copy()
    else:
        tau = _tau(write, rel.restart_s, rate_ckpt, rate_other, cost_other)
    with np.errstate(divide="ignore", invalid="ignore"):
        no_ckpt = 1.0 - rate_other * cost_other
        w = np.where(rate_ckpt > 0,
                     _wall(tau, write, rel.restart_s, rate_ckpt, rate_other, cost_other),
                     np.where(no_ckpt > 0, 1 / no_ckpt, np.inf))
        share = np.where(np.isfinite(w), 1.0 / w, 0.0)
    return _Terms(size=size, write=write, rate_failures=np.broadcast_to(rate_f, share.shape),
                  rate_preemptions=np.broadcast_to(rate_p, share.shape),
                  neighbour_share=np.broadcast_to(neighbour, share.shape), tau=tau,
                  share=share, given_interval=rel.checkpoint_interval_s is not None,
                  rate_ckpt=rate_ckpt, rate_other=rate_other, cost_other=cost_other)


def goodput_fraction(model: ModelSpec, training: TrainingSpec, rel: ReliabilitySpec, *,
                     num_gpus: Any, nodes: Any, pp: Any, nic_GBps_per_node: Any,
                     step_time_s: Any, preemptions_per_hour: Any = 0.0,
                     failures_per_hour: Any = None) -> np.ndarray:
    """The goodput share (0–1) of plans given as arrays (or scalars) of GPUs, nodes, pp,
    per-node NIC GB/s, step time and preemptions per hour; :func:`goodput`'s ``goodput``.

    Non-increasing in ``num_gpus``, ``preemptions_per_hour`` and ``step_time_s`` (a longer
    step only lengthens CheckFree's lost half step), so the share at a lower bound on the step
    time is an upper bound on the plan's share."""
    return _terms(model, training, rel, num_gpus=num_gpus, nodes=nodes, pp=pp,
                  nic_GBps_per_node=nic_GBps_per_node, step_time_s=step_time_s,
                  preemptions_per_hour=preemptions_per_hour,
                  failures_per_hour=failures_per_hour).share


@dataclass(frozen=True)
class GoodputModel:
    """The inputs of :func:`wall_per_useful` for one plan: checkpoint write ``δ`` (s), restart
    ``R`` (s), the rates of interruptions recovered from a checkpoint and otherwise (per wall
    second) and the cost of the latter (s) — what :func:`goodput` evaluates at its interval,
    for drawing goodput against the interval."""

    write_s: float
    restart_s: float
    rate_ckpt: float
    rate_other: float
    cost_other: float
    checkpoint_bytes: float
    rate: float

    def wall_per_useful(self, tau: float) -> float:
        return wall_per_useful(tau, self.write_s, self.restart_s, self.rate_ckpt,
                               self.rate_other, self.cost_other)

    def goodput(self, tau: float) -> float:
        """Share of wall time that advances training with a checkpoint every ``tau`` s."""
        w = self.wall_per_useful(tau)
        return 0.0 if not math.isfinite(w) else 1.0 / w

    def optimal_interval(self) -> float:
        return optimal_interval(self.write_s, self.restart_s, self.rate_ckpt, self.rate_other,
                                self.cost_other)


def goodput_model(model: ModelSpec, training: TrainingSpec, rel: ReliabilitySpec, *,
                  num_gpus: int, nodes: int, pp: int, nic_GBps_per_node: float,
                  step_time_s: float, preemptions_per_hour: float = 0.0,
                  failures_per_hour: float | None = None) -> GoodputModel:
    """The failure and recovery figures of one plan (the arguments of :func:`goodput`)."""
    t = _terms(model, training, rel, num_gpus=num_gpus, nodes=nodes, pp=pp,
               nic_GBps_per_node=nic_GBps_per_node, step_time_s=step_time_s,
               preemptions_per_hour=preemptions_per_hour, failures_per_hour=failures_per_hour)
    return GoodputModel(write_s=float(t.write), restart_s=rel.restart_s,
                        rate_ckpt=float(t.rate_ckpt), rate_other=float(t.rate_other),
                        cost_other=float(t.cost_other), checkpoint_bytes=t.size,
                        rate=float(t.rate_failures + t.rate_preemptions))


def goodput(model: ModelSpec, training: TrainingSpec, rel: ReliabilitySpec, *, num_gpus: int,
            nodes: int, pp: int, nic_GBps_per_node: float, step_time_s: float,
            tokens_per_s: float, cost_per_hour: float,
            preemptions_per_hour: float = 0.0, failures_per_hour: float | None = None
            ) -> Goodput:
    """Goodput of a plan with ``num_gpus`` GPUs on ``nodes`` nodes and ``pp`` stages, whose
    nodes are preempted ``preemptions_per_hour`` times an hour in all."""
    t = _terms(model, training, rel, num_gpus=num_gpus, nodes=nodes, pp=pp,
               nic_GBps_per_node=nic_GBps_per_node, step_time_s=step_time_s,
               preemptions_per_hour=preemptions_per_hour, failures_per_hour=failures_per_hour)
    notes: list[str] = []
    if rel.scheme == "in_memory":
        notes.append("in_memory: a failure that takes a node and the peer holding its copy "
                     "at once is not modelled")
    neighbour = float(t.neighbour_share)
    if rel.scheme == "checkfree":
        if neighbour == 0.0:
            notes.append(f"checkfree needs pp >= {2 if rel.checkfree_plus else 3} for "
                         "neighbour recovery; every failure is recovered from a checkpoint")
        notes.append("checkfree: the rebuilt stage's weights are an average of its "
                     "neighbours'; the extra steps to recover the loss are not counted")
    rate_f, rate_p = float(t.rate_failures), float(t.rate_preemptions)
    rate = rate_f + rate_p
    if rate_p > 0:
        notes.append("preemptions (cluster.pools[].preemption_per_hour) are recovered as "
                     "failures are: a restart and the work since the last checkpoint")
    tau = float(t.tau)
    if neighbour < 1.0:
        rule = ("given (training.reliability)" if t.given_interval else
                "optimal under this model: τ = −δ + √(δ² + 2δa) (Young 1974 / Daly 2006 "
                "first order)")
        interval: float | None = tau if math.isfinite(tau) else None
    else:
        interval, rule = None, "no checkpoints: every failure is recovered from neighbours"
    share = float(t.share)
    if share == 0.0:
        notes.append("failures come faster than the job can recover: it makes no progress")
    tps = tokens_per_s * share
    ttt = (float(time_to_train_s(training.train_tokens, tokens_per_s, share))
           if (training.train_tokens and tps > 0) else None)
    return Goodput(
        scheme=rel.scheme + ("+" if rel.scheme == "checkfree" and rel.checkfree_plus else ""),
        failures_per_day=rate_f * DAY, preemptions_per_day=rate_p * DAY,
        job_mtbf_hours=1 / rate / 3600.0,
        checkpoint_bytes=t.size, checkpoint_write_s=float(t.write),
        checkpoint_interval_s=interval, interval_rule=rule,
        lost_hours_per_day=(1 - share) * 24.0, goodput=share, tokens_per_s=tps,
        time_to_train_s=ttt, time_to_train_days=ttt / DAY if ttt is not None else None,
        cost_to_train=ttt / 3600.0 * cost_per_hour if ttt is not None else None, notes=notes)
