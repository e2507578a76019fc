"""Tests of the pipeline-schedule generator (costmodel.pipeline.schedules).

The golden per-rank orders below were worked out by hand from the algorithms of
torch/distributed/pipelining/schedules.py (pytorch/pytorch at commit
00722e648b740f91d0e71494baa17891749fd291):
Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B / ScheduleInterleavedZeroBubble
(``_get_warmup_ops`` + ``_get_1f1b_rank_ops``), ScheduleZBVZeroBubble and ScheduleDualPipeV
(``_calculate_single_rank_operations``). Notation: ``F3.1`` = forward of global stage 3,
micro-batch 1.
"""

from __future__ import annotations

import itertools

import pytest

from costmodel.pipeline.schedules import (
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
    n_stages,
    stage_to_rank,
    validate_schedule,
)


def parse(text: str) -> list[Action]:
    out = []
    for tok in text.split():
        stage, mb = tok[1:].split(".")
        out.append(Action(int(stage), int(mb), tok[0]))
    return out


def fmt(actions: list[Action]) -> str:
    return " ".join(f"{a.kind}{a.stage}.{a.mb}" for a in actions)


# ----------------------------------------------------------------------------------------------
# Names and placement
# ----------------------------------------------------------------------------------------------


def test_schedule_names_match_torch() -> None:
    assert SCHEDULES == (
        "GPipe",
        "1F1B",
        "Interleaved1F1B",
        "InterleavedZeroBubble",
        "ZBVZeroBubble",
        "DualPipeV",
    )
    assert set(SINGLE_STAGE_SCHEDULES) | set(MULTI_STAGE_SCHEDULES) == set(SCHEDULES)
    assert not set(SINGLE_STAGE_SCHEDULES) & set(MULTI_STAGE_SCHEDULES)
    assert set(SINGLE_STAGE_SCHEDULES) == {"GPipe", "1F1B"}
    assert set(V_SCHEDULES) == {"ZBVZeroBubble", "DualPipeV"}
    assert KINDS == ("F", "B", "I", "W")
    assert KIND_CODES == {"F": 0, "B": 1, "I": 2, "W": 3}


def test_stage_to_rank_placements() -> None:
    assert stage_to_rank("1F1B", 4) == [0, 1, 2, 3]
    assert stage_to_rank("GPipe", 3) == [0, 1, 2]
    assert stage_to_rank("Interleaved1F1B", 3, 2) == [0, 1, 2, 0, 1, 2]
    assert stage_to_rank("InterleavedZeroBubble", 2, 3) == [0, 1, 0, 1, 0, 1]
    assert stage_to_rank("ZBVZeroBubble", 4, 2) == [0, 1, 2, 3, 3, 2, 1, 0]
    assert stage_to_rank("DualPipeV", 2, 2) == [0, 1, 1, 0]
    assert n_stages("Interleaved1F1B", 4, 3) == 12
    assert n_stages("DualPipeV", 4, 2) == 8


def test_action_is_frozen_and_checks_kind() -> None:
    a = Action(1, 2, "F")
    with pytest.raises(AttributeError):
        a.stage = 3  # type: ignore[misc]
    assert str(a) == "F(stage=1, mb=2)"
    with pytest.raises(ScheduleError, match="kind"):
        Action(0, 0, "X")


# ----------------------------------------------------------------------------------------------
# Golden orders (hand-derived from torch's algorithms)
# ----------------------------------------------------------------------------------------------

