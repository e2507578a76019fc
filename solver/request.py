"""The search request: ``{model, training, cluster, objective, constraints, top_k,
time_limit_s}`` as in the contract, plus an optional calibration profile and a seed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from costmodel.errors import ProblemCollector
from costmodel.pipeline.schedules import SCHEDULES
from costmodel.profile import CalibrationProfile
from costmodel.specs.cluster import Cluster
from costmodel.specs.framework import Framework
from costmodel.specs.plan import Recompute, ScheduleName
from costmodel.specs.reliability import check_reliability_pools
from costmodel.specs.request import ModelField, attach_measured_device
from costmodel.specs.training import TrainingSpec

Objective = Literal["throughput", "cost", "time_to_train", "cost_to_train"]

DEFAULT_MAX_MEMORY_FRACTION = 0.90
"""Default ceiling on predicted peak memory as a fraction of device memory: the cost model's
own allocator reserve (5%) plus a further 5% against what it does not model (framework
workspaces that grow with shapes, memory spikes of collectives, fragmentation above the
average). A plan predicted at 95% of an 80 GiB GPU is too close to call."""

FIXABLE = ("tp", "pp", "dp", "cp", "ep", "micro_batch_size", "virtual_stages", "zero_stage")


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_gpus: PositiveInt | None = Field(None, description="Use at most this many GPUs.")
    max_cost_per_hour: float | None = Field(
        None, gt=0, description="Budget in $ per hour: price per GPU-hour × the GPUs a plan uses.")
    schedules: list[ScheduleName] | None = Field(
        None, min_length=1, description="Allowed pipeline schedules; null = all named ones. "
        "Plans without pipelining (pp = 1) are always allowed.")
    recompute: list[Recompute] | None = Field(None, min_length=1)
    partial_recompute: bool = Field(
        True, description="With 'full' among the allowed recompute modes: also search full "
        "recompute of only the first N layers of each pipeline stage (plan."
        "recompute_num_layers, Megatron's --recompute-method block), N at a quarter, a half "
        "and three quarters of the stage's layers; false = full recompute covers every layer.")
    max_memory_fraction: float = Field(
        DEFAULT_MAX_MEMORY_FRACTION, gt=0, le=1,
        description="Predicted peak memory must stay under this fraction of each GPU's memory "
        "(default 0.90: see solver.request.DEFAULT_MAX_MEMORY_FRACTION).")
    pools: list[str] | None = Field(None, min_length=1, description="Pools the search may use.")
    fixed: dict[str, PositiveInt] = Field(
        default_factory=dict, description=f"Degrees that must take a value, e.g. {{'tp': 8}}; "
        f"keys: {', '.join(FIXABLE)}.")
    framework: Framework | None = Field(
        None, description="Return only plans this framework can launch (megatron, torchtitan, "
        "deepspeed, fsdp), by its launch-config emitter's rules; null = training.framework "
        "(no restriction when that is null too).", examples=["megatron"])
    max_straggler_sensitivity: float | None = Field(
        None, ge=0, le=10, description="Return only plans whose step time grows by at most "
        "this fraction (0.05 = 5 %) when one GPU computes 10 % slower at the pipeline rank "
        "where that hurts most (costmodel.what_if.straggler_sensitivity; every plan's "
        "explanation reports it). In pure data parallelism a slow GPU costs about 10 % × the "
        "compute share of the step; a pipeline's bubbles absorb part of a slow stage. null = "
        "no limit.", examples=[0.08])
    max_micro_batch_size: PositiveInt = Field(8, le=64)
    max_pp: PositiveInt = Field(64, le=256)

    @field_validator("schedules")
    @classmethod
    def _searchable(cls, v: list[str] | None) -> list[str] | None:
        """The enumeration walks torch's named schedules; "custom" ones are synthesized from
        its finalists, and the bidirectional ones are estimated but not enumerated."""
        if v is None:
            return v
        unsearched = [s for s in v if s not in SCHEDULES and s != "custom"]
        if unsearched:
            raise ValueError(
                f"{', '.join(unsearched)} can be estimated (POST /v1/estimates) but not "
                f"searched; the search takes {', '.join(SCHEDULES)} and 'custom'")
        if not any(s in SCHEDULES for s in v):
            raise ValueError("'custom' schedules are synthesized from the finalists of the "
                             "named ones; list at least one of " + ", ".join(SCHEDULES))
        return v

    @model_validator(mode="after")
    def _known_keys(self) -> Constraints:
        unknown = sorted(set(self.fixed) - set(FIXABLE))
        if unknown:
            raise ValueError(f"fixed: unknown keys {unknown}; allowed: {', '.join(FIXABLE)}")
        if "zero_stage" in self.fixed and self.fixed["zero_stage"] > 3:
            raise ValueError("fixed: zero_stage must be 0..3")
        return self


class SearchRequest(ModelField):
    """Body of ``POST /v1/searches`` and argument of :func:`solver.search`."""

    model_config = ConfigDict(extra="forbid")

    training: TrainingSpec
    cluster: Cluster
    objective: Objective = Field(
        "throughput", description="throughput: tokens/s, steady state; cost: $ per million "
        "tokens, steady state; time_to_train: seconds for training.train_tokens; "
        "cost_to_train: $ for them (that time × the plan's $/hour). The to-train objectives "
        "count steady-state steps and, with training.reliability, the goodput model's "
        "checkpoint writes, restarts and lost work after failures and spot preemptions "
        "(time = train_tokens / (tokens/s × goodput), the estimate's "
        "goodput.time_to_train_s); never start-up or evaluation.",
        examples=["time_to_train"])
    constraints: Constraints = Field(default_factory=Constraints)
    top_k: PositiveInt = Field(5, le=50)
    time_limit_s: float = Field(10.0, gt=0, le=600)
    seed: int = Field(0, ge=0)
    calibration: CalibrationProfile | None = None

    @model_validator(mode="before")
    @classmethod
    def _measured_device(cls, data: object) -> object:
        """A pool may name the measured device of ``calibration`` (as in an estimate)."""
        return attach_measured_device(data)

    @model_validator(mode="after")
    def _needs_train_tokens(self) -> SearchRequest:
        c = ProblemCollector()
        if self.objective in ("time_to_train", "cost_to_train"):
            c.check(bool(self.training.train_tokens), "training.train_tokens",
                    f"objective {self.objective!r} needs the tokens of the whole run")
        if self.constraints.pools:
            names = {p.name for p in self.cluster.pools}
            unknown = [p for p in self.constraints.pools if p not in names]
            c.check(not unknown, "constraints.pools",
                    f"unknown pools {unknown}; pools: {', '.join(sorted(names))}")
        check_reliability_pools(self.training, self.cluster, c)
        c.raise_if_any()
        return self

    @property
    def framework_constraint(self) -> Framework | None:
        """The framework whose launchable plans the search returns: constraints.framework,
        else training.framework."""
        return self.constraints.framework or self.training.framework

    def estimate_request(self, plan: dict[str, Any],
                         global_batch_size: int | None = None) -> dict[str, Any]:
        """The ``POST /v1/estimates`` body that reproduces a found plan's estimate: this
        search's model (resolved), training job (at the batch size the search chose for the
        plan, where it chose one), cluster and calibration, with ``plan`` (its JSON form).
        What a stored plan keeps as its request, and what ``meshplan plan --save-plans``
        writes."""
        training = self.training
        if global_batch_size is not None:
            training = training.model_copy(update={"global_batch_size": global_batch_size,
                                                    "global_batch_sizes": None})
        out: dict[str, Any] = {
            "model": self.model.model_dump(mode="json"),
            "training": training.model_dump(mode="json"),
            "cluster": self.cluster.model_dump(mode="json"),
            "plan": plan,
        }
        if self.calibration is not None:
            out["calibration"] = self.calibration.model_dump(mode="json")
        return out
