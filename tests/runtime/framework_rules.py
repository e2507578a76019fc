"""The frameworks' own validation rules, re-implemented from their sources for the tests.

Each check names the file and function that holds the rule (torchtitan: pytorch/torchtitan;
Megatron-LM: NVIDIA/Megatron-LM; DeepSpeed: microsoft/DeepSpeed; torch: the installed
``torch/distributed/pipelining/schedules.py``). The checks read only what an emitter wrote
(the launch script, the TOML, the argument list, the ds_config) and are written independently
of ``runtime.launch``: they are the oracle its output is held to. Each checker returns the list
of broken rules (empty = the config passes) and, separately, checks that the config runs the
*plan* it was rendered from (degrees, batch, layer split), so a config that is valid but wrong
fails too.
"""

from __future__ import annotations

import json
import math
import shlex
import tomllib
from dataclasses import dataclass
from typing import Any

from costmodel.specs.request import EstimateRequest, num_microbatches, parse, stage_layers
from runtime.launch import LaunchConfig

# ---------------------------------------------------------------------------- script parsing


@dataclass
class Launch:
    """What a generated launch script runs: processes per torchrun command and the words after
    the torchrun options (the program and its arguments), plus exported variables."""

    world: int
    nnodes: int
    program: list[str]
    env: dict[str, str]


def parse_script(script: str) -> Launch:
    """Read the torchrun commands of a script written by runtime.launch (one or more
    ``torchrun`` commands with backslash continuations; ``export K=V`` lines)."""
    env: dict[str, str] = {}
    joined = script.replace("\\\n", " ")
    world = 0
    nnodes: set[int] = set()
    programs: list[list[str]] = []
    groups = []
    comment_nodes = 1
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("export "):
            k, v = line[len("export "):].split("=", 1)
            env[k] = v
        if line.startswith("# on "):
            comment_nodes = int(line.split()[2])
        if not line.startswith("torchrun "):
            continue
        words = shlex.split(line, posix=True)[1:]
        opts: dict[str, str | None] = {}
        i = 0
        while i < len(words) and words[i].startswith("--"):
            key = words[i]
            if key == "--standalone":
                opts[key] = None
                i += 1
                continue
            opts[key] = words[i + 1]
            i += 2
        program = words[i:]
        nproc = int(opts["--nproc-per-node"] or 0)
        n = 1 if "--standalone" in opts else int(opts["--nnodes"] or 0)
        nnodes.add(n)
        groups.append((comment_nodes, nproc))
        programs.append(program)
    assert programs, "no torchrun command in the script"
    assert len({tuple(p) for p in programs}) == 1, "torchrun commands run different programs"
    assert len(nnodes) == 1, "torchrun commands disagree on --nnodes"
    total_nodes = nnodes.pop()
    assert sum(g[0] for g in groups) == total_nodes, "node groups do not add up to --nnodes"
    world = sum(nodes * nproc for nodes, nproc in groups)
    return Launch(world=world, nnodes=total_nodes, program=programs[0], env=env)


def _request(request: EstimateRequest | dict[str, Any]) -> EstimateRequest:
    req: EstimateRequest = parse(EstimateRequest, request)
    return req


# ---------------------------------------------------------------------------- torch schedules

TORCH_SCHEDULE_CLASSES = {
    # get_schedule_class map (torch/distributed/pipelining/schedules.py); True = single-stage
    "1f1b": ("1F1B", True), "interleaved1f1b": ("Interleaved1F1B", False),
    "gpipe": ("GPipe", True), "loopedbfs": ("LoopedBFS", False),
    "interleavedzerobubble": ("InterleavedZeroBubble", False),
    "pipelineschedulesingle": ("PipelineScheduleSingle", True),
    "pipelineschedulemulti": ("PipelineScheduleMulti", False),
    "zbvzerobubble": ("ZBVZeroBubble", False), "dualpipev": ("DualPipeV", False),
}


