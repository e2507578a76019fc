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

Checkpoint size is the training state (weights in the compute dtype plus the optimizer's fp32
master weights and moments: 2 + 4 + 4 + 4 bytes per parameter for Adam in mixed precision, the
layout of Megatron-Core's distributed checkpoint and of torch.distributed.checkpoint of an
FSDP2 model), written by every node of the plan in parallel (Megatron's fully parallel save,
DCP): the write takes the larger of total/aggregate and per-node-share/node bandwidth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, Field

from costmodel.specs.model import ModelSpec
from costmodel.specs.reliability import ReliabilitySpec
from costmodel.specs.training import TrainingSpec

__all__ = ["Goodput", "GoodputModel", "checkpoint_bytes", "goodput", "goodput_model",
           "optimal_interval", "wall_per_useful"]


class Goodput(BaseModel):
    """What failures and their recovery cost the plan (``training.reliability`` given)."""

    scheme: str
    failures_per_day: float = Field(description="Expected job interruptions per day.")
    job_mtbf_hours: float = Field(description="Mean hours between interruptions of the job.")
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
        None, description="training.train_tokens at that throughput, in seconds.")
    time_to_train_days: float | None = None
    cost_to_train: float | None = Field(None, description="$ for time_to_train_s.")
    notes: list[str] = []


def checkpoint_bytes(model: ModelSpec, training: TrainingSpec) -> float:
    """Bytes of a full training checkpoint: weights in the compute dtype plus the optimizer's
    fp32 master weights and moments (Adam: 2 + 4 + 4 + 4 bytes per parameter in mixed
    precision, 4 + 4 + 4 in fp32; SGD with momentum one moment fewer)."""
    moments = 1 if training.optimizer == "sgd" else 2
    per_param = (4 + 4 * moments) if training.precision == "fp32" else (2 + 4 + 4 * moments)
    return float(model.num_params() * per_param)


def wall_per_useful(tau: float, delta: float, restart: float, rate_ckpt: float,
                    rate_other: float, cost_other: float) -> float:
    """W(τ) of the module docstring; ``inf`` when failures leave no progress."""
    denominator = 1.0 - rate_ckpt * (restart + (tau + delta) / 2) - rate_other * cost_other
    return (1 + delta / tau) / denominator if denominator > 0 else math.inf


def optimal_interval(delta: float, restart: float, rate_ckpt: float, rate_other: float,
                     cost_other: float) -> float:
    """The τ that minimises :func:`wall_per_useful` (closed form; module docstring)."""
    a = (1.0 - rate_ckpt * (restart + delta / 2) - rate_other * cost_other) / rate_ckpt
    if a <= 0:
        return math.inf
    return -delta + math.sqrt(delta * delta + 2 * delta * a)


