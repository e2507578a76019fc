"""The search never does worse than the published configuration of a real training run.

For every row of ``shared/validation/published_runs.json`` that ``costmodel.validate`` scores
(rows it skips or excludes are skipped here, with its reason), the row's model, training job
and a cluster of exactly its GPU count (one pool: count/8 nodes of 8 GPUs, or one node of
count GPUs below 8) are searched for the fastest plan with at most that many GPUs. The
published plan is the one ``costmodel.validate.validate_row`` scores (the fastest fitting of
the row's plausible configurations), re-evaluated with the search's own defaults — flash
attention, overlapped gradient reduction and parameter gathering, no TP-communication overlap,
FSDP-style ZeRO-3 units — since the search does not vary those, while ``validate`` evaluates
2021–22 rows with the software of their era. Same cost model on both sides: the search's best
predicted tokens/s must be at least the published plan's.

``max_memory_fraction`` is 1.0 here so that the search may use every plan the cost model says
fits, as the published runs did (the default 0.90 ceiling would exclude some of them).

All 46 scored rows run (about 30 s on 2 cores); no sampling needed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from costmodel import validate as V
from costmodel.errors import SpecError
from costmodel.estimate import evaluate
from costmodel.results import Estimate
from costmodel.specs.cluster import Cluster, GPUPool
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.training import TrainingSpec
from solver import search

FILE = "published_runs.json"
DATA: Path = V.default_data_dir() / FILE
if not DATA.is_file():
    pytest.skip(f"validation data not found at {DATA} (set MESHPLAN_VALIDATION_DIR)",
                allow_module_level=True)
ROWS: list[dict[str, Any]] = json.loads(DATA.read_text())

REL = 1e-9
SOLVER_DEFAULTS = {"attention": "flash", "overlap_grad_reduce": True,
                   "overlap_param_gather": True, "tp_comm_overlap": False,
                   "zero3_unit": "block"}
"""ParallelPlan fields the search leaves at their defaults (it searches none of them)."""


def global_batch(row: dict[str, Any]) -> int:
    """As costmodel.validate.validate_row: the row's global batch, or Korthikanti Table 5's
    280 × dp for the 530B rows that do not state it."""
    par = row["parallel"]
    gbs = par.get("global_batch")
    if gbs is None:
        assert row["group"] == "korthikanti22" and row["model"]["layers"] == 105
        gbs = 280 * int(par["dp"])
    return int(gbs)


def published_plan(row: dict[str, Any], model: Any, training: TrainingSpec,
                   cluster: Cluster, era: V.Era) -> tuple[ParallelPlan, Estimate]:
    """The plan validate_row scores: the fastest fitting of the row's candidates (widened to
    other micro-batch / recompute values when the era's config is unsure and none fits)."""
    results: list[tuple[ParallelPlan, Estimate]] = []
    for widen in ([False, True] if era.config_unsure else [False]):
        for plan in V._candidates(row, era, training.global_batch_size, widen):
            try:
                results.append((plan, evaluate(model, training, cluster, plan)))
            except SpecError:
                continue
        if any(e.fits for _, e in results):
            break
    assert results, "validate_row scored this row, so some candidate is valid"
    fitting = [(p, e) for p, e in results if e.fits] or results
    return min(fitting, key=lambda pe: pe[1].step_time_s)


@pytest.mark.parametrize("index", range(len(ROWS)),
                         ids=[f"{r['group']}-{i}" for i, r in enumerate(ROWS)])
def test_search_beats_the_published_plan(index: int) -> None:
    """Checks: status optimal or feasible; the best plan uses ≤ the row's GPU count; its
    predicted tokens/s ≥ the published plan's under the search's defaults (same cost model);
    and the published plan picked here is the one validate_row scored (same step time)."""
    row = ROWS[index]
    scored = V.validate_row(index, FILE, row)
    if scored.skipped or scored.excluded or scored.error is None:
        pytest.skip(f"costmodel.validate does not score this row: "
                    f"{scored.skipped or scored.excluded}")
    era = V.ERAS[row["group"]]
    model = V._model(row, era, [])
    count = int(row["gpu"]["count"])
    gpu = V.GPU_NAMES.get(row["gpu"]["type"], row["gpu"]["type"])
    training = TrainingSpec(global_batch_size=global_batch(row),
                            seq_len=int(row["model"]["seq_len"]),
                            precision=V._precision(row))
    gpn = 8 if count >= 8 else count
    assert count % gpn == 0, f"{count} GPUs are not whole nodes of 8"
    cluster = Cluster(pools=[GPUPool(name="p", gpu=gpu, gpus_per_node=gpn,
                                     nodes=count // gpn)])

    # validate_row scores the row under its source's stack (the era's framework and release);
    # the search and the re-evaluation run under the search's defaults (no framework)
    era_training = training.model_copy(update={"framework": era.framework,
                                                "framework_version": era.version})
    plan, est = published_plan(row, model, era_training, cluster, era)
    assert math.isclose(est.step_time_s, scored.predicted_step_s or math.nan, rel_tol=1e-9)
    ours = plan.model_copy(update={**SOLVER_DEFAULTS, "pool": "p"})
    published = evaluate(model, training, cluster, ours)
    assert published.fits, f"the published plan {ours} does not fit under the search defaults"

    result = search({"model": model, "training": training, "cluster": cluster,
                     "objective": "throughput", "top_k": 1, "time_limit_s": 10.0,
                     "constraints": {"max_gpus": count, "max_memory_fraction": 1.0}})
    assert result.optimality.status in ("optimal", "feasible"), result.infeasible_reason
    best = result.plans[0]
    assert best.estimate.num_gpus <= count
    assert best.estimate.fits
    assert best.estimate.tokens_per_s >= published.tokens_per_s * (1 - REL), (
        f"search {best.plan} → {best.estimate.tokens_per_s:,.0f} tokens/s; published {ours} "
        f"→ {published.tokens_per_s:,.0f} tokens/s")
