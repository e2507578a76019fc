"""Check the cost model against measured training runs: ``python -m costmodel.validate``.

Reads every row of ``shared/validation/*.json`` it can (``--data DIR``; default: the
``shared/validation`` folder beside the repository, or ``$MESHPLAN_VALIDATION_DIR``), predicts
the step time of the published configuration and prints predicted against measured per row,
the mean absolute percentage error (MAPE) per file and per group, rows skipped and why, and
whether every published configuration fits in memory.

Measured throughput is converted to step time with each source's own FLOP convention, never
meshplan's: Narayanan et al. 2021 counts hardware FLOPs with full recompute
(``96·B·s·l·h²·(1 + s/6h + V/16lh)``); Korthikanti et al. 2022 and the Megatron-Core H100
table report model-FLOPs MFU (Megatron's ``num_floating_point_operations``); the NeMo table
gives tokens/s; vTrain gives step time.

What a source leaves out is filled from how that software ran at the time (each choice is
printed with the row): 2021–22 Megatron-LM and NeMo used the unfused attention kernels and no
overlap of the data-parallel reduction; vTrain's runs are Megatron-DeepSpeed fp16 with full
activation checkpointing and GPT-2's 50257-token vocabulary (VIA-Research/vTrain
``src/config.py`` and ``src/model``); the 2024 Megatron-Core runs used flash attention (TE) with
--overlap-grad-reduce, --overlap-param-gather and --tp-comm-overlap (its README). Unknown
micro-batch size, recompute and interleaving are not guessed: every plausible value that fits
in memory is evaluated and the fastest is compared (the published tables are tuned runs); the
spread is printed. A row whose own measurements contradict each other (step time against
TFLOP/s in its source's convention, more than 25% apart about one step's work:
:func:`inconsistent_measurements`) is printed but left out of the statistics with the reason.

Each source group names its software stack (``training.framework`` and release, the stack
files under ``costmodel/data/stacks/``): the stack decides the attention kernel, which
overlaps run and the memory extras, exactly as for a user's request. No parameter of the
model is derived from these rows except the host time per kernel of the default calibration
profile (from vTrain's hidden-1024 single-node rows, its hidden-2048 rows the hold-out), so the
leave-one-source-out error of every other source is its error as printed; for
``vtrain_single`` the report marks it in-sample and gives the hold-out half.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from costmodel.errors import SpecError
from costmodel.estimate import evaluate
from costmodel.flops import model_flops_per_token, narayanan_flops_per_step
from costmodel.profile import CalibrationProfile, GemmDerating, default_profile
from costmodel.results import Estimate
from costmodel.specs.cluster import Cluster, GPUPool
from costmodel.specs.gpus import get_gpu
from costmodel.specs.model import ModelSpec
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.presets import get_preset, preset_names
from costmodel.specs.training import TrainingSpec
from costmodel.stacks.stack import execution

GPU_NAMES = {"A100-SXM4-80GB": "A100-SXM-80GB", "H100-SXM5-80GB": "H100-SXM-80GB",
             "A100 (single DGX node)": "A100-SXM-80GB",
             "A100 (DGX A100; 40/80GB not stated)": "A100-SXM-80GB",
             "A100-40GB (RoCE 1600Gbps)": "A100-SXM-40GB",
             "A100-80GB (RoCE 1600Gbps)": "A100-SXM-80GB",
             "DGX-H100": "H100-SXM-80GB", "DGX-B200": "B200-SXM-180GB",
             "DGX-GB200": "GB200-186GB", "DGX-GB300": "GB300-288GB"}
"""Source GPU names → catalog (vTrain does not say 40 or 80 GB; memory only affects fit)."""


@dataclass
class Era:
    """How the software of a source ran: its stack and what the row does not say."""

    framework: str
    version: str | None
    vocab: int
    dropout: float
    note: str
    zero_stage: int = 0
    zero3_unit: str = "block"
    config_unsure: bool = False
    """The source's parallel config is a guess: also try the other plausible values."""
    attention: str = "flash"
    """``plan.attention``: ``flash`` = the stack's kernel for the GPU (its release's)."""
    style: str = "gpt"
    """``gpt`` (learned positions, LayerNorm, GELU, biases) or ``llama`` (RoPE, RMSNorm,
    SwiGLU, no biases) where the row does not say."""
    nvl_domain: bool = False
    grad_reduce_dtype: str | None = None
    """``training.grad_reduce_dtype`` the source's recipes ran with (None: fp32 main
    gradients)."""
    embedding_loss_in_split: bool = False
    """Megatron's ``account_for_embedding_in_pipeline_split`` and
    ``account_for_loss_in_pipeline_split``: the embedding and the loss each count as one layer
    when the layers are split over pp·vpp stages, so the first and the last stage hold one
    transformer layer fewer (Megatron-Bridge's Llama 3.1 405B recipe sets both:
    NVIDIA-NeMo/Megatron-Bridge@3594df948093cdb3c5ef4846e5d95f8c4a8584eb
    ``src/megatron/bridge/recipes/llama/llama31_405b.py`` ``model_config``)."""


