"""Megatron-LM: ``pretrain_gpt.py`` arguments and the torchrun line that starts them.

Flag names and rules are Megatron-LM's as written in its sources (NVIDIA/Megatron-LM):

* ``megatron/training/arguments.py`` ``validate_args``: world size divisible by tp·pp·cp, dp =
  world / (tp·pp·cp); at most one of ``--num-layers-per-virtual-pipeline-stage``,
  ``--num-virtual-stages-per-pipeline-rank`` and ``--pipeline-model-parallel-layout``; uneven
  first / last stages (``--decoder-first-pipeline-num-layers`` /
  ``--decoder-last-pipeline-num-layers``) only with ``--num-virtual-stages-per-pipeline-rank``;
  without them the layers divide evenly over pp (and per rank over the virtual stages); an
  interleaved schedule needs pp > 1; ``--overlap-param-gather`` needs the distributed optimizer
  and ``--overlap-grad-reduce``; ``--fp16`` excludes ``--bf16``; ``max_position_embeddings >=
  seq_length``; ``seq_length`` a multiple of 2·cp; ``--tp-comm-overlap`` needs
  ``--sequence-parallel``; expert parallelism needs ``num_experts % ep == 0`` and no fp16; an
  MoE model with tp > 1 needs sequence parallelism; tp > 1 or cp > 1 needs
  ``CUDA_DEVICE_MAX_CONNECTIONS=1`` before Blackwell.
* ``megatron/core/transformer/transformer_config.py`` ``TransformerConfig.__post_init__``:
  ``num_attention_heads`` and ``num_query_groups`` multiples of tp; ``--recompute-granularity
  full`` needs ``--recompute-method`` (uniform | block) and ``--recompute-num-layers``,
  ``selective`` neither. Full recompute of every layer is ``uniform`` with 1 layer per unit;
  partial recompute (``plan.recompute_num_layers`` = N) is ``block`` with N:
  ``megatron/core/recompute.py`` ``checkpointed_forward`` checkpoints layers ``layer_idx <
  recompute_num_layers`` of each ``TransformerBlock`` (one per virtual chunk, whose
  ``num_layers_per_pipeline_rank`` is ``len(self.layers)``, transformer_block.py) and runs the
  rest plainly (NVIDIA/Megatron-LM d98e8a64ddf34856e74b24714e3bedb2f5a39553).
* ``megatron/core/transformer/transformer_block.py`` ``get_num_layers_to_build``: the middle
  pipeline ranks share the layers the first and last leave evenly, and each rank's layers split
  evenly over its virtual stages.
* ``megatron/core/pipeline_parallel/schedules.py``
  ``forward_backward_pipelining_with_interleaving``: the number of micro-batches divisible by pp.
* ``megatron/core/num_microbatches_calculator.py``: global batch divisible by micro-batch · dp.
* ``megatron/core/tensor_parallel/mappings.py`` ``_split_along_first_dim``: with sequence
  parallelism each rank's sequence (seq_len / cp) divides by tp.

Megatron-LM has two pipeline schedules, 1F1B and interleaved 1F1B. A GPipe plan runs as 1F1B
(same bubble, less activation memory). ZeRO-1 is ``--use-distributed-optimizer``; ZeRO-2 maps to
it too (Megatron reduce-scatters the gradients but keeps a full gradient buffer, so gradient
memory is not sharded); ZeRO-3 is refused (Megatron-FSDP has its own checkpoint format and
rules, not emitted here).

No version selection: the flags are those of Megatron-Core core_r0.14 (the current release of
``costmodel/data/stacks/megatron.json``). The 2021 release named some differently
(``--checkpoint-activations`` for ``--recompute-granularity``; no ``--context-parallel-size``,
``--decoder-first-pipeline-num-layers`` or ``--num-virtual-stages-per-pipeline-rank``), so a
plan for ``training.framework_version`` 2021 is written with the current flags and a note
saying so — the cost model's 2021 profile is for reproducing published runs, not for launching
on a 2021 checkout.
"""

from __future__ import annotations

from costmodel.specs.model import ModelSpec
from runtime.launch.base import MEDIA_SHELL, Job, LaunchConfig, Refusals
from runtime.launch.common import refuse_common
from runtime.launch.launcher import launcher_notes, torchrun_script

