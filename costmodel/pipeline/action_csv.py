"""Schedules as the action-list CSV that ``torch.distributed.pipelining`` runs.

Format (torch 2.13, ``torch/distributed/pipelining/schedules.py``): one CSV row per pipeline
rank, in rank order (``PipelineScheduleMulti._load_csv`` numbers the rows 0, 1, ...); each cell
is one action in ``_Action.__repr__``'s form ``{stage}{type}{microbatch}``: ``2F0`` forward of
stage 2 on micro-batch 0, ``1B3`` full backward, ``1I3`` input-gradient backward, ``1W3``
weight-gradient backward; an empty cell is ``None`` (an idle step, skipped). This is the
"compute_only" format: ``_PipelineScheduleRuntime._load_csv(path)`` (its default
``format="compute_only"``) parses each cell with ``_Action.from_str``, checks the schedule and
infers the stage -> rank placement from where each stage's actions sit
(``_validate_schedule``: every stage on exactly one rank, every stage runs all
``n_microbatches`` forwards and backwards, ``F`` before ``B``/``I`` before ``W``), then lowers
it to a schedule with send/recv actions (``_add_send_recv``). ``_format_pipeline_order`` prints
the same actions as a step × rank table. A rank's actions run strictly in row order, which is
what :mod:`costmodel.pipeline.simulator` assumes.

torchtitan takes such a file as ``--parallelism.pipeline_parallel_schedule_csv``
(``torchtitan/distributed/pipeline_parallel.py``, ``build_pipeline_schedule``): with a CSV it
instantiates ``_PipelineScheduleRuntime`` and calls ``_load_csv``. Its stages are built before,
by ``pipeline_module_split`` from ``pipeline_parallel_schedule``: V placement (rank ``r`` holds
stages ``r`` and ``2·pp−1−r``) when that name is ``ZBVZeroBubble`` or ``DualPipeV``, loop
placement (stage ``s`` on rank ``s % pp``) otherwise, with ``pp × stages_per_rank`` stages (2
per rank for a multi-stage name unless ``pipeline_parallel_layers_per_stage`` says otherwise,
1 for ``GPipe``/``1F1B``). So the CSV's placement must match the placement implied by
``pipeline_parallel_schedule``; :func:`schedule_csv` of a loop-placed schedule goes with e.g.
``Interleaved1F1B``, of a V-placed one with ``ZBVZeroBubble``.

torch's ``OVERLAP_F_B`` cells (``(0F1;3B0)OVERLAP_F_B``, DualPipeV) run their sub-actions one
after the other in ``_PipelineScheduleRuntime._step_microbatches`` unless a custom function is
registered; :func:`from_csv` reads them as those sub-actions in order, and the builders of
:mod:`costmodel.pipeline.schedules` emit them so. Communication and FSDP actions (``SEND_F``,
``RECV_B``, ``UNSHARD``, ``REDUCE_GRAD``, ...; the "compute_comms" format) are refused: they are
derived by torch's lowering, not part of a compute schedule.

Chimera and BitPipe (two model replicas, :mod:`costmodel.pipeline.bidirectional`) have no CSV:
torch's runtime holds one copy of each stage and runs every micro-batch through every stage.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

from costmodel.pipeline.schedules import (
    BIDIRECTIONAL_SCHEDULES,
    Action,
    ScheduleError,
    as_action,
    build_schedule,
    validate_schedule,
)

__all__ = [
    "action_string",
    "action_strings",
    "from_csv",
    "parse_action",
    "parse_actions",
    "schedule_csv",
    "to_csv",
]

_OVERLAP = re.compile(r"\((.*)\)OVERLAP_F_B")
_NON_COMPUTE = re.compile(r"\d*(UNSHARD|RESHARD|REDUCE_GRAD|SEND_F|RECV_F|SEND_B|RECV_B)\d*")


def action_string(action: Action | tuple[int, int, str]) -> str:
    """torch's ``_Action`` string of one compute action (:meth:`Action.torch_str`)."""
    return as_action(action, 0, 0).torch_str()


