"""The action-list CSV of torch's schedule runtime (costmodel.pipeline.action_csv).

The running of these files by torch itself is in test_schedule_csv_torch.py.
"""

from __future__ import annotations

import csv
import io

import pytest

from costmodel.pipeline.action_csv import (
    action_string,
    action_strings,
    from_csv,
    parse_action,
    parse_actions,
    schedule_csv,
    to_csv,
)
from costmodel.pipeline.schedules import SCHEDULES, Action, ScheduleError, build_schedule

CASES = [
    ("GPipe", 3, 4, 1),
    ("1F1B", 4, 6, 1),
    ("Interleaved1F1B", 2, 4, 3),
    ("InterleavedZeroBubble", 4, 8, 2),
    ("InterleavedZeroBubble", 3, 3, 1),
    ("ZBVZeroBubble", 3, 5, 2),
    ("DualPipeV", 2, 6, 2),
]


@pytest.mark.parametrize(("name", "pp", "m", "v"), CASES)
def test_round_trip(name: str, pp: int, m: int, v: int) -> None:
    sched = build_schedule(name, pp, m, v)
    text = schedule_csv(name, pp, m, v)
    assert from_csv(text) == sched
    assert to_csv(from_csv(text)) == text
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == pp  # one row per rank, in rank order
    for r, row in enumerate(rows):
        assert row == [f"{a.stage}{a.kind}{a.mb}" for a in sched[r]]


def test_covers_every_torch_schedule() -> None:
    assert {c[0] for c in CASES} == set(SCHEDULES)


def test_format_is_torch_action_strings() -> None:
    text = schedule_csv("1F1B", 2, 2)
    assert text == "0F0,0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n"
    assert action_string(Action(12, 3, "W")) == "12W3"
    assert action_string((1, 0, "I")) == "1I0"


def test_to_csv_accepts_strings_tuples_and_actions() -> None:
    """``ParallelPlan.custom_schedule`` is torch action strings per rank; it meets to_csv and
    parse_actions unchanged."""
    as_strings = [["0F0", "0F1", "0B0", "0B1"], ["1F0", "1B0", "1F1", "1B1"]]
    as_tuples = [[(0, 0, "F"), (0, 1, "F"), (0, 0, "B"), (0, 1, "B")],
                 [(1, 0, "F"), (1, 0, "B"), (1, 1, "F"), (1, 1, "B")]]
    expected = schedule_csv("1F1B", 2, 2)
    assert to_csv(as_strings) == to_csv(as_tuples) == to_csv(build_schedule("1F1B", 2, 2))
    assert to_csv(as_strings) == expected
    assert action_strings(as_tuples) == as_strings
    assert parse_actions(as_strings) == build_schedule("1F1B", 2, 2)


def test_split_backward_and_multi_digit_indices() -> None:
    rows = [["0F10", "0I10", "0W10"]]
    assert parse_action("0F10") == [Action(0, 10, "F")]
    with pytest.raises(ScheduleError, match="no F action"):  # micro-batches 0..9 are missing
        parse_actions(rows)
    sched = build_schedule("InterleavedZeroBubble", 2, 12, 6)  # stages and mbs >= 10
    assert from_csv(to_csv(sched)) == sched


def test_reads_torch_extras() -> None:
    """Empty cells (torch's None steps, as ``_dump_csv`` writes them), padding spaces and
    DualPipeV's OVERLAP_F_B cells (run as their sub-actions in order)."""
    text = "0F0,,0F1, 0B0 ,(0B1;)OVERLAP_F_B\n,1F0,1B0,(1F1;1B1)OVERLAP_F_B\n"
    assert from_csv(text) == [
        [Action(0, 0, "F"), Action(0, 1, "F"), Action(0, 0, "B"), Action(0, 1, "B")],
        [Action(1, 0, "F"), Action(1, 0, "B"), Action(1, 1, "F"), Action(1, 1, "B")],
    ]
    assert from_csv(text.replace("\n", "\r\n")) == from_csv(text)  # csv.writer's default


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0F0,0SEND_F0,0B0\n", "communication or sharding action"),
        ("0UNSHARD,0F0,0B0\n", "communication or sharding action"),
        ("0F0,0X0\n", "is not a torch action string"),
        ("0F,0B0\n", "is not a torch action string"),
        ("F0,0B0\n", "is not a torch action string"),
        ("", "no rows"),
        ("0F0,0B0\n0F1,0B1\n", "stage 0 has actions on rank 0 and on rank 1"),
        ("0B0,0F0\n", "would deadlock"),
    ],
)
def test_bad_csv_names_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(ScheduleError) as info:
        from_csv(text)
    assert fragment in str(info.value)
    assert info.value.field in ("csv", "schedule")


def test_bad_cell_names_rank_and_column() -> None:
    with pytest.raises(ScheduleError) as info:
        from_csv("0F0,0B0\n1F0,1Q0,1B0\n")
    assert info.value.field == "csv"
    assert "rank 1, column 1" in str(info.value)


@pytest.mark.parametrize("name", ["Chimera", "BitPipe"])
def test_bidirectional_schedules_have_no_torch_csv(name: str) -> None:
    v = 1 if name == "Chimera" else 2
    build_schedule(name, 4, 4, v)  # valid for the simulator
    with pytest.raises(ScheduleError) as info:
        schedule_csv(name, 4, 4, v)
    assert info.value.field == "name"
    assert "two model replicas" in str(info.value)
    with pytest.raises(ScheduleError):  # nor through to_csv: torch's validation would refuse
        to_csv(build_schedule(name, 4, 4, v))


def test_torch_parses_every_cell_as_we_do() -> None:
    """torch's own ``_Action.from_str`` reads each cell we write to the same action."""
    torch_sched = pytest.importorskip("torch.distributed.pipelining.schedules")
    for name, pp, m, v in CASES:
        for row in csv.reader(io.StringIO(schedule_csv(name, pp, m, v))):
            for cell in row:
                act = torch_sched._Action.from_str(cell)
                ours = parse_action(cell)[0]
                assert (act.stage_index, act.computation_type.value, act.microbatch_index) == (
                    ours.stage, ours.kind, ours.mb)
                assert str(act) == cell