CURRENT_RELEASE = "core_r0.14"
"""The Megatron-Core release whose flags are written (module docstring)."""
GATED = ("silu", "swiglu", "swish")
"""Gated activations Megatron runs with ``--swiglu``."""
PLAIN_GELU = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast")
"""Ungated GELU variants: Megatron's default activation."""

Arg = tuple[str, str | None]


def rank_chunks(job: Job) -> list[list[int]]:
    """Layers of (pipeline rank, virtual stage): global stage c·pp + r is chunk c of rank r
    (Megatron's interleaved placement, the same loop placement as torch's)."""
    pp, vp = job.plan.pp, job.plan.virtual_stages
    return [[job.stage_layers[c * pp + r] for c in range(vp)] for r in range(pp)]


def split_args(job: Job, r: Refusals) -> list[Arg]:
    """The layer-split flags that make Megatron build exactly the plan's stages."""
    plan = job.plan
    pp, vp = plan.pp, plan.virtual_stages
    if pp == 1:
        return []
    chunks = rank_chunks(job)
    field = "plan.layers_per_stage"
    uneven = [rk for rk, row in enumerate(chunks) if len(set(row)) > 1]
    if uneven:
        r.add(field, "Megatron-LM splits a pipeline rank's layers evenly over its virtual stages "
              "(core/transformer/transformer_block.py, get_num_layers_to_build); rank "
              f"{uneven[0]} has stages of {chunks[uneven[0]]} layers")
        return []
    totals = [sum(row) for row in chunks]
    if len(set(totals)) == 1:
        if vp > 1:
            return [("--num-layers-per-virtual-pipeline-stage", str(totals[0] // vp))]
        return []
    middle = totals[1:-1]
    if len(set(middle)) > 1:
        what = "ranks" if vp > 1 else "stages"
        r.add(field, "Megatron-LM can make only the first and last pipeline stages uneven "
              "(arguments.py: --decoder-first-pipeline-num-layers / "
              f"--decoder-last-pipeline-num-layers); this plan's pipeline {what} have "
              f"{totals} layers")
        return []
    out: list[Arg] = []
    mid = middle[0] if middle else None
    if mid is None or totals[0] != mid:
        out.append(("--decoder-first-pipeline-num-layers", str(totals[0])))
    if mid is None or totals[-1] != mid:
        out.append(("--decoder-last-pipeline-num-layers", str(totals[-1])))
    if vp > 1:
        out.append(("--num-virtual-stages-per-pipeline-rank", str(vp)))
    return out


def _moe_layer_freq(mask: tuple[bool, ...]) -> str:
    """``--moe-layer-freq`` as a run-length list expression (arguments.py ``moe_freq_type``)."""
    runs: list[tuple[int, int]] = []
    for bit in (1 if m else 0 for m in mask):
        if runs and runs[-1][0] == bit:
            runs[-1] = (bit, runs[-1][1] + 1)
        else:
            runs.append((bit, 1))
    return "(" + "+".join(f"[{b}]*{n}" for b, n in runs) + ")"


def model_args(job: Job, r: Refusals, notes: list[str]) -> list[Arg]:
    model, training = job.model, job.training
    a, g = model.num_attention_heads, model.kv_heads
    args: list[Arg] = [
        ("--num-layers", str(model.num_hidden_layers)),
        ("--hidden-size", str(model.hidden_size)),
        ("--ffn-hidden-size", str(model.intermediate_size)),
        ("--num-attention-heads", str(a)),
    ]
    if model.uses_mla:
        args.append(("--multi-latent-attention", None))
        if model.q_lora_rank is not None:
            args.append(("--q-lora-rank", str(model.q_lora_rank)))
        args += [("--kv-lora-rank", str(model.kv_lora_rank)),
                 ("--qk-head-dim", str(model.qk_nope_head_dim)),
                 ("--qk-pos-emb-head-dim", str(model.qk_rope_head_dim)),
                 ("--v-head-dim", str(model.v_head_dim))]
    else:
        if g != a:
            args += [("--group-query-attention", None), ("--num-query-groups", str(g))]
        if model.head_dim is not None and model.head_dim != model.hidden_size // a:
            args.append(("--kv-channels", str(model.head_dim)))
    seq = training.seq_len
    max_pos = model.max_position_embeddings or seq
    if max_pos < seq:
        if model.position_embedding == "learned":
            r.add("training.seq_len", f"Megatron-LM needs max_position_embeddings "
                  f"({max_pos}) >= seq_length ({seq}) (arguments.py, validate_args); learned "
                  "position embeddings cannot be stretched")
        else:
            notes.append(f"--max-position-embeddings is raised from the model's {max_pos} to "
                         f"seq_len {seq} (Megatron needs max_position_embeddings >= "
                         "seq_length; with RoPE it only sizes the rotary table).")
        max_pos = seq
    args += [("--seq-length", str(seq)), ("--max-position-embeddings", str(max_pos))]
    act = model.hidden_act.lower()
    if act in GATED:
        args.append(("--swiglu", None))
    elif model.gated_mlp or act not in PLAIN_GELU:
        r.add("model.hidden_act", f"Megatron-LM's GPT model has SwiGLU (--swiglu) and GELU MLPs; "
              f"hidden_act={model.hidden_act!r} is neither")
    _architecture(model, training.seq_len, r, args)
    args.append(("--normalization", "RMSNorm" if model.norm == "rmsnorm" else "LayerNorm"))
    if not model.tie_word_embeddings:
        args.append(("--untie-embeddings-and-output-weights", None))
    args.append(("--position-embedding-type",
                 "rope" if model.position_embedding == "rope" else "learned_absolute"))
    out_bias = (model.attention_bias if model.attention_out_bias is None
                else model.attention_out_bias)
    if not (model.attention_bias or out_bias or model.mlp_bias):
        args.append(("--disable-bias-linear", None))
    elif model.attention_bias and not out_bias and not model.mlp_bias:
        args += [("--disable-bias-linear", None), ("--add-qkv-bias", None)]
    elif not (model.attention_bias and out_bias and model.mlp_bias):
        notes.append("Megatron-LM puts biases on all linear layers or none (plus --add-qkv-bias); "
                     "this model's mix of biases is approximated with biases on all of them.")
    args += [("--attention-dropout", f"{model.attention_dropout:g}"),
             ("--hidden-dropout", f"{model.hidden_dropout:g}")]
    if model.is_moe:
        args += [("--num-experts", str(model.num_local_experts)),
                 ("--moe-router-topk", str(model.num_experts_per_tok)),
                 ("--moe-ffn-hidden-size", str(model.expert_ffn))]
        if model.n_shared_experts:
            args.append(("--moe-shared-expert-intermediate-size",
                         str(model.n_shared_experts * model.expert_ffn)))
        if model.shared_expert_intermediate_size:
            args.append(("--moe-shared-expert-intermediate-size",
                         str(model.shared_expert_intermediate_size)))
            notes.append("Qwen2-MoE's sigmoid gate on the shared expert is not set by these "
                         "flags.")
        if model.first_k_dense_replace or model.moe_layer_freq > 1 or model.moe_layers:
            args.append(("--moe-layer-freq", _moe_layer_freq(model.moe_layer_mask)))
        if model.router_bias:
            args.append(("--moe-router-enable-expert-bias", None))
        if job.plan.ep > 1:
            args.append(("--moe-token-dispatcher-type", "alltoall"))
    return args


def _architecture(model: ModelSpec, seq_len: int, r: Refusals,
                  args: list[Arg]) -> None:
    """Block features of Hugging Face imports (costmodel/specs/hf.py) that this emitter does
    not render as Megatron-LM flags: refused, naming the field, rather than launching a model
    that differs from the one estimated. ``qk_norm: head`` is Megatron-Core's
    ``--qk-layernorm`` (``q_layernorm``/``k_layernorm`` over the head dimension,
    ``core/transformer/attention.py``); a window at least as long as the sequence masks
    nothing (transformers' ``sliding_window_causal_mask_function``), so it is full attention
    there."""
    if model.qk_norm == "head":
        args.append(("--qk-layernorm", None))
    r.check(model.qk_norm != "width", "model.qk_norm",
            "Megatron-LM normalises queries and keys per head (--qk-layernorm); a norm over the "
            "whole projection width (OLMo-2) is not in it")
    r.check(model.norms_per_layer == 2, "model.norms_per_layer",
            f"Megatron-LM's GPT block has two norms (before attention and MLP); this model has "
            f"{model.norms_per_layer} (Gemma-2/3's post-attention and post-feedforward norms)")
    r.check(not model.attention_sinks, "model.attention_sinks",
            "meshplan renders no attention-sink option for Megatron-LM (gpt-oss's learned sink "
            "logits)")
    local = sorted({model.layer_type(i) for i in range(model.num_hidden_layers)} -
                   {"full_attention"})
    masked = [k for k in local
              if (k == "sliding_attention" and (model.sliding_window or 0) < seq_len)
              or (k == "chunked_attention" and (model.attention_chunk_size or 0) < seq_len)]
    field = "model.layer_types" if model.layer_types is not None else (
        "model.sliding_window" if model.sliding_window is not None
        else "model.attention_chunk_size")
    r.check(not masked, field,
            f"meshplan renders no sliding-window or chunked attention for Megatron-LM, and at "
            f"seq_len {seq_len} this model's {', '.join(masked)} layers mask keys: Megatron "
            "would train full attention instead")


def render_megatron(job: Job) -> LaunchConfig:
    plan, model, training = job.plan, job.model, job.training
    r = Refusals()
    notes: list[str] = []
    refuse_common(job, r, "Megatron-LM")
    if plan.stages is not None:
        r.raise_if_any()

    g = model.kv_heads
    r.check(g % plan.tp == 0, "plan.tp",
            f"Megatron-LM needs num_query_groups ({g}) to be a multiple of tp ({plan.tp}) "
            "(core/transformer/transformer_config.py, TransformerConfig.__post_init__)")
    margs = model_args(job, r, notes)

    # ---- schedule (the layer split below assumes Megatron's own, loop, placement)
    pp, vp = plan.pp, plan.virtual_stages
    schedule_ok = True
    if pp == 1:
        schedule_ok = r.check(vp == 1, "plan.virtual_stages",
                              "Megatron-LM interleaves virtual stages only with pp > 1 "
                              "(arguments.py, validate_args)")
    elif plan.schedule == "GPipe" and vp == 1:
        notes.append("Megatron-LM has no GPipe schedule: the plan runs with 1F1B, which has "
                     "the same bubble and keeps fewer micro-batches' activations.")
    elif plan.schedule not in ("1F1B", "Interleaved1F1B"):
        r.add("plan.schedule", f"Megatron-LM has the 1F1B and interleaved 1F1B pipeline "
              f"schedules (core/pipeline_parallel/schedules.py); it has no {plan.schedule}")
        schedule_ok = False
    if pp > 1 and vp > 1:
        r.check(job.n_microbatches % pp == 0, "training.global_batch_size",
                f"Megatron-LM's interleaved schedule needs the micro-batches "
                f"({job.n_microbatches}) to be divisible by pp ({pp}) "
                "(core/pipeline_parallel/schedules.py, "
                "forward_backward_pipelining_with_interleaving)")
    split = split_args(job, r) if schedule_ok else []
    if plan.sequence_parallel:
        local_seq = training.seq_len // plan.cp
        r.check(local_seq % plan.tp == 0, "training.seq_len",
                f"Megatron-LM's sequence parallelism splits each rank's {local_seq} tokens "
                f"(seq_len / cp) over tp={plan.tp} ranks, which must divide them "
                "(core/tensor_parallel/mappings.py, _split_along_first_dim)")

    # ---- ZeRO, MoE, overlap rules
    if plan.zero_stage == 3:
        r.add("plan.zero_stage", "Megatron-LM's distributed optimizer shards optimizer state "
              "(ZeRO-1) and its gradient reduction (ZeRO-2 traffic); ZeRO-3 parameter sharding "
              "is Megatron-FSDP (--use-megatron-fsdp, arguments.py), which meshplan does not "
              "emit: use zero_stage <= 2, or the torchtitan or deepspeed format")
    if model.is_moe:
        if plan.ep > 1:
            r.check(training.precision != "fp16", "training.precision",
                    "Megatron-LM does not run expert parallelism with fp16 (arguments.py, "
                    "validate_args)")
        if plan.tp > 1:
            r.check(plan.sequence_parallel, "plan.sequence_parallel",
                    "Megatron-LM needs sequence parallelism for an MoE model with tp > 1 "
                    "(arguments.py, validate_args; core/model_parallel_config.py)")
    if plan.tp_comm_overlap and plan.tp > 1:
        r.check(plan.sequence_parallel, "plan.tp_comm_overlap",
                "Megatron-LM overlaps TP communication only with sequence parallelism "
                "(arguments.py: --tp-comm-overlap needs --sequence-parallel)")
    r.raise_if_any()

    par: list[Arg] = [
        ("--tensor-model-parallel-size", str(plan.tp)),
        ("--pipeline-model-parallel-size", str(pp)),
        *split,
        ("--context-parallel-size", str(plan.cp)),
    ]
    if plan.ep > 1:
        par.append(("--expert-model-parallel-size", str(plan.ep)))
    if plan.sequence_parallel:
        par.append(("--sequence-parallel", None))
    par += [("--micro-batch-size", str(plan.micro_batch_size)),
            ("--global-batch-size", str(training.global_batch_size))]
    if training.precision == "fp16":
        par.append(("--fp16", None))
    else:
        par.append(("--bf16", None))
        if training.precision == "fp8":
            par.append(("--fp8-format", "hybrid"))
        if training.grad_reduce_dtype == "bf16":
            # main gradients kept and reduced in bf16 (megatron/training/arguments.py)
            par.append(("--grad-reduce-in-bf16", None))
    if plan.recompute == "selective":
        par.append(("--recompute-granularity", "selective"))
    elif plan.recompute == "full":
        k = plan.recompute_num_layers
        if k is not None and k < max(job.stage_layers):
            # the first k layers of every TransformerBlock (one per virtual chunk) recompute
            # (core/recompute.py checkpointed_forward, 'block': layer_idx < recompute_num_layers)
            par += [("--recompute-granularity", "full"), ("--recompute-method", "block"),
                    ("--recompute-num-layers", str(k))]
        else:  # every layer: each one its own recompute unit
            par += [("--recompute-granularity", "full"), ("--recompute-method", "uniform"),
                    ("--recompute-num-layers", "1")]
    if plan.activation_offload_layers:
        # Transformer Engine's CPU offload of the first N layers' activations (check_plan holds
        # Megatron-Core's rules: pp 1, no recompute, N < num_layers)
        par += [("--cpu-offloading", None),
                ("--cpu-offloading-num-layers", str(plan.activation_offload_layers))]
    if plan.zero_stage >= 1:
        par.append(("--use-distributed-optimizer", None))
        if plan.zero_stage == 2:
            notes.append("ZeRO-2 runs as Megatron's distributed optimizer: gradients are "
                         "reduce-scattered as in ZeRO-2, but Megatron keeps a full-size "
                         "gradient buffer, so gradient memory is that of ZeRO-1 (more than "
                         "estimated).")
    if plan.overlap_grad_reduce:
        par.append(("--overlap-grad-reduce", None))
        if plan.overlap_param_gather and plan.zero_stage >= 1:
            par.append(("--overlap-param-gather", None))
    if plan.overlap_param_gather and plan.zero_stage == 0 and plan.dp > 1:
        notes.append("overlap_param_gather has no effect without the distributed optimizer "
                     "(zero_stage 0): no parameter all-gather to overlap.")
    if plan.tp_comm_overlap and plan.tp > 1:
        par.append(("--tp-comm-overlap", None))
    par.append(("--attention-backend", "unfused" if plan.attention == "unfused" else "flash"))
    par.append(("--optimizer", "sgd" if training.optimizer == "sgd" else "adam"))

    env = {}
    if plan.tp > 1 or plan.cp > 1:
        env["CUDA_DEVICE_MAX_CONNECTIONS"] = "1"
    target = ["pretrain_gpt.py"] + [f"{k} {v}" if v is not None else k for k, v in margs + par]
    target.append('"$@"')
    content = torchrun_script(job, target, title="Megatron-LM", env=env)
    notes = [
        *launcher_notes(job),
        "Run from a Megatron-LM checkout. Extra arguments to the script go to pretrain_gpt.py: "
        "supply the data and tokenizer (--data-path, --tokenizer-type, --tokenizer-model; or "
        "--mock-data --tokenizer-type NullTokenizer --vocab-size "
        f"{model.vocab_size} for a benchmark), --train-iters, --lr, and the model's "
        "--rotary-base where it has RoPE.",
        "Megatron pads the vocabulary to a multiple of 128·tp (--make-vocab-size-divisible-by).",
        *notes,
    ]
    if job.version is not None and job.version != CURRENT_RELEASE:
        notes.append(f"The flags are Megatron-Core {CURRENT_RELEASE}'s; Megatron-LM "
                     f"{job.version} named some differently (e.g. --checkpoint-activations for "
                     "--recompute-granularity) and may lack others (--context-parallel-size).")
    return LaunchConfig(format="megatron", filename="megatron_launch.sh", media_type=MEDIA_SHELL,
                        content=content, notes=notes)
