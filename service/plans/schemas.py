"""Schemas of ``/v1/plans/{id}``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from costmodel.results import Estimate
from costmodel.specs.plan import ParallelPlan
from runtime.launch import LaunchConfig
from service.runs.schemas import RunOut
from solver.results import Explanation


class RunsSummary(BaseModel):
    count: int
    mean_relative_error: float | None = Field(
        None, description="Mean of (predicted − measured) / measured over the runs that have "
        "a prediction.")
    mean_abs_relative_error: float | None = None


class PlanOut(BaseModel):
    """One stored plan with its estimate, explanation and the runs that tested it."""

    id: str
    search_id: str
    rank: int
    objective: str
    objective_value: float
    plan: ParallelPlan
    estimate: Estimate
    explanation: Explanation
    request: dict[str, Any] = Field(
        description="The `POST /v1/estimates` body that reproduces `estimate`: the search's "
        "model (resolved), training job, cluster and calibration, with this plan.")
    calibration_id: str | None = None
    cost_model_version: str
    created: dt.datetime
    runs: list[RunOut]
    runs_summary: RunsSummary


class LaunchOut(LaunchConfig):
    """``GET /v1/plans/{id}/launch/{format}``: the launch config of a stored plan."""

    plan_id: str
