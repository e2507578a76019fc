"""The format dispatcher, the worker's plan JSON, torchrun command lines and the schedule CSV."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from costmodel.errors import SpecError
from costmodel.pipeline import action_csv
from costmodel.specs.request import EstimateRequest, parse
from runtime.launch import FORMATS, PLAN_FORMAT, LaunchError, render
from tests.runtime.framework_rules import parse_script
from tests.runtime.plans import PLANS

H100 = {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 4}
A100 = {"name": "a100", "gpu": "A100-SXM-80GB", "gpus_per_node": 8, "nodes": 4}


def req(pools: list[dict[str, Any]] | None = None, gbs: int = 64, **plan: Any) -> dict[str, Any]:
    return {"model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": gbs, "seq_len": 4096},
            "cluster": {"pools": pools or [H100]}, "plan": plan}


def test_unknown_format_names_the_formats() -> None:
    with pytest.raises(LaunchError) as info:
        render("slurm", PLANS["llama3_8b_dp"])
    assert info.value.field == "format"
    assert all(f in info.value.rule for f in FORMATS)


def test_invalid_plan_raises_the_cost_models_error_not_a_launch_error() -> None:
    bad = req(tp=3, dp=2)  # 32 heads are not divisible by 3
    with pytest.raises(SpecError) as info:
        render("megatron", bad)
    assert not isinstance(info.value, LaunchError)
    assert info.value.field == "plan.tp"


def test_launch_error_is_a_spec_error_with_field_and_rule() -> None:
    err = LaunchError("plan.schedule", "no such schedule")
    assert isinstance(err, SpecError) and (err.field, err.rule) == ("plan.schedule",
                                                                     "no such schedule")


def test_runtime_plan_is_the_validated_request_plus_the_tag() -> None:
    cfg = render("runtime", PLANS["mixtral_ep"])
    data = json.loads(cfg.content)
    assert data.pop("format") == PLAN_FORMAT
    assert data["model"]["num_local_experts"] == 8  # the preset resolved to explicit fields
    assert set(data) == {"model", "training", "cluster", "plan"}
    assert parse(EstimateRequest, data) == parse(EstimateRequest, PLANS["mixtral_ep"])


def test_torchrun_runs_the_worker_on_every_gpu_of_the_plan() -> None:
    cfg = render("torchrun", PLANS["llama3_70b_interleaved"])
    launch = parse_script(cfg.content)
    assert (launch.world, launch.nnodes) == (64, 8)
    assert launch.program == ["-m", "runtime", "run", "plan.json"]
    assert json.loads(cfg.files["plan.json"])["format"] == PLAN_FORMAT
    assert "--rdzv-backend c10d" in cfg.content and "--rdzv-id meshplan-" in cfg.content


def test_a_partial_last_node_gets_its_own_command() -> None:
    cfg = render("torchrun", req(tp=4, dp=3, gbs=48, sequence_parallel=True))
    assert cfg.content.count("torchrun \\") == 2
    assert "--nproc-per-node 8" in cfg.content and "--nproc-per-node 4" in cfg.content
    assert parse_script(cfg.content).world == 12


def test_heterogeneous_pipeline_runs_each_pools_nodes() -> None:
    r = req([H100, A100], pp=2, dp=2, tp=4, sequence_parallel=True,
            stages=[{"pool": "h100", "layers": 16}, {"pool": "a100", "layers": 16, "tp": 2}])
    cfg = render("torchrun", r)
    assert "# on 1 node of pool 'h100', 8 processes each" in cfg.content
    assert "# on 1 node of pool 'a100', 4 processes each" in cfg.content
    assert parse_script(cfg.content).world == 12
    for fmt in ("torchtitan", "megatron", "deepspeed"):
        with pytest.raises(LaunchError) as info:
            render(fmt, r)
        assert info.value.field == "plan.stages"


def test_node_order_uses_the_static_rendezvous() -> None:
    cfg = render("torchrun", req(tp=8, pp=4, dp=1, sequence_parallel=True,
                                 node_order=[2, 0, 3, 1]))
    assert "--node-rank" in cfg.content and "--rdzv-backend" not in cfg.content
    assert any("NODE_RANK = 0 on node 2, 1 on node 0, 2 on node 3, 3 on node 1" in n
               for n in cfg.notes)


def test_emitters_do_not_import_torch() -> None:
    code = ("import sys, runtime.launch as l; from tests.runtime.plans import PLANS; "
            "[l.render(f, PLANS['llama3_8b_gpipe']) for f in ('torchrun', 'torchtitan', "
            "'megatron', 'deepspeed', 'runtime')]; assert 'torch' not in sys.modules, 'torch'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   cwd=pathlib.Path(__file__).resolve().parents[2])


def test_schedule_csv_of_a_named_schedule() -> None:
    cfg = render("schedule-csv", PLANS["llama3_70b_interleaved"])
    # 256 sequences / (dp 2 · micro-batch 1) = 128 micro-batches
    assert cfg.content == action_csv.schedule_csv("Interleaved1F1B", 4, 128, virtual_stages=2)
    assert len(cfg.content.strip().splitlines()) == 4  # one row per pipeline rank
    assert cfg.media_type == "text/csv"


CUSTOM = [["0F0", "0F1", "0B0", "0B1"], ["1F0", "1B0", "1F1", "1B1"]]


def test_custom_schedule_goes_to_torchtitan_as_a_csv() -> None:
    r = req(pp=2, dp=4, gbs=8, schedule="custom", custom_schedule=CUSTOM)
    cfg = render("torchtitan", r)
    assert cfg.files == {"meshplan_schedule.csv": action_csv.to_csv(CUSTOM)}
    assert "--parallelism.pipeline_parallel_schedule_csv meshplan_schedule.csv" in cfg.content
    assert "--parallelism.pipeline_parallel_schedule PipelineScheduleSingle" in cfg.content
    old = render("torchtitan", r, version="0.2")  # the TOML era
    toml = old.files["meshplan_torchtitan.toml"]
    assert 'pipeline_parallel_schedule_csv = "meshplan_schedule.csv"' in toml
    assert 'pipeline_parallel_schedule = "PipelineScheduleSingle"' in toml
    assert render("schedule-csv", r).content == action_csv.to_csv(CUSTOM)
    with pytest.raises(LaunchError):
        render("megatron", r)
