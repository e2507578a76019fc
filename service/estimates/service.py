"""Estimating one plan: admission limits, then :func:`costmodel.estimate` (all the modelling).

Shared by ``POST /v1/estimates`` and ``meshplan estimate`` (in-process).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

import costmodel
from costmodel.errors import FieldProblem, SpecError
from costmodel.results import Estimate
from costmodel.specs import request as spec
from costmodel.specs.request import num_microbatches
from service.db.engine import Database
from service.errors import from_pydantic
from service.estimates.heavy import HeavyEstimates
from service.estimates.schemas import EstimateRequest
from service.fair_gate import FairGate
from service.settings import Settings
from service.validation import non_finite_fields

COMPUTE_GATE = FairGate()
"""Serialises this process's estimates in arrival order (see :mod:`service.fair_gate`)."""


def check_admission(req: spec.EstimateRequest, settings: Settings) -> None:
    """Refuse requests whose evaluation would take unbounded time or memory (SpecError, 422).

    These are this server's resource limits, not rules of the model: the pipeline simulator's
    work grows with pp·virtual_stages × micro-batches, and per-layer tables with the layer
    count, so without a bound one request (``global_batch_size: 1e15``) could hold a worker
    for hours.
    """
    problems: list[FieldProblem] = []
    layers = req.model.num_hidden_layers
    if layers > settings.max_layers:
        problems.append(FieldProblem(
            "model.num_hidden_layers",
            f"num_hidden_layers={layers} exceeds this server's limit of {settings.max_layers} "
            "(MESHPLAN_MAX_LAYERS)"))
    stages, m = req.plan.num_stages, num_microbatches(req.training, req.plan)
    if stages * m > settings.max_schedule_cells:
        problems.append(FieldProblem(
            "training.global_batch_size",
            f"the pipeline schedule to simulate has pp·virtual_stages × micro-batches = "
            f"{stages} × {m} = {stages * m} cells, "
            f"over this server's limit of {settings.max_schedule_cells} "
            "(MESHPLAN_MAX_SCHEDULE_CELLS); raise micro_batch_size or dp, or lower "
            "global_batch_size"))
    if problems:
        raise SpecError(problems)


def with_calibration(req: EstimateRequest, db: Database | None) -> EstimateRequest:
    """``req`` with the stored profile its ``calibration_id`` names (SpecError on
    ``calibration_id`` when unknown, combined with ``calibration``, or without a database).
    The profile is read in a transaction of its own, ended before the estimate runs."""
    if req.calibration_id is None:
        return req
    if req.calibration is not None:
        raise SpecError(FieldProblem("calibration_id", "give either calibration (a profile) or "
                                                       "calibration_id, not both"))
    if db is None:
        raise SpecError(FieldProblem("calibration_id", "stored calibrations need a server "
                                                       "(--server URL)"))
    from service.calibrations.service import resolve

    with db.read_session() as session:
        _, profile = resolve(session, req.calibration_id)
    return req.model_copy(update={"calibration": profile})


def create_estimate(req: EstimateRequest, settings: Settings,
                    db: Database | None = None, heavy: HeavyEstimates | None = None
                    ) -> Estimate:
    """Admission checks, then the cost model: in ``heavy``'s process pool when the request's
    simulation is above its threshold, else in this process. Raises :class:`SpecError` for
    invalid input, including inputs so extreme that a result overflows (JSON has no
    infinity), and :class:`~service.exceptions.Busy` when ``heavy``'s queue is full."""
    req = with_calibration(req, db)
    check_admission(req, settings)
    if heavy is not None and heavy.is_heavy(req):
        est = heavy.run(req)
    else:
        with COMPUTE_GATE:  # one estimate at a time per process, in arrival order
            est = costmodel.estimate(req)
    overflowed = non_finite_fields(est.model_dump())
    if overflowed:
        shown = ", ".join(overflowed[:5]) + (
            f" and {len(overflowed) - 5} more" if len(overflowed) > 5 else "")
        raise SpecError(FieldProblem(
            "body", "the inputs are outside the range the cost model can evaluate: "
            f"{shown} came out infinite or undefined"))
    return est


def parse_request(data: Any) -> EstimateRequest:
    """Validate a request body (a dict) as :class:`EstimateRequest`.

    Raises :class:`SpecError` whose problems carry dotted field paths — the same ones the HTTP
    API reports (a SpecError raised inside a validator keeps its own paths).
    """
    if not isinstance(data, dict):
        raise SpecError(FieldProblem("body", "must be a JSON object with model, training, "
                                             "cluster and plan"))
    try:
        return EstimateRequest.model_validate(data)
    except ValidationError as exc:
        errors = from_pydantic(exc.errors())
        raise SpecError([FieldProblem(e.field, e.rule) for e in errors]) from None