GOLDEN: list[tuple[str, int, int, int, list[str]]] = [
    (
        "GPipe",
        2,
        3,
        1,
        ["F0.0 F0.1 F0.2 B0.0 B0.1 B0.2", "F1.0 F1.1 F1.2 B1.0 B1.1 B1.2"],
    ),
    (
        "1F1B",
        3,
        4,
        1,
        [
            "F0.0 F0.1 F0.2 B0.0 F0.3 B0.1 B0.2 B0.3",
            "F1.0 F1.1 B1.0 F1.2 B1.1 F1.3 B1.2 B1.3",
            "F2.0 B2.0 F2.1 B2.1 F2.2 B2.2 F2.3 B2.3",
        ],
    ),
    (
        "Interleaved1F1B",
        2,
        4,
        2,
        [
            "F0.0 F0.1 F2.0 F2.1 F0.2 B2.0 F0.3 B2.1 F2.2 B0.0 F2.3 B0.1 B2.2 B2.3 B0.2 B0.3",
            "F1.0 F1.1 F3.0 B3.0 F3.1 B3.1 F1.2 B1.0 F1.3 B1.1 F3.2 B3.2 F3.3 B3.3 B1.2 B1.3",
        ],
    ),
    (
        "InterleavedZeroBubble",
        2,
        4,
        2,
        [
            "F0.0 F0.1 F2.0 F2.1 I2.0 W2.0 F0.2 I2.1 W2.1 F0.3 I0.0 W0.0 F2.2 I0.1 W0.1 "
            "F2.3 I2.2 W2.2 I2.3 W2.3 I0.2 W0.2 I0.3 W0.3",
            "F1.0 F1.1 F3.0 I3.0 F3.1 I3.1 W3.0 F1.2 I1.0 W3.1 F1.3 I1.1 W1.0 F3.2 I3.2 W1.1 "
            "F3.3 I3.3 W3.2 I1.2 W3.3 I1.3 W1.2 W1.3",
        ],
    ),
    (
        "ZBVZeroBubble",
        2,
        3,
        2,
        [
            "F0.0 F0.1 F0.2 F3.0 I3.0 W3.0 F3.1 I3.1 W3.1 I0.0 W0.0 F3.2 I3.2 W3.2 "
            "I0.1 W0.1 I0.2 W0.2",
            "F1.0 F2.0 F1.1 F2.1 I2.0 W2.0 F1.2 I1.0 W1.0 F2.2 I2.1 W2.1 I1.1 I2.2 "
            "I1.2 W1.1 W2.2 W1.2",
        ],
    ),
    (
        "DualPipeV",
        2,
        4,
        2,
        [
            # F0.3+B3.1, F3.2+B0.0 and F3.3+B0.1 are torch OVERLAP_F_B pairs (F first).
            "F0.0 F0.1 F0.2 F3.0 I3.0 W3.0 F3.1 F0.3 B3.1 F3.2 B0.0 B3.2 F3.3 B0.1 "
            "B3.3 I0.2 W0.2 I0.3 W0.3",
            "F1.0 F2.0 F1.1 F2.1 F1.2 B2.0 F2.2 B1.0 F1.3 B2.1 F2.3 B1.1 B2.2 B1.2 "
            "I2.3 I1.3 W2.3 W1.3",
        ],
    ),
]