def torch_schedule_problems(name: str, pp: int, n_local: int, n_mb: int) -> list[str]:
    """Constructor rules of torch's schedules (schedules.py): Schedule1F1B.__init__ and
    ScheduleDualPipeV.__init__ (n_microbatches >= stages), ScheduleInterleaved1F1B /
    ScheduleInterleavedZeroBubble.__init__ (n_microbatches % rounds == 0, rounds =
    max(1, n_microbatches // pp)), ScheduleZBVZeroBubble / ScheduleDualPipeV (2 local stages)."""
    out = []
    stages = pp * n_local
    if name in ("1F1B", "DualPipeV") and n_mb < stages:
        out.append(f"schedules.py {name}: n_microbatches {n_mb} < stages {stages}")
    if name in ("Interleaved1F1B", "InterleavedZeroBubble"):
        rounds = max(1, n_mb // pp)
        if n_mb % rounds:
            out.append(f"schedules.py {name}: n_microbatches {n_mb} % rounds {rounds} != 0")
    if name in ("ZBVZeroBubble", "DualPipeV") and n_local != 2:
        out.append(f"schedules.py {name}: needs exactly 2 stages per rank, got {n_local}")
    return out


# ---------------------------------------------------------------------------- torchtitan


def titan_fqn_split(num_stages: int, num_layers: int, input_weight: int,
                    output_weight: int, head: str = "output") -> list[list[str]]:
    """torchtitan/distributed/pipeline_parallel.py generate_llm_fqn_per_model_part, as
    written there (module names per stage; the LM head is ``output`` in 0.2.2, ``lm_head`` in
    0.3.0); raises ValueError where it does."""
    if num_stages < 1:
        raise ValueError("Number of stages must be at least 1")
    if num_stages == 1:
        return [["tok_embeddings"] + [f"layers.{i}" for i in range(num_layers)]
                + ["norm", head]]
    eff = num_layers + input_weight + output_weight
    if num_stages > eff:
        raise ValueError("Number of stages cannot be greater than effective layers")
    per, extra = eff // num_stages, eff % num_stages
    if per == 0:
        raise ValueError("Configuration would result in empty stages")
    if input_weight > per:
        raise ValueError("input_weight exceeds minimum layers per stage")
    if output_weight > per:
        raise ValueError("output_weight exceeds minimum layers per stage")
    out = []
    cur = 0
    for idx in range(num_stages):
        mods: list[str] = []
        n = per + (1 if idx < extra else 0)
        if idx == 0:
            mods.append("tok_embeddings")
            for _ in range(n - input_weight):
                if cur < num_layers:
                    mods.append(f"layers.{cur}")
                    cur += 1
        elif idx == num_stages - 1:
            for _ in range(n - output_weight):
                if cur < num_layers:
                    mods.append(f"layers.{cur}")
                    cur += 1
            mods += ["norm", head]
        else:
            for _ in range(n):
                if cur < num_layers:
                    mods.append(f"layers.{cur}")
                    cur += 1
        out.append(mods)
    return out


def titan_overrides(program: list[str]) -> dict[str, Any]:
    """``--section.key value`` overrides after ``-m torchtitan.train`` (TOML-typed values;
    several words after a key = ``list[list[str]]``, each word comma-separated as torchtitan's
    tyro rule for ``list[str]`` reads it, config/manager.py ``register_tyro_rules``); a
    trailing ``activation_checkpoint:<mode>`` subcommand (0.3) as ``activation_checkpoint``."""
    assert program[:2] == ["-m", "torchtitan.train"], program[:2]
    program = [w for w in program if w != "$@"]
    out: dict[str, Any] = {}
    i = 2
    while i < len(program):
        word = program[i]
        if word.startswith("activation_checkpoint:"):
            assert i == len(program) - 1, "tyro: options after a subcommand belong to it"
            out["activation_checkpoint"] = word.split(":", 1)[1]
            i += 1
            continue
        assert word.startswith("--"), word
        j = i + 1
        while j < len(program) and not program[j].startswith(("--", "activation_checkpoint:")):
            j += 1
        values = program[i + 1:j]
        if not values:
            key = word[2:]
            section, _, name = key.partition(".")
            if name.startswith("no_"):
                out[f"{section}.{name[3:]}"] = False
            else:
                out[key] = True
        elif len(values) > 1 or word == "--parallelism.module_fqns_per_model_part":
            out[word[2:]] = [v.split(",") for v in values]
        else:
            value: Any = values[0]
            if value.lstrip("-").isdigit():
                value = int(value)
            out[word[2:]] = value
        i = j
    return out


def titan_settings(cfg: LaunchConfig) -> tuple[str, dict[str, dict[str, Any]]]:
    """The release a torchtitan launch script is for ('0.3': ``--module/--config``, '0.2':
    ``--job.config_file``) and its settings by section (0.3: from the command line; 0.2: the
    TOML, which the overrides must restate). 0.3's activation checkpointing subcommand is
    ``activation_checkpoint.mode``."""
    over = titan_overrides(parse_script(cfg.content).program)
    if "module" in over:
        settings: dict[str, dict[str, Any]] = {}
        for key, value in over.items():
            if key in ("module", "config"):
                settings.setdefault("", {})[key] = value
            elif key == "activation_checkpoint":
                settings["activation_checkpoint"] = {"mode": value}
            else:
                section, name = key.split(".", 1)
                settings.setdefault(section, {})[name] = value
        return "0.3", settings
    toml_name = over.pop("job.config_file")
    assert toml_name in cfg.files, f"{toml_name} missing from files"
    toml = tomllib.loads(cfg.files[toml_name])
    for key, value in over.items():  # the overrides restate the TOML
        section, name = key.split(".", 1)
        if section == "model" and name == "converters":
            value = [value]
        assert toml[section][name] == value, (key, toml[section][name], value)
    return "0.2", toml


def check_torchtitan(cfg: LaunchConfig, request: EstimateRequest | dict[str, Any]) -> list[str]:
    """torchtitan's rules on the emitted script (+ TOML for 0.2), and agreement with the plan.

    0.3.0 (Python configs): ``trainer.py`` ``Trainer.Config._validate_cuda_graphs`` and
    ``Trainer.__init__`` (sequence-length divisor), ``parallel_dims.py`` ``build_mesh``
    (efsdp = dp_shard·cp·tp / ep); 0.2.2 (TOML): ``parallel_dims.py`` ``_validate`` /
    ``_validate_meshes`` (etp = tp or 1; efsdp = dp_shard·cp·tp / (etp·ep)),
    ``seq_len_divisor`` tp·2·cp, ``parallelize_llama`` (DDP only alone)."""
    req = _request(request)
    plan, model, training = req.plan, req.model, req.training
    launch = parse_script(cfg.content)
    era, toml = titan_settings(cfg)
    new = era == "0.3"
    par, tr = toml["parallelism"], toml["training"]
    ac = toml.get("activation_checkpoint", {})
    p: list[str] = []

    rep = par.get("data_parallel_replicate_degree", 1)
    shard = par.get("data_parallel_shard_degree", -1)
    cp = par.get("context_parallel_degree", 1)
    tp = par.get("tensor_parallel_degree", 1)
    pp = par.get("pipeline_parallel_degree", 1)
    ep = par.get("expert_parallel_degree", 1)
    etp = par.get("expert_tensor_parallel_degree", 1)
    world = launch.world
    # torchtitan/distributed/parallel_dims.py ParallelDims._validate
    if new and "expert_tensor_parallel_degree" in par:
        p.append("configs.py ParallelismConfig: no expert_tensor_parallel_degree in 0.3")
    if any(d < 1 for d in (rep, cp, tp, pp, ep, etp)):
        p.append("parallel_dims.py _validate: degrees >= 1")
    if not (shard == -1 or shard >= 1):
        p.append("parallel_dims.py _validate: dp_shard must be -1 or >= 1")
    if shard < 0:
        shard = world // (rep * cp * tp * pp)
    if rep * shard * cp * tp * pp != world:
        p.append(f"parallel_dims.py _validate: {rep}*{shard}*{cp}*{tp}*{pp} != {world}")
    if ep > 1:
        if etp not in (tp, 1):
            p.append("parallel_dims.py _validate: ETP must be TP or 1")
        elif (shard * cp * tp) % (etp * ep):
            p.append("parallel_dims.py build_mesh: efsdp = dp_shard*cp*tp / (etp*ep) "
                     "not whole")
    sp = par.get("enable_sequence_parallel", True)
    if new:  # trainer.py Trainer.__init__
        div = (tp if sp else 1) * (2 * cp if cp > 1 else 1)
        if tr["seq_len"] % div:
            p.append(f"trainer.py Trainer.__init__: seq_len % {div} != 0")
        if (pp > 1 or ep > 1) and not tr.get("disable_cuda_graphs", False):
            p.append("trainer.py _validate_cuda_graphs: pp / ep need disable_cuda_graphs")
        if toml.get("compile", {}).get("enable_async_tensor_parallel") and not toml.get(
                "compile", {}).get("enable"):
            p.append("configs.py CompileConfig: async TP requires compile.enable")
    else:  # models/llama3/infra/parallelize.py parallelize_llama (seq_len_divisor)
        if tr["seq_len"] % (tp * cp * 2):
            p.append("parallelize.py parallelize_llama: seq_len % (tp * 2 * cp) != 0")
        fsdp = shard > 1 or cp > 1
        if not fsdp and rep > 1 and world != rep:
            p.append("parallelize.py: DDP has not supported > 1D parallelism")
    # config literals (config/job_config.py)
    if tr.get("mixed_precision_param", "bfloat16") not in ("bfloat16", "float32"):
        p.append("job_config.py Training.mixed_precision_param literal")
    if par.get("fsdp_reshard_after_forward", "default") not in ("default", "always", "never"):
        p.append("job_config.py Parallelism.fsdp_reshard_after_forward literal")
    modes = ("selective", "full", "memory-budget", "none") if new else (
        "selective", "full", "memory_budget", "none")
    if ac.get("mode", "selective") not in modes:
        p.append("activation checkpointing mode / subcommand unknown")
    # train.py: global batch a multiple of local batch * dp degree
    local = tr["local_batch_size"]
    glob = tr.get("global_batch_size", -1)
    if glob < 0:
        glob = local * rep * shard
    if glob % (local * rep * shard):
        p.append("train.py: global batch % (local batch * dp degree) != 0")
    accum = glob // (local * rep * shard)

    # pipeline: pipeline_parallel.py
    layers = model.num_hidden_layers
    mbs = par.get("pipeline_parallel_microbatch_size", 1)
    n_mb_pp = 1
    if pp > 1:
        if local % mbs:  # build_pipeline_schedule
            p.append("pipeline_parallel.py build_pipeline_schedule: local batch % microbatch")
        n_mb_pp = local // mbs
        name = par.get("pipeline_parallel_schedule", "1F1B")
        entry = TORCH_SCHEDULE_CLASSES.get(name.lower())
        if entry is None:
            return [*p, f"schedules.py get_schedule_class: unknown schedule {name}"]
        canonical, single = entry
        lps = par.get("pipeline_parallel_layers_per_stage")
        iw = par.get("pipeline_parallel_first_stage_less_layers", 1)
        ow = par.get("pipeline_parallel_last_stage_less_layers", 1)
        if lps is not None:  # pipeline_llm
            stages = math.ceil((layers + iw + ow) / lps)
            if stages % pp:
                p.append("pipeline_parallel.py pipeline_llm: stages % pp != 0")
            spr = stages // pp
            if single and spr != 1:
                p.append("pipeline_parallel.py pipeline_llm: single-stage needs 1 per rank")
            if not single and spr < 2:
                p.append("pipeline_parallel.py pipeline_llm: multi-stage needs >= 2 per rank")
        else:
            stages = pp * (1 if single else 2)
        fqns = par.get("module_fqns_per_model_part")
        head = "lm_head" if new else "output"
        if fqns is None:
            try:
                fqns = titan_fqn_split(stages, layers, iw, ow, head)
            except ValueError as exc:
                return [*p, f"pipeline_parallel.py generate_llm_fqn_per_model_part: {exc}"]
        stages = len(fqns)
        if stages % pp:  # pipeline_module_split._get_stage_indices
            p.append("pipeline_parallel.py pipeline_module_split: stages % pp != 0")
        n_local = stages // pp
        if canonical in ("ZBVZeroBubble", "DualPipeV") and n_local != 2:
            p.append("pipeline_parallel.py pipeline_module_split: v schedules assume 2 per rank")
        if fqns[-1][-2:] != ["norm", head]:
            p.append(f"module_fqns: the last stage must end with norm, {head}")
        csv = par.get("pipeline_parallel_schedule_csv")
        if new and not csv and canonical == "PipelineScheduleSingle":
            p.append("pipeline_parallel.py _build_pipeline_schedule: PipelineScheduleSingle is "
                     "abstract")
        if csv:
            if csv not in cfg.files:
                p.append(f"pipeline_parallel.py build_pipeline_schedule: {csv} does not exist")
        else:
            p += torch_schedule_problems(canonical, pp, n_local, n_mb_pp)
        # the split torchtitan builds is the plan's
        got = [sum(1 for m in part if m.startswith("layers.")) for part in fqns]
        order = [int(m.split(".")[1]) for part in fqns for m in part if m.startswith("layers.")]
        if order != list(range(layers)):
            p.append("module_fqns: layers not in model order")
        if got != stage_layers(model, plan):
            p.append(f"split {got} != plan {stage_layers(model, plan)}")
    # the job is the plan's
    if (tp, pp, cp, ep, rep * shard) != (plan.tp, plan.pp, plan.cp, plan.ep, plan.dp):
        p.append("degrees differ from the plan")
    if world != plan.num_gpus:
        p.append("world size differs from the plan")
    if glob != training.global_batch_size or tr["seq_len"] != training.seq_len:
        p.append("batch or sequence differs from the plan")
    per_forward = mbs if pp > 1 else local
    if per_forward != plan.micro_batch_size or n_mb_pp * accum != num_microbatches(training, plan):
        p.append("micro-batching differs from the plan")
    if ac.get("mode") != plan.recompute:
        p.append("activation checkpointing differs from the plan")
    return p


# ---------------------------------------------------------------------------- Megatron-LM

MEGATRON_FLAGS_WITHOUT_VALUE = {
    "--group-query-attention", "--swiglu", "--untie-embeddings-and-output-weights",
    "--disable-bias-linear", "--add-qkv-bias", "--sequence-parallel", "--bf16", "--fp16",
    "--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather",
    "--tp-comm-overlap", "--multi-latent-attention", "--moe-router-enable-expert-bias",
    "--no-overlap-p2p-communication", "--qk-layernorm", "--grad-reduce-in-bf16",
    "--cpu-offloading",
}


def megatron_args(program: list[str]) -> dict[str, Any]:
    """``pretrain_gpt.py`` arguments as argparse would store them (store_true flags True)."""
    assert program[0] == "pretrain_gpt.py", program[0]
    words = [w for w in program[1:] if w != "$@"]
    out: dict[str, Any] = {}
    i = 0
    while i < len(words):
        flag = words[i]
        assert flag.startswith("--"), flag
        assert flag not in out, f"{flag} given twice"
        if flag in MEGATRON_FLAGS_WITHOUT_VALUE:
            out[flag] = True
            i += 1
        else:
            out[flag] = words[i + 1]
            i += 2
    return out


def megatron_layers(L: int, pp: int, vp: int | None, first: int | None,
                    last: int | None) -> list[list[int]]:
    """megatron/core/transformer/transformer_block.py get_num_layers_to_build for every
    (pipeline rank, virtual stage); AssertionError where Megatron asserts."""
    out = []
    for rank in range(pp):
        if first is not None or last is not None:
            left, stages_left = L, pp
            if first is not None:
                left -= first
                stages_left -= 1
            if last is not None:
                left -= last
                stages_left -= 1
            if stages_left > 0:
                assert left % stages_left == 0, "middle layers not divisible"
                per_rank = left // stages_left
            else:
                per_rank = 0
            if rank == 0 and first is not None:
                per_rank = first
            if rank == pp - 1 and last is not None:
                per_rank = last
        else:
            assert L % pp == 0, "num_layers % pp"
            per_rank = L // pp
        if vp is not None and pp > 1:
            assert per_rank % vp == 0, "num_layers_per_pipeline_rank % vp_size"
            out.append([per_rank // vp] * vp)
        else:
            out.append([per_rank])
    return out


def check_megatron(cfg: LaunchConfig, request: EstimateRequest | dict[str, Any]) -> list[str]:
    """Megatron-LM's rules on the emitted script, and agreement with the plan."""
    req = _request(request)
    plan, model, training = req.plan, req.model, req.training
    launch = parse_script(cfg.content)
    a = megatron_args(launch.program)
    p: list[str] = []
    num = lambda flag, default=None: int(a[flag]) if flag in a else default  # noqa: E731
    tp = num("--tensor-model-parallel-size", 1)
    pp = num("--pipeline-model-parallel-size", 1)
    cp = num("--context-parallel-size", 1)
    ep = num("--expert-model-parallel-size", 1)
    L = num("--num-layers")
    heads = num("--num-attention-heads")
    world = launch.world
    # arguments.py validate_args
    if world % (tp * pp * cp):
        return [f"arguments.py: world {world} % (tp*pp*cp) != 0"]
    dp = world // (tp * pp * cp)
    nlpvs = num("--num-layers-per-virtual-pipeline-stage")
    nvspr = num("--num-virtual-stages-per-pipeline-rank")
    layout = a.get("--pipeline-model-parallel-layout")
    first = num("--decoder-first-pipeline-num-layers")
    last = num("--decoder-last-pipeline-num-layers")
    if sum(x is not None for x in (nlpvs, nvspr, layout)) > 1:
        p.append("arguments.py: at most one of the virtual-pipeline arguments")
    vp: int | None
    if nlpvs is not None or nvspr is not None:
        if nvspr is None:
            assert nlpvs is not None
            if first is not None or last is not None:
                p.append("arguments.py: uneven pipeline needs "
                         "--num-virtual-stages-per-pipeline-rank")
            if L % pp:
                p.append("arguments.py: layers % pp")
            elif (L // pp) % nlpvs:
                p.append("arguments.py: layers per stage % layers per virtual stage")
            vp = (L // pp) // nlpvs
        else:
            vp = nvspr
        if vp == 1:
            vp = None
    else:
        vp = None
        if first is None and last is None and L % pp:
            p.append("arguments.py: Number of layers should be divisible by pp")
    if vp is not None:
        if "--no-overlap-p2p-communication" in a and not pp > 2:
            p.append("arguments.py: interleaving without p2p overlap needs pp > 2")
        elif not pp > 1:
            p.append("arguments.py: interleaved schedule needs pp > 1")
    if "--overlap-param-gather" in a:
        if "--use-distributed-optimizer" not in a:
            p.append("arguments.py: --overlap-param-gather needs the distributed optimizer")
        if "--overlap-grad-reduce" not in a:
            p.append("arguments.py: --overlap-param-gather needs --overlap-grad-reduce")
    if "--fp16" in a and "--bf16" in a:
        p.append("arguments.py: fp16 and bf16 together")
    if a.get("--fp8-format") not in (None, "e4m3", "hybrid"):
        p.append("arguments.py: --fp8-format choices")
    seq = num("--seq-length")
    if cp > 1 and seq % (2 * cp):
        p.append("arguments.py: seq-length % (2*cp)")
    if num("--max-position-embeddings") < seq:
        p.append("arguments.py: max_position_embeddings < seq_length")
    gran = a.get("--recompute-granularity")
    method = a.get("--recompute-method")
    rnl = num("--recompute-num-layers")
    if gran == "selective" and (method is not None or rnl is not None):
        p.append("arguments.py / transformer_config.py: selective takes no method or layers")
    if gran == "full":
        if method not in ("uniform", "block"):
            p.append("transformer_config.py: full recompute needs method uniform|block")
        if rnl is None or not 1 <= rnl <= L // pp:
            p.append("transformer_config.py: recompute_num_layers between 1 and L/pp")
    if gran not in (None, "full", "selective"):
        p.append("transformer_config.py: recompute granularity full|selective")
    sp = "--sequence-parallel" in a and tp > 1  # arguments.py turns SP off at tp == 1
    if sp and (seq // cp) % tp:  # core/tensor_parallel/mappings.py _split_along_first_dim
        p.append("mappings.py _split_along_first_dim: (seq_length / cp) % tp")
    if "--tp-comm-overlap" in a and not sp:
        p.append("arguments.py: --tp-comm-overlap needs sequence parallelism")
    experts = num("--num-experts")
    if ep > 1:
        if experts is None:
            p.append("arguments.py: expert parallelism needs num_experts")
        elif experts % ep:
            p.append("arguments.py: num_experts % ep")
        if "--fp16" in a:
            p.append("arguments.py: expert parallelism with fp16")
    if experts is not None and tp > 1 and not sp:
        p.append("arguments.py: MoE with tp > 1 needs sequence parallelism")
    if experts is not None and (tp * cp * dp) % (tp * ep):  # expert tp defaults to tp
        p.append("parallel_state: expert groups must tile tp*cp*dp")
    # transformer_config.py TransformerConfig.__post_init__
    if heads % tp:
        p.append("transformer_config.py: num_attention_heads % tp")
    groups = num("--num-query-groups") if "--group-query-attention" in a else heads
    if groups % tp:
        p.append("transformer_config.py: num_query_groups % tp")
    if num("--ffn-hidden-size") % tp:  # core/tensor_parallel/layers.py divide()
        p.append("ColumnParallelLinear: ffn_hidden_size % tp")
    if experts is not None and num("--moe-ffn-hidden-size") % tp:
        p.append("expert ColumnParallelLinear: moe_ffn_hidden_size % tp")
    # transformer_block.py get_num_layers_to_build
    try:
        built = megatron_layers(L, pp, vp, first, last)
    except AssertionError as exc:
        return [*p, f"transformer_block.py get_num_layers_to_build: {exc}"]
    # num_microbatches_calculator.py
    mbs, gbs = num("--micro-batch-size"), num("--global-batch-size")
    if gbs % (mbs * dp):
        p.append("num_microbatches_calculator.py: gbs % (mbs * dp)")
    n_mb = gbs // (mbs * dp)
    if vp is not None and n_mb % pp:  # schedules.py forward_backward_pipelining_with_interleaving
        p.append("schedules.py: micro-batches % pp with interleaving")
    if (tp > 1 or cp > 1) and launch.env.get("CUDA_DEVICE_MAX_CONNECTIONS") != "1":
        p.append("arguments.py: tp/cp need CUDA_DEVICE_MAX_CONNECTIONS=1")
    # the job is the plan's
    v = vp or 1
    plan_split = stage_layers(model, plan)
    megatron_split = [built[r][c] for c in range(v) for r in range(pp)]
    if megatron_split != plan_split:
        p.append(f"split {megatron_split} != plan {plan_split}")
    if (tp, pp, cp, ep, dp, v) != (plan.tp, plan.pp, plan.cp, plan.ep, plan.dp,
                                   plan.virtual_stages):
        p.append("degrees differ from the plan")
    if (mbs, gbs, seq, L) != (plan.micro_batch_size, training.global_batch_size,
                             training.seq_len, model.num_hidden_layers):
        p.append("batch, sequence or layers differ from the plan")
    if n_mb != num_microbatches(training, plan):
        p.append("micro-batches differ from the plan")
    if sp != (plan.sequence_parallel and plan.tp > 1):
        p.append("sequence parallelism differs from the plan")
    want_gran = None if plan.recompute == "none" else plan.recompute
    if gran != want_gran:
        p.append("recompute differs from the plan")
    # partial recompute: core/recompute.py checkpointed_forward, 'block', recomputes layers
    # layer_idx < recompute_num_layers of each chunk; 'uniform' recomputes every layer
    k = plan.recompute_num_layers
    chunks = stage_layers(model, plan)
    if gran == "full" and k is not None and k < max(chunks):
        if (method, rnl) != ("block", k):
            p.append("partial recompute differs from the plan (want block with its layers)")
    elif gran == "full" and method == "block" and (rnl or 0) < max(chunks):
        p.append("block recompute leaves layers the plan recomputes")
    return p


# ---------------------------------------------------------------------------- DeepSpeed


def check_deepspeed(cfg: LaunchConfig, request: EstimateRequest | dict[str, Any]) -> list[str]:
    """DeepSpeed's rules on the ds_config: deepspeed/runtime/config.py
    DeepSpeedConfig._batch_assertion (train_batch = micro_batch * grad_acc * dp world, all > 0),
    zero stage 0..3, bf16/fp16 not both; deepspeed/runtime/pipe/engine.py PipelineEngine
    (ZeRO < 2 with a pipeline)."""
    req = _request(request)
    plan, training = req.plan, req.training
    ds = json.loads(cfg.content)
    p: list[str] = []
    tb, mb, ga = (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"],
                  ds["gradient_accumulation_steps"])
    dp_world = plan.num_gpus // (plan.pp * plan.tp * plan.cp)
    if not (tb > 0 and mb > 0 and ga > 0):
        p.append("config.py _batch_assertion: sizes > 0")
    if tb != mb * ga * dp_world:
        p.append(f"config.py _batch_assertion: {tb} != {mb} * {ga} * {dp_world}")
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        p.append("zero/config.py: stage 0..3")
    if plan.pp > 1 and stage >= 2:
        p.append("pipe/engine.py: ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism")
    if ds.get("bf16", {}).get("enabled") and ds.get("fp16", {}).get("enabled"):
        p.append("config.py: bf16 and fp16 together")
    if (tb, mb, ga, stage) != (training.global_batch_size, plan.micro_batch_size,
                               num_microbatches(training, plan), plan.zero_stage):
        p.append("batch or ZeRO stage differs from the plan")
    launch = parse_script(cfg.files["deepspeed_launch.sh"])
    if launch.world != plan.num_gpus:
        p.append("world size differs from the plan")
    return p
