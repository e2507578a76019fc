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
    gbs = req.training.global_batch_size
    if gbs > settings.max_search_global_batch:
        problems.append(FieldProblem(
            "training.global_batch_size", f"global_batch_size={gbs} exceeds this server's "
            f"limit of {settings.max_search_global_batch} sequences for a search "
            "(MESHPLAN_MAX_SEARCH_GLOBAL_BATCH): the micro-batch counts the search simulates "
            "grow with it"))
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
