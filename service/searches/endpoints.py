"""``/v1/searches``: submit (202 + id, or the finished search with ``?wait=S``), read with
progress, list, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from costmodel.errors import FieldProblem, SpecError
from service.auth.dependencies import PrincipalDep
from service.db.models import SearchStatus
from service.deps import DatabaseDep, ReadSessionDep, SessionDep, SettingsDep
from service.errors import NOT_FOUND, PROBLEM_RESPONSES, Problem
from service.searches import service
from service.searches.schemas import SearchBodyDep, SearchOut, SearchSummary
from service.settings import Settings

router = APIRouter(prefix="/searches", tags=["searches"])

WaitQuery = Annotated[float, Query(
    ge=0, description="Seconds to hold the request open for the search to finish (at most "
    "MESHPLAN_MAX_WAIT_S); the answer is 200 with the result if it does, else 202.")]

FINISHED_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"model": SearchOut, "description": "The search has finished (within `wait`, or an "
          "identical one had)."},
}


def _check_wait(wait: float, settings: Settings) -> None:
    if wait > settings.max_wait_s:
        raise SpecError(FieldProblem("wait", f"wait={wait:g} exceeds this server's limit of "
                                             f"{settings.max_wait_s:g} s (MESHPLAN_MAX_WAIT_S)"))


def _answer(response: Response, out: SearchOut) -> SearchOut:
    response.status_code = 200 if out.status in ("succeeded", "failed", "cancelled") else 202
    response.headers["Location"] = f"/v1/searches/{out.id}"
    return out


@router.post("", status_code=202, summary="Start a search",
             responses={**FINISHED_RESPONSE, **PROBLEM_RESPONSES})
async def create_search(body: SearchBodyDep, response: Response, session: SessionDep,
                        db: DatabaseDep, principal: PrincipalDep, settings: SettingsDep,
                        wait: WaitQuery = 0) -> SearchOut:
    """Store the search and answer `202 {id, status, ...}` at once; workers run it. Poll
    `GET /v1/searches/{id}` (or pass `?wait=S`) for progress and the result.

    An identical request (same content hash, same API key) answers with the search already
    stored — with its result when it has one — instead of running again.
    """
    _check_wait(wait, settings)
    job, _ = await run_in_threadpool(service.submit, session, body, principal, settings)
    await run_in_threadpool(session.commit)  # stored (and visible to workers) before answering
    if wait > 0 and not service.finished(job):
        job = await service.wait_for(db, job.id, wait, settings.poll_s) or job
    return _answer(response, service.to_out(job))


@router.get("", summary="List searches", responses=PROBLEM_RESPONSES)
def list_searches(
    session: ReadSessionDep, principal: PrincipalDep,
    status: Annotated[SearchStatus | None, Query(description="Only searches in this state.")]
    = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[SearchSummary]:
    """Newest first (with auth on: this key's searches only)."""
    return service.list_searches(session, principal, status, limit, offset)


@router.get("/{search_id}", summary="A search: status, progress, result",
            responses={202: {"model": SearchOut, "description": "Still queued or running."},
                       **NOT_FOUND, 422: {"model": Problem, "description": "`wait` too long."}})
async def get_search(search_id: str, response: Response, session: ReadSessionDep,
                     db: DatabaseDep, principal: PrincipalDep, settings: SettingsDep,
                     wait: WaitQuery = 0) -> SearchOut:
    """`200` when finished (`succeeded` with `result`, `failed` with `error`, `cancelled`),
    `202` while `queued` or `running` (with `progress`)."""
    _check_wait(wait, settings)
    job = await run_in_threadpool(service.get, session, search_id, principal)
    await run_in_threadpool(session.commit)  # hold no transaction while waiting
    if wait > 0 and not service.finished(job):
        job = await service.wait_for(db, job.id, wait, settings.poll_s) or job
    return _answer(response, service.to_out(job))


PARETO_SVG_EXAMPLE = ('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/'
                      'svg" ...><a class="plan-link" href="/v1/plans/3f2c…"><circle class='
                      '"point front chosen" data-rank="1" data-tokens-per-s="1.2e+06" '
                      'data-cost="0.61" ...><title>#1 · h100 · tp8 pp4 dp8 …</title></circle>'
                      '</a>...</svg>')


@router.get("/{search_id}/pareto.svg", summary="Throughput against cost of a search's plans",
            response_class=Response,
            responses={**NOT_FOUND,
                       409: {"model": Problem, "description": "The search has not succeeded "
                             "(queued, running, failed or cancelled): no plans to draw."},
                       200: {"content": {"image/svg+xml": {"example": PARETO_SVG_EXAMPLE}}}})
async def get_pareto_svg(search_id: str, session: ReadSessionDep,
                         principal: PrincipalDep) -> Response:
    """The search's plans as tokens/s against $ per million tokens: the plans it returned
    (marked with their rank, each a link to `/v1/plans/{id}`), its Pareto front (drawn as a
    staircase: no plan is both faster and cheaper than a point on it) and the best plan of
    each pool. 409 while the search is queued or running, or when it failed or was
    cancelled."""
    job = await run_in_threadpool(service.get, session, search_id, principal)
    await run_in_threadpool(session.commit)
    svg = await run_in_threadpool(service.pareto_chart, job)
    return Response(svg, media_type="image/svg+xml")


@router.delete("/{search_id}", summary="Cancel a search",
               responses={202: {"model": SearchOut, "description": "Running: its worker was "
                                "asked to stop (within a heartbeat)."},
                          **NOT_FOUND,
                          409: {"model": Problem, "description": "Already finished."}})
def cancel_search(search_id: str, response: Response, session: SessionDep,
                  principal: PrincipalDep) -> SearchOut:
    """A queued search is cancelled at once (200); a running one's worker is asked to stop its
    solver (202, `cancel_requested: true`; `status` becomes `cancelled` within a heartbeat).
    Cancelling a cancelled search is a no-op; a succeeded or failed one answers 409."""
    return _answer(response, service.to_out(service.cancel(session, search_id, principal)))