def action_strings(
    actions_per_rank: Iterable[Iterable[Action | tuple[int, int, str] | str]],
) -> list[list[str]]:
    """Each rank's actions as torch ``_Action`` strings (strings pass through unchanged after
    a syntax check): the form of ``ParallelPlan.custom_schedule``."""
    out: list[list[str]] = []
    for r, acts in enumerate(actions_per_rank):
        row: list[str] = []
        for pos, a in enumerate(acts):
            if isinstance(a, str):
                row.extend(x.torch_str() for x in parse_action(a, r, pos))
            else:
                row.append(as_action(a, r, pos).torch_str())
        out.append(row)
    return out


def parse_action(text: str, rank: int = 0, pos: int = 0) -> list[Action]:
    """The compute actions of one cell (``_Action.from_str``'s syntax): none for an empty cell,
    one for ``2F0``, the sub-actions in order for ``(0F1;3B0)OVERLAP_F_B``. Raises
    :class:`ScheduleError` (field ``csv``) naming the rank and column otherwise."""
    s = text.strip()
    if not s:
        return []
    try:
        return [Action.parse(s)]
    except ScheduleError:
        pass
    if m := _OVERLAP.fullmatch(s):
        parts = [p for p in m.group(1).split(";") if p.strip()]
        out = [a for p in parts for a in parse_action(p, rank, pos)]
        if len(out) != len(parts):
            raise ScheduleError("csv", f"rank {rank}, column {pos}: {s!r} has an empty sub-action")
        return out
    if _NON_COMPUTE.fullmatch(s):
        raise ScheduleError(
            "csv",
            f"rank {rank}, column {pos}: {s!r} is a communication or sharding action; only "
            "torch's compute_only format (F, I, B, W actions) is accepted",
        )
    raise ScheduleError(
        "csv",
        f"rank {rank}, column {pos}: {s!r} is not a torch action string "
        "[stage][F|I|B|W][microbatch], e.g. '2F0'",
    )


def parse_actions(rows: Iterable[Iterable[str]]) -> list[list[Action]]:
    """Per-rank action strings (``ParallelPlan.custom_schedule``, or CSV rows) to Actions,
    checked as a complete schedule (:func:`~costmodel.pipeline.schedules.validate_schedule`)."""
    actions = [
        [a for pos, cell in enumerate(row) for a in parse_action(cell, r, pos)]
        for r, row in enumerate(rows)
    ]
    validate_schedule(actions)
    return actions


def to_csv(
    actions_per_rank: Sequence[Sequence[Action | tuple[int, int, str] | str]],
) -> str:
    """The schedule as torch's compute_only action-list CSV (one row per rank, see the module
    docstring). Accepts Actions, ``(stage, mb, kind)`` tuples or torch action strings; the
    schedule is validated first, so torch's ``_validate_schedule`` accepts what this writes.
    Rows end with ``\\n``; ``csv.reader`` (what ``_load_csv`` uses) reads them."""
    rows = action_strings(actions_per_rank)
    parse_actions(rows)  # validates: complete, one rank per stage, F before B/I before W
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


def from_csv(text: str) -> list[list[Action]]:
    """Read torch's compute_only action-list CSV (as ``_PipelineScheduleRuntime._load_csv``
    does: row ``r`` is rank ``r``; empty cells are idle steps) into Actions per rank, validated
    like :func:`to_csv`. Raises :class:`ScheduleError` naming the rank and column."""
    if not isinstance(text, str):
        raise ScheduleError("csv", f"expected the CSV text as a string, got {type(text).__name__}")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise ScheduleError("csv", "the CSV has no rows (one row per pipeline rank is needed)")
    return parse_actions(rows)


def schedule_csv(name: str, pp: int, n_microbatches: int, virtual_stages: int = 1) -> str:
    """The action-list CSV of the named torch schedule (the order of
    :func:`~costmodel.pipeline.schedules.build_schedule`, which follows torch's own)."""
    if name in BIDIRECTIONAL_SCHEDULES:
        raise ScheduleError(
            "name",
            f"{name} runs two model replicas (each stage on two ranks, each micro-batch on one "
            "replica); torch's schedule runtime holds one copy of every stage and runs every "
            "micro-batch through it, so it has no action-list CSV",
        )
    return to_csv(build_schedule(name, pp, n_microbatches, virtual_stages))
