"""The Pareto and goodput charts (costmodel.charts): the front is the undominated set, the
goodput curve peaks at the model's optimum, text is escaped."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from costmodel.charts import ParetoPoint, goodput_curve_svg, pareto_front, pareto_svg
from costmodel.goodput import GoodputModel

SVG = "{http://www.w3.org/2000/svg}"
values = st.floats(min_value=0.01, max_value=1e6, allow_nan=False)


@given(st.lists(st.tuples(values, values), min_size=1, max_size=30))
def test_the_front_is_exactly_the_undominated_points(pairs: list[tuple[float, float]]) -> None:
    pts = [ParetoPoint(t, c, f"p{i}") for i, (t, c) in enumerate(pairs)]
    front = set(pareto_front(pts))

    def dominated(i: int) -> bool:
        t, c = pairs[i]
        return any((t2 >= t and c2 <= c) and (t2 > t or c2 < c) for t2, c2 in pairs)

    undominated = {i for i in range(len(pts)) if not dominated(i)}
    assert front <= undominated
    assert {pairs[i] for i in front} == {pairs[i] for i in undominated}  # one per duplicate


def test_pareto_svg_links_and_escapes() -> None:
    pts = [ParetoPoint(100, 2.0, "<a&b>", href="/v1/plans/x?a=1&b=2", rank=1),
           ParetoPoint(50, 1.0, "cheap"), ParetoPoint(40, 3.0, "bad")]
    root = ET.fromstring(pareto_svg(pts, title="t & <u>").encode())
    links = [a for a in root.iter(f"{SVG}a")]
    assert [a.get("href") for a in links] == ["/v1/plans/x?a=1&b=2"]
    classes = {c.get("data-cost"): c.get("class") for c in root.iter(f"{SVG}circle")
               if "point" in (c.get("class") or "")}
    assert classes == {"2": "point front chosen", "1": "point front", "3": "point"}


def test_goodput_curve_peaks_at_the_optimum() -> None:
    gm = GoodputModel(write_s=30.0, restart_s=600.0, rate_ckpt=1 / 36000, rate_other=0.0,
                      cost_other=0.0, checkpoint_bytes=1e12, rate=1 / 36000)
    best = gm.optimal_interval()
    assert gm.goodput(best) >= max(gm.goodput(best * f) for f in (0.5, 0.9, 1.1, 2.0))
    root = ET.fromstring(goodput_curve_svg(gm, interval_s=best * 3).encode())
    opt = next(c for c in root.iter(f"{SVG}circle") if c.get("class") == "optimum")
    given_ = next(c for c in root.iter(f"{SVG}circle") if c.get("class") == "given")
    assert math.isclose(float(opt.get("data-interval-s", 0)), best, rel_tol=1e-5)
    assert float(given_.get("data-goodput", 1)) < float(opt.get("data-goodput", 0))
    none = GoodputModel(30.0, 600.0, 0.0, 1e-5, 700.0, 1e12, 1e-5)
    assert "no checkpoints are needed" in goodput_curve_svg(none)
