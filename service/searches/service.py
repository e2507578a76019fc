"""Submitting, reading, waiting for and cancelling searches.

A submission is validated, checked against this server's effort limits, given a content hash
(sha256 of the canonical request JSON — model resolved, stored calibration inlined — and the
cost-model version) and stored as ``queued``. An identical request from the same owner returns
the search already stored, finished or not, unless that one failed or was cancelled. Nothing
here runs the solver: workers do (:mod:`service.jobs`).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import anyio
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from costmodel.charts import ParetoPoint, pareto_svg
from costmodel.errors import FieldProblem, SpecError
from service.auth.service import Principal
from service.calibrations import service as calibrations
from service.db.base import utcnow
from service.db.engine import Database
from service.db.models import FINISHED_STATUSES, SearchJob
from service.errors import from_pydantic
from service.exceptions import Conflict, NotFound
from service.searches import repository
from service.searches.schemas import SearchBody, SearchOut, SearchProgressOut, SearchSummary
from service.settings import Settings
from service.validation import canonical_json, require_finite
from service.versioning import cost_model_version
from solver.request import SearchRequest


def check_admission(req: SearchRequest, settings: Settings) -> None:
    """This server's per-request effort limits (422 naming the field and the limit)."""
    problems: list[FieldProblem] = []
    if req.time_limit_s > settings.max_search_time_s:
        problems.append(FieldProblem(
            "time_limit_s", f"time_limit_s={req.time_limit_s:g} exceeds this server's limit of "
            f"{settings.max_search_time_s:g} s (MESHPLAN_MAX_SEARCH_TIME_S)"))
    if req.top_k > settings.max_top_k:
        problems.append(FieldProblem(
            "top_k", f"top_k={req.top_k} exceeds this server's limit of {settings.max_top_k} "
            "(MESHPLAN_MAX_TOP_K)"))
    pools = req.cluster.pools
    if len(pools) > settings.max_search_pools:
        problems.append(FieldProblem(
            "cluster.pools", f"{len(pools)} pools exceed this server's limit of "
            f"{settings.max_search_pools} (MESHPLAN_MAX_SEARCH_POOLS)"))
    gpus = sum(p.num_gpus for p in pools)
    if gpus > settings.max_search_gpus:
        problems.append(FieldProblem(
            "cluster.pools", f"the pools hold {gpus} GPUs, over this server's limit of "
            f"{settings.max_search_gpus} for a search (MESHPLAN_MAX_SEARCH_GPUS)"))
    sizes = [("training.global_batch_size", req.training.global_batch_size)] + [
        (f"training.global_batch_sizes.{i}", g)
        for i, g in enumerate(req.training.global_batch_sizes or [])]
    for field, gbs in sizes:
        if gbs > settings.max_search_global_batch:
            problems.append(FieldProblem(
                field, f"global batch size {gbs} exceeds this server's limit of "
                f"{settings.max_search_global_batch} sequences for a search "
                "(MESHPLAN_MAX_SEARCH_GLOBAL_BATCH): the micro-batch counts the search "
                "simulates grow with it"))
    layers = req.model.num_hidden_layers
    if layers > settings.max_layers:
        problems.append(FieldProblem(
            "model.num_hidden_layers", f"num_hidden_layers={layers} exceeds this server's "
            f"limit of {settings.max_layers} (MESHPLAN_MAX_LAYERS)"))
    if problems:
        raise SpecError(problems)


def prepare(session: Session, body: SearchBody, settings: Settings
            ) -> tuple[dict[str, Any], uuid.UUID | None]:
    """The request to store (the validated body, a stored calibration inlined) and the id of
    that calibration. Raises :class:`SpecError` for invalid input."""
    data = body.model_dump(mode="json", exclude={"calibration_id"})
    calibration_id: uuid.UUID | None = None
    if body.calibration_id is not None:
        if body.calibration is not None:
            raise SpecError(FieldProblem("calibration_id", "give either calibration (a profile) "
                                                           "or calibration_id, not both"))
        calibration_id, profile = calibrations.resolve(session, body.calibration_id)
        data["calibration"] = profile.model_dump(mode="json")
    require_finite(data)
    try:
        req = SearchRequest.model_validate(data)
    except ValidationError as exc:  # what round-trips through JSON must still validate
        raise SpecError([FieldProblem(e.field, e.rule) for e in from_pydantic(exc.errors())]
                        ) from None
    check_admission(req, settings)
    return data, calibration_id


def content_hash(data: dict[str, Any], version: str) -> str:
    return hashlib.sha256(f"{canonical_json(data)}\n{version}".encode()).hexdigest()


def submit(session: Session, body: SearchBody, principal: Principal, settings: Settings
           ) -> tuple[SearchJob, bool]:
    """Store a new search, or find the identical one; ``(search, created)``."""
    data, calibration_id = prepare(session, body, settings)
    version = cost_model_version()
    digest = content_hash(data, version)
    dedup_key = f"{digest}:{principal.key_id or '-'}"
    existing = repository.by_dedup_key(session, dedup_key)
    if existing is not None:
        return existing, False
    job = SearchJob(id=uuid.uuid4(), owner_id=principal.key_id, request=data,
                    request_hash=digest, dedup_key=dedup_key, cost_model_version=version,
                    calibration_id=calibration_id, status="queued", attempts=0,
                    cancel_requested=False)
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:  # an identical request won the race (another replica)
        existing = repository.by_dedup_key(session, dedup_key)
        if existing is None:
            raise
        return existing, False
    session.refresh(job)
    return job, True


def parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def get(session: Session, search_id: str, principal: Principal) -> SearchJob:
    ident = parse_id(search_id)
    job = repository.get(session, ident, principal) if ident is not None else None
    if job is None:
        raise NotFound(f"no search with id {search_id!r}")
    return job


