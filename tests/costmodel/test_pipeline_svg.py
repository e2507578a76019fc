"""The SVG timeline of a simulated schedule (costmodel.pipeline.svg, costmodel.timeline_svg)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

import costmodel
from costmodel.errors import SpecError
from costmodel.estimate import pipeline_simulation
from costmodel.pipeline.schedules import KINDS
from costmodel.pipeline.simulator import SimResult, simulate_named
from costmodel.pipeline.svg import KIND_COLOURS, timeline_svg
from costmodel.specs.request import EstimateRequest

NS = {"s": "http://www.w3.org/2000/svg"}


def ops(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter(f"{{{NS['s']}}}rect")
            if (e.get("class") or "").startswith("op ")]


def rows(root: ET.Element) -> dict[int, ET.Element]:
    return {int(e.get("data-rank", -1)): e for e in root.iter(f"{{{NS['s']}}}rect")
            if e.get("class") == "row"}


def texts(root: ET.Element, cls: str | None = None) -> list[str]:
    return [e.text or "" for e in root.iter(f"{{{NS['s']}}}text")
            if cls is None or e.get("class") == cls]


def render(sim: SimResult, **kw: object) -> ET.Element:
    return ET.fromstring(timeline_svg(sim, **kw).encode())  # type: ignore[arg-type]


CASES = [
    ("1F1B", 4, 8, 1),
    ("InterleavedZeroBubble", 2, 4, 2),
    ("ZBVZeroBubble", 2, 4, 2),
    ("DualPipeV", 2, 4, 2),
    ("Chimera", 4, 8, 1),
    ("BitPipe", 4, 4, 2),
]


@pytest.mark.parametrize(("name", "pp", "m", "v"), CASES)
def test_every_action_is_one_rect_at_its_time(name: str, pp: int, m: int, v: int) -> None:
    sim = simulate_named(name, pp, m, v, 1e-3, 2e-3, 0.0, 1e-4)
    root = render(sim)
    assert root.tag == f"{{{NS['s']}}}svg"
    tl = sim.timeline
    rects = ops(root)
    assert len(rects) == len(tl.start)
    bg = rows(root)
    assert sorted(bg) == list(range(pp))
    left = float(bg[0].get("x", 0))
    plot_w = float(bg[0].get("width", 0))
    scale = plot_w / sim.step_time
    for i, rect in enumerate(rects):  # drawn in timeline order
        kind = KINDS[int(tl.kind[i])]
        assert rect.get("class") == f"op {kind}"
        assert rect.get("fill") == KIND_COLOURS[kind]
        assert int(rect.get("data-rank", -1)) == int(tl.rank[i])
        assert int(rect.get("data-stage", -1)) == int(tl.stage[i])
        assert int(rect.get("data-mb", -1)) == int(tl.mb[i])
        assert float(rect.get("x", 0)) == pytest.approx(left + tl.start[i] * scale, abs=0.01)
        assert float(rect.get("width", 0)) == pytest.approx(
            (tl.end[i] - tl.start[i]) * scale, abs=0.02)
        title = rect.find("s:title", NS)
        assert title is not None and f"micro-batch {int(tl.mb[i])}" in (title.text or "")


def test_idle_gaps_are_where_the_simulation_says() -> None:
    """1F1B, p = 4, m = 4, uniform: rank r idles r slots before its first forward, and rank 3
    (the last) runs F B pairs back to back; every gap between two drawn actions of a rank is
    the simulated idle time between them."""
    sim = simulate_named("1F1B", 4, 4, 1, 1e-3, 2e-3, 0.0)
    root = render(sim)
    bg = rows(root)
    left = float(bg[0].get("x", 0))
    scale = float(bg[0].get("width", 0)) / sim.step_time
    tl = sim.timeline
    gaps_found = 0
    for r in range(4):
        mine = sorted((float(e.get("x", 0)), float(e.get("width", 0)))
                      for e in ops(root) if int(e.get("data-rank", -1)) == r)
        sel = np.flatnonzero(tl.rank == r)
        assert mine[0][0] - left == pytest.approx(tl.start[sel[0]] * scale, abs=0.01)
        assert mine[0][0] - left == pytest.approx(r * 1e-3 * scale, abs=0.01)  # r forwards
        for (x0, w0), (x1, _), a, b in zip(mine, mine[1:], sel, sel[1:], strict=False):
            idle = (tl.start[b] - tl.end[a]) * scale
            assert x1 - (x0 + w0) == pytest.approx(idle, abs=0.03)
            gaps_found += idle > 0.5
        assert mine[-1][0] + mine[-1][1] <= left + float(bg[r].get("width", 0)) + 0.01
    assert gaps_found > 0  # the bubbles of 1F1B's warm-up and cool-down show


def test_labels_legend_axis() -> None:
    sim = simulate_named("InterleavedZeroBubble", 2, 4, 2, 1e-3, 1e-3, 1e-3)
    root = render(sim, title="IZB")
    labels = texts(root, "rank-label")
    assert labels == ["rank 0 (stages 0, 2)", "rank 1 (stages 1, 3)"]
    legend = {e.get("data-kind") for e in root.iter(f"{{{NS['s']}}}rect")
              if e.get("class") == "legend"}
    assert legend == {"F", "I", "W", "idle"}  # the kinds drawn, and idle
    ticks = [float(t) for t in texts(root, "tick-label")]
    assert ticks[0] == 0.0
    assert ticks == sorted(ticks) and len(ticks) >= 4
    assert ticks[-1] <= sim.step_time * 1e3 + 1e-9
    assert "time (ms)" in texts(root)
    mb_labels = texts(root, "op-label")
    assert 0 < len(mb_labels) <= len(ops(root))
    assert set(mb_labels) <= {str(i) for i in range(4)}


def test_replica_stages_are_primed() -> None:
    root = render(simulate_named("Chimera", 4, 4, 1, 1.0, 1.0, 0.0))
    assert texts(root, "rank-label") == [
        "rank 0 (stages 0, 3′)", "rank 1 (stages 1, 2′)",
        "rank 2 (stages 2, 1′)", "rank 3 (stages 3, 0′)",
    ]


def test_text_is_escaped_and_output_deterministic() -> None:
    sim = simulate_named("GPipe", 2, 2, 1, 1.0, 1.0, 0.0)
    title = 'a <b> & "c" \'d\''
    svg = timeline_svg(sim, title=title)
    root = ET.fromstring(svg.encode())
    assert title in texts(root)
    assert "<b>" not in svg
    assert svg == timeline_svg(sim, title=title)


def test_narrow_actions_have_no_label_but_keep_their_rect() -> None:
    sim = simulate_named("1F1B", 8, 64, 1, 1.0, 2.0, 0.0)
    root = render(sim, width=400)
    assert len(ops(root)) == len(sim.timeline.start)
    assert len(texts(root, "op-label")) < len(ops(root))


REQUEST = {
    "model": {"preset": "llama3-8b"},
    "training": {"global_batch_size": 16, "seq_len": 2048},
    "cluster": {"pools": [{"name": "h100", "gpu": "H100", "nodes": 1}]},
    "plan": {"tp": 2, "pp": 4, "dp": 1, "schedule": "Interleaved1F1B", "virtual_stages": 2},
}


@pytest.mark.parametrize(("schedule", "v"), [("Interleaved1F1B", 2), ("Chimera", 1)])
def test_request_timeline_draws_the_estimates_simulation(schedule: str, v: int) -> None:
    req = {**REQUEST, "plan": {**REQUEST["plan"], "schedule": schedule, "virtual_stages": v}}
    svg = costmodel.timeline_svg(req)
    root = ET.fromstring(svg.encode())
    sim = pipeline_simulation(EstimateRequest.model_validate(req))
    assert len(ops(root)) == len(sim.timeline.start)
    est = costmodel.estimate(req)
    assert sim.step_time == pytest.approx(est.pipeline.makespan_s)
    title = texts(root)[0]
    assert schedule in title and "llama3-8b" in title and "16 micro-batches" in title
    assert svg == costmodel.timeline_svg(EstimateRequest.model_validate(req))


def test_request_timeline_rejects_bad_input_like_the_estimate() -> None:
    req = {**REQUEST, "plan": {**REQUEST["plan"], "schedule": "Chimera", "pp": 3,
                               "virtual_stages": 1}}
    with pytest.raises(SpecError) as info:
        costmodel.timeline_svg(req)
    assert any(p.field == "plan.pp" for p in info.value.problems)


# ---------------------------------------------------------------------------- windowed
BIG = {
    "model": {"preset": "llama3-8b"},
    "training": {"global_batch_size": 256, "seq_len": 2048},
    "cluster": {"pools": [{"name": "a100", "gpu": "A100-SXM-80GB", "nodes": 2}]},
    "plan": {"tp": 1, "pp": 16, "dp": 1, "schedule": "1F1B"},
}
"""256 micro-batches on 16 pipeline stages: 8,192 actions (2 MB drawn whole)."""


def _windows(root: ET.Element) -> list[tuple[float, float]]:
    return [(float(e.get("data-start-ms", 0)), float(e.get("data-end-ms", 0)))
            for e in root.iter(f"{{{NS['s']}}}rect") if e.get("class") == "window"]


@pytest.mark.parametrize(("schedule", "v"), [("1F1B", 1), ("Interleaved1F1B", 2),
                                              ("GPipe", 1), ("ZBVZeroBubble", 2)])
def test_a_large_schedule_is_windowed_and_bounded(schedule: str, v: int) -> None:
    """Checks: 256 micro-batches × pp 16 draw three windows (warm-up from 0, a steady slice,
    the cool-down to the step's end) with marked gaps, at most MAX_ACTIONS-ish boxes and
    under 400 kB; every drawn box lies in its window and matches a simulated action."""
    from costmodel.pipeline.svg import MAX_ACTIONS

    req = {**BIG, "plan": {**BIG["plan"], "schedule": schedule, "virtual_stages": v}}
    sim = pipeline_simulation(EstimateRequest.model_validate(req))
    svg = costmodel.timeline_svg(req)
    assert len(svg) < 400_000
    root = ET.fromstring(svg.encode())
    wins = _windows(root)
    assert len(wins) == 3
    step_ms = sim.step_time * 1e3
    assert wins[0][0] == 0.0 and wins[-1][1] == pytest.approx(step_ms, abs=1e-3)
    assert all(a < b for a, b in wins) and wins[0][1] < wins[1][0] < wins[1][1] < wins[2][0]
    gaps = [g for g in root.iter(f"{{{NS['s']}}}g") if g.get("class") == "gap"]
    assert len(gaps) == 2 and all(int(g.get("data-hidden", 0)) > 0 for g in gaps)
    rects = ops(root)
    assert 0.5 * MAX_ACTIONS <= len(rects) <= 1.2 * MAX_ACTIONS
    assert len(rects) < len(sim.timeline.start)
    tl = sim.timeline
    key = {(int(tl.rank[i]), int(tl.stage[i]), int(tl.mb[i]), int(tl.kind[i])): i
           for i in range(len(tl.start))}
    for rect in rects:
        i = key[(int(rect.get("data-rank", -1)), int(rect.get("data-stage", -1)),
                 int(rect.get("data-mb", -1)), KINDS.index(rect.get("data-kind", "")))]
        t0, t1 = tl.start[i] * 1e3, tl.end[i] * 1e3
        assert any(t1 > a - 1e-6 and t0 < b + 1e-6 for a, b in wins)
    summary = texts(root, "summary")[0]
    assert f"bubble {sim.bubble_fraction * 100:.1f}%" in summary
    assert "of all ranks' time idle" in summary
    assert "actions drawn" in texts(root, "windowed")[0]


def test_small_schedules_render_whole_and_the_limit_is_an_argument() -> None:
    sim = simulate_named("1F1B", 4, 8, 1, 1e-3, 2e-3, 0.0)
    root = render(sim)
    assert _windows(root) == [] and len(ops(root)) == len(sim.timeline.start)
    windowed = render(sim, max_actions=12)
    assert len(_windows(windowed)) >= 2
    assert len(ops(render(simulate_named("1F1B", 8, 256, 1, 1.0, 2.0, 0.0),
                          max_actions=None))) == 8 * 256 * 2


def test_marked_ranks_are_tinted_and_labelled() -> None:
    sim = simulate_named("1F1B", 4, 8, 1, 1e-3, 2e-3, 0.0)
    root = render(sim, marks={2: "×1.50"}, note="what-if: rank 2 slower")
    marked = [e for e in root.iter(f"{{{NS['s']}}}rect")
              if e.get("class") == "row" and e.get("data-mark") == "1"]
    assert [int(e.get("data-rank", -1)) for e in marked] == [2]
    assert texts(root, "rank-label")[2] == "rank 2 (stages 2) ×1.50"
    assert texts(root, "note") == ["what-if: rank 2 slower"]


# ---------------------------------------------------------------------------- transfers
@pytest.mark.parametrize(("name", "pp", "m", "v"), CASES)
def test_transfers_are_the_simulated_cross_rank_edges(name: str, pp: int, m: int,
                                                       v: int) -> None:
    """Checks: every transfer starts when its producer ends, lasts its boundary's latency,
    goes between two different ranks, and its consumer starts no earlier than it ends."""
    from costmodel.pipeline.transfers import ACTIVATION, transfers

    sim = simulate_named(name, pp, m, v, 1e-3, 2e-3, 5e-4, 1e-4)
    tr = transfers(sim)
    assert len(tr) > 0
    tl = sim.timeline
    at = {(int(tl.stage[i]), int(tl.mb[i]), "F" if tl.kind[i] == 0 else "BI"): i
          for i in range(len(tl.start)) if tl.kind[i] != 3}
    assert np.all(np.diff(tr.start) >= 0)
    for j in range(len(tr)):
        s, mb = int(tr.stage[j]), int(tr.mb[j])
        fwd = tr.what[j] == ACTIVATION
        prod = at[(s, mb, "F" if fwd else "BI")]
        cons = at[(s + 1 if fwd else s - 1, mb, "F" if fwd else "BI")]
        assert tr.src[j] == tl.rank[prod] != tr.dst[j] == tl.rank[cons]
        assert tr.start[j] == tl.end[prod]
        assert tr.end[j] - tr.start[j] == pytest.approx(1e-4)
        assert tl.start[cons] >= tr.end[j] - 1e-12


def test_no_latency_no_transfers() -> None:
    from costmodel.pipeline.transfers import transfers

    assert len(transfers(simulate_named("1F1B", 4, 8, 1, 1.0, 1.0, 0.0, 0.0))) == 0
