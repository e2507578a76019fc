"""``GET /v1/plans/{id}``, its launch configs and pipeline timeline, and its runs.

The launch configs (:mod:`runtime.launch`) and the timeline (:func:`costmodel.timeline_svg`)
are rendered from :func:`service.plans.service.estimate_request`, the stored request that
reproduces the plan's estimate.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

import costmodel
from costmodel.errors import FieldProblem, SpecError
from costmodel.specs.scenario import Scenario
from runtime import launch
from runtime.launch.base import media_type_of
from service.auth.dependencies import PrincipalDep
from service.auth.service import Principal
from service.deps import ReadSessionDep, SessionDep, SettingsDep
from service.errors import NOT_FOUND, PROBLEM_RESPONSES, STALE_PLAN, Problem
from service.plans import service
from service.plans.schemas import LaunchOut, PlanOut, WhatIfBodyDep, WhatIfOut
from service.runs import service as runs
from service.runs.schemas import RunBodyDep, RunOut

router = APIRouter(prefix="/plans", tags=["plans"])

SELF_CONTAINED_PAGE = ("default-src 'none'; script-src 'unsafe-inline'; "
                       "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                       "form-action 'none'; frame-ancestors 'self'")
"""Content-Security-Policy of the generated pages: their inline script and styles only; the
browser fetches nothing."""
TIMELINE_SVG_EXAMPLE = ('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns='
                        '"http://www.w3.org/2000/svg" width="1200" height="180" ...>'
                        '<rect class="op F" data-rank="0" data-stage="0" data-mb="0" ...>'
                        '<title>forward · stage 0 · micro-batch 0 · 0.000–21.596 ms</title>'
                        '</rect>...</svg>')
WHAT_IF_SVG_EXAMPLE = ('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns='
                       '"http://www.w3.org/2000/svg" ...><text class="note" ...>what-if: step '
                       '1204.113 ms → 1311.870 ms (+8.9%) · slowed: rank 0 ×1.10</text>...'
                       '<rect class="row" data-rank="0" data-mark="1" .../>...</svg>')
GOODPUT_SVG_EXAMPLE = ('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns='
                       '"http://www.w3.org/2000/svg" ...><path class="curve" d="M96,402L..."/>'
                       '<circle class="optimum" data-interval-s="16000.2" data-goodput='
                       '"0.998544" ...><title>optimum: every 4.44 h → 99.854%</title></circle>'
                       '...</svg>')
TIMELINE_HTML_EXAMPLE = ('<!DOCTYPE html>\n<html lang="en">...<canvas id="canvas"></canvas>'
                         '<script type="application/json" id="timeline-data">{"title":'
                         '"llama3-8b · 1F1B · pp=16 · 256 micro-batches · tp=1 dp=1",...}'
                         '</script>...</html>')


@router.get("/{plan_id}", summary="A stored plan with its estimate, explanation and runs",
            response_model=PlanOut, responses=NOT_FOUND)
async def get_plan(plan_id: str, session: ReadSessionDep, principal: PrincipalDep) -> Response:
    """The plan, its estimate and explanation, the estimate request that reproduces it, the
    cost-model version that made it, and the measured runs against the prediction."""
    plan = service.get(session, plan_id, principal, with_runs=True)
    return Response(service.to_json(plan), media_type="application/json")


LaunchFormat = Literal["torchrun", "torchtitan", "megatron", "deepspeed", "runtime",
                       "schedule-csv"]
assert set(LaunchFormat.__args__) == set(launch.FORMATS)  # type: ignore[attr-defined]


@router.get("/{plan_id}/launch/{format}", summary="A launch config of a stored plan",
            response_model=LaunchOut,
            responses={**NOT_FOUND, **PROBLEM_RESPONSES, **STALE_PLAN,
                       200: {"content": {"text/plain": {}, "application/json": {}}}})
def get_launch(plan_id: str, format: LaunchFormat, session: ReadSessionDep,
               principal: PrincipalDep,
               file: Annotated[str | None, Query(
                   description="Answer with this one file as is (its name from `filename` or "
                   "`files` of the JSON answer) instead of the JSON.")] = None,
               version: Annotated[str | None, Query(
                   min_length=1, max_length=32, pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$",
                   description="The framework release to write for (torchtitan: 0.3, the "
                   "current release, or 0.2, the TOML era); default the plan's "
                   "`training.framework_version` when `training.framework` is the format's "
                   "framework, else the current release. An unknown release is a 422 naming "
                   "`training.framework_version`.", examples=["0.2"])] = None,
               ) -> LaunchOut | Response:
    """What starts the plan: `torchrun` (the meshplan runtime worker on the plan's nodes),
    `torchtitan` (launch script and job TOML), `megatron` (`pretrain_gpt.py` arguments),
    `deepspeed` (ds_config JSON), `runtime` (the worker's plan JSON) or `schedule-csv` (torch's
    pipeline action list). The answer holds the main file (`filename`, `content`), any extra
    files and notes on what to supply (data paths, rendezvous host). A plan the framework cannot
    run (a schedule it lacks, an uneven split it cannot express, ...) is a 422 naming the plan
    field and the framework's rule."""
    cfg = launch.render(format, service.estimate_request(session, plan_id, principal),
                        version=version)
    if file is None:
        return LaunchOut(plan_id=plan_id, **cfg.model_dump())
    files = {cfg.filename: cfg.content, **cfg.files}
    if file not in files:
        raise SpecError(FieldProblem("file", f"{file!r} is not a file of this config; its files: "
                                     f"{', '.join(files)}"))
    media = cfg.media_type if file == cfg.filename else media_type_of(file)
    return Response(files[file], media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{file}"'})


@router.get("/{plan_id}/timeline.svg", summary="The simulated pipeline timeline of a plan",
            response_class=Response,
            responses={**NOT_FOUND, **STALE_PLAN, 200: {
                "content": {"image/svg+xml": {"example": TIMELINE_SVG_EXAMPLE}}}})
async def get_timeline(plan_id: str, session: ReadSessionDep, principal: PrincipalDep) -> Response:
    """One row per pipeline rank, each forward / backward / input-gradient / weight-gradient
    action of every micro-batch where the cost model's simulation of the plan's schedule puts
    it; idle time (the pipeline bubble) is left empty. Above 1,200 actions only the warm-up,
    a slice of the steady state and the cool-down are drawn, the gaps between them marked
    (`timeline.html` shows everything)."""
    req = await run_in_threadpool(service.estimate_request, session, plan_id, principal)
    await run_in_threadpool(session.commit)  # hold no transaction while simulating
    svg = await run_in_threadpool(costmodel.timeline_svg, req)
    return Response(svg, media_type="image/svg+xml")


@router.get("/{plan_id}/timeline.html",
            summary="The simulated pipeline timeline of a plan, interactive",
            response_class=Response,
            responses={**NOT_FOUND, **STALE_PLAN, 200: {
                "description": "A self-contained HTML page (inline script and styles, no "
                "external resources).",
                "content": {"text/html": {"example": TIMELINE_HTML_EXAMPLE}}}})
async def get_timeline_html(plan_id: str, session: ReadSessionDep, principal: PrincipalDep
                            ) -> Response:
    """Every action and send/recv of the plan's simulated schedule on a canvas: zoom with
    the wheel or the buttons, pan by dragging, hover for the action's kind, rank, stage,
    micro-batch and start/end in ms. Colours tell the kinds apart (and, in four shades, the
    micro-batches); the step and the pipeline bubble head the page. Meant for schedules
    too large for `timeline.svg`, which shows only windows of them."""
    req = await run_in_threadpool(service.estimate_request, session, plan_id, principal)
    await run_in_threadpool(session.commit)  # hold no transaction while simulating
    page = await run_in_threadpool(costmodel.timeline_html, req)
    return Response(page, media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": SELF_CONTAINED_PAGE})


@router.post("/{plan_id}/what-if", summary="A stored plan under stragglers, slow links or jitter",
             response_model=WhatIfOut, responses={**NOT_FOUND, **PROBLEM_RESPONSES, **STALE_PLAN})
async def what_if(plan_id: str, body: WhatIfBodyDep, session: ReadSessionDep,
                  principal: PrincipalDep, settings: SettingsDep) -> WhatIfOut:
    """The plan's step when some GPUs (`ranks`, global rank → factor), pipeline `stages`,
    `nodes`, `pools` or `links` run slower (factor > 1: that much longer) or when GPU speed
    varies per step (`jitter`, seeded): the pipeline schedule is simulated again with the
    scaled times. Answers the baseline and scenario step time, tokens/s and $ per M tokens,
    the critical path, idle time per pipeline rank and the plan's straggler sensitivity (the
    step increase when one GPU is 10 % slower at its worst stage). An unknown rank, stage,
    node or pool, a factor <= 0 or a negative cv is a 422 naming the field, as are more
    jittered steps than this server simulates (`MESHPLAN_MAX_SCHEDULE_CELLS`)."""
    req = await run_in_threadpool(service.estimate_request, session, plan_id, principal)
    await run_in_threadpool(session.commit)  # hold no transaction while simulating
    result = await run_in_threadpool(service.what_if, req, body, settings)
    return WhatIfOut(plan_id=plan_id, **result.model_dump())


@router.post("/{plan_id}/what-if/timeline.svg",
             summary="The pipeline timeline of a stored plan under a what-if scenario",
             response_class=Response,
             responses={**NOT_FOUND, **PROBLEM_RESPONSES, **STALE_PLAN, 200: {
                 "content": {"image/svg+xml": {"example": WHAT_IF_SVG_EXAMPLE}}}})
async def what_if_timeline_svg(plan_id: str, body: WhatIfBodyDep, session: ReadSessionDep,
                               principal: PrincipalDep) -> Response:
    """`timeline.svg` of the plan simulated under the scenario that `POST .../what-if` takes
    (slowed ranks, stages, nodes, pools or links): each pipeline rank the scenario slows is
    tinted and labelled with its factor, and the step before and after heads the drawing.
    Jitter is not drawn (the timeline is one step as scheduled). Invalid scenarios are 422 as
    for `what-if`."""
    return await _what_if_timeline(plan_id, body, session, principal, "svg")


@router.post("/{plan_id}/what-if/timeline.html",
             summary="The interactive timeline of a stored plan under a what-if scenario",
             response_class=Response,
             responses={**NOT_FOUND, **PROBLEM_RESPONSES, **STALE_PLAN, 200: {
                 "content": {"text/html": {"example": TIMELINE_HTML_EXAMPLE}}}})
async def what_if_timeline_html(plan_id: str, body: WhatIfBodyDep, session: ReadSessionDep,
                                principal: PrincipalDep) -> Response:
    """`timeline.html` (zoom, pan, hover; every action and transfer) of the plan simulated
    under the scenario, the slowed ranks marked, as `what-if/timeline.svg`."""
    return await _what_if_timeline(plan_id, body, session, principal, "html")


async def _what_if_timeline(plan_id: str, body: Scenario, session: Session,
                            principal: Principal, fmt: Literal["svg", "html"]) -> Response:
    req = await run_in_threadpool(service.estimate_request, session, plan_id, principal)
    await run_in_threadpool(session.commit)  # hold no transaction while simulating
    doc = await run_in_threadpool(service.what_if_timeline, req, body, fmt)
    if fmt == "html":
        return Response(doc, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": SELF_CONTAINED_PAGE})
    return Response(doc, media_type="image/svg+xml")


@router.get("/{plan_id}/goodput.svg",
            summary="Goodput of a stored plan against its checkpoint interval",
            response_class=Response,
            responses={**NOT_FOUND, 409: {
                "model": Problem, "description": "The plan has no failure model (searched "
                "without training.reliability), or was stored by an older cost model."},
                200: {"content": {"image/svg+xml": {"example": GOODPUT_SVG_EXAMPLE}}}})
async def get_goodput_svg(plan_id: str, session: ReadSessionDep, principal: PrincipalDep
                          ) -> Response:
    """The failure model of the plan's estimate (`estimate.goodput`: Young 1974 / Daly 2006,
    first order) as a curve: the share of wall time that trains against the interval between
    checkpoints, on a log scale, the optimum marked (and the job's own interval, when
    `training.reliability.checkpoint_interval_s` sets one). 409 when the plan was searched
    without `training.reliability`."""
    req = await run_in_threadpool(service.estimate_request, session, plan_id, principal)
    await run_in_threadpool(session.commit)
    svg = await run_in_threadpool(service.goodput_svg, req, plan_id)
    return Response(svg, media_type="image/svg+xml")


@router.post("/{plan_id}/runs", status_code=201, summary="Report a measured run of a plan",
             responses={**NOT_FOUND, **PROBLEM_RESPONSES})
def create_run(plan_id: str, body: RunBodyDep, session: SessionDep,
               principal: PrincipalDep) -> RunOut:
    """Store what `meshplan-runtime run` measured for this plan; the answer and
    `GET /v1/plans/{id}` show it against the prediction (relative error of the step time)."""
    plan = service.get(session, plan_id, principal)
    return runs.to_out(runs.create(session, plan, body, principal))


@router.get("/{plan_id}/runs", summary="The measured runs of a plan", responses=NOT_FOUND)
def list_runs(plan_id: str, session: ReadSessionDep, principal: PrincipalDep) -> list[RunOut]:
    plan = service.get(session, plan_id, principal, with_runs=True)
    return [runs.to_out(r) for r in plan.runs]
