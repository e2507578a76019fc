"""Schemas of ``/v1/calibrations``: the cost model's :class:`CalibrationProfile` in, a summary
(or the summary and the profile) out."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Body
from pydantic import BaseModel, ConfigDict, Field, ValidatorFunctionWrapHandler, field_validator

from costmodel.profile import CalibrationProfile
from service.validation import input_errors_only


class CalibrationBody(CalibrationProfile):
    """A calibration profile (format ``meshplan-calibration/1``, what ``meshplan-runtime
    calibrate`` writes). Its GPU type is ``gpu``, or else ``provenance.gpu``; one of them must
    name a GPU of the catalog (an alias is fine)."""

    model_config = ConfigDict(title="CalibrationRequest")

    @field_validator("*", mode="wrap")
    @classmethod
    def _input_errors_only(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return input_errors_only(value, handler)


class CalibrationSummary(BaseModel):
    id: str
    name: str
    gpu: str = Field(description="Canonical catalog name of the GPU the profile is for.")
    source: str = Field(description="provenance.source of the profile.")
    created: dt.datetime


class CalibrationOut(CalibrationSummary):
    profile: CalibrationProfile


H100_PROFILE_EXAMPLE: dict[str, Any] = {
    "format": "meshplan-calibration/1",
    "name": "h100-sxm-example",
    "gpu": "H100-SXM-80GB",
    "provenance": {
        "source": "example for the API documentation: the GEMM and HBM figures are those of "
                  "meshplan's default efficiency model for H100-SXM (0.70 of the 989 TFLOP/s "
                  "bf16 peak, 0.90 of 3350 GB/s), not a measurement",
        "gpu": "H100-SXM-80GB",
    },
    "measurements": {
        "gemm": [{"m": 8192, "n": 8192, "k": 8192, "dtype": "bf16", "tflops": 692.0}],
        "hbm_GBps": 3015.0,
    },
}
"""A profile for H100-SXM (the H100 pools of the Llama-3-70B examples)."""

CalibrationBodyDep = Annotated[
    CalibrationBody,
    Body(openapi_examples={"h100": {"summary": "A profile for H100-SXM-80GB",
                                    "value": H100_PROFILE_EXAMPLE}}),
]
