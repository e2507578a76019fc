"""Invariants of ``costmodel.estimate`` (ARCHITECTURE.md, "Contract" and "Python").

The base request is the contract's example, verbatim: Llama-3-70B, 1024 sequences of 8192
tokens, bf16, a pool of 16 nodes × 8 H100-SXM-80GB at $2.49 per GPU-hour, plan tp 8 · pp 4 ·
dp 2, Interleaved1F1B with 2 virtual stages, selective recompute, sequence parallel, ZeRO-1.
Expected values come from definitions (tokens per step / step time, price × GPUs) or from the
cited papers; numbers are never copied from the implementation's output.
"""

from __future__ import annotations

import copy
import json
import math
from fractions import Fraction
from typing import Any

import pytest

import costmodel
from costmodel import EstimateRequest, SpecError
from costmodel.results import Estimate

CONTRACT: dict[str, Any] = json.loads("""
{"model": {"preset": "llama3-70b"},
 "training": {"global_batch_size": 1024, "seq_len": 8192, "precision": "bf16",
              "optimizer": "adamw", "train_tokens": null},
 "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                        "nodes": 16, "price_per_gpu_hour": 2.49,
                        "intra_node_GBps": null, "inter_node_Gbps": null}],
             "inter_pool_Gbps": null},
 "plan": {"pool": "h100", "tp": 8, "pp": 4, "dp": 2, "cp": 1, "ep": 1,
          "micro_batch_size": 1, "schedule": "Interleaved1F1B", "virtual_stages": 2,
          "layers_per_stage": null, "recompute": "selective",
          "sequence_parallel": true, "zero_stage": 1}}
""")
H100_BF16_PEAK = 989e12  # NVIDIA H100 datasheet, SXM, dense BF16 (shared/reference/gpus.md)
ONE_F_ONE_B = {"schedule": "1F1B", "virtual_stages": 1}


