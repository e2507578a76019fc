"""Measured results of running a plan: what ``meshplan-runtime run`` reports.

A run report is the body of ``POST /v1/plans/{id}/runs``. It carries what was measured on
real hardware (step times, peak memory per rank), what the cost model predicted for the same
layout and the same machine (with the calibration profile named in ``calibration``), and the
environment the numbers were taken in, so that a prediction can always be checked against the
run that tested it. The service stores reports beside their plans and ``GET /v1/plans/{id}``
shows measured against predicted.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt

__all__ = ["MeasuredRun", "PredictedRun", "RunEnvironment", "RunReport"]


class RunEnvironment(BaseModel):
    """Where a run was measured."""

    model_config = ConfigDict(extra="allow")

    device: str = Field(description="Device name as torch reports it ('cpu' or the CUDA "
                        "device name, e.g. 'NVIDIA H100 80GB HBM3').")
    backend: str = Field(description="torch.distributed backend: 'nccl' or 'gloo'.")
    world_size: PositiveInt
    torch: str = Field(description="torch.__version__.")
    hostname: str | None = None
    driver: str | None = Field(None, description="CUDA driver version, when on a GPU.")
    date: str | None = Field(None, description="ISO 8601 time the run ended.")


class MeasuredRun(BaseModel):
    """What the run measured (after its warm-up steps)."""

    model_config = ConfigDict(extra="allow")

    step_time_s: PositiveFloat = Field(description="Median step time over the measured steps.")
    step_times_s: list[PositiveFloat] = Field(
        min_length=1, description="Every measured step's wall time (the slowest rank's).")
    tokens_per_s: PositiveFloat
    peak_memory_gib: list[NonNegativeFloat] = Field(
        default_factory=list, description="Peak allocated device memory per rank (CUDA; empty "
        "on CPU, where torch does not track it).")
    losses: list[float] = Field(default_factory=list, description="Loss of each step.")
    rank_compute_s: list[PositiveFloat] | None = Field(
        None, max_length=1_048_576, description="Per GPU (index = global rank, numbered as "
        "the what-if scenario's ranks): compute seconds per step, its waits excluded. Given, "
        "the stored run reports the slowdown attributable to stragglers and the ranks "
        "responsible (what-if analysis).")


class PredictedRun(BaseModel):
    """What the cost model predicted for the layout that ran (same shapes, same machine)."""

    model_config = ConfigDict(extra="allow")

    step_time_s: PositiveFloat
    peak_memory_gib: NonNegativeFloat | None = None
    calibration: str | None = Field(None, description="Name of the calibration profile used.")
    cost_model_version: str | None = None


class RunReport(BaseModel):
    """Body of ``POST /v1/plans/{id}/runs``."""

    model_config = ConfigDict(extra="forbid")

    measured: MeasuredRun
    predicted: PredictedRun | None = None
    environment: RunEnvironment
    steps: PositiveInt = Field(description="Measured steps (after warm-up).")
    warmup_steps: int = Field(0, ge=0)
    model_overrides: dict[str, int] = Field(
        default_factory=dict, description="Fields of the plan's model that the run scaled down "
        "(e.g. {'num_hidden_layers': 4, 'hidden_size': 256}); empty = the model as planned.")
    notes: str | None = None

    @property
    def relative_error(self) -> float | None:
        """(predicted − measured) / measured step time, or None without a prediction."""
        if self.predicted is None:
            return None
        return (self.predicted.step_time_s - self.measured.step_time_s) \
            / self.measured.step_time_s