ERAS = {
    "narayanan21_t1": Era("megatron", "2021", 51200, 0.1,
                          "Megatron-LM 2021: unfused attention, DP all-reduce after the flush"),
    "narayanan21_t2": Era("megatron", "2021", 51200, 0.1,
                          "Megatron-LM / DeepSpeed 2021: unfused attention, no DP overlap, "
                          "ZeRO-3 gathers per submodule", zero3_unit="module"),
    "korthikanti22": Era("megatron", "2021", 51200, 0.1,
                         "Megatron-LM 2022: unfused attention, no DP overlap"),
    "nemo_launcher_a100": Era("megatron", "2021", 51200, 0.1,
                              "NeMo-Megatron 2022: unfused attention, no DP overlap, vocab 51200, "
                              "distributed Adam (5B needs it to fit 80 GB)", zero_stage=1,
                              config_unsure=True),
    "megatron_h100_weak": Era("megatron", None, 131072, 0.1,
                              "Megatron-Core r0.8: TE fused attention, grad/param/TP overlap, "
                              "distributed optimizer", zero_stage=1),
    "vtrain_single": Era("deepspeed", "2021", 50257, 0.1,
                         "Megatron-DeepSpeed (vTrain): fp16, unfused attention, full recompute"),
    "vtrain_multi": Era("deepspeed", "2021", 50257, 0.1,
                        "Megatron-DeepSpeed (vTrain, multi-node): fp16, unfused attention, full "
                        "recompute, 1F1B"),
    "bigscience_bench": Era("deepspeed", "2021", 250880, 0.1,
                            "Megatron-DeepSpeed (BigScience 2021-22): unfused attention, ZeRO-1, "
                            "activation checkpointing, Megatron's default dropout 0.1 on hidden "
                            "states and attention probabilities (the tr11 README: 'The default "
                            "Megatron-LM dropout settings are inherited', bigscience-workshop/"
                            "bigscience@9e64edec2ad1fb9263bf39ba616a84ff64b4d947 "
                            "train/tr11-176B-ml/README.md; its slurm scripts set no dropout flag)",
                            zero_stage=1),
    "mpt": Era("fsdp", None, 50368, 0.0,
               "llm-foundry 2023 (FSDP FULL_SHARD, flash attention through its Triton/flash "
               "kernels, ALiBi; no biases)", zero_stage=3, attention="triton"),
    "bridge": Era("megatron", None, 128256, 0.0,
                  "Megatron-Bridge / NeMo 2025-26: TE cuDNN attention, all overlaps, "
                  "distributed optimizer, gradients kept and reduced in bf16 (the "
                  "performance recipes' grad_reduce_in_fp32 = False: NVIDIA-NeMo/Megatron-Bridge"
                  "@f53a72206fbca886021162530d798b31bd4dc2bf scripts/performance/configs/llama/"
                  "llama31_llm_pretrain.py set_llama31_common_configs; llama3_llm_pretrain.py "
                  "likewise)", zero_stage=1, style="llama", nvl_domain=True,
                  grad_reduce_dtype="bf16", embedding_loss_in_split=True),
}
"""Software stack of each source group (``training.framework`` at its release)."""

IN_SAMPLE = {"vtrain_single": "host.dispatch_us_per_kernel of the default profile was set on "
                              "this source's hidden-1024 rows (hold-out: the hidden-2048 rows)"}
"""Sources a parameter other than the GEMM derating was derived from: their error stays
in-sample (the GEMM derating's leave-one-source-out error is :func:`fit_gemm_fraction`'s)."""


@dataclass
class RowResult:
    index: int
    file: str
    group: str
    label: str
    measured_step_s: float | None
    predicted_step_s: float | None = None
    error: float | None = None
    fits: bool | None = None
    peak_gib: float | None = None
    chosen: str = ""
    spread: tuple[float, float] | None = None
    skipped: str | None = None
    excluded: str | None = None
    """Predicted and printed, but left out of the error statistics, for this reason."""
    assumptions: list[str] = field(default_factory=list)
    measured_mem_gib: float | None = None
    layout_certain: bool = True
    """False where the source does not state the layout: reported, held to no error bound."""