def request(model: Any = None, training: dict[str, Any] | None = None,
            plan: dict[str, Any] | None = None, pool: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    r = copy.deepcopy(CONTRACT)
    if model is not None:
        r["model"] = model
    r["training"].update(training or {})
    r["plan"].update(plan or {})
    r["cluster"]["pools"][0].update(pool or {})
    return r


def est(**kw: Any) -> Estimate:
    return costmodel.estimate(request(**kw))


@pytest.fixture(scope="module")
def contract() -> Estimate:
    return costmodel.estimate(copy.deepcopy(CONTRACT))


# ---------------------------------------------------------------- response shape
def test_contract_example_has_all_response_keys(contract: Estimate) -> None:
    """POST /v1/estimates → {step_time_s, tokens_per_s, tokens_per_s_per_gpu, mfu, fits,
    memory: {peak_gib, per_stage}, breakdown, cost_per_hour, cost_per_million_tokens}."""
    body = contract.model_dump(mode="json")
    json.dumps(body)  # the HTTP response body must be plain JSON
    for key in ("step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "mfu", "fits",
                "memory", "breakdown", "cost_per_hour", "cost_per_million_tokens"):
        assert key in body
    assert {"peak_gib", "per_stage"} <= set(body["memory"])
    assert isinstance(body["breakdown"], dict) and body["breakdown"]
    assert isinstance(body["fits"], bool)
    for key in ("step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "cost_per_hour",
                "cost_per_million_tokens"):
        assert math.isfinite(body[key]) and body[key] > 0


def test_estimate_takes_the_pydantic_model_too(contract: Estimate) -> None:
    """ARCHITECTURE.md "Python": estimate takes the body as a dict or the pydantic model."""
    again = costmodel.estimate(EstimateRequest.model_validate(copy.deepcopy(CONTRACT)))
    assert again.step_time_s == contract.step_time_s
    assert again.memory.peak_gib == contract.memory.peak_gib


# ---------------------------------------------------------------- definitions
def test_tokens_per_second(contract: Estimate) -> None:
    """tokens/s = global batch × seq_len / step time; per GPU over tp·pp·dp·cp = 64 GPUs."""
    tokens = 1024 * 8192
    assert contract.tokens_per_s == pytest.approx(tokens / contract.step_time_s, rel=1e-12)
    assert contract.tokens_per_s_per_gpu == pytest.approx(contract.tokens_per_s / 64,
                                                          rel=1e-12)


def test_cost_per_hour_is_price_times_plan_gpus(contract: Estimate) -> None:
    """The plan uses 8·4·2 = 64 of the pool's 128 GPUs: 64 × $2.49."""
    assert contract.cost_per_hour == pytest.approx(2.49 * 64, rel=1e-12)


def test_cost_per_million_tokens(contract: Estimate) -> None:
    """$/Mtok = ($/h ÷ 3600 s/h) ÷ tokens/s × 1e6."""
    expected = contract.cost_per_hour / 3600 / contract.tokens_per_s * 1e6
    assert contract.cost_per_million_tokens == pytest.approx(expected, rel=1e-12)
    free = est(pool={"price_per_gpu_hour": 0.0})
    assert free.cost_per_hour == 0.0 and free.cost_per_million_tokens == 0.0


def test_mfu_uses_megatron_model_flops_and_datasheet_peak(contract: Estimate) -> None:
    """MFU = model FLOPs / (step time × GPUs × dense peak). Model FLOPs per Megatron-LM
    num_floating_point_operations (2024): 12·B·s·L·h²·((1 + g/a + s/h)·q/h + ffn/h·3/2 +
    V/(2Lh)) with Llama-3-70B's L 80, h 8192, a 64, g 8, q 8192, ffn 28672, V 128256."""
    B, s, L, h = 1024, 8192, 80, 8192
    flops = 12 * B * s * L * h * h * (
        (1 + Fraction(8, 64) + Fraction(s, h)) * 1 + Fraction(28672, h) * Fraction(3, 2)
        + Fraction(128256, 2 * L * h))
    expected = float(flops) / (contract.step_time_s * 64 * H100_BF16_PEAK)
    assert contract.mfu == pytest.approx(expected, rel=1e-9)
    assert 0 < contract.mfu < 1


def test_memory_report_is_consistent(contract: Estimate) -> None:
    """per_stage has one entry per pipeline rank (pp = 4), covering all 80 layers; the peak
    is the largest total; fits is all ranks fitting in usable memory; each total is the sum
    of its parts."""
    mem = contract.memory
    assert [sm.rank for sm in mem.per_stage] == [0, 1, 2, 3]
    assert sum(sm.layers for sm in mem.per_stage) == 80
    assert sorted(j for sm in mem.per_stage for j in sm.stages) == list(range(8))  # pp·v
    assert mem.peak_gib == pytest.approx(max(sm.total_gib for sm in mem.per_stage))
    assert contract.fits == all(sm.total_gib <= sm.usable_gib for sm in mem.per_stage)
    assert mem.capacity_gib == pytest.approx(80.0)  # H100 SXM: 80 GB HBM3 (datasheet)
    for sm in mem.per_stage:
        parts = (sm.weights_gib + sm.grads_gib + sm.optimizer_gib + sm.activations_gib
                 + sm.logits_gib + sm.comm_buffers_gib + sm.cuda_context_gib)
        assert sm.total_gib == pytest.approx(parts, rel=1e-9)
    # logits live on the last stage only (end_stages vocabulary placement)
    assert [sm.logits_gib > 0 for sm in mem.per_stage] == [False, False, False, True]


def test_zero1_optimizer_bytes_match_megatron(contract: Estimate) -> None:
    """ZeRO-1 over d = dp·cp = 2: 12/d optimizer bytes per parameter, 2 B weight, 4 B grad
    (Megatron theoretical_memory_usage, distributed optimizer)."""
    for sm in contract.memory.per_stage:
        assert sm.grads_gib == pytest.approx(2 * sm.weights_gib, rel=1e-9)
        assert sm.optimizer_gib == pytest.approx(12 / 2 / 2 * sm.weights_gib, rel=1e-9)
    # all ranks together hold the whole model's weights once per (tp) shard:
    total_w = sum(sm.weights_gib for sm in contract.memory.per_stage) * 2**30 / 2
    llama70b = 70_553_706_496
    assert total_w * 8 == pytest.approx(llama70b, rel=1e-9)


# ---------------------------------------------------------------- monotonicity
def test_recompute_lowers_memory_and_costs_time() -> None:
    """Korthikanti et al. 2022 §5: selective recompute drops the attention scores' stash,
    full recompute keeps only each block's input (2sbh/t): memory none > selective > full;
    recomputing costs time: full is slower than none."""
    runs = {rc: est(plan={**ONE_F_ONE_B, "recompute": rc})
            for rc in ("none", "selective", "full")}
    peaks = [runs[rc].memory.peak_gib for rc in ("none", "selective", "full")]
    assert peaks[0] > peaks[1] > peaks[2]
    acts = [runs[rc].memory.per_stage[0].activations_gib for rc in ("none", "selective", "full")]
    assert acts[0] > acts[1] > acts[2]
    assert runs["full"].step_time_s > runs["none"].step_time_s
    assert runs["full"].breakdown.recompute_s > runs["selective"].breakdown.recompute_s > 0
    assert runs["none"].breakdown.recompute_s == 0


def test_unfused_attention_makes_selective_recompute_matter() -> None:
    """Without flash attention the s² score tensors dominate (5as/h = 5·64·8192/8192 = 320
    vs 34, Korthikanti Eq. 4): selective recompute must save most of the activations."""
    none = est(plan={**ONE_F_ONE_B, "recompute": "none", "attention": "unfused"})
    sel = est(plan={**ONE_F_ONE_B, "recompute": "selective", "attention": "unfused"})
    assert sel.memory.per_stage[0].activations_gib < 0.5 * none.memory.per_stage[0].activations_gib


def test_zero_stages_lower_memory() -> None:
    """ZeRO 0 → 1 → 2 → 3 shards optimizer, gradients, weights (Rajbhandari et al. 2020)."""
    peaks = [est(plan={**ONE_F_ONE_B, "zero_stage": z}).memory.peak_gib for z in range(4)]
    assert peaks[0] > peaks[1] > peaks[2] > peaks[3]


def test_doubling_global_batch_doubles_step_time_without_pipeline() -> None:
    """pp = 1: a step is m = gbs/(dp·mbs) identical micro-batches plus a fixed DP/optimizer
    tail, so doubling gbs roughly doubles step time (within 10%)."""
    plan = {**ONE_F_ONE_B, "pp": 1, "dp": 8, "recompute": "full"}
    t1 = est(training={"global_batch_size": 256}, plan=plan).step_time_s
    t2 = est(training={"global_batch_size": 512}, plan=plan).step_time_s
    assert 1.8 <= t2 / t1 <= 2.2


def test_1f1b_step_exceeds_each_ranks_busy_time() -> None:
    """With pp > 1, 1F1B has a bubble of (p−1) forward/backward slots (Narayanan et al. 2021
    §2.2.1): the step is longer than any one rank's work m·(F + B + W) of its stage."""
    e = est(plan=ONE_F_ONE_B)
    p = e.pipeline
    m = p.num_microbatches
    assert m == 1024 // 2
    busy = [m * (f + i + w) for f, i, w in zip(p.stage_forward_s, p.stage_backward_input_s,
                                               p.stage_backward_weight_s, strict=True)]
    assert len(busy) == 4
    assert p.makespan_s > max(busy)
    assert e.step_time_s > max(busy)
    assert e.breakdown.pipeline_bubble_s > 0


def test_1f1b_bubble_is_about_p_minus_1_slots() -> None:
    """Narayanan et al. 2021 §2.2.1: bubble time fraction (p−1)/m for 1F1B; here p = 4,
    m = 512. Stages are not exactly equal (the vocabulary layers sit on the end stages), so
    allow 25%."""
    e = est(plan=ONE_F_ONE_B)
    assert e.pipeline.bubble_fraction == pytest.approx(3 / 512, rel=0.25)


def test_interleaving_shrinks_the_bubble(contract: Estimate) -> None:
    """Narayanan et al. 2021 §2.2.2: v model chunks per rank cut the bubble by a factor v
    ((p−1)/(v·m)); same tp/pp/dp, v = 2 against 1F1B."""
    plain = est(plan=ONE_F_ONE_B)
    assert contract.breakdown.pipeline_bubble_s < plain.breakdown.pipeline_bubble_s
    assert contract.pipeline.bubble_fraction < plain.pipeline.bubble_fraction
    ratio = plain.breakdown.pipeline_bubble_s / contract.breakdown.pipeline_bubble_s
    assert ratio == pytest.approx(2.0, rel=0.25)


# ---------------------------------------------------------------- memory limits
def test_plan_too_large_does_not_fit_and_warns() -> None:
    """Llama-3-70B unsharded (tp = pp = 1) with ZeRO-0 needs 18 B × 70.55e9 ≈ 1183 GiB of
    weights, gradients and Adam states per GPU (Megatron's 18 B/param) — far beyond 80 GB."""
    e = est(plan={"tp": 1, "pp": 1, "dp": 8, "schedule": "1F1B", "virtual_stages": 1,
                  "sequence_parallel": False, "zero_stage": 0})
    assert e.fits is False
    sm = e.memory.per_stage[0]
    assert sm.fits is False
    assert sm.weights_gib + sm.grads_gib + sm.optimizer_gib == pytest.approx(
        18 * 70_553_706_496 / 2**30, rel=1e-6)
    assert sm.total_gib > sm.usable_gib
    assert any("rank 0" in w for w in e.warnings)


def test_fitting_plan_has_no_memory_warning(contract: Estimate) -> None:
    assert contract.fits is True
    assert not any("GiB" in w for w in contract.warnings)


# ---------------------------------------------------------------- MFU sanity
@pytest.mark.parametrize(("model", "plan", "gbs", "seq"), [
    ({"preset": "llama3-70b"}, {}, 1024, 8192),
    ({"preset": "llama3-8b"}, {"tp": 1, "pp": 1, "dp": 8, "schedule": "1F1B",
                               "virtual_stages": 1, "sequence_parallel": False}, 256, 8192),
    ({"preset": "llama3-8b"}, {"tp": 2, "pp": 2, "dp": 4, "schedule": "1F1B",
                               "virtual_stages": 1}, 512, 4096),
    ({"preset": "gpt3-175b"}, {"tp": 8, "pp": 8, "dp": 2, "schedule": "1F1B",
                               "virtual_stages": 1}, 1536, 2048),
    ({"preset": "mixtral-8x7b"}, {"tp": 2, "pp": 4, "dp": 8, "ep": 8, "schedule": "1F1B",
                                  "virtual_stages": 1}, 512, 4096),
])
def test_mfu_is_a_fraction_for_sane_plans(model: dict[str, Any], plan: dict[str, Any],
                                          gbs: int, seq: int) -> None:
    e = est(model=model, plan=plan, training={"global_batch_size": gbs, "seq_len": seq})
    assert 0.0 < e.mfu < 1.0
    assert e.mfu <= e.hfu  # hardware FLOPs include recompute (Korthikanti §6)


# ---------------------------------------------------------------- precision
def test_fp8_is_faster_than_bf16_on_h100(contract: Estimate) -> None:
    """H100 SXM: 1979 dense FP8 vs 989 BF16 TFLOP/s (datasheet): the GEMMs run faster."""
    fp8 = est(training={"precision": "fp8"})
    assert fp8.step_time_s < contract.step_time_s
    assert fp8.model_flops_per_step == pytest.approx(contract.model_flops_per_step)


def test_fp8_on_a100_is_rejected() -> None:
    """A100 has no FP8 tensor cores (NVIDIA A100 datasheet; shared/reference/gpus.md)."""
    with pytest.raises(SpecError) as exc:
        est(training={"precision": "fp8"}, pool={"gpu": "A100-SXM-80GB"})
    assert exc.value.field == "training.precision"
    assert "fp8" in exc.value.rule


def test_bf16_on_v100_is_rejected() -> None:
    """V100 has FP16 tensor cores only (NVIDIA V100 datasheet)."""
    with pytest.raises(SpecError) as exc:
        est(model={"preset": "llama3-8b"}, pool={"gpu": "V100-SXM-32GB"},
            plan={"tp": 8, "pp": 1, "dp": 1, "schedule": "1F1B", "virtual_stages": 1},
            training={"global_batch_size": 8})
    assert exc.value.field == "training.precision"
