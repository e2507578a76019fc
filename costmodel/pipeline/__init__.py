"""Pipeline-parallel schedules (torch.distributed.pipelining orders, Chimera and BitPipe), their
simulator, the SVG timeline (:mod:`.svg`) and torch's action-list CSV (:mod:`.action_csv`)."""

from __future__ import annotations

from costmodel.pipeline.schedules import (
    ALL_SCHEDULES,
    BIDIRECTIONAL_SCHEDULES,
    KIND_CODES,
    KINDS,
    MULTI_STAGE_SCHEDULES,
    SCHEDULES,
    SINGLE_STAGE_SCHEDULES,
    V_SCHEDULES,
    Action,
    ScheduleError,
    build_custom,
    build_schedule,
    stage_to_rank,
)
from costmodel.pipeline.simulator import SimResult, Timeline, simulate, simulate_named

__all__ = [
    "ALL_SCHEDULES",
    "BIDIRECTIONAL_SCHEDULES",
    "KINDS",
    "KIND_CODES",
    "MULTI_STAGE_SCHEDULES",
    "SCHEDULES",
    "SINGLE_STAGE_SCHEDULES",
    "V_SCHEDULES",
    "Action",
    "ScheduleError",
    "SimResult",
    "Timeline",
    "build_custom",
    "build_schedule",
    "simulate",
    "simulate_named",
    "stage_to_rank",
]
