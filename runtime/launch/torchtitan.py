"""torchtitan: the launch script (command-line overrides) and, for the TOML era, a job TOML.

What each release calls things — Python configs (``--module/--config``) or a TOML, the
activation-checkpointing subcommand, ``--training.disable_cuda_graphs``, where async TP lives,
the sequence-length divisor — is in one table, :mod:`runtime.launch.torchtitan_versions`
(``training.framework_version``, default the current release 0.3). The rules every release
shares are here, from torchtitan's sources (pytorch/torchtitan; read in the 0.2.2 and 0.3.0
wheels on PyPI):

* ``torchtitan/distributed/parallel_dims.py`` ``ParallelDims._validate``: dp_replicate ·
  dp_shard · cp · tp · pp = world size; ``build_mesh`` unflattens the sparse (expert) mesh to
  (pp, dp_replicate, efsdp, ep), so the ranks EP borrows must divide by ep.
* ``torchtitan/models/llama3/parallelize.py`` (0.2) / ``models/common/decoder_sharding.py``
  (0.3): DDP (``data_parallel_replicate_degree`` alone) only without other parallelism; FSDP
  whenever dp_shard > 1 or cp > 1; ``fsdp_reshard_after_forward``.
* ``torchtitan/distributed/pipeline_parallel.py``: ``pipeline_llm`` / ``_get_pipeline_metadata``
  (stages per rank: 1 for single-stage schedules, ≥ 2 for multi-stage ones;
  ``pipeline_parallel_layers_per_stage`` sets the stage count to ceil((layers + first_less +
  last_less) / layers_per_stage)), ``generate_llm_fqn_per_model_part`` (how the layers are
  split), ``build_pipeline_schedule`` (local batch divisible by the micro-batch size;
  ``pipeline_parallel_schedule_csv`` loads a ``_PipelineScheduleRuntime``) and
  ``pipeline_module_split`` (loop or V placement).
* ``torchtitan/train.py`` (0.2) / ``trainer.py`` (0.3): global batch divisible by local batch ·
  dp degree (the rest is gradient accumulation).

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

from costmodel.specs.gpus import get_gpu
from costmodel.specs.presets import get_preset
from costmodel.stacks.stack import get_stack, resolve_fp8_recipe
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
from runtime.launch.torchtitan_versions import TorchtitanRelease, torchtitan_release

TOML_NAME = "meshplan_torchtitan.toml"
CSV_NAME = "meshplan_schedule.csv"


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


def module_fqns(target: Sequence[int], lm_head: str = "lm_head") -> list[list[str]]:
    """``module_fqns_per_model_part`` for an arbitrary split (torchtitan's module names:
    ``tok_embeddings``, ``layers.N``, ``norm`` and the LM head, ``lm_head`` in 0.3 and
    ``output`` in 0.2: :attr:`TorchtitanRelease.lm_head_module`)."""
    out: list[list[str]] = []
    start = 0
    for i, n in enumerate(target):
        part = [f"layers.{j}" for j in range(start, start + n)]
        start += n
        if i == 0:
            part.insert(0, "tok_embeddings")
        if i == len(target) - 1:
            part += ["norm", lm_head]
        out.append(part)
    return out


def _same_preset(job: Job) -> str | None:
    """The meshplan preset the job's model is, unchanged (None for any other model)."""
    name = job.model.name
    try:
        return name if get_preset(name) == job.model else None
    except ValueError:
        return None


def _model_choice(job: Job, rel: TorchtitanRelease, notes: list[str]) -> tuple[str, str]:
    """(module, config) for Python configs, (model.name, model.flavor) for the TOML era: the
    release's own entry for a preset of the same shape, else placeholders and a note."""
    model, training = job.model, job.training
    preset = _same_preset(job)
    known = rel.presets.get(preset) if preset is not None else None
    shape = (f"{model.num_hidden_layers} layers, dim {model.hidden_size}, "
             f"{model.num_attention_heads} heads, {model.kv_heads} KV heads, FFN "
             f"{model.intermediate_size}, vocab {model.vocab_size}")
    if not rel.python_configs:
        if known is None:
            notes.append(f"torchtitan {rel.release} has no flavor registered for "
                         f"{model.name!r}: register one with its shape ({shape}) and replace "
                         f"model.name / model.flavor in {TOML_NAME}.")
            return "REPLACE-with-torchtitan-model", f"REPLACE-{model.name}"
        return known
    if known is None:
        notes.append(f"torchtitan {rel.release} has no config for {model.name!r}: write a "
                     "config_registry function returning a Trainer.Config whose model_spec has "
                     f"its shape ({shape}) and pass its module and name as --module / --config.")
        return "REPLACE-with-your-config-module", f"REPLACE-{model.name}-config"
    module, config = known
    if training.precision == "fp8":
        # the recipe the estimate assumed: training.fp8_recipe or the stack's default
        recipe = resolve_fp8_recipe(get_stack("torchtitan"), training.fp8_recipe,
                                    get_gpu(job.pool.gpu).arch)
        fp8_config = rel.fp8_presets.get((preset or "", recipe))
        if fp8_config is not None:
            notes.append(f"fp8 ({recipe}) is torchtitan's {fp8_config} config (its model_spec "
                         "carries the converter); install torchao.")
            return module, fp8_config
        notes.append(f"torchtitan {rel.release} sets FP8 in the model config "
                     "(model_registry(..., converters=[Float8LinearConverter.Config()]), "
                     f"models/{module}/config_registry.py), not by an option: derive a config "
                     f"from {config} with the {recipe} converter and pass it as --config.")
        return module, f"REPLACE-{config}-with-fp8-{recipe}"
    return module, config


