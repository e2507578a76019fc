"""torchtitan: command-line overrides and a job TOML.

Names and rules are torchtitan's as written in its sources (pytorch/torchtitan):

* ``torchtitan/config/job_config.py`` (TOML era) and ``torchtitan/config/configs.py`` (Python
  configs, 2026): ``[parallelism]``, ``[training]`` and ``[activation_checkpoint]`` keys.
* ``torchtitan/distributed/parallel_dims.py`` ``ParallelDims._validate``: dp_replicate ·
  dp_shard · cp · tp · pp = world size; with ep > 1 and expert_tensor_parallel_degree = tp,
  ep % cp == 0 and (dp_shard · cp) % ep == 0. ``seq_len_divisor`` = tp · 2 · cp.
* ``torchtitan/models/llama3/infra/parallelize.py`` ``parallelize_llama``: seq_len divisible
  by ``seq_len_divisor``; DDP (``data_parallel_replicate_degree`` alone) only without other
  parallelism; FSDP whenever dp_shard > 1 or cp > 1; ``fsdp_reshard_after_forward``.
* ``torchtitan/distributed/pipeline_parallel.py``: ``pipeline_llm`` (stages per rank: 1 for
  single-stage schedules, ≥ 2 for multi-stage ones; ``pipeline_parallel_layers_per_stage`` sets
  the stage count to ceil((layers + first_less + last_less) / layers_per_stage)),
  ``generate_llm_fqn_per_model_part`` (how the layers are split), ``build_pipeline_schedule``
  (local batch divisible by the micro-batch size; ``pipeline_parallel_schedule_csv`` loads a
  ``_PipelineScheduleRuntime``) and ``pipeline_module_split`` (loop or V placement).
* ``torchtitan/train.py``: global batch divisible by local batch · dp degree (the rest is
  gradient accumulation).

ZeRO has no direct counterpart: torchtitan shards with FSDP2. zero_stage 3 maps to FSDP with
``fsdp_reshard_after_forward = "always"`` (parameters gathered per block, freed after use);
stages 1 and 2 map to FSDP with ``"never"`` — FSDP's SHARD_GRAD_OP, the ZeRO-2 form, which keeps
the gathered parameters from forward to backward and shards gradients and optimizer state
(for ZeRO-1 that also shards gradients: less memory than estimated, the same traffic, a
reduce-scatter and an all-gather per step). zero_stage 0 is DDP, which torchtitan runs only
when data parallelism is the only parallelism.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from costmodel.specs.presets import get_preset
from runtime.launch.base import MEDIA_SHELL, Job, LaunchConfig, LaunchError, Refusals
from runtime.launch.common import (
    SINGLE_STAGE_SCHEDULES,
    TORCH_SCHEDULES,
    custom_placement,
    refuse_common,
    schedule_csv,
    torch_schedule_rules,
)
from runtime.launch.launcher import launcher_notes, torchrun_script

TOML_NAME = "meshplan_torchtitan.toml"
CSV_NAME = "meshplan_schedule.csv"

PRESET_FLAVORS = {
    "llama3-8b": ("llama3", "8B"),
    "llama3-70b": ("llama3", "70B"),
    "llama3-405b": ("llama3", "405B"),
    "deepseek-v3": ("deepseek_v3", "671B"),
}
"""meshplan presets with a torchtitan model flavor of the same shape
(``torchtitan/models/llama3/__init__.py``, ``torchtitan/models/deepseek_v3/__init__.py``)."""


def llm_split(num_stages: int, num_layers: int, input_weight: int,
              output_weight: int) -> list[int]:
    """Transformer layers per stage as torchtitan's ``generate_llm_fqn_per_model_part``
    (``pipeline_parallel.py``) assigns them: the embedding counts as ``input_weight`` and the
    norm + output as ``output_weight`` layers, the effective layers are split evenly with the
    remainder on the first stages, and a stage takes real layers while any are left. Raises
    ValueError where torchtitan does."""
    if num_stages < 1:
        raise ValueError("Number of stages must be at least 1")
    if num_stages == 1:
        return [num_layers]
    effective = num_layers + input_weight + output_weight
    if num_stages > effective:
        raise ValueError("more stages than effective layers")
    base, extra = divmod(effective, num_stages)
    if base == 0:
        raise ValueError("empty stages")
    if input_weight > base or output_weight > base:
        raise ValueError("a weight exceeds the minimum layers per stage")
    out: list[int] = []
    left = num_layers
    for i in range(num_stages):
        n = base + (1 if i < extra else 0)
        if i == 0:
            n -= input_weight
        elif i == num_stages - 1:
            n -= output_weight
        take = max(0, min(n, left))
        out.append(take)
        left -= take
    return out


def split_keys(target: Sequence[int], pp: int, single_stage: bool) -> dict[str, int] | None:
    """``pipeline_parallel_first_stage_less_layers`` / ``_last_stage_less_layers`` (and
    ``pipeline_parallel_layers_per_stage`` where the stage count is not torchtitan's default)
    that make torchtitan split the layers exactly as ``target``; None when none do."""
    stages, layers = len(target), sum(target)
    default = pp * (1 if single_stage else 2)
    bound = max(target)
    candidates = sorted(((i, o) for i in range(bound + 1) for o in range(bound + 1)),
                        key=lambda io: (io[0] + io[1], io[0]))
    for iw, ow in candidates:
        try:
            if llm_split(stages, layers, iw, ow) != list(target):
                continue
        except ValueError:
            continue
        keys = {"pipeline_parallel_first_stage_less_layers": iw,
                "pipeline_parallel_last_stage_less_layers": ow}
        if stages == default:
            return keys
        eff = layers + iw + ow
        for lps in range(1, eff + 1):
            if math.ceil(eff / lps) == stages:
                return {**keys, "pipeline_parallel_layers_per_stage": lps}
    return None


def module_fqns(target: Sequence[int]) -> list[list[str]]:
    """``module_fqns_per_model_part`` for an arbitrary split (torchtitan's module names:
    ``tok_embeddings``, ``layers.N``, ``norm``, ``output``)."""
    out: list[list[str]] = []
    start = 0
    for i, n in enumerate(target):
        part = [f"layers.{j}" for j in range(start, start + n)]
        start += n
        if i == 0:
            part.insert(0, "tok_embeddings")
        if i == len(target) - 1:
            part += ["norm", "output"]
        out.append(part)
    return out


def _model_section(job: Job, notes: list[str]) -> list[tuple[str, Any]]:
    model = job.model
    known = PRESET_FLAVORS.get(model.name)
    if known is not None:
        try:
            same = get_preset(model.name) == model
        except ValueError:
            same = False
        if same:
            return [("name", known[0]), ("flavor", known[1])]
    shape = (f"{model.num_hidden_layers} layers, dim {model.hidden_size}, "
             f"{model.num_attention_heads} heads, {model.kv_heads} KV heads, FFN "
             f"{model.intermediate_size}, vocab {model.vocab_size}")
    notes.append(f"torchtitan has no flavor registered for {model.name!r}: register one with "
                 f"its shape ({shape}) and replace model.name / model.flavor in {TOML_NAME}.")
    return [("name", "REPLACE-with-torchtitan-model"), ("flavor", f"REPLACE-{model.name}")]


def render_torchtitan(job: Job) -> LaunchConfig:
    plan, training = job.plan, job.training
    r = Refusals()
    notes: list[str] = []
    files: dict[str, str] = {}
    refuse_common(job, r, "torchtitan")
    r.check(training.precision != "fp16", "training.precision",
            "torchtitan trains with bf16 or fp32 parameters only: "
            "training.mixed_precision_param is 'bfloat16' | 'float32' "
            "(torchtitan/config/job_config.py, Training)")

    # ---- data parallelism: ZeRO stage -> DDP / FSDP (module docstring)
    others = [f"{k}={v}" for k, v in (("tp", plan.tp), ("pp", plan.pp), ("cp", plan.cp),
                                       ("ep", plan.ep)) if v > 1]
    reshard: str | None = None
    if plan.zero_stage == 0:
        r.check(not others or plan.dp == 1, "plan.zero_stage",
                "torchtitan runs unsharded data parallelism (DDP, "
                "data_parallel_replicate_degree) only when it is the only parallelism "
                "(models/llama3/infra/parallelize.py, parallelize_llama: 'DDP has not supported "
                "> 1D parallelism'; with cp > 1 it always shards, ParallelDims.fsdp_enabled); "
                f"this plan has {', '.join(others)}: use zero_stage >= 1 (FSDP)")
        replicate, shard = plan.dp, 1
    else:
        replicate, shard = 1, plan.dp
        reshard = "always" if plan.zero_stage == 3 else "never"
        if plan.zero_stage in (1, 2) and shard > 1:
            notes.append(f"torchtitan has no ZeRO-{plan.zero_stage}: it runs FSDP2 with "
                         "fsdp_reshard_after_forward = 'never' (FSDP's SHARD_GRAD_OP, the ZeRO-2 "
                         "form: gradients and optimizer state sharded, parameters gathered once "
                         "per step)" + (" — less memory than the ZeRO-1 estimate, the same "
                                        "traffic" if plan.zero_stage == 1 else "") + ".")
    if plan.cp > 1:
        notes.append("torchtitan shards parameters over the context-parallel ranks too (FSDP "
                     "mesh dp_shard·cp), which the estimate does not count: less memory.")

    div = plan.tp * 2 * plan.cp
    r.check(training.seq_len % div == 0, "training.seq_len",
            f"torchtitan needs seq_len divisible by tp·2·cp = {div} (parallelize.py, "
            "parallelize_llama; ParallelDims.seq_len_divisor); "
            f"seq_len={training.seq_len}")
    if plan.ep > 1:
        r.check(plan.ep % plan.cp == 0 and (shard * plan.cp) % plan.ep == 0, "plan.ep",
                "torchtitan's expert parallelism borrows data_parallel_shard_degree·cp ranks: "
                "with expert_tensor_parallel_degree = tp it needs ep % cp == 0 and "
                "(dp_shard·cp) % ep == 0 (distributed/parallel_dims.py, "
                f"ParallelDims._validate); dp_shard={shard}, cp={plan.cp}, ep={plan.ep}")

    # ---- pipeline
    par: list[tuple[str, Any]] = [
        ("data_parallel_replicate_degree", replicate),
        ("data_parallel_shard_degree", shard),
    ]
    if reshard is not None:
        par.append(("fsdp_reshard_after_forward", reshard))
    par += [("tensor_parallel_degree", plan.tp), ("context_parallel_degree", plan.cp),
            ("pipeline_parallel_degree", plan.pp)]
    toml_only: list[tuple[str, Any]] = []
    if plan.pp > 1:
        _pipeline(job, r, par, toml_only, files, notes)
    if plan.ep > 1:  # only then: TOML-era versions before expert parallelism lack the key
        par.append(("expert_parallel_degree", plan.ep))
    if plan.ep > 1 and plan.tp > 1:
        toml_only.append(("expert_tensor_parallel_degree", plan.tp))
        notes.append("expert_tensor_parallel_degree = tp is set in the TOML only: torchtitan's "
                     "Python configs (2026) dropped it and borrow EP ranks from FSDP and TP.")
    if plan.tp_comm_overlap and plan.tp > 1:
        par.append(("enable_async_tensor_parallel", True))
        notes.append("Overlapping TP communication is torchtitan's async TP, which needs "
                     "torch.compile ([compile] enable).")
    r.raise_if_any()

    # ---- training, precision, activation checkpointing
    # pp > 1: a step's batch per rank, split into pipeline micro-batches; pp = 1: one
    # micro-batch per forward, the rest is gradient accumulation (train.py)
    local = training.global_batch_size // plan.dp if plan.pp > 1 else plan.micro_batch_size
    tr: list[tuple[str, Any]] = [
        ("local_batch_size", local), ("global_batch_size", training.global_batch_size),
        ("seq_len", training.seq_len), ("mixed_precision_param", "bfloat16"),
        ("mixed_precision_reduce", "float32"),
    ]
    ac: list[tuple[str, Any]] = [("mode", plan.recompute)]
    ac_toml: list[tuple[str, Any]] = []
    if plan.recompute == "selective":
        ac_toml.append(("selective_ac_option", "op"))
        notes.append("torchtitan's selective activation checkpointing is per-op (it keeps matmul "
                     "and attention outputs, recomputes the rest); the estimate's selective "
                     "recompute is Korthikanti et al.'s (attention core only): memory may differ.")
    model_sec = _model_section(job, notes)
    if training.precision == "fp8":
        model_sec.append(("converters", ["float8"]))
        notes.append("fp8 uses torchao's Float8Linear (model.converters = ['float8']); install "
                     "torchao.")
    if plan.tp > 1 and not plan.sequence_parallel:
        notes.append("torchtitan's tensor parallelism always shards norms and dropout over the "
                     "sequence (SequenceParallel); the plan has sequence_parallel off: less "
                     "activation memory than estimated.")
    if plan.attention == "unfused":
        notes.append("torchtitan runs fused attention (SDPA / FlexAttention); the plan assumes "
                     "unfused attention: faster and leaner than estimated.")
    if plan.zero_stage == 3 and plan.zero3_unit == "module":
        notes.append("FSDP2 in torchtitan gathers one transformer block at a time; the plan "
                     "assumes per-module gathering (zero3_unit='module').")

    sections: list[tuple[str, list[tuple[str, Any]]]] = [
        ("job", [("description", f"meshplan: {job.summary()}")]),
        ("model", model_sec),
        ("training", tr),
        ("parallelism", par + toml_only),
        ("activation_checkpoint", ac + ac_toml),
    ]
    if plan.tp_comm_overlap and plan.tp > 1:
        sections.append(("compile", [("enable", True)]))
    files[TOML_NAME] = toml_text(sections, header=f"torchtitan job config for {job.summary()}")

    overrides: list[str] = []
    for section, items in (("training", tr), ("parallelism", par), ("activation_checkpoint", ac)):
        for key, value in items:
            overrides.append(_override(section, key, value))
    if training.precision == "fp8":
        overrides.append("--model.converters float8")
    target = ["-m torchtitan.train", f"--job.config_file {TOML_NAME}", *overrides, '"$@"']
    content = torchrun_script(job, target, title="torchtitan")
    notes = [
        *launcher_notes(job),
        "Extra arguments to the script go to torchtitan.train: supply the data and tokenizer "
        "(--training.dataset / --training.dataset_path, --model.tokenizer_path or, in newer "
        "torchtitan, --model.hf_assets_path) and --training.steps.",
        f"TOML-era torchtitan reads {TOML_NAME}; with torchtitan's Python configs (2026) drop "
        "--job.config_file and pick the model with --module / --config: the --parallelism, "
        "--training and --activation_checkpoint overrides stay valid.",
        *notes,
    ]
    return LaunchConfig(format="torchtitan", filename="torchtitan_launch.sh",
                        media_type=MEDIA_SHELL, content=content, files=files, notes=notes)


def _pipeline(job: Job, r: Refusals, par: list[tuple[str, Any]],
              toml_only: list[tuple[str, Any]], files: dict[str, str], notes: list[str]) -> None:
    """The pipeline keys (schedule, micro-batch size, layer split) of a plan with pp > 1."""
    plan = job.plan
    vp, pp = plan.virtual_stages, plan.pp
    stages = pp * vp
    name: str = plan.schedule
    csv_name: str | None = None
    if name == "custom":
        actions = getattr(plan, "custom_schedule", None) or []
        placement = custom_placement(actions, pp)
        if placement is None:
            r.add("plan.custom_schedule", "torchtitan places a rank's stages in a loop "
                  "(stage s on rank s % pp) or a V (pipeline_parallel.py, "
                  "pipeline_module_split); this custom schedule uses neither")
            return
        if placement == "v":
            r.check(vp == 2, "plan.virtual_stages", "a V placement has 2 stages per rank "
                    "(pipeline_module_split)")
            name = "ZBVZeroBubble"  # only its V placement is used: the CSV is the schedule
        else:
            name = "PipelineScheduleSingle" if vp == 1 else "PipelineScheduleMulti"
        csv_name = CSV_NAME
    elif name not in TORCH_SCHEDULES:
        r.add("plan.schedule", f"torchtitan runs torch.distributed.pipelining schedules "
              f"({', '.join(TORCH_SCHEDULES)}; pipeline_parallel.py via get_schedule_class) "
              f"or an action CSV; {name} is neither")
        return
    else:
        if name not in SINGLE_STAGE_SCHEDULES:
            r.check(vp >= 2, "plan.virtual_stages",
                    f"torchtitan runs a multi-stage schedule such as {name} with at least 2 "
                    "stages per rank (pipeline_parallel.py, pipeline_llm); this plan has "
                    "virtual_stages=1")
        torch_schedule_rules(r, name, pp, stages, job.n_microbatches)
    single = name in SINGLE_STAGE_SCHEDULES or name == "PipelineScheduleSingle"
    if r.problems:
        return
    par.append(("pipeline_parallel_schedule", name))
    if csv_name is not None:
        try:
            files[csv_name] = schedule_csv(job)
        except LaunchError as exc:
            r.problems.extend(exc.problems)
            return
        par.append(("pipeline_parallel_schedule_csv", csv_name))
        if name == "ZBVZeroBubble":
            notes.append("pipeline_parallel_schedule = 'ZBVZeroBubble' only selects the V "
                         f"placement of stages; {csv_name} is the schedule that runs.")
    par.append(("pipeline_parallel_microbatch_size", plan.micro_batch_size))
    keys = split_keys(job.stage_layers, pp, single)
    if keys is not None:
        par.extend(keys.items())
    else:
        toml_only.append(("module_fqns_per_model_part", module_fqns(job.stage_layers)))
        notes.append(f"torchtitan's even split (generate_llm_fqn_per_model_part) cannot make "
                     f"this plan's stages {list(job.stage_layers)}: {TOML_NAME} lists each "
                     "stage's modules (parallelism.module_fqns_per_model_part); with Python "
                     "configs set the same list there.")


def _override(section: str, key: str, value: Any) -> str:
    """One ``--section.key value`` override (booleans as ``--section.key`` / ``--section.no_key``,
    the form torchtitan's config manager parses)."""
    if isinstance(value, bool):
        return f"--{section}.{key}" if value else f"--{section}.no_{key}"
    return f"--{section}.{key} {value}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        if value and isinstance(value[0], list):
            rows = ",\n".join("  " + _toml_value(v) for v in value)
            return "[\n" + rows + ",\n]"
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml_text(sections: list[tuple[str, list[tuple[str, Any]]]], header: str) -> str:
    """A TOML document of flat sections (strings, ints, bools, lists of them, lists of lists)."""
    lines = [f"# {header}", "# Generated by meshplan."]
    for name, items in sections:
        lines += ["", f"[{name}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in items]
    return "\n".join(lines) + "\n"
