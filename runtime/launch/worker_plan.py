"""The meshplan runtime worker's formats: its plan JSON, the torchrun line that runs it, and
the pipeline schedule as an action CSV.

The plan JSON is exactly the validated estimate request (model fields explicit, so the worker
needs no preset catalog) plus ``"format": "meshplan-runtime-plan/1"``: the worker (``python -m
runtime run plan.json``) drops the tag and parses the rest as an ``EstimateRequest``, so a run
can be compared with the estimate of the very same request.
"""

from __future__ import annotations

from typing import Any

from runtime.launch.base import (
    MEDIA_CSV,
    MEDIA_JSON,
    MEDIA_SHELL,
    Job,
    LaunchConfig,
    LaunchError,
    dumps_json,
)
from runtime.launch.common import schedule_csv
from runtime.launch.launcher import launcher_notes, torchrun_script

PLAN_FORMAT = "meshplan-runtime-plan/1"
PLAN_NAME = "plan.json"


def runtime_plan(job: Job) -> dict[str, Any]:
    """The worker's plan: ``{"format": ..., model, training, cluster, plan[, calibration]}``;
    refused (``plan.torch_compile``) for compiled blocks, which the worker does not run."""
    if job.plan.torch_compile:
        raise LaunchError("plan.torch_compile", "the meshplan runtime worker runs its blocks "
                          "eagerly (no torch.compile); leave plan.torch_compile null or false "
                          "to measure the plan, or launch it with the torchtitan format")
    return {"format": PLAN_FORMAT, **job.request_json()}


def render_runtime(job: Job) -> LaunchConfig:
    return LaunchConfig(format="runtime", filename=PLAN_NAME, media_type=MEDIA_JSON,
                        content=dumps_json(runtime_plan(job)),
                        notes=[f"Run it with the meshplan runtime worker: python -m runtime run "
                               f"{PLAN_NAME} under torchrun (format 'torchrun')."])


def render_torchrun(job: Job) -> LaunchConfig:
    script = torchrun_script(job, ["-m runtime", f"run {PLAN_NAME}"],
                             title="meshplan runtime worker")
    notes = [*launcher_notes(job),
             f"{PLAN_NAME} (in files) must sit next to the script on every node; the worker "
             "needs meshplan installed with its runtime extra (pip install "
             "'meshplan[runtime]')."]
    if job.plan.stages is not None:
        notes.append("Heterogeneous pipeline: the worker maps global ranks to stages in "
                     "Megatron order (pipeline stage outermost); start the nodes of each pool "
                     "with the command under its comment.")
    return LaunchConfig(format="torchrun", filename="launch.sh", media_type=MEDIA_SHELL,
                        content=script, files={PLAN_NAME: dumps_json(runtime_plan(job))},
                        notes=notes)


def render_schedule_csv(job: Job) -> LaunchConfig:
    plan = job.plan
    return LaunchConfig(
        format="schedule-csv", filename="schedule.csv", media_type=MEDIA_CSV,
        content=schedule_csv(job),
        notes=[f"One row per pipeline rank ({plan.pp}), torch _Action strings "
               f"(stage, F/I/W/B, micro-batch) for {job.n_microbatches} micro-batches: load it "
               "with _PipelineScheduleRuntime._load_csv or torchtitan's "
               "parallelism.pipeline_parallel_schedule_csv."])
