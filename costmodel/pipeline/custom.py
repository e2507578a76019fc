"""Custom schedules given as torch action strings (``plan.custom_schedule``).

A plan with ``schedule: "custom"`` carries, per pipeline rank, its compute actions in order as
``torch.distributed.pipelining`` writes them (``"0F3"``, ``"1I0"``, ``"1W0"``, ``"2B1"``; see
:meth:`costmodel.pipeline.schedules.Action.parse`): the form torch's
``_PipelineScheduleRuntime`` reads from a CSV (``_load_csv``) after adding the communication
actions itself. The stage -> rank map is not given: each stage lives on the rank whose list
holds its actions.

:func:`check_custom` applies every rule the estimate relies on and reports them in the
plan's terms; :func:`encoded_custom` turns a checked schedule into the simulator's encoding,
memoised, so that a custom schedule costs the same to simulate as a named one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from costmodel.pipeline.schedules import (
    ScheduleError,
    ValidatedSchedule,
    parse_schedule,
    validate_schedule,
)
from costmodel.pipeline.simulator import EncodedSchedule, encode_schedule, simulate

__all__ = ["CustomRows", "as_rows", "check_custom", "custom_stage_ranks", "encoded_custom"]

CustomRows = tuple[tuple[str, ...], ...]
"""A custom schedule as immutable rows (hashable, for the memoised encoders)."""


def as_rows(rows: Sequence[Sequence[str]]) -> CustomRows:
    return tuple(tuple(r) for r in rows)


@lru_cache(maxsize=64)
def _validated(rows: CustomRows) -> ValidatedSchedule:
    return validate_schedule(parse_schedule(rows))


def check_custom(rows: Sequence[Sequence[str]], pp: int, virtual_stages: int,
                 n_microbatches: int) -> list[str]:
    """Every broken rule of a custom schedule for a plan with ``pp`` ranks, ``virtual_stages``
    stages per rank and ``n_microbatches`` micro-batches (empty when it is valid).

    Rules: one list per pipeline rank; every string a compute action ``{stage}{F|B|I|W}{mb}``;
    stages ``0 .. pp·virtual_stages-1`` and micro-batches ``0 .. n_microbatches-1``, each
    ``(stage, mb)`` with one ``F`` and either one ``B`` or one ``I`` and one ``W``
    (:func:`~costmodel.pipeline.schedules.validate_schedule`); all actions of a stage on one
    rank and ``virtual_stages`` stages on every rank; and the ranks, each running its list in
    order, do not deadlock (the simulator's detection, run with unit times: whether a
    schedule deadlocks depends on the orders only, not on the durations).
    """
    problems: list[str] = []
    if len(rows) != pp:
        return [f"needs one list of actions per pipeline rank: pp={pp} lists, got {len(rows)}"]
    try:
        checked = _validated(as_rows(rows))
    except ScheduleError as exc:
        return [exc.rule]
    n_st = pp * virtual_stages
    if checked.n_stages != n_st:
        problems.append(f"has stages 0..{checked.n_stages - 1} but pp·virtual_stages = "
                        f"{pp}·{virtual_stages} = {n_st} stages are needed")
    if checked.n_microbatches != n_microbatches:
        problems.append(f"has micro-batches 0..{checked.n_microbatches - 1} but the plan has "
                        f"{n_microbatches} (global_batch_size / (dp · micro_batch_size))")
    for r in range(pp):
        held = sorted(s for s, rr in enumerate(checked.stage_ranks) if rr == r)
        if len(held) != virtual_stages:
            problems.append(f"rank {r} holds stages {held}; every rank must hold "
                            f"virtual_stages={virtual_stages}")
            break
    if problems:
        return problems
    try:
        simulate(encoded_custom(as_rows(rows)), None, 1.0, 1.0, 1.0, 0.0)
    except ScheduleError as exc:
        problems.append(exc.rule)
    return problems


@lru_cache(maxsize=64)
def encoded_custom(rows: CustomRows) -> EncodedSchedule:
    """The simulator's encoding of a custom schedule (parsed, validated; memoised)."""
    checked = _validated(rows)
    return encode_schedule(checked.actions, checked.stage_ranks)


def custom_stage_ranks(rows: Sequence[Sequence[str]]) -> list[int]:
    """The rank of every global stage of a custom schedule (the rank whose list holds it)."""
    return list(_validated(as_rows(rows)).stage_ranks)