def list_searches(session: Session, principal: Principal, status: str | None, limit: int,
                  offset: int) -> list[SearchSummary]:
    return [SearchSummary(id=str(j.id), status=j.status,
                          objective=str(j.request.get("objective", "throughput")),
                          created=j.created_at, finished=j.finished_at)
            for j in repository.list_(session, principal, status, limit, offset)]


def cancel(session: Session, search_id: str, principal: Principal) -> SearchJob:
    """Cancel a queued search at once; ask a running one's worker to stop (it sees the request
    at its next heartbeat); a cancelled one stays so; a finished one cannot be (409)."""
    job = get(session, search_id, principal)
    if job.status == "queued":
        job.status = "cancelled"
        job.dedup_key = None
        job.finished_at = utcnow()
    elif job.status == "running":
        job.cancel_requested = True
    elif job.status != "cancelled":
        raise Conflict(f"search {job.id} has already {job.status}; there is nothing to cancel")
    session.flush()
    session.refresh(job)
    return job


def finished(job: SearchJob) -> bool:
    return job.status in FINISHED_STATUSES


async def wait_for(db: Database, job_id: uuid.UUID, seconds: float, poll_s: float
                   ) -> SearchJob | None:
    """Poll the database until the search has finished or ``seconds`` have passed; the last
    state read (None if it vanished). Holds no thread between polls."""
    deadline = anyio.current_time() + seconds
    while True:
        job = await run_in_threadpool(_load, db, job_id)
        if job is None or finished(job):
            return job
        left = deadline - anyio.current_time()
        if left <= 0:
            return job
        await anyio.sleep(min(poll_s, left))


def _load(db: Database, job_id: uuid.UUID) -> SearchJob | None:
    with db.read_session() as session:
        return session.get(SearchJob, job_id)


def to_out(job: SearchJob) -> SearchOut:
    progress = None
    if job.progress:
        progress = SearchProgressOut(**job.progress, updated=job.heartbeat_at)
    return SearchOut(
        id=str(job.id), status=job.status,
        progress=progress, result=job.result, error=job.error,
        cancel_requested=job.cancel_requested, attempts=job.attempts,
        request_hash=job.request_hash, cost_model_version=job.cost_model_version,
        calibration_id=str(job.calibration_id) if job.calibration_id else None,
        created=job.created_at, started=job.started_at, finished=job.finished_at)


def _layout(plan: dict[str, Any]) -> str:
    """``h100 · tp8 pp4 dp2 · mbs 1 · Interleaved1F1B v2 · selective``: a plan in a line."""
    degrees = " ".join(f"{k}{plan[k]}" for k in ("tp", "pp", "dp", "cp", "ep")
                       if k in ("tp", "pp", "dp") or plan.get(k, 1) != 1)
    parts = [str(plan.get("pool") or "?"), degrees, f"mbs {plan.get('micro_batch_size', 1)}"]
    if plan.get("pp", 1) > 1:
        v = plan.get("virtual_stages", 1)
        parts.append(str(plan.get("schedule")) + (f" v{v}" if v and v > 1 else ""))
    parts.append(f"recompute {plan.get('recompute', 'none')}"
                 + (f" ×{plan['recompute_num_layers']} layers/stage"
                    if plan.get("recompute_num_layers") else ""))
    if plan.get("zero_stage"):
        parts.append(f"ZeRO-{plan['zero_stage']}")
    return " · ".join(parts)


def pareto_points(result: dict[str, Any]) -> list[ParetoPoint]:
    """The plans of a search result with a throughput and a cost: the returned plans (each a
    link to its stored plan, with its rank), the Pareto front's and the best of each pool,
    one point per distinct plan (a front plan that was returned links to it too)."""
    stored: dict[str, tuple[str, int]] = {}
    points: dict[str, ParetoPoint] = {}
    for p in result.get("plans") or []:
        key = canonical_json(p["plan"])
        stored[key] = (str(p["id"]), int(p["rank"]))
        est = p.get("estimate") or {}
        points[key] = ParetoPoint(
            tokens_per_s=float(est.get("tokens_per_s") or 0.0),
            cost_per_million_tokens=float(est.get("cost_per_million_tokens") or 0.0),
            label=f"#{p['rank']} · {_layout(p['plan'])}", href=f"/v1/plans/{p['id']}",
            rank=int(p["rank"]))
    others = [*(result.get("pareto") or []), *(result.get("best_per_pool") or [])]
    for q in others:
        key = canonical_json(q["plan"])
        if key in points:
            continue
        gpus = f" · {q['gpus']} GPUs" if "gpus" in q else ""
        points[key] = ParetoPoint(
            tokens_per_s=float(q.get("tokens_per_s") or 0.0),
            cost_per_million_tokens=float(q.get("cost_per_million_tokens") or 0.0),
            label=_layout(q["plan"]) + gpus)
    return list(points.values())


def pareto_chart(job: SearchJob) -> str:
    """``GET /v1/searches/{id}/pareto.svg`` of a finished search; a search that has not
    succeeded has no result to draw (:class:`Conflict`)."""
    if job.status != "succeeded" or not job.result:
        state = "has not finished" if not finished(job) else f"has {job.status}"
        raise Conflict(f"search {job.id} {state}; its Pareto plot exists once it has "
                       "succeeded (GET /v1/searches/{id} says where it is)")
    req = job.request
    model = req.get("model") or {}
    name = model.get("preset") or model.get("name") or "model"
    objective = str(req.get("objective", "throughput"))
    return pareto_svg(pareto_points(job.result),
                      title=f"search {job.id}: throughput against cost",
                      subtitle=f"{name} · objective {objective}")
