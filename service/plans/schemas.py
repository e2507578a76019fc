"""Schemas of ``/v1/plans/{id}``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Body
from pydantic import BaseModel, Field

from costmodel.results import Estimate
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.scenario import Scenario
from costmodel.what_if import WhatIfResult
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


class WhatIfOut(WhatIfResult):
    """``POST /v1/plans/{id}/what-if``: the stored plan under a scenario."""

    plan_id: str


WHAT_IF_EXAMPLE: dict[str, Any] = {
    "ranks": {"0": 1.1},
    "stages": {"0": 1.0},
    "nodes": {"0": 1.05},
    "pools": {},
    "links": {"intra_node": 1.0, "inter_node": 1.5, "between": []},
    "jitter": {"cv": 0.05, "cv_per_rank": {"0": 0.1}, "steps": 16, "seed": 0},
}
"""GPU 0 10 % slower, node 0 5 % slower, the network 1.5x slower and 5 % step-to-step jitter
(10 % on GPU 0), over 16 seeded steps: indices every plan has, so it runs on any stored plan.
``pools`` (by name) and ``links.between`` (node pairs) depend on the cluster: see their
field examples."""

WhatIfBodyDep = Annotated[
    Scenario,
    Body(openapi_examples={
        "straggler": {"summary": "A slow GPU and node, a slower network and jitter",
                      "value": WHAT_IF_EXAMPLE},
        "empty": {"summary": "No change: the plan's own step time", "value": {}},
    }),
]
