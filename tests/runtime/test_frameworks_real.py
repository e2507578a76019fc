"""The emitted launch configs against the real frameworks (the ``frameworks`` extra; the Makefile
installs it, with torchtitan 0.2.2 beside 0.3.0 in ``.venv/frameworks/``).

For pinned plans (tests/runtime/plans.py), one plan per torchtitan schedule and parallelism
(tp / pp / cp / ep / FSDP / ZeRO-3, uneven stages, loop and V custom CSV schedules, MoE) and the
plans ``solver.search`` returns on small jobs, the torchtitan configs (0.3 and 0.2) go through
torchtitan's own config parser, ParallelDims and mesh on the fake process group, its layer split
and schedule builder (torch's ``get_schedule_class``, constructors and ``_load_csv``), and the
DeepSpeed configs through ``DeepSpeedConfig`` and ``deepspeed.initialize`` on one CPU process
(tests/runtime/frameworks_worker.py, one process per framework). Refused plans must be refused
with the framework's rule named. Without a framework the tests skip, saying which; with
``MESHPLAN_REQUIRE_FRAMEWORKS=1`` (CI) they fail instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from costmodel.specs.request import EstimateRequest, parse, stage_layers
from runtime.launch import LaunchError, refusals, render
from tests.runtime.framework_rules import parse_script
from tests.runtime.plans import PLANS

ROOT = Path(__file__).resolve().parents[2]
TORCHTITAN_02 = ROOT / ".venv" / "frameworks" / "torchtitan-0.2"
REQUIRE = os.environ.get("MESHPLAN_REQUIRE_FRAMEWORKS") == "1"

H100 = {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8}
CUSTOM_LOOP = [["0F0", "2F0", "0F1", "2F1", "2B0", "0B0", "2B1", "0B1"],
               ["1F0", "3F0", "1F1", "3F1", "3B0", "1B0", "3B1", "1B1"]]
CUSTOM_V = [["0F0", "0F1", "3F0", "3B0", "0B0", "3F1", "3B1", "0B1"],
            ["1F0", "2F0", "1F1", "2F1", "2B0", "1B0", "2B1", "1B1"]]


def _req(model: str, gbs: int, seq: int, nodes: int, precision: str = "bf16",
         **plan: Any) -> dict[str, Any]:
    return {"model": {"preset": model},
            "training": {"global_batch_size": gbs, "seq_len": seq, "precision": precision},
            "cluster": {"pools": [{**H100, "nodes": nodes}]}, "plan": plan}


EXTRA: dict[str, dict[str, Any]] = {
    "1f1b_tp2_pp2": _req("llama3-8b", 32, 4096, 1, tp=2, pp=2, dp=2, schedule="1F1B",
                         sequence_parallel=True),
    "interleaved_vp4": _req("llama3-8b", 64, 4096, 1, pp=2, dp=4, schedule="Interleaved1F1B",
                            virtual_stages=4),
    "izb_pp4": _req("llama3-8b", 64, 4096, 1, pp=4, dp=2, schedule="InterleavedZeroBubble",
                    virtual_stages=2),
    "zbv_pp4": _req("llama3-8b", 64, 4096, 1, pp=4, dp=2, schedule="ZBVZeroBubble",
                    virtual_stages=2),
    "dualpipev_pp2": _req("llama3-8b", 32, 4096, 1, pp=2, dp=4, schedule="DualPipeV",
                          virtual_stages=2),
    "custom_loop_csv": _req("llama3-8b", 8, 4096, 1, pp=2, dp=4, schedule="custom",
                            virtual_stages=2, custom_schedule=CUSTOM_LOOP),
    "custom_v_csv": _req("llama3-8b", 8, 4096, 1, pp=2, dp=4, schedule="custom",
                         virtual_stages=2, custom_schedule=CUSTOM_V),
    "cp2_tp2": _req("llama3-8b", 16, 8192, 1, tp=2, cp=2, dp=2, sequence_parallel=True),
    "hsdp_zero0_tp2": _req("llama3-8b", 32, 4096, 1, tp=2, dp=4, zero_stage=0,
                           sequence_parallel=True),
    "tp4_no_sp": _req("llama3-8b", 32, 4096, 1, tp=4, dp=2, sequence_parallel=False),
    "zero3_tp2_pp2": _req("llama3-70b", 64, 4096, 4, tp=2, pp=2, dp=8, zero_stage=3,
                          schedule="1F1B", sequence_parallel=True),
    "mixtral_ep4_tp2": _req("mixtral-8x7b", 128, 4096, 1, tp=2, dp=4, ep=4,
                            sequence_parallel=True),
    "deepseek_v3_ep8_pp4": _req("deepseek-v3", 256, 4096, 8, pp=4, dp=16, ep=8,
                                schedule="1F1B", layers_per_stage=[15, 15, 16, 15]),
    "gpipe_uneven_last": _req("llama3-8b", 32, 4096, 1, pp=4, dp=2, schedule="GPipe",
                              layers_per_stage=[8, 8, 8, 8]),
    "moe_zero3_ep": _req("mixtral-8x7b", 64, 4096, 1, dp=8, ep=8, zero_stage=3),
    # partial recompute: DeepSpeed renders it without a pipeline (the script wraps the first N
    # blocks), torchtitan refuses it (it wraps every block or every N-th), as does DeepSpeed's
    # PipelineModule
    "partial_recompute_dp8": _req("llama3-8b", 64, 4096, 1, dp=8, recompute="full",
                                  recompute_num_layers=8),
    "partial_recompute_pp2": _req("llama3-8b", 64, 4096, 1, pp=2, dp=4, schedule="1F1B",
                                  recompute="full", recompute_num_layers=4),
}
"""More plans: every torchtitan schedule, the parallelisms, the MoE refusal of DeepSpeed and
partial recompute (refused by torchtitan, by DeepSpeed with a pipeline)."""
PARTIAL = ("partial_recompute_dp8", "partial_recompute_pp2")

SEARCHES = {  # small jobs whose searched plans are checked too (constraints.framework)
    "torchtitan": [("llama3-8b", 1, 64, 4096), ("llama3-70b", 4, 128, 4096)],
    "deepspeed": [("llama3-8b", 1, 64, 4096), ("mixtral-8x7b", 2, 128, 4096)],
}


@cache
def searched(framework: str) -> dict[str, dict[str, Any]]:
    import solver
    from service.launch_check import framework_refusals

    out: dict[str, dict[str, Any]] = {}
    for model, nodes, gbs, seq in SEARCHES[framework]:
        body = {"model": {"preset": model},
                "training": {"global_batch_size": gbs, "seq_len": seq},
                "cluster": {"pools": [{**H100, "nodes": nodes, "price_per_gpu_hour": 2.0}]},
                "constraints": {"framework": framework}, "top_k": 3, "time_limit_s": 5}
        result = solver.search(body, launchable=framework_refusals)
        for i, ranked in enumerate(result.plans):
            out[f"search_{model}_{nodes}n_{i}"] = {
                k: body[k] for k in ("model", "training", "cluster")} | {
                "plan": ranked.plan.model_dump(mode="json")}
    return out


def _have(module: str, where: str) -> None:
    if importlib.util.find_spec(module) is None:
        msg = f"{where} is not installed (pip install -e '.[frameworks]', or make install-dev)"
        if REQUIRE:
            pytest.fail(f"MESHPLAN_REQUIRE_FRAMEWORKS=1: {msg}")
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_worker(mode: str, cases: list[dict[str, Any]], tmp: Path,
                pythonpath: list[Path] | None = None) -> dict[str, str]:
    (tmp / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [*(str(p) for p in pythonpath or []), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env["MESHPLAN_TEST_PORT"] = str(_free_port())
    proc = subprocess.run([sys.executable, "-m", "tests.runtime.frameworks_worker", mode,
                           str(tmp / "cases.json"), str(tmp / "out.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results: dict[str, str] = json.loads((tmp / "out.json").read_text())
    return results


def _degrees(req: EstimateRequest) -> list[int]:
    p = req.plan
    return [p.dp, p.tp, p.pp, p.cp, p.ep]


SUBSTITUTES = {True: ("deepseek_v3", "deepseek_v3_debugmodel"),
               False: ("llama3", "llama3_debugmodel")}
"""A registered torchtitan 0.3 config of the same kind for a model torchtitan has none for
(the launch script says REPLACE there): the parse, mesh and schedule checks do not depend on
the model's shape, and the layer split is checked with the plan's own layer count."""


def _titan_cases(plans: dict[str, dict[str, Any]], version: str
                 ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    cases, refused = [], {}
    for name, body in plans.items():
        try:
            cfg = render("torchtitan", body, version=version)
        except LaunchError as exc:
            refused[name] = "; ".join(str(p) for p in exc.problems)
            continue
        req: EstimateRequest = parse(EstimateRequest, body)
        launch = parse_script(cfg.content)
        args = [w for w in launch.program[2:] if w != "$@"]
        if version == "0.3":
            moe = req.model.is_moe
            for flag, sub in (("--module", SUBSTITUTES[moe][0]), ("--config",
                                                                  SUBSTITUTES[moe][1])):
                i = args.index(flag)
                if args[i + 1].startswith("REPLACE"):
                    args[i + 1] = sub
        cases.append({"name": name, "args": args, "files": cfg.files, "world": launch.world,
                      "layers": req.model.num_hidden_layers, "degrees": _degrees(req),
                      "stage_layers": stage_layers(req.model, req.plan),
                      "recompute": req.plan.recompute})
    return cases, refused


ALL = {**PLANS, **EXTRA}


def test_plans_cover_every_schedule_and_parallelism() -> None:
    reqs = [parse(EstimateRequest, b) for b in ALL.values()]
    assert {r.plan.schedule for r in reqs if r.plan.pp > 1} >= {
        "GPipe", "1F1B", "Interleaved1F1B", "InterleavedZeroBubble", "ZBVZeroBubble",
        "DualPipeV", "custom"}
    for field in ("tp", "pp", "cp", "ep"):
        assert any(getattr(r.plan, field) > 1 for r in reqs), field
    assert {r.plan.zero_stage for r in reqs} >= {0, 1, 3}
    assert len(ALL) >= 20


def test_torchtitan_0_3_accepts_every_emitted_config(tmp_path: Path) -> None:
    _have("torchtitan", "torchtitan 0.3.0")
    plans = {**ALL, **searched("torchtitan")}
    cases, refused = _titan_cases(plans, "0.3")
    results = _run_worker("torchtitan", cases, tmp_path)
    bad = {k: v for k, v in results.items() if v != "ok"}
    assert not bad, json.dumps(bad, indent=1)
    assert len(results) >= 20 and set(refused) <= {"moe_zero3_ep", *PARTIAL}, (
        len(results), refused)
    assert all("plan.recompute_num_layers" in refused[n] for n in PARTIAL), refused
    print(f"torchtitan 0.3.0 accepted {len(results)} plans; refused {sorted(refused)}")


def test_torchtitan_0_2_accepts_every_emitted_config(tmp_path: Path) -> None:
    if not (TORCHTITAN_02 / "torchtitan").is_dir():
        msg = f"torchtitan 0.2.2 is not in {TORCHTITAN_02} (make install-dev puts it there)"
        if REQUIRE:
            pytest.fail(f"MESHPLAN_REQUIRE_FRAMEWORKS=1: {msg}")
        pytest.skip(msg)
    _have("tyro", "tyro (a torchtitan dependency)")
    cases, refused = _titan_cases(ALL, "0.2")
    results = _run_worker("torchtitan", cases, tmp_path, pythonpath=[TORCHTITAN_02])
    bad = {k: v for k, v in results.items() if v != "ok"}
    assert not bad, json.dumps(bad, indent=1)
    # 0.2 runs DDP only alone (parallelize_llama): the zero_stage 0 + tp plan is refused
    assert "hsdp_zero0_tp2" in refused and "DDP has not supported" in refused["hsdp_zero0_tp2"]
    assert all("plan.recompute_num_layers" in refused[n] for n in PARTIAL), refused
    print(f"torchtitan 0.2.2 accepted {len(results)} plans; refused {sorted(refused)}")


def test_deepspeed_accepts_every_emitted_config_and_refuses_moe_with_zero3(
        tmp_path: Path) -> None:
    _have("deepspeed", "DeepSpeed")
    plans = {**ALL, **searched("deepspeed")}
    cases, refused = [], {}
    for name, body in plans.items():
        try:
            cfg = render("deepspeed", body)
        except LaunchError as exc:
            refused[name] = "; ".join(str(p) for p in exc.problems)
            continue
        req: EstimateRequest = parse(EstimateRequest, body)
        cases.append({"name": name, "config": cfg.content, "dp": req.plan.dp})
    results = _run_worker("deepspeed", cases, tmp_path)
    bad = {k: v for k, v in results.items() if v != "ok"}
    assert not bad, json.dumps(bad, indent=1)
    assert "ZeRO Stage 3" in refused["moe_zero3_ep"]
    assert "partial_recompute_dp8" in results
    assert "activation_checkpoint_interval" in refused["partial_recompute_pp2"]
    assert refusals("deepspeed", ALL["moe_zero3_ep"])  # what constraints.framework uses
    assert len(results) >= 8, (len(results), refused)
    print(f"DeepSpeed accepted {len(results)} plans; refused {sorted(refused)}")