@dataclass(frozen=True)
class GoodputModel:
    """The inputs of :func:`wall_per_useful` for one plan: checkpoint write ``δ`` (s), restart
    ``R`` (s), the rates of failures recovered from a checkpoint and otherwise (per wall
    second) and the cost of the latter (s). ``notes``: what the model leaves out."""

    write_s: float
    restart_s: float
    rate_ckpt: float
    rate_other: float
    cost_other: float
    checkpoint_bytes: float
    rate: float
    notes: tuple[str, ...] = ()

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
                  step_time_s: float) -> GoodputModel:
    """The failure and recovery figures of a plan with ``num_gpus`` GPUs on ``nodes`` nodes
    and ``pp`` stages (module docstring): what :func:`goodput` evaluates at the interval."""
    notes: list[str] = []
    size = checkpoint_bytes(model, training)
    per_node = size / max(nodes, 1)
    gb = 1e9
    if rel.scheme == "in_memory":
        # each node copies its share to a peer node's host memory over its NICs
        write = per_node / (nic_GBps_per_node * gb)
        notes.append("in_memory: a failure that takes a node and the peer holding its copy "
                     "at once is not modelled")
    else:
        aggregate = rel.checkpoint_GBps_aggregate or rel.checkpoint_GBps_per_node * nodes
        write = max(size / (aggregate * gb), per_node / (rel.checkpoint_GBps_per_node * gb))
    rate = num_gpus / (rel.gpu_mtbf_hours * 3600.0)  # job interruptions per wall second
    neighbour_share = 0.0
    if rel.scheme == "checkfree":
        if pp >= 3 or (rel.checkfree_plus and pp >= 2):
            neighbour_share = 1.0 if rel.checkfree_plus else (pp - 2) / pp
        else:
            notes.append(f"checkfree needs pp >= {2 if rel.checkfree_plus else 3} for "
                         "neighbour recovery; every failure is recovered from a checkpoint")
        notes.append("checkfree: the rebuilt stage's weights are an average of its "
                     "neighbours'; the extra steps to recover the loss are not counted")
    rate_ckpt, rate_other = rate * (1 - neighbour_share), rate * neighbour_share
    stage_bytes = size / max(pp, 1)
    cost_other = rel.restart_s + stage_bytes / (nic_GBps_per_node * gb) + step_time_s / 2
    return GoodputModel(write_s=write, restart_s=rel.restart_s, rate_ckpt=rate_ckpt,
                        rate_other=rate_other, cost_other=cost_other, checkpoint_bytes=size,
                        rate=rate, notes=tuple(notes))


def goodput(model: ModelSpec, training: TrainingSpec, rel: ReliabilitySpec, *, num_gpus: int,
            nodes: int, pp: int, nic_GBps_per_node: float, step_time_s: float,
            tokens_per_s: float, cost_per_hour: float) -> Goodput:
    """Goodput of a plan with ``num_gpus`` GPUs on ``nodes`` nodes and ``pp`` stages."""
    gm = goodput_model(model, training, rel, num_gpus=num_gpus, nodes=nodes, pp=pp,
                       nic_GBps_per_node=nic_GBps_per_node, step_time_s=step_time_s)
    notes = list(gm.notes)
    size, write, rate = gm.checkpoint_bytes, gm.write_s, gm.rate
    rate_ckpt, rate_other, cost_other = gm.rate_ckpt, gm.rate_other, gm.cost_other
    if rate_ckpt > 0:
        if rel.checkpoint_interval_s is not None:
            tau, rule = rel.checkpoint_interval_s, "given (training.reliability)"
        else:
            tau = optimal_interval(write, rel.restart_s, rate_ckpt, rate_other, cost_other)
            rule = ("optimal under this model: τ = −δ + √(δ² + 2δa) (Young 1974 / Daly 2006 "
                    "first order)")
        w = wall_per_useful(tau, write, rel.restart_s, rate_ckpt, rate_other, cost_other)
        interval: float | None = tau if math.isfinite(tau) else None
    else:
        denominator = 1.0 - rate_other * cost_other
        w = 1 / denominator if denominator > 0 else math.inf
        interval, rule = None, "no checkpoints: every failure is recovered from neighbours"
    share = 0.0 if not math.isfinite(w) else 1.0 / w
    if share == 0.0:
        notes.append("failures come faster than the job can recover: it makes no progress")
    day = 86400.0
    tps = tokens_per_s * share
    ttt = (training.train_tokens / tps) if (training.train_tokens and tps > 0) else None
    return Goodput(
        scheme=rel.scheme + ("+" if rel.scheme == "checkfree" and rel.checkfree_plus else ""),
        failures_per_day=rate * day, job_mtbf_hours=1 / rate / 3600.0,
        checkpoint_bytes=size, checkpoint_write_s=write, checkpoint_interval_s=interval,
        interval_rule=rule, lost_hours_per_day=(1 - share) * 24.0, goodput=share,
        tokens_per_s=tps, time_to_train_s=ttt,
        time_to_train_days=ttt / day if ttt is not None else None,
        cost_to_train=ttt / 3600.0 * cost_per_hour if ttt is not None else None, notes=notes)
