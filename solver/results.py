"""Search results; ``model_dump(mode="json")`` is the ``result`` of ``GET /v1/searches/{id}``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from costmodel.results import Estimate
from costmodel.specs.plan import ParallelPlan
from costmodel.what_if import StragglerSensitivity

OPTIMALITY_MEANING = (
    "optimal = no plan in the enumerated space (every allowed pool, GPU count, tp, pp, dp, cp, "
    "ep, micro-batch size, schedule and virtual stages, recompute, sequence parallelism and "
    "ZeRO stage, with the default even layer split, within the constraints) has a better "
    "objective under meshplan's cost model: every plan whose proven bound could beat the k-th "
    "best was simulated (branch and bound). The finalists are then improved: layer splits "
    "re-balanced with CP-SAT, vocabulary layers tried split over all pipeline ranks, nodes "
    "placed on measured links and, with several pools, pipelines mixing GPU types built from "
    "their degrees (CP-SAT stage assignment); finalists with unequal stages get a pipeline "
    "schedule synthesized for their stage times and memory (CP-SAT, schedule 'custom'). "
    "These moves only add better plans; bound and gap refer to the single-pool, even-split "
    "space with the named schedules. A result whose plans only exist across pools is "
    "'feasible' (no certificate).")


OBJECTIVE_UNITS = {"throughput": "tokens/s", "cost": "$/M tokens", "time_to_train": "s",
                   "cost_to_train": "$"}
"""The unit of each objective's value and bound (solver.request.Objective)."""

INFEASIBLE_MEANING = (
    "infeasible = no plan in the enumerated space is valid, fits in memory and meets the "
    "constraints; infeasible_reason says which rule excluded the most candidates.")


def objective_days(objective: str, value: float | None) -> float | None:
    """A time_to_train value (seconds) in days; None for the other objectives."""
    return value / 86400.0 if objective == "time_to_train" and value is not None else None


class Explanation(BaseModel):
    binding_constraint: str = Field(description="What limits this plan, in words and numbers.")
    vs_runner_up: str | None = Field(None, description="Why the next plan ranks lower.")
    notes: list[str] = []
    straggler_sensitivity: StragglerSensitivity | None = Field(
        None, description="What one GPU 10 % slower costs this plan, at the pipeline rank "
        "where it hurts most (costmodel.what_if.straggler_sensitivity): increase_fraction is "
        "the step-time increase as a fraction of the step (what "
        "constraints.max_straggler_sensitivity limits). null when the what-if cannot "
        "simulate the plan.", examples=[{
            "factor": 1.1, "worst_stage": 0, "worst_rank": 0, "step_time_s": 2.31,
            "increase_s": 0.19, "increase_fraction": 0.092,
            "per_stage_increase_s": [0.19, 0.17]}])


class PlanVariant(BaseModel):
    """Another simulated plan of the same layout (pool, degrees, micro-batch, recompute mode)
    that differs in schedule, virtual stages, ZeRO stage, sequence parallelism or how many
    layers per stage a full recompute covers, and ranks below."""

    plan: ParallelPlan
    objective_value: float
    step_time_s: float = Field(description="Simulated step time, s (NaN if not recorded).")
    schedule: str
    virtual_stages: int
    zero_stage: int
    sequence_parallel: bool
    recompute_num_layers: int | None = Field(
        None, description="As plan.recompute_num_layers (None: every layer of the mode).")


class PoolBest(BaseModel):
    """The best plan of one pool (GPU type) that can run the job."""

    pool: str
    gpu: str
    plan: ParallelPlan
    global_batch_size: int | None = Field(
        None, description="As RankedPlan.global_batch_size.")
    objective_value: float
    objective_unit: str
    tokens_per_s: float
    cost_per_million_tokens: float
    vs_winner: str = Field("", description="Its throughput and $ per M tokens relative to "
                           "the search's best plan.")


class RankedPlan(BaseModel):
    rank: int
    plan: ParallelPlan
    global_batch_size: int | None = Field(
        None, description="The global batch size (sequences) this plan is for, where the "
        "search chose it among training.global_batch_sizes; null = training.global_batch_size.")
    objective_value: float
    objective_unit: str = Field("", description="Unit of objective_value: tokens/s, $/M "
                                "tokens, s (time_to_train) or $ (cost_to_train).")
    objective_days: float | None = Field(None, description="time_to_train in days.")
    estimate: Estimate
    explanation: Explanation
    variants: list[PlanVariant] = Field(
        default_factory=list, description="Simulated variants of this plan's layout (schedule, "
        "virtual stages, ZeRO stage, sequence parallelism) that rank below it; the plans "
        "returned are pairwise distinct layouts.")


class ParetoPoint(BaseModel):
    plan: ParallelPlan
    global_batch_size: int | None = Field(
        None, description="As RankedPlan.global_batch_size.")
    gpus: int
    tokens_per_s: float
    cost_per_million_tokens: float
    cost_per_hour: float


class Optimality(BaseModel):
    status: Literal["optimal", "feasible", "infeasible"]
    objective: str
    value: float | None = Field(None, description="Objective of the best plan.")
    bound: float | None = Field(None, description="Proven bound on the best achievable value.")
    gap: float | None = Field(None, description="|value − bound| / |bound|.")
    unit: str = Field("", description="Unit of value and bound (tokens/s, $/M tokens, s, $).")
    value_days: float | None = Field(None, description="time_to_train value in days.")
    meaning: str = OPTIMALITY_MEANING

    @model_validator(mode="after")
    def _units_and_meaning(self) -> Optimality:
        """Every value carries its unit; an infeasible result does not explain 'optimal'."""
        if not self.unit:
            self.unit = OBJECTIVE_UNITS.get(self.objective, "")
        if self.value_days is None:
            self.value_days = objective_days(self.objective, self.value)
        if self.status == "infeasible" and self.meaning == OPTIMALITY_MEANING:
            self.meaning = INFEASIBLE_MEANING
        return self


class SkippedPool(BaseModel):
    """A pool the search did not search (:mod:`solver.budget`)."""

    pool: str
    reason: str


class SearchStats(BaseModel):
    candidates: int = Field(description="Plans enumerated (before validity and memory filters).")
    valid: int
    fitting: int
    simulated: int
    partitions_solved: int
    placements_solved: int = 0
    schedules_synthesized: int = Field(
        0, description="Finalists given a CP-SAT pipeline schedule (schedule 'custom'; kept "
        "only where the estimate improved).")
    elapsed_s: float
    timed_out: bool
    skipped_pools: list[SkippedPool] = Field(
        default_factory=list, description="Pools not searched, each with why (the search's "
        "time share for enumeration or its memory cap ran out); the optimality bound covers "
        "only the pools searched.")


class SearchResult(BaseModel):
    plans: list[RankedPlan]
    pareto: list[ParetoPoint]
    optimality: Optimality
    infeasible_reason: str | None = None
    best_per_pool: list[PoolBest] = Field(
        default_factory=list, description="With several pools: the best plan of every pool "
        "that can run the job, and how it compares with the winner.")
    stats: SearchStats
