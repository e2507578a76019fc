"""Request and response schemas of ``POST /v1/estimates``: the cost model's own pydantic models
(:class:`costmodel.specs.request.EstimateRequest` in, :class:`costmodel.results.Estimate` out),
with an OpenAPI example and one guard."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body
from pydantic import ConfigDict

from costmodel.results import Estimate
from costmodel.specs import request as spec
from service.validation import StoredCalibrationBody


class EstimateRequest(StoredCalibrationBody, spec.EstimateRequest):
    """The cost model's request plus ``calibration_id`` (a stored profile, resolved by the
    service) and a guard: a validator that fails with anything other than a validation error is
    reported as invalid input of that section (422), not as a server error
    (:func:`service.validation.input_errors_only`)."""

    model_config = ConfigDict(title="EstimateRequest")


LLAMA3_70B_EXAMPLE: dict[str, Any] = {
    "model": {"preset": "llama3-70b"},
    "training": {"global_batch_size": 1024, "seq_len": 8192, "precision": "bf16"},
    "cluster": {
        "pools": [
            {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 64,
             "price_per_gpu_hour": 2.49},
            {"name": "a100", "gpu": "A100-SXM-80GB", "gpus_per_node": 8, "nodes": 64,
             "price_per_gpu_hour": 1.29},
        ],
    },
    "plan": {
        "pool": "h100", "tp": 8, "pp": 4, "dp": 16, "micro_batch_size": 1,
        "schedule": "Interleaved1F1B", "virtual_stages": 5, "recompute": "selective",
        "sequence_parallel": True, "zero_stage": 1,
    },
}
"""Llama-3-70B, 1024 × 8192-token sequences in bf16, on the 512 H100s of a mixed H100/A100
inventory: TP 8 inside a node, 4 pipeline ranks × 5 interleaved chunks (80 layers = 20 stages of
4), DP 16, selective recompute with sequence parallelism, ZeRO-1 (a Megatron-LM-style layout).
The tests check that it evaluates and fits."""

EstimateBody = Annotated[
    EstimateRequest,
    Body(openapi_examples={
        "llama3-70b": {
            "summary": "Llama-3-70B on 512 H100s of a mixed H100/A100 inventory",
            "value": LLAMA3_70B_EXAMPLE,
        },
    }),
]

__all__ = ["LLAMA3_70B_EXAMPLE", "Estimate", "EstimateBody", "EstimateRequest"]