def default_data_dir() -> Path:
    env = os.environ.get("MESHPLAN_VALIDATION_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "validation"


def _model(row: dict[str, Any], era: Era, notes: list[str]) -> ModelSpec:
    m = row["model"]
    L, h = int(m["layers"]), int(m["hidden"])
    heads = m.get("heads")
    if heads is None:
        for name in preset_names():
            p = get_preset(name)
            if name.startswith("megatron") and (p.num_hidden_layers, p.hidden_size) == (L, h):
                heads = p.num_attention_heads
                notes.append(f"heads={heads} from preset {name}")
        if heads is None:
            heads = max(1, h // 128)
            notes.append(f"heads={heads} assumed (h/128)")
    ffn = m.get("ffn")
    if ffn is None:
        ffn = 4 * h
        notes.append("ffn=4h assumed (GPT-style)")
    vocab = m.get("vocab")
    if vocab is None:
        vocab = era.vocab
        notes.append(f"vocab={vocab} ({era.note.split(':')[0]})")
    seq = int(m["seq_len"])
    name = str(m.get("name") or f"gpt-{L}x{h}")
    if era.style == "llama":
        notes.append("Llama-style blocks (RoPE, RMSNorm, SwiGLU, no biases, untied head)")
        return ModelSpec(
            name=name, num_hidden_layers=L, hidden_size=h, num_attention_heads=int(heads),
            num_key_value_heads=m.get("kv_heads"), intermediate_size=int(ffn),
            vocab_size=int(vocab), hidden_act="silu", tie_word_embeddings=False,
            max_position_embeddings=seq, position_embedding="rope", norm="rmsnorm",
        )
    biases = era.framework != "fsdp"  # MPT: no biases, ALiBi (no position parameters)
    return ModelSpec(
        name=name, num_hidden_layers=L, hidden_size=h,
        num_attention_heads=int(heads), num_key_value_heads=m.get("kv_heads"),
        intermediate_size=int(ffn), vocab_size=int(vocab), hidden_act="gelu",
        tie_word_embeddings=True, max_position_embeddings=seq,
        position_embedding="learned" if biases else "rope",
        norm="layernorm", attention_bias=biases, mlp_bias=biases,
        attention_dropout=era.dropout, hidden_dropout=era.dropout,
    )


MOE_NAMES = ("moe", "mixtral", "deepseek", "qwen3 30b", "qwen3 235b", "a3b", "a22b", "gpt-oss",
             "kimi", "nemotron-h", "llama 4", "llama4")
"""Model names of mixture-of-experts or hybrid rows, whose experts the rows do not give."""


def _precision_recipe(row: dict[str, Any]) -> tuple[str, str | None] | str:
    """(precision, fp8 recipe) of a row, or why it cannot be modelled."""
    raw = str(row.get("precision") or "").lower()
    if "fp4" in raw:
        return "NVFP4 training is not modelled (meshplan has no fp4 precision)"
    if "mx" in raw:
        return "fp8", "mxfp8"
    if "fp8-cs" in raw or "current" in raw:
        return "fp8", "tensorwise"
    if "fp8" in raw:
        return "fp8", None  # the stack's default recipe for the GPU
    return _precision(row), None


def _precision(row: dict[str, Any]) -> str:
    p = str(row.get("precision") or "fp16").lower()
    if p.startswith("fp16/") or "bf16" in p:
        return "bf16"
    if "fp8" in p:
        return "fp8"
    return "fp16"


def _measured_step(row: dict[str, Any], model: ModelSpec, gbs: int, seq: int, count: int,
                   peak: float) -> tuple[float | None, str]:
    meas = row["measured"]
    if meas.get("step_time_s"):
        return float(meas["step_time_s"]), "step time"
    if meas.get("tokens_per_sec"):
        return gbs * seq / float(meas["tokens_per_sec"]), "tokens/s"
    if meas.get("tokens_per_sec_per_gpu"):
        return gbs * seq / (float(meas["tokens_per_sec_per_gpu"]) * count), "tokens/s per GPU"
    group = row["group"]
    if meas.get("tflops_per_gpu") and group.startswith("narayanan21"):
        flops = narayanan_flops_per_step(model, gbs, seq)
        return flops / (count * float(meas["tflops_per_gpu"]) * 1e12), "TFLOP/s (Narayanan HW)"
    if meas.get("mfu"):
        flops = model_flops_per_token(model, seq) * gbs * seq
        return flops / (count * float(meas["mfu"]) * peak), "MFU (Megatron model FLOPs)"
    return None, ""


def _recompute_options(raw: Any) -> list[str]:
    if raw is None:
        return ["none", "selective", "full"]
    s = str(raw).lower()
    if s.startswith("full (block, 0"):
        return ["none"]
    if "full" in s:
        return ["full"]
    if "selective" in s:
        return ["selective"]
    return ["none"]


def _candidates(row: dict[str, Any], era: Era, gbs: int, widen: bool = False
                ) -> list[ParallelPlan]:
    par = row["parallel"]
    tp, pp, dp = int(par["tp"]), int(par["pp"]), int(par["dp"])
    cp = int(par.get("cp") or 1)
    zero = int(par["zero_stage"]) if par.get("zero_stage") is not None else era.zero_stage
    if par.get("sharding") == "FULL_SHARD" or (par.get("fsdp") or 0) > 0:
        zero = 3
    elif par.get("sharding") == "SHARD_GRAD_OP":
        zero = 2
    mbs_opts = [int(par["microbatch"])] if par.get("microbatch") else [1, 2, 4]
    sp_opts = [bool(par["seq_parallel"])] if par.get("seq_parallel") is not None else [tp > 1]
    rc_opts = _recompute_options(par.get("recompute"))
    if widen:
        mbs_opts = sorted({*mbs_opts, 1, 2, 4})
        rc_opts = sorted({*rc_opts, "none", "selective", "full"})
    if par.get("vpp"):
        vpp_opts = [int(par["vpp"])]
    elif pp > 1 and par.get("microbatch") is None and row["group"] == "megatron_h100_weak":
        vpp_opts = [1, 2, 3, 4, 6]
    else:
        vpp_opts = [1]
    plans = []
    L = int(row["model"]["layers"])
    for mbs, sp, rc, v in itertools.product(mbs_opts, sp_opts, rc_opts, vpp_opts):
        if gbs % (dp * mbs):
            continue
        m = gbs // (dp * mbs)
        split = pipeline_split(L, pp, v, era)
        if split is False:
            continue
        if v > 1:
            if m % max(1, m // pp):
                continue
            sched = "Interleaved1F1B"
        else:
            sched = "1F1B" if m >= pp else "GPipe"
        plans.append(ParallelPlan(
            tp=tp, pp=pp, dp=dp, cp=cp, micro_batch_size=mbs, schedule=sched,
            virtual_stages=v, recompute=rc, sequence_parallel=sp and tp > 1,
            zero_stage=zero, overlap_grad_reduce=True, overlap_param_gather=True,
            tp_comm_overlap=tp > 1, attention=era.attention,
            zero3_unit=era.zero3_unit, layers_per_stage=split,
        ))
    offload = cpu_offload_layers(row)
    if offload is not None and pp == 1:
        # the recipe's own setting: offload without recompute (Megatron allows no other)
        plans += [p.model_copy(update={"recompute": "none", "activation_offload_layers": offload})
                  for p in plans if p.recompute == rc_opts[0]]
    return plans


BRIDGE_CPU_OFFLOAD = {("GB300-288GB", "bf16"): 30, ("GB300-288GB", "fp8"): 20,
                      ("GB200-186GB", "bf16"): 20, ("GB200-186GB", "fp8"): 40,
                      ("B200-SXM-180GB", "fp8"): 5}
"""Layers whose activations Megatron-Bridge's Llama 3 70B Megatron-FSDP performance recipes
offload to host memory (``cpu_offloading_num_layers``), by GPU and precision (FP8 = the FP8-CS
recipe; MXFP8 recipes run a pipeline instead): NVIDIA-NeMo/Megatron-Bridge@3dafb00ae7041e3a0d0
ec598eed055c0a7887ae4 ``scripts/performance/configs/llama/llama3_workload_base_configs.py``
(``LLAMA3_70B_PRETRAIN_CONFIG_{GPU}_{BF16,FP8_CS}_V1/V2``). The table rows do not say it."""


def cpu_offload_layers(row: dict[str, Any]) -> int | None:
    """The recipe's layer-wise activation offload for a Megatron-Bridge Llama 3 70B FSDP row
    (:data:`BRIDGE_CPU_OFFLOAD`), or None."""
    par = row["parallel"]
    if row["group"] != "bridge" or not par.get("fsdp") or "70B" not in row["model"]["name"]:
        return None
    gpu = GPU_NAMES.get(row["gpu"]["type"], row["gpu"]["type"])
    prec = "bf16" if "BF16" in str(row.get("precision") or "").upper() else "fp8"
    return BRIDGE_CPU_OFFLOAD.get((gpu, prec))


def pipeline_split(layers: int, pp: int, vpp: int, era: Era) -> list[int] | bool | None:
    """How the source's framework splits ``layers`` over pp·vpp stages: None for meshplan's
    even-as-possible split (an exact one where vpp > 1), the per-stage layer counts where the
    embedding and the loss count as layers (:attr:`Era.embedding_loss_in_split`), False where
    the framework refuses the split (Megatron-Core interleaving: the layers, with the embedding
    and the loss where counted, divisible by pp·vpp)."""
    stages = pp * vpp
    if layers % stages == 0:
        return None
    if era.embedding_loss_in_split and (layers + 2) % stages == 0:
        each = (layers + 2) // stages
        split = [each] * stages
        split[0] -= 1
        split[-1] -= 1
        return split if min(split) >= 1 else False
    return None if vpp == 1 else False


EXCLUDED_DEEPSPEED_ZERO3 = (
    "DeepSpeed ZeRO-3 as of 2021: its measured time is flat in the GPU count (~65 s for 175B "
    "at 768 and 1536 GPUs), i.e. ~16-21 GB/s per GPU for the parameter gathers, far below "
    "NCCL's bus bandwidth on DGX A100 with 8 NICs per node; meshplan models FSDP2 / "
    "Megatron-style ZeRO-3, not that implementation")


NARAYANAN_CONVENTION = ("narayanan21", "bigscience_bench")
"""Groups whose TFLOP/s count hardware FLOPs with the full-recompute forward pass,
``96·B·s·l·h²·(1 + s/6h + V/16lh)``: Narayanan et al. 2021 and Megatron-DeepSpeed's
throughput printout the BigScience logs quote (bigscience-workshop/Megatron-DeepSpeed
``megatron/utils.py`` ``throughput_calculator``: 24·4·B·s·l·h²·(…) with activation
checkpointing)."""

INCONSISTENT_TOLERANCE = 0.25
"""How far a row's two measurements (step time, and TFLOP/s in its source's convention) may
disagree about the work of one step before the row is held self-contradictory (the
BigScience rows otherwise agree within 16%: the notes' ~3% older estimator and iteration-2
noise)."""


def inconsistent_measurements(row: dict[str, Any], model: ModelSpec, gbs: int, seq: int,
                              count: int) -> str | None:
    """Why a row's step time and its TFLOP/s cannot both hold for its stated global batch,
    or None: the work one step of ``gbs`` sequences does (the source's own FLOP convention)
    against TFLOP/s × GPUs × step time. A row that contradicts itself has no comparable
    configuration: it is reported, excluded from the statistics with this reason."""
    meas = row["measured"]
    tf, step = meas.get("tflops_per_gpu"), meas.get("step_time_s")
    if not (tf and step) or not row["group"].startswith(NARAYANAN_CONVENTION):
        return None
    ratio = narayanan_flops_per_step(model, gbs, seq) / (count * float(tf) * 1e12 * float(step))
    if abs(ratio - 1.0) <= INCONSISTENT_TOLERANCE:
        return None
    return (f"the row's step time and its TFLOP/s (the source's hardware-FLOP convention) "
            f"disagree {ratio:.1f}x about the work of one step at global batch {gbs}: the "
            f"step time fits a batch of about {gbs / ratio:.0f} sequences, so the "
            "configuration measured is not the one stated")


def validate_row(index: int, file: str, row: dict[str, Any],
                 profile: CalibrationProfile | None = None) -> RowResult:
    group = row["group"]
    era = ERAS.get(group)
    label = f"{row['model'].get('name') or ''} {row['gpu']['count']}x{row['gpu']['type']}"
    res = RowResult(index, file, group, label.strip(), None,
                    layout_certain=row.get("layout_certain") is not False)
    if era is None:
        res.skipped = f"no software era known for group {group!r}"
        return res
    notes = res.assumptions
    notes.append(era.note)
    model = _model(row, era, notes)
    par = row["parallel"]
    gbs = par.get("global_batch")
    if gbs is None:
        if group == "korthikanti22" and par.get("dp") and row["model"]["layers"] == 105:
            gbs = 280 * int(par["dp"])
            notes.append(f"global batch {gbs} = dp × Table 5's 280 (not read from the source)")
        else:
            res.skipped = "global batch size not given"
            return res
    gbs = int(gbs)
    seq = int(row["model"]["seq_len"])
    count = int(row["gpu"]["count"])
    gpu = GPU_NAMES.get(row["gpu"]["type"], row["gpu"]["type"])
    pr = _precision_recipe(row)
    if isinstance(pr, str):
        res.skipped = pr
        return res
    precision, recipe = pr
    if any(k in model.name.lower() for k in MOE_NAMES):
        res.skipped = "mixture-of-experts / hybrid model whose experts the row does not give"
        return res
    gpu_type = get_gpu(gpu)
    peak = gpu_type.peak_flops("bf16" if precision == "fp8" else precision)
    measured, how = _measured_step(row, model, gbs, seq, count, peak)
    if measured is None:
        res.skipped = "nothing measured that converts to step time"
        return res
    res.measured_step_s = measured
    notes.append(f"measured from {how}")
    mp = row["measured"].get("peak_mem_gb")
    res.measured_mem_gib = float(mp) if mp else None
    per_node = min(gpu_type.nvlink_domain or 8, count) if era.nvl_domain else min(8, count)
    if per_node > 8:
        notes.append(f"one NVLink domain of {per_node} GPUs (NVL72)")
    nodes = math.ceil(count / per_node)
    cluster = Cluster(pools=[GPUPool(name="p", gpu=gpu, gpus_per_node=per_node, nodes=nodes)])
    training = TrainingSpec(global_batch_size=gbs, seq_len=seq, precision=precision,
                            framework=era.framework, framework_version=era.version,
                            fp8_recipe=recipe, grad_reduce_dtype=era.grad_reduce_dtype)
    notes.append(execution(training, era.attention, gpu_type).describe())
    results: list[tuple[ParallelPlan, Estimate]] = []
    errors: list[str] = []
    passes = [False, True] if era.config_unsure else [False]
    for widen in passes:
        for plan in _candidates(row, era, gbs, widen):
            try:
                results.append((plan, evaluate(model, training, cluster, plan, profile)))
            except SpecError as exc:
                errors.append(str(exc))
        if any(e.fits for _, e in results):
            break
        if widen is False and era.config_unsure:
            notes.append("the stated (unsure) config does not fit or is invalid: plausible "
                         "micro-batch sizes and recompute settings evaluated instead")
    if not results:
        res.skipped = "no valid plan: " + ("; ".join(sorted(set(errors)))[:200] or (
            "the stated layers cannot be split over pp·vpp stages as the framework splits "
            "them (pipeline_split)"))
        return res
    fitting = [(p, e) for p, e in results if e.fits]
    pool = fitting or results
    plan, est = min(pool, key=lambda pe: pe[1].step_time_s)
    res.predicted_step_s = est.step_time_s
    res.error = (est.step_time_s - measured) / measured
    res.fits = bool(fitting)
    if group == "narayanan21_t2" and (par.get("zero_stage") or 0) >= 3:
        res.excluded = EXCLUDED_DEEPSPEED_ZERO3
    elif (why := inconsistent_measurements(row, model, gbs, seq, count)) is not None:
        res.excluded = why
    res.peak_gib = est.memory.peak_gib
    res.chosen = (f"mbs={plan.micro_batch_size} rc={plan.recompute} v={plan.virtual_stages} "
                  f"{plan.schedule} sp={plan.sequence_parallel}")
    if len(pool) > 1:
        times = [e.step_time_s for _, e in pool]
        res.spread = (min(times), max(times))
    return res


def run(data_dir: Path, files: list[str] | None = None,
        profile: CalibrationProfile | None = None, skip: tuple[str, ...] = ()
        ) -> list[RowResult]:
    out: list[RowResult] = []
    for path in sorted(data_dir.glob("*.json")):
        if (files and path.name not in files) or path.name in skip:
            continue
        rows = json.loads(path.read_text())
        for i, row in enumerate(rows):
            out.append(validate_row(i, path.name, row, profile))
    return out


# ---------------------------------------------------------------- the one row-derived GEMM rule
FIT_GRID = (0.70, 0.78, 0.86, 0.94, 1.0)
"""MAMF fractions at which every row is evaluated; between them a row's predicted step time
is interpolated linearly in 1/fraction (time ≈ a + b/fraction)."""
FIT_SKIP = ("vtrain_single_node_runs.json",)
"""Left out of the fit: the source of the host time per kernel (see ``IN_SAMPLE``)."""


def _with_fraction(base: CalibrationProfile, frac: float) -> CalibrationProfile:
    prof = base.model_copy(deep=True)
    assert prof.efficiency is not None
    prof.efficiency.gemm = GemmDerating(mamf_fraction=frac, provenance="validation grid")
    return prof


@dataclass
class GemmFit:
    fraction: float
    """The fraction minimising the mean of the per-source MAPEs over every source."""
    per_source: dict[str, dict[str, float]]
    """Per source: MAPE at the fitted fraction, the fraction fitted without it and its MAPE
    there (leave-one-source-out)."""


def fit_gemm_fraction(data_dir: Path) -> GemmFit:
    """Fit ``efficiency.gemm.mamf_fraction`` on the validation rows (every source weighted
    equally) and re-fit it once per source without that source (leave-one-source-out)."""
    base = default_profile()
    grids = [run(data_dir, profile=_with_fraction(base, f), skip=FIT_SKIP) for f in FIT_GRID]
    keys = [i for i, r in enumerate(grids[0])
            if all(g[i].error is not None and g[i].excluded is None for g in grids)]
    inv = np.array([1.0 / f for f in FIT_GRID])
    times = np.array([[g[i].predicted_step_s for g in grids] for i in keys], dtype=float)
    meas = np.array([grids[0][i].measured_step_s for i in keys], dtype=float)
    groups = np.array([grids[0][i].group for i in keys])
    fine = np.round(np.arange(FIT_GRID[0], FIT_GRID[-1] + 1e-9, 0.005), 3)
    # |error| of every row at every fine fraction: interpolate in 1/f (np.interp wants x up)
    order = np.argsort(inv)
    pred = np.stack([np.interp(1.0 / fine, inv[order], t[order]) for t in times])
    abs_err = np.abs(pred - meas[:, None]) / meas[:, None]
    names = sorted(set(groups.tolist()))
    per = {g: abs_err[groups == g].mean(axis=0) for g in names}

    def best(use: list[str]) -> int:
        return int(np.argmin(np.mean([per[g] for g in use], axis=0)))

    k = best(names)
    out: dict[str, dict[str, float]] = {}
    for g in names:
        kk = best([h for h in names if h != g])
        out[g] = {"mape": float(per[g][k]), "loso_fraction": float(fine[kk]),
                  "loso_mape": float(per[g][kk])}
    return GemmFit(float(fine[k]), out)


def scored(results: list[RowResult]) -> list[RowResult]:
    """Rows that count in the error statistics."""
    return [r for r in results if r.error is not None and r.excluded is None]


def mape(results: list[RowResult]) -> float:
    errs = [abs(r.error or 0.0) for r in scored(results)]
    return statistics.fmean(errs) if errs else math.nan


def signed_median(results: list[RowResult]) -> float:
    errs = [r.error or 0.0 for r in scored(results)]
    return statistics.median(errs) if errs else math.nan


def group_summary(gs: list[RowResult], loso: dict[str, float] | None = None
                  ) -> dict[str, Any]:
    """MAPE, signed median, the leave-one-source-out MAPE (the GEMM derating re-fitted
    without the source, ``loso`` from :func:`fit_gemm_fraction`; null where not computed or
    the source set another parameter: ``IN_SAMPLE``) and the largest error of the rows held
    to a bound."""
    g = gs[0].group
    bounded = [r for r in gs if r.layout_certain]
    return {"rows": len(gs), "mape": mape(gs), "signed_median": signed_median(gs),
            "loso_mape": None if g in IN_SAMPLE or loso is None else loso.get(g),
            "in_sample": IN_SAMPLE.get(g),
            "layout_uncertain_rows": len(gs) - len(bounded),
            "max_abs_error": max((abs(r.error or 0) for r in bounded), default=math.nan)}


def summary(results: list[RowResult], loso: dict[str, float] | None = None
            ) -> dict[str, Any]:
    by_file: dict[str, Any] = {}
    for f in sorted({r.file for r in results}):
        rs = [r for r in results if r.file == f]
        done = scored(rs)
        groups = {}
        for g in sorted({r.group for r in done}):
            groups[g] = group_summary([r for r in done if r.group == g], loso)
        by_file[f] = {
            "rows": len(rs), "evaluated": len(done),
            "excluded": sum(1 for r in rs if r.excluded),
            "skipped": sum(1 for r in rs if r.skipped),
            "mape": mape(done),
            "max_abs_error": max((abs(r.error or 0) for r in done), default=math.nan),
            "rows_over_25pct": sum(1 for r in done if abs(r.error or 0) > 0.25
                                   and r.layout_certain),
            "not_fitting": sum(1 for r in rs if r.fits is False),
            "groups": groups,
        }
    return by_file


def _print(results: list[RowResult], verbose: bool, out: Any = sys.stdout,
           loso: dict[str, float] | None = None) -> None:
    for f, s in summary(results, loso).items():
        rows = [r for r in results if r.file == f]
        print(f"\n== {f}: {s['evaluated']} of {s['rows']} rows scored, {s['excluded']} "
              f"excluded, {s['skipped']} skipped", file=out)
        if verbose or len(rows) <= 100:
            print(f"{'#':>4} {'group':<20} {'run':<42} {'measured':>9} {'predicted':>9} "
                  f"{'error':>7} {'fits':>4} {'GiB':>6}  chosen", file=out)
            for r in rows:
                if r.error is None:
                    continue
                print(f"{r.index:>4} {r.group:<20} {r.label[:42]:<42} {r.measured_step_s:>9.3f} "
                      f"{r.predicted_step_s:>9.3f} {100 * r.error:>+6.1f}% "
                      f"{'yes' if r.fits else 'NO':>4} {r.peak_gib:>6.1f}  {r.chosen}"
                      f"{'  [excluded]' if r.excluded else ''}", file=out)
        for r in rows:
            if r.skipped:
                print(f"  skipped row {r.index} ({r.label}): {r.skipped}", file=out)
        reasons = sorted({r.excluded for r in rows if r.excluded})
        for why in reasons:
            idx = ", ".join(str(r.index) for r in rows if r.excluded == why)
            print(f"  excluded rows {idx}: {why}", file=out)
        for g, gs in s["groups"].items():
            lo = ("in-sample" if gs["loso_mape"] is None
                  else f"{100 * gs['loso_mape']:5.1f}%")
            unsure = (f"  ({gs['layout_uncertain_rows']} rows of unstated layout, no bound)"
                      if gs["layout_uncertain_rows"] else "")
            print(f"  {g:<22} rows={gs['rows']:<5} MAPE={100 * gs['mape']:5.1f}%  "
                  f"signed median={100 * gs['signed_median']:+5.1f}%  LOSO={lo}  "
                  f"max|err|={100 * gs['max_abs_error']:5.1f}%{unsure}", file=out)
            if gs["in_sample"]:
                print(f"  {'':<22} in-sample: {gs['in_sample']}", file=out)
        print(f"  TOTAL step-time MAPE = {100 * s['mape']:.1f}%   max |error| = "
              f"{100 * s['max_abs_error']:.1f}%   rows > 25%: {s['rows_over_25pct']}   "
              f"published configs judged not to fit: {s['not_fitting']}", file=out)


def memory_errors(results: list[RowResult]) -> list[float]:
    """(predicted − measured) / measured peak memory of the rows that measured it."""
    return sorted((r.peak_gib - r.measured_mem_gib) / r.measured_mem_gib for r in results
                  if r.measured_mem_gib and r.peak_gib is not None)


def _print_memory_band(results: list[RowResult]) -> int:
    errs = memory_errors(results)
    if not errs:
        print("no row measured its peak memory", file=sys.stderr)
        return 2
    q = statistics.quantiles(errs, n=20, method="inclusive")
    groups = sorted({r.group for r in results if r.measured_mem_gib and r.peak_gib})
    print(f"peak-memory error on {len(errs)} rows ({', '.join(groups)}): "
          f"min {100 * errs[0]:+.1f}%  5th {100 * q[0]:+.1f}%  median "
          f"{100 * statistics.median(errs):+.1f}%  95th {100 * q[-1]:+.1f}%  max "
          f"{100 * errs[-1]:+.1f}%")
    print(f"band: under={-q[0]:.2f} over={q[-1]:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m costmodel.validate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="folder of validation JSON files")
    ap.add_argument("--file", action="append", help="only this file (repeatable)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--verbose", action="store_true", help="print every row of large files")
    ap.add_argument("--assumptions", action="store_true", help="print each row's assumptions")
    ap.add_argument("--memory-band", action="store_true",
                    help="print the peak-memory error on the rows that measured memory (the "
                    "source of costmodel/data/memory_band.json)")
    ap.add_argument("--fit-gemm", action="store_true",
                    help="fit efficiency.gemm.mamf_fraction on the rows and print the "
                    "leave-one-source-out errors (the source of that default)")
    args = ap.parse_args(argv)
    data = args.data or default_data_dir()
    if not data.is_dir():
        how = ("--data" if args.data else "$MESHPLAN_VALIDATION_DIR"
               if os.environ.get("MESHPLAN_VALIDATION_DIR") else "the default")
        print(f"validation data not found at {data} (looked there from {how}; the default is "
              "../shared/validation beside the repository): pass --data DIR or set "
              "MESHPLAN_VALIDATION_DIR", file=sys.stderr)
        return 2
    if args.fit_gemm:
        fit = fit_gemm_fraction(data)
        print(f"fitted mamf_fraction = {fit.fraction:.3f} (mean of per-source MAPEs; "
              f"{', '.join(FIT_SKIP)} left out)")
        print(f"{'source':<22} {'MAPE':>7} {'LOSO fraction':>14} {'LOSO MAPE':>10}")
        for g, v in fit.per_source.items():
            print(f"{g:<22} {100 * v['mape']:6.1f}% {v['loso_fraction']:14.3f} "
                  f"{100 * v['loso_mape']:9.1f}%")
        return 0
    results = run(data, args.file)
    if args.memory_band:
        return _print_memory_band(results)
    loso = None if args.file else {g: v["loso_mape"]
                                   for g, v in fit_gemm_fraction(data).per_source.items()}
    if args.json:
        print(json.dumps(summary(results, loso), indent=2))
        return 0
    _print(results, args.verbose, loso=loso)
    if args.assumptions:
        for r in results:
            print(f"{r.file}#{r.index}: " + "; ".join(r.assumptions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
