"""Runs emitted launch configs through the installed frameworks' own code (one process per
framework release; tests/runtime/test_frameworks_real.py starts it).

``python -m tests.runtime.frameworks_worker MODE CASES.json OUT.json`` with MODE one of
``torchtitan`` (the installed torchtitan: 0.3.0, or 0.2.2 when its folder is first on
``PYTHONPATH``) and ``deepspeed``. Each case is checked in a fresh directory holding the config's
files; the answer per case is ``"ok"`` or the framework's error. What runs:

* torchtitan 0.3: ``ConfigManager().parse_args`` (``--module/--config`` and every override;
  ``Trainer.Config.__post_init__``), ``ParallelDims.from_config(...).build_mesh()`` on the
  ``fake`` process group torchtitan's own dry run uses (``distributed/utils.py``
  ``init_fake_mode``), ``_get_pipeline_metadata`` + ``_generate_llm_fqn_per_model_part`` (the
  layer split must be the plan's) and ``_build_pipeline_schedule`` on rank 0's stages (torch's
  ``get_schedule_class`` and schedule constructor; ``_PipelineScheduleRuntime._load_csv`` for a
  CSV).
* torchtitan 0.2: ``ConfigManager().parse_args`` with ``--job.config_file``, ``ParallelDims``
  + ``build_mesh``, ``generate_llm_fqn_per_model_part`` and ``build_pipeline_schedule``.
* DeepSpeed: ``DeepSpeedConfig(config, mpu)`` with the plan's data-parallel size (an mpu
  answering it), and ``deepspeed.initialize`` on one CPU process (gloo) with the config scaled
  to one rank (the same micro-batch, accumulation and ZeRO stage).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any


def _stages_for_rank0(schedule: str, pp: int, n_stages: int) -> list[int]:
    from torch.distributed.pipelining.schedules import (
        ScheduleDualPipeV,
        ScheduleZBVZeroBubble,
        get_schedule_class,
    )

    per_rank = n_stages // pp
    if get_schedule_class(schedule) in (ScheduleZBVZeroBubble, ScheduleDualPipeV):
        return [0, n_stages - 1]
    return [s * pp for s in range(per_rank)]


def _pipeline_stages(indices: list[int], n_stages: int, group: Any) -> list[Any]:
    import torch
    from torch.distributed.pipelining import PipelineStage

    return [PipelineStage(torch.nn.Linear(2, 2), i, n_stages, torch.device("cpu"), group=group)
            for i in indices]


def _loss(*args: Any, **kwargs: Any) -> Any:
    import torch

    return torch.zeros(()), None


def titan_03(case: dict[str, Any]) -> str:
    import torch.distributed as dist
    from torchtitan.config import ConfigManager
    from torchtitan.distributed import parallel_dims as pd_mod
    from torchtitan.distributed import pipeline_parallel as ppl
    from torchtitan.distributed.utils import init_fake_mode

    cfg = ConfigManager().parse_args(case["args"])
    ac = cfg.activation_checkpoint
    mode = "none" if ac is None else {"FullAC": "full", "SelectiveAC": "selective"}.get(
        type(ac).__qualname__.split(".")[0], type(ac).__qualname__)
    if mode != case["recompute"]:
        return f"activation checkpointing {mode}, the plan {case['recompute']}"
    world = case["world"]
    pd_mod.device_type = "cpu"  # no GPU here: the mesh is built on CPU with the fake backend
    init_fake_mode(world)
    try:
        dims = pd_mod.ParallelDims.from_config(cfg.parallelism, world)
        dims.build_mesh()
        par = cfg.parallelism
        got = (dims.dp_replicate * dims.dp_shard, dims.tp, dims.pp, dims.cp, dims.ep)
        if got != tuple(case["degrees"]):
            return f"degrees {got} != plan {case['degrees']}"
        if dims.pp > 1:
            model_config = type("ModelConfig", (), {"layers": [None] * case["layers"]})()
            n_stages, n_layers, iw, ow = ppl._get_pipeline_metadata(dims, par, model_config)
            fqns = par.module_fqns_per_model_part or ppl._generate_llm_fqn_per_model_part(
                n_stages, n_layers, iw, ow)
            split = [sum(m.startswith("layers.") for m in part) for part in fqns]
            if split != case["stage_layers"]:
                return f"torchtitan splits {split}, the plan {case['stage_layers']}"
            if fqns[-1][-2:] != ["norm", "lm_head"] or fqns[0][0] != "tok_embeddings":
                return f"module names {fqns[0][:1]} ... {fqns[-1][-2:]}"
            indices = _stages_for_rank0(par.pipeline_parallel_schedule, dims.pp, len(fqns))
            stages = _pipeline_stages(indices, len(fqns), dims.get_mesh("pp").get_group())
            ppl._build_pipeline_schedule(parallelism=par,
                                         local_batch_size=cfg.training.local_batch_size,
                                         stages=stages, loss_fn=_loss)
    finally:
        dist.destroy_process_group()
    return "ok"


def titan_02(case: dict[str, Any]) -> str:
    import torch.distributed as dist
    from torch.distributed.pipelining.schedules import PipelineScheduleSingle, get_schedule_class
    from torchtitan.config import ConfigManager
    from torchtitan.distributed import parallel_dims as pd_mod
    from torchtitan.distributed import pipeline_parallel as ppl

    cfg = ConfigManager().parse_args(case["args"])
    if cfg.activation_checkpoint.mode != case["recompute"]:
        return f"activation checkpointing {cfg.activation_checkpoint.mode}"
    par, world = cfg.parallelism, case["world"]
    pd_mod.device_type = "cpu"
    dist.init_process_group("fake", rank=0, world_size=world)
    try:
        dims = pd_mod.ParallelDims(
            dp_replicate=par.data_parallel_replicate_degree,
            dp_shard=par.data_parallel_shard_degree, cp=par.context_parallel_degree,
            tp=par.tensor_parallel_degree, pp=par.pipeline_parallel_degree,
            ep=par.expert_parallel_degree, etp=par.expert_tensor_parallel_degree,
            world_size=world)
        dims.build_mesh()
        got = (dims.dp_replicate * dims.dp_shard, dims.tp, dims.pp, dims.cp, dims.ep)
        if got != tuple(case["degrees"]):
            return f"degrees {got} != plan {case['degrees']}"
        if cfg.training.seq_len % dims.seq_len_divisor:
            return f"seq_len % seq_len_divisor {dims.seq_len_divisor}"
        if dims.pp > 1:
            # pipeline_llm's stage count (0.2.2 has it inline, pipeline_parallel.py)
            single = issubclass(get_schedule_class(par.pipeline_parallel_schedule),
                                PipelineScheduleSingle)
            iw = par.pipeline_parallel_first_stage_less_layers
            ow = par.pipeline_parallel_last_stage_less_layers
            lps = par.pipeline_parallel_layers_per_stage
            n_stages = (math.ceil((case["layers"] + iw + ow) / lps) if lps is not None
                        else dims.pp * (1 if single else 2))
            fqns = par.module_fqns_per_model_part or ppl.generate_llm_fqn_per_model_part(
                n_stages, case["layers"], iw, ow)
            split = [sum(m.startswith("layers.") for m in part) for part in fqns]
            if split != case["stage_layers"]:
                return f"torchtitan splits {split}, the plan {case['stage_layers']}"
            if fqns[-1][-2:] != ["norm", "output"]:
                return f"module names end {fqns[-1][-2:]}"
            indices = _stages_for_rank0(par.pipeline_parallel_schedule, dims.pp, len(fqns))
            stages = _pipeline_stages(indices, len(fqns), dims.get_mesh("pp").get_group())
            ppl.build_pipeline_schedule(cfg, stages, _loss)
    finally:
        dist.destroy_process_group()
    return "ok"


class _DataParallelUnit:
    """The model-parallel unit DeepSpeedConfig asks for the data-parallel world size
    (deepspeed/runtime/config.py, ``_set_batch_related_parameters``)."""

    def __init__(self, dp: int) -> None:
        self.dp = dp

    def get_data_parallel_world_size(self) -> int:
        return self.dp

    def get_data_parallel_rank(self) -> int:
        return 0

    def get_model_parallel_world_size(self) -> int:
        return 1

    def get_model_parallel_rank(self) -> int:
        return 0

    def get_sequence_parallel_world_size(self) -> int:
        return 1

    def get_sequence_data_parallel_world_size(self) -> int:
        return self.dp


def deepspeed_case(case: dict[str, Any]) -> str:
    import torch
    from deepspeed.runtime.config import DeepSpeedConfig

    ds = json.loads(case["config"])
    DeepSpeedConfig(ds, mpu=_DataParallelUnit(case["dp"]))
    one = {**ds, "train_batch_size": ds["train_micro_batch_size_per_gpu"]
           * ds["gradient_accumulation_steps"]}
    import deepspeed

    model = torch.nn.Linear(4, 4)
    if one.get("bf16", {}).get("enabled") or one.get("fp16", {}).get("enabled"):
        one.pop("fp16", None)
        one["bf16"] = {"enabled": True}
    # the optimizer is the training script's (the emitter's note); ZeRO needs one
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=one,
                                      dist_init_required=False)
    if engine.gradient_accumulation_steps() != ds["gradient_accumulation_steps"]:
        return "gradient accumulation differs"
    if engine.zero_optimization_stage() != ds["zero_optimization"]["stage"]:
        return "ZeRO stage differs"
    return "ok"


def main() -> None:
    mode, cases_path, out_path = sys.argv[1:4]
    cases = json.loads(Path(cases_path).read_text())
    results: dict[str, str] = {}
    if mode == "deepspeed":
        import deepspeed

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", os.environ.get("MESHPLAN_TEST_PORT", "29533"))
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                           "LOCAL_WORLD_SIZE": "1"})
        # deepspeed.comm, which DeepSpeedConfig asks for the rank (else it assumes world 1)
        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
        check = deepspeed_case
    else:
        import torchtitan.config.manager as manager

        check = titan_02 if hasattr(manager, "JobConfig") else titan_03
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in case.get("files", {}).items():
                (Path(tmp) / name).write_text(text)
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                results[case["name"]] = check(case)
            except BaseException as exc:  # the framework's refusal, reported per case
                results[case["name"]] = f"{type(exc).__name__}: {exc}"[:2000] + (
                    "" if isinstance(exc, AssertionError | ValueError | SystemExit)
                    else "\n" + traceback.format_exc()[-1500:])
            finally:
                os.chdir(cwd)
    Path(out_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
