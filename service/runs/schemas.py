"""Schemas of ``/v1/plans/{id}/runs``: the runtime's :class:`RunReport` in, the stored run with
its prediction and error out."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import Body
from pydantic import BaseModel, ConfigDict, Field, ValidatorFunctionWrapHandler, field_validator

from costmodel.attribution import StragglerAttribution
from costmodel.runs import RunReport
from service.validation import input_errors_only


class RunBody(RunReport):
    model_config = ConfigDict(title="RunReport")

    @field_validator("*", mode="wrap")
    @classmethod
    def _input_errors_only(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return input_errors_only(value, handler)


class RunOut(BaseModel):
    id: str
    plan_id: str
    created: dt.datetime
    measured_step_time_s: float
    predicted_step_time_s: float | None = Field(
        description="The runtime's own prediction for what it ran (`report.predicted`), else "
        "the plan's estimate when the run used the plan's model unchanged.")
    predicted_source: Literal["report", "plan"] | None = None
    relative_error: float | None = Field(
        description="(predicted − measured) / measured step time.")
    stragglers: StragglerAttribution | None = Field(
        None, description="With measured.rank_compute_s: the step without stragglers, the "
        "slowdown they caused and the ranks responsible (what-if analysis).")
    report: RunReport


RUN_EXAMPLE: dict[str, Any] = {
    "measured": {"step_time_s": 13.9, "step_times_s": [14.1, 13.9, 13.8, 13.9],
                 "tokens_per_s": 603_000.0,
                 "peak_memory_gib": [61.2, 58.4, 57.9, 55.0],
                 "losses": [2.31, 2.29, 2.30, 2.28]},
    "predicted": {"step_time_s": 13.4, "peak_memory_gib": 62.0, "calibration": "default"},
    "environment": {"device": "NVIDIA H100 80GB HBM3", "backend": "nccl", "world_size": 512,
                    "torch": "2.6.0", "hostname": "node-001", "date": "2025-01-15T10:00:00Z"},
    "steps": 4,
    "warmup_steps": 2,
    "notes": "example: the Llama-3-70B plan on 512 H100 (illustrative figures)",
}

RunBodyDep = Annotated[
    RunBody,
    Body(openapi_examples={"llama3-70b": {"summary": "A run of a Llama-3-70B plan on 512 H100",
                                          "value": RUN_EXAMPLE}}),
]
