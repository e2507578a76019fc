"""``GET /v1/plans/{id}``, its launch configs and pipeline timeline, and its runs.

The launch configs (:mod:`runtime.launch`) and the timeline (:func:`costmodel.timeline_svg`)
are rendered from :func:`service.plans.service.estimate_request`, the stored request that
reproduces the plan's estimate.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

import costmodel
from costmodel.errors import FieldProblem, SpecError
from runtime import launch
from runtime.launch.base import media_type_of
from service.auth.dependencies import PrincipalDep
from service.deps import ReadSessionDep, SessionDep, SettingsDep
from service.errors import NOT_FOUND, PROBLEM_RESPONSES, STALE_PLAN
from service.plans import service
from service.plans.schemas import LaunchOut, PlanOut, WhatIfBodyDep, WhatIfOut
from service.runs import service as runs
from service.runs.schemas import RunBodyDep, RunOut

router = APIRouter(prefix="/plans", tags=["plans"])


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
            responses={**NOT_FOUND, **STALE_PLAN, 200: {"content": {"image/svg+xml": {}}}})
async def get_timeline(plan_id: str, session: ReadSessionDep, principal: PrincipalDep) -> Response:
    """One row per pipeline rank, each forward / backward / input-gradient / weight-gradient
    action of every micro-batch where the cost model's simulation of the plan's schedule puts
    it; idle time (the pipeline bubble) is left empty."""
    req = await run_in_threadpool(service.estimate_request, session, plan_id, principal)
    await run_in_threadpool(session.commit)  # hold no transaction while simulating
    svg = await run_in_threadpool(costmodel.timeline_svg, req)
    return Response(svg, media_type="image/svg+xml")


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
