"""Schemas of ``/v1/searches``: the solver's request and result, with what storing adds (ids,
status, progress, errors)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Body
from pydantic import BaseModel, ConfigDict, Field

from service.db.models import SearchStatus
from service.errors import Problem
from service.validation import StoredCalibrationBody
from solver.request import SearchRequest
from solver.results import RankedPlan, SearchResult


class SearchBody(StoredCalibrationBody, SearchRequest):
    """The solver's request plus ``calibration_id`` (a stored profile)."""

    model_config = ConfigDict(title="SearchRequest")


class SearchProgressOut(BaseModel):
    phase: str = Field(
        description="enumerating (bulk evaluation of each pool), simulating (branch and bound "
        "with the exact estimate), refining (CP-SAT on the finalists), done.")
    candidates: int = Field(description="Plans enumerated so far.")
    fitting: int = Field(description="Of which valid and fitting the constraints.")
    plans_evaluated: int = Field(description="Plans simulated with the full estimate.")
    best: float | None = Field(None, description="Objective of the best plan so far.")
    bound: float | None = Field(None, description="Optimistic bound of the plans not yet "
                                "simulated; the search is optimal when best reaches it.")
    elapsed_s: float
    updated: dt.datetime | None = Field(None, description="Time of the worker's last "
                                        "heartbeat.")


class StoredRankedPlan(RankedPlan):
    id: str = Field(description="The stored plan: GET /v1/plans/{id}.")


class StoredSearchResult(SearchResult):
    plans: list[StoredRankedPlan]  # type: ignore[assignment]


class SearchOut(BaseModel):
    """A search and, once it has succeeded, its result."""

    id: str
    status: SearchStatus
    progress: SearchProgressOut | None = None
    result: StoredSearchResult | None = None
    error: Problem | None = Field(None, description="Why a failed search failed.")
    cancel_requested: bool = False
    attempts: int = Field(description="Workers that have claimed it (more than one after a "
                          "worker died).")
    request_hash: str = Field(description="sha256 of the canonical request and the cost-model "
                              "version: identical requests share one search.")
    cost_model_version: str
    calibration_id: str | None = None
    created: dt.datetime
    started: dt.datetime | None = None
    finished: dt.datetime | None = None


class SearchSummary(BaseModel):
    id: str
    status: SearchStatus
    objective: str
    created: dt.datetime
    finished: dt.datetime | None = None


LLAMA3_70B_SEARCH_EXAMPLE: dict[str, Any] = {
    "model": {"preset": "llama3-70b"},
    "training": {"global_batch_size": 1024, "seq_len": 8192, "precision": "bf16",
                 "train_tokens": 15_000_000_000_000},
    "cluster": {
        "pools": [
            {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 32,
             "price_per_gpu_hour": 2.49},
            {"name": "a100", "gpu": "A100-SXM-80GB", "gpus_per_node": 8, "nodes": 64,
             "price_per_gpu_hour": 1.29},
        ],
    },
    "objective": "cost",
    "constraints": {"max_cost_per_hour": 1000},
    "top_k": 3,
    "time_limit_s": 10,
}
"""Llama-3-70B, 1024 × 8192-token sequences, 15T tokens to train, on an inventory of 256 H100
and 512 A100: the cheapest plans per token under $1000/hour, within 10 s. The tests run it."""

SPOT_GOODPUT_SEARCH_EXAMPLE: dict[str, Any] = {
    "model": {"preset": "llama3-8b"},
    "training": {"global_batch_size": 256, "seq_len": 4096,
                 "train_tokens": 1_000_000_000_000,
                 "reliability": {"restart_s": 600, "checkpoint_GBps_per_node": 5}},
    "cluster": {
        "pools": [
            {"name": "h100-spot", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 8,
             "price_per_gpu_hour": 1.2, "preemption_per_hour": 0.05},
        ],
    },
    "objective": "time_to_train",
    "constraints": {"max_straggler_sensitivity": 0.097},
    "top_k": 3,
    "time_limit_s": 10,
}
"""Llama-3-8B, 1T tokens on 64 spot H100 (each node preempted once in 20 hours), GPU failures
at Llama 3's rate: the shortest time to train counting checkpoints, restarts and lost work
(goodput), among plans that lose at most 9.7 % of their step to one GPU 10 % slower."""

SearchBodyDep = Annotated[
    SearchBody,
    Body(openapi_examples={
        "llama3-70b-mixed": {
            "summary": "Llama-3-70B on a mixed H100/A100 inventory, cheapest per token",
            "value": LLAMA3_70B_SEARCH_EXAMPLE,
        },
        "spot-goodput": {
            "summary": "Llama-3-8B on spot H100s: time to train with failures, preemptions "
                       "and a straggler-robustness limit",
            "value": SPOT_GOODPUT_SEARCH_EXAMPLE,
        },
    }),
]