def render_torchtitan(job: Job) -> LaunchConfig:
    plan, training = job.plan, job.training
    rel = torchtitan_release(job.version)
    r = Refusals()
    notes: list[str] = []
    files: dict[str, str] = {}
    refuse_common(job, r, "torchtitan")
    r.check(training.precision != "fp16", "training.precision",
            "torchtitan trains with bf16 or fp32 parameters only: "
            "training.mixed_precision_param is 'bfloat16' | 'float32' "
            f"(torchtitan {rel.release}, "
            + ("config/configs.py, TrainingConfig)" if rel.python_configs
               else "config/job_config.py, Training)"))
    r.check(training.grad_reduce_dtype != "bf16", "training.grad_reduce_dtype",
            f"torchtitan {rel.release} reduces gradients in float32 only: "
            "training.mixed_precision_reduce is Literal['float32'] (torchtitan 0.3.0 "
            "config/configs.py); use grad_reduce_dtype null or fp32")
    k = plan.recompute_num_layers
    r.check(k is None, "plan.recompute_num_layers",
            f"torchtitan {rel.release} cannot recompute only the first {k} layers of each "
            "pipeline stage: "
            + ("activation_checkpoint:full wraps every transformer block "
               "(distributed/activation_checkpoint.py, ActivationCheckpointing.apply / FullAC) "
               "and no option picks some of them" if rel.python_configs else
               "mode 'full' wraps every transformer block, and selective_ac_option = N "
               "checkpoints every N-th block the process builds (distributed/"
               "activation_checkpoint.py, _apply_layer_sac: _layer_sac_count % ac_freq), not the "
               "first N of each stage")
            + "; use recompute 'full' without recompute_num_layers, or the megatron format")

    # ---- data parallelism: ZeRO stage -> DDP / FSDP (module docstring)
    others = [f"{k}={v}" for k, v in (("tp", plan.tp), ("pp", plan.pp), ("cp", plan.cp),
                                       ("ep", plan.ep)) if v > 1]
    reshard: str | None = None
    if plan.zero_stage == 0:
        if rel.ddp_only_alone:
            r.check(not others or plan.dp == 1, "plan.zero_stage",
                    f"torchtitan {rel.release} runs unsharded data parallelism (DDP, "
                    "data_parallel_replicate_degree) only when it is the only parallelism "
                    "(models/llama3/infra/parallelize.py, parallelize_llama: 'DDP has not "
                    "supported > 1D parallelism'; with cp > 1 it always shards, "
                    f"ParallelDims.fsdp_enabled); this plan has {', '.join(others)}: use "
                    "zero_stage >= 1 (FSDP) or torchtitan 0.3")
        elif plan.cp > 1 and plan.dp > 1:
            notes.append("With cp > 1 torchtitan shards parameters over the context-parallel "
                         "ranks (FSDP over cp, HSDP replicated over dp): less memory than the "
                         "zero_stage 0 estimate.")
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
    if plan.cp > 1 and plan.zero_stage > 0:
        notes.append("torchtitan shards parameters over the context-parallel ranks too (FSDP "
                     "mesh dp_shard·cp), which the estimate does not count: less memory.")

    sp = plan.sequence_parallel or not rel.sequence_parallel_switch
    div = rel.seq_len_divisor(plan.tp, plan.cp, sp)
    formula, source = rel.seq_len_rule()
    r.check(training.seq_len % div == 0, "training.seq_len",
            f"torchtitan needs seq_len divisible by {formula} = {div} ({source}); "
            f"seq_len={training.seq_len}")
    if plan.ep > 1:
        borrow = rel.expert_borrow(plan.tp)
        pool_ranks = shard * plan.cp * borrow
        what = "dp_shard·cp" + ("·tp" if borrow > 1 else "")
        r.check(pool_ranks % plan.ep == 0, "plan.ep",
                f"torchtitan's expert parallelism borrows {what} ranks (ParallelDims.build_mesh "
                f"unflattens efsdp = {what} / ep; torchtitan {rel.release}"
                + (", expert_tensor_parallel_degree = tp" if rel.expert_tensor_parallel
                   else "") + f"): {what} = {pool_ranks} is not a multiple of ep={plan.ep}")

    # ---- parallelism
    par: list[tuple[str, Any]] = [
        ("data_parallel_replicate_degree", replicate),
        ("data_parallel_shard_degree", shard),
    ]
    if reshard is not None:
        par.append(("fsdp_reshard_after_forward", reshard))
    par += [("tensor_parallel_degree", plan.tp), ("context_parallel_degree", plan.cp),
            ("pipeline_parallel_degree", plan.pp)]
    if rel.sequence_parallel_switch and plan.tp > 1 and not plan.sequence_parallel:
        par.append(("enable_sequence_parallel", False))
    toml_only: list[tuple[str, Any]] = []
    if plan.pp > 1:
        _pipeline(job, rel, r, par, toml_only, files, notes)
    if plan.ep > 1:  # only then: TOML-era versions before expert parallelism lack the key
        par.append(("expert_parallel_degree", plan.ep))
    if plan.ep > 1 and plan.tp > 1 and rel.expert_tensor_parallel:
        toml_only.append(("expert_tensor_parallel_degree", plan.tp))
    compile_sec: list[tuple[str, Any]] = []
    titan = get_stack("torchtitan")
    why = titan.compile_problem(plan.torch_compile, plan.tp_comm_overlap, plan.tp)
    r.check(why is None, "plan.torch_compile", why or "")
    if bool(titan.compiled(plan.tp_comm_overlap, plan.tp, plan.torch_compile)):
        # the cost model's rule for when torchtitan's blocks are compiled (its estimate
        # costs them so): plan.torch_compile, or by default where async TP needs it
        compile_sec.append(("enable", True))
    elif training.framework == "torchtitan":
        notes.append("torch.compile stays off (torchtitan's default), as the estimate assumed: "
                     "the blocks' pointwise ops (rotary embedding, silu * mul) run as separate "
                     "eager torch kernels (costmodel/data/stacks/torchtitan.json elementwise). "
                     "Enabling compile.enable fuses them (estimate it with plan.torch_compile "
                     "true); the step then runs faster than this estimate.")
    if plan.tp_comm_overlap and plan.tp > 1:
        dest = compile_sec if rel.async_tp_section == "compile" else par
        dest.append(("enable_async_tensor_parallel", True))
        notes.append("Overlapping TP communication is torchtitan's async TP, which needs "
                     "torch.compile (compile.enable).")
    r.raise_if_any()

    # ---- training, precision, activation checkpointing
    # pp > 1: a step's batch per rank, split into pipeline micro-batches; pp = 1: one
    # micro-batch per forward, the rest is gradient accumulation (train.py / trainer.py)
    local = training.global_batch_size // plan.dp if plan.pp > 1 else plan.micro_batch_size
    tr: list[tuple[str, Any]] = [
        ("local_batch_size", local), ("global_batch_size", training.global_batch_size),
        ("seq_len", training.seq_len), ("mixed_precision_param", "bfloat16"),
        ("mixed_precision_reduce", "float32"),
    ]
    if rel.cuda_graphs_switch and (plan.pp > 1 or plan.ep > 1):
        tr.append(("disable_cuda_graphs", True))
        notes.append("--training.disable_cuda_graphs: torchtitan "
                     f"{rel.release}'s CUDA graphs do not support "
                     + ("pipeline parallelism" if plan.pp > 1 else
                        "expert parallelism with the default token dispatcher")
                     + " (trainer.py, Trainer.Config._validate_cuda_graphs).")
    if plan.recompute == "selective":
        policy = ("torchtitan's selective activation checkpointing is per-op: it keeps the "
                  "outputs of attention and of every other linear layer and recomputes the rest")
        if training.framework == "torchtitan":
            notes.append(policy + "; the estimate assumed this policy (training.framework "
                         "torchtitan: costmodel/data/stacks/torchtitan.json recompute).")
        else:
            notes.append(policy + f"; the estimate assumed {training.framework or 'megatron'}'s "
                         "selective recompute (attention core only), which keeps more and "
                         "recomputes less: estimate with training.framework 'torchtitan' for "
                         "its memory and step time.")
    module, config = _model_choice(job, rel, notes)
    if training.precision == "fp8" and not rel.python_configs:
        notes.append("fp8 uses torchao's Float8Linear (model.converters = ['float8']); install "
                     "torchao.")
    if plan.tp > 1 and not plan.sequence_parallel and not rel.sequence_parallel_switch:
        notes.append("torchtitan's tensor parallelism always shards norms and dropout over the "
                     "sequence (SequenceParallel); the plan has sequence_parallel off: less "
                     "activation memory than estimated.")
    if plan.attention == "unfused":
        notes.append("torchtitan runs fused attention (SDPA / FlexAttention); the plan assumes "
                     "unfused attention: faster and leaner than estimated.")
    if plan.zero_stage == 3 and plan.zero3_unit == "module":
        notes.append("FSDP2 in torchtitan gathers one transformer block at a time; the plan "
                     "assumes per-module gathering (zero3_unit='module').")

    sections = [("training", tr), ("parallelism", par)]
    if compile_sec:
        sections.append(("compile", compile_sec))
    if rel.python_configs:
        words = ["-m torchtitan.train", f"--module {module}", f"--config {config}"]
        # a list-of-lists option first: tyro reads words up to the next option into it, so
        # last it would swallow the activation_checkpoint subcommand
        for section, items in (("parallelism", toml_only), *sections):
            words += [_override(section, key, value) for key, value in items]
        # the subcommand goes last: tyro gives every option after it to the subcommand
        target = [*words, '"$@"', f"activation_checkpoint:{plan.recompute}"]
        data_note = ("Extra arguments to the script go to torchtitan.train (before the "
                     "activation_checkpoint subcommand): supply the data and tokenizer "
                     "(--dataloader.dataset, --hf_assets_path) and --training.steps.")
        file_note = (f"torchtitan {rel.release} reads no TOML: --module / --config pick the "
                     "registered config and the overrides set the plan; activation "
                     f"checkpointing is the activation_checkpoint:{plan.recompute} subcommand, "
                     "which must stay last (training.framework_version = '0.2' writes the "
                     "TOML-era script).")
    else:
        ac: list[tuple[str, Any]] = [("mode", plan.recompute)]
        ac_toml: list[tuple[str, Any]] = []
        if plan.recompute == "selective":
            ac_toml.append(("selective_ac_option", "op"))
        model_sec: list[tuple[str, Any]] = [("name", module), ("flavor", config)]
        if training.precision == "fp8":
            model_sec.append(("converters", ["float8"]))
        toml_sections: list[tuple[str, list[tuple[str, Any]]]] = [
            ("job", [("description", f"meshplan: {job.summary()}")]),
            ("model", model_sec),
            ("training", tr),
            ("parallelism", par + toml_only),
            ("activation_checkpoint", ac + ac_toml),
        ]
        if compile_sec:
            toml_sections.append(("compile", compile_sec))
        files[TOML_NAME] = toml_text(
            toml_sections, header=f"torchtitan {rel.release} job config for {job.summary()}")
        overrides = [_override(section, key, value)
                     for section, items in (*sections, ("activation_checkpoint", ac))
                     for key, value in items]
        if training.precision == "fp8":
            overrides.append("--model.converters float8")
        target = ["-m torchtitan.train", f"--job.config_file {TOML_NAME}", *overrides, '"$@"']
        data_note = ("Extra arguments to the script go to torchtitan.train: supply the data and "
                     "tokenizer (--training.dataset / --training.dataset_path, "
                     "--model.hf_assets_path) and --training.steps.")
        file_note = (f"torchtitan {rel.release} (TOML era) reads {TOML_NAME}; the overrides on "
                     "the command line repeat it. torchtitan 0.3 takes --module / --config and an "
                     "activation_checkpoint subcommand instead: render with "
                     "training.framework_version = '0.3' for it.")
    content = torchrun_script(job, target, title=f"torchtitan {rel.release}")
    notes = [*launcher_notes(job), data_note, file_note, *notes]
    return LaunchConfig(format="torchtitan", filename="torchtitan_launch.sh",
                        media_type=MEDIA_SHELL, content=content, files=files, notes=notes)


def _pipeline(job: Job, rel: TorchtitanRelease, r: Refusals, par: list[tuple[str, Any]],
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
        toml_only.append(("module_fqns_per_model_part",
                          module_fqns(job.stage_layers, rel.lm_head_module)))
        where = ("the command line lists" if rel.python_configs
                 else f"{TOML_NAME} lists")
        notes.append(f"torchtitan's even split (generate_llm_fqn_per_model_part) cannot make "
                     f"this plan's stages {list(job.stage_layers)}: {where} each stage's "
                     "modules (parallelism.module_fqns_per_model_part).")


def _override(section: str, key: str, value: Any) -> str:
    """One ``--section.key value`` override (booleans as ``--section.key`` / ``--section.no_key``,
    the form torchtitan's config manager parses)."""
    if isinstance(value, bool):
        return f"--{section}.{key}" if value else f"--{section}.no_{key}"
    if isinstance(value, list):  # list[list[str]]: one comma-joined word per inner list
        return f"--{section}.{key} " + " ".join(",".join(part) for part in value)
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