@pytest.mark.parametrize(("name", "pp", "m", "v", "expected"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_order(name: str, pp: int, m: int, v: int, expected: list[str]) -> None:
    got = build_schedule(name, pp, m, v)
    assert [fmt(r) for r in got] == expected


def test_1f1b_warmup_depth_and_alternation() -> None:
    """Schedule1F1B: rank r runs min(m, pp - r) forwards, then strictly alternates B, F."""
    pp, m = 5, 9
    for r, acts in enumerate(build_schedule("1F1B", pp, m)):
        kinds = "".join(a.kind for a in acts)
        warm = pp - r
        assert kinds[:warm] == "F" * warm
        assert kinds[warm:].startswith("BF" * (m - warm))
        assert kinds.endswith("B" * warm)
        assert [a.mb for a in acts if a.kind == "F"] == list(range(m))
        assert [a.mb for a in acts if a.kind == "B"] == list(range(m))


def test_interleaved_warmup_matches_torch_formula() -> None:
    """torch _get_warmup_ops: (v-1)*per_round + k*(pp-1-rank), k=2 (1F1B) or 1 (zero bubble),
    capped at m*v; per_round = m // max(1, m // pp)."""
    for name, k in (("Interleaved1F1B", 2), ("InterleavedZeroBubble", 1)):
        for pp, m, v in ((4, 8, 2), (4, 10, 3), (3, 2, 2), (2, 6, 4)):
            per_round = m // max(1, m // pp)
            for r, acts in enumerate(build_schedule(name, pp, m, v)):
                warm = min((v - 1) * per_round + k * (pp - 1 - r), m * v)
                first_back = next(i for i, a in enumerate(acts) if a.kind in "BI")
                # warm-up forwards, then the first steady step's forward, then a backward
                expected_first_back = warm + 1 if warm < m * v else warm
                assert first_back == expected_first_back, (name, pp, m, v, r)


def test_zbv_small_m_drops_extra_microbatches() -> None:
    """torch builds ZBV for max(2*pp-1, m) micro-batches and drops those >= m."""
    full = build_schedule("ZBVZeroBubble", 3, 5, 2)  # 2*pp-1 = 5: nothing dropped
    small = build_schedule("ZBVZeroBubble", 3, 2, 2)
    for r in range(3):
        assert small[r] == [a for a in full[r] if a.mb < 2]


# ----------------------------------------------------------------------------------------------
# Every schedule is complete and well placed
# ----------------------------------------------------------------------------------------------


def _configs() -> list[tuple[str, int, int, int]]:
    out = []
    for name in SCHEDULES:
        vs = {"GPipe": [1], "1F1B": [1], "Interleaved1F1B": [2, 3], "InterleavedZeroBubble": [1, 2]}
        for pp, m, v in itertools.product([1, 2, 3, 4, 6], [1, 2, 3, 5, 8, 12], vs.get(name, [2])):
            try:
                build_schedule(name, pp, m, v)
            except ScheduleError:
                continue
            out.append((name, pp, m, v))
    return out


@pytest.mark.parametrize(("name", "pp", "m", "v"), _configs())
def test_each_stage_mb_has_one_forward_and_complete_backward(
    name: str, pp: int, m: int, v: int
) -> None:
    sched = build_schedule(name, pp, m, v)
    placement = stage_to_rank(name, pp, v)
    assert len(sched) == pp
    seen: dict[tuple[int, int], list[str]] = {}
    for r, acts in enumerate(sched):
        for a in acts:
            assert placement[a.stage] == r, f"{a} on rank {r}, owner {placement[a.stage]}"
            seen.setdefault((a.stage, a.mb), []).append(a.kind)
    assert set(seen) == {(s, b) for s in range(pp * v) for b in range(m)}
    for key, kinds in seen.items():
        assert sorted(kinds) in (["B", "F"], ["F", "I", "W"]), (key, kinds)
    # and the order on each rank is F before B/I before W
    checked = validate_schedule(sched, placement)
    assert checked.n_stages == pp * v and checked.n_microbatches == m


def test_build_schedule_returns_fresh_lists() -> None:
    a = build_schedule("1F1B", 2, 2)
    a[0].clear()
    assert len(build_schedule("1F1B", 2, 2)[0]) == 4


# ----------------------------------------------------------------------------------------------
# Argument validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "field", "fragment"),
    [
        (("1F1B", 4, 3, 1), "n_microbatches", "n_microbatches=3 must be >= pp=4"),
        (("DualPipeV", 4, 7, 2), "n_microbatches", "must be >= number of stages 2*pp=8"),
        (("Interleaved1F1B", 4, 9, 2), "n_microbatches", "multiple of the number of rounds"),
        (("InterleavedZeroBubble", 2, 7, 2), "n_microbatches", "max(1, n_microbatches // pp)=3"),
        (("ZBVZeroBubble", 4, 8, 1), "virtual_stages", "must be 2 for ZBVZeroBubble"),
        (("DualPipeV", 4, 8, 3), "virtual_stages", "must be 2 for DualPipeV"),
        (("Interleaved1F1B", 4, 8, 1), "virtual_stages", "Interleaved1F1B needs virtual_stages"),
        (("1F1B", 4, 8, 2), "virtual_stages", "must be 1 for 1F1B"),
        (("GPipe", 4, 8, 2), "virtual_stages", "must be 1 for GPipe"),
        (("PipeDream", 4, 8, 1), "name", "not one of"),
        (("1F1B", 0, 8, 1), "pp", "pp=0 must be >= 1"),
        (("GPipe", 2, 0, 1), "n_microbatches", "n_microbatches=0 must be >= 1"),
        (("GPipe", True, 4, 1), "pp", "must be an integer"),
        (("GPipe", 2, 2.5, 1), "n_microbatches", "must be an integer"),
    ],
)
def test_invalid_arguments(args: tuple[str, int, int, int], field: str, fragment: str) -> None:
    with pytest.raises(ScheduleError) as info:
        build_schedule(*args)
    assert info.value.field == field
    assert field in str(info.value)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_torch_rule_on_interleaved_microbatches_allows_non_multiples() -> None:
    """torch: rounds = max(1, m // pp) and m % rounds == 0 — so m=10, pp=4 (2 rounds of 5)
    and m=3 < pp=4 (1 round) are accepted, m=9, pp=4 is not."""
    assert len(build_schedule("Interleaved1F1B", 4, 10, 2)) == 4
    assert len(build_schedule("Interleaved1F1B", 4, 3, 2)) == 4
    with pytest.raises(ScheduleError, match="n_microbatches=9"):
        build_schedule("Interleaved1F1B", 4, 9, 2)


def test_stage_to_rank_validates() -> None:
    with pytest.raises(ScheduleError) as info:
        stage_to_rank("ZBVZeroBubble", 4, 3)
    assert info.value.field == "virtual_stages"


# ----------------------------------------------------------------------------------------------
# build_custom
# ----------------------------------------------------------------------------------------------


def test_build_custom_accepts_tuples_and_infers_placement() -> None:
    checked = build_custom(
        [
            [(0, 0, "F"), (0, 1, "F"), (0, 0, "B"), (0, 1, "I"), (0, 1, "W")],
            [(1, 0, "F"), Action(1, 0, "B"), (1, 1, "F"), (1, 1, "B")],
        ]
    )
    assert checked.stage_ranks == [0, 1]
    assert checked.n_stages == 2 and checked.n_microbatches == 2
    assert checked.actions[0][3] == Action(0, 1, "I")


def _two_stage(rank0: str, rank1: str) -> list[list[Action]]:
    return [parse(rank0), parse(rank1)]


@pytest.mark.parametrize(
    ("rank0", "rank1", "fragment"),
    [
        ("F0.0 B0.0", "F1.0 I1.0", "stage 1, mb 0 (rank 1): needs one B, or one I and one W"),
        ("F0.0 B0.0", "F1.0", "stage 1, mb 0 (rank 1): needs one B"),
        ("F0.0 B0.0 F0.0", "F1.0 B1.0", "more than one F"),
        ("F0.0 B0.0", "F1.0 B1.0 I1.0 W1.0", "full backward B and also a split"),
        ("B0.0", "F1.0 B1.0", "stage 0, mb 0 (rank 0): no F action"),
        ("B0.0 F0.0", "F1.0 B1.0", "rank 0 would deadlock: B(stage=0, mb=0) comes before its F"),
        ("F0.0 B0.0", "F1.0 W1.0 I1.0", "W(stage=1, mb=0) comes before its I"),
        ("F0.0 B0.0 F1.0", "B1.0", "stage 1 has actions on rank 0 and on rank 1"),
        ("F0.0 B0.0", "F2.0 B2.0", "stage 1 has no actions"),
    ],
)
def test_build_custom_rejects(rank0: str, rank1: str, fragment: str) -> None:
    with pytest.raises(ScheduleError) as info:
        build_custom(_two_stage(rank0, rank1))
    assert info.value.field == "schedule"
    assert fragment in str(info.value)


def test_build_custom_checks_given_placement() -> None:
    sched = _two_stage("F0.0 B0.0", "F1.0 B1.0")
    assert build_custom(sched, [0, 1]).stage_ranks == [0, 1]
    with pytest.raises(ScheduleError, match="stage_ranks puts stage 0 on rank 1"):
        build_custom(sched, [1, 1])
    with pytest.raises(ScheduleError) as info:
        build_custom(sched, [0])
    assert info.value.field == "stage_ranks"
    with pytest.raises(ScheduleError) as info:
        build_custom(sched, [0, 5])
    assert info.value.field == "stage_ranks"


def test_build_custom_rejects_garbage() -> None:
    with pytest.raises(ScheduleError, match="not an Action"):
        build_custom([[(0, 0, "F"), "0F0"]])  # type: ignore[list-item]
    with pytest.raises(ScheduleError, match="kind='X'"):
        build_custom([[(0, 0, "F"), (0, 0, "X")]])
    with pytest.raises(ScheduleError, match="negative"):
        build_custom([[(0, -1, "F"), (0, -1, "B")]])
    with pytest.raises(ScheduleError, match="no actions"):
        build_custom([[]])
    with pytest.raises(ScheduleError, match="at least one rank"):
        build_custom([])
