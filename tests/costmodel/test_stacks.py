"""The software stack as an input (issue 10): stack files, kernels, FP8 per operation, the
memory verdict and the warnings an estimate carries.

Expected directions come from the stack files' cited sources (costmodel/data/stacks/*.json)
and the kernel tables (costmodel/data/kernels/*.json); no figure is copied from the output.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import numpy as np
import pytest

import costmodel
from costmodel import SpecError
from costmodel.kernels import attention_rates, best_published_mfu, gemm_ceiling, gemm_shapes
from costmodel.memory import MemoryBand, memory_band, memory_verdict
from costmodel.ops import Device, gemm_time
from costmodel.profile import default_profile
from costmodel.results import Estimate
from costmodel.specs.cluster import GPUPool
from costmodel.specs.framework import FRAMEWORKS
from costmodel.specs.gpus import get_gpu
from costmodel.stacks.stack import get_stack
from tests.costmodel.test_estimate import CONTRACT

ONE_F_ONE_B = {"schedule": "1F1B", "virtual_stages": 1}


def est(training: dict[str, Any] | None = None, plan: dict[str, Any] | None = None,
        pool: dict[str, Any] | None = None) -> Estimate:
    r = copy.deepcopy(CONTRACT)
    r["training"].update(training or {})
    r["plan"].update(plan or {})
    r["cluster"]["pools"][0].update(pool or {})
    return costmodel.estimate(r)


# ------------------------------------------------------------------ stack files
@pytest.mark.parametrize("name", FRAMEWORKS)
def test_every_framework_has_a_stack_file_with_sources(name: str) -> None:
    st = get_stack(name)
    assert st.name == name
    for part in (st.attention, st.overlap, st.host, st.memory):
        assert part.source.strip()
    for recipe in st.fp8.recipes.values():
        assert recipe.source.strip()


def test_unknown_release_names_the_field() -> None:
    with pytest.raises(SpecError) as exc:
        est({"framework": "megatron", "framework_version": "9.9"})
    assert exc.value.field == "training.framework_version"


def test_estimate_says_which_stack_and_kernel_it_assumed() -> None:
    e = est({"framework": "torchtitan"})
    assert "torchtitan" in e.stack.lower() and "attention" in e.stack
    assert "Megatron" in est().stack  # null framework = Megatron-Core


def test_fsdp_and_megatron_differ_for_the_stated_reasons() -> None:
    """Same plan, two stacks: Megatron-Core overlaps the TP collectives (TE userbuffers) and
    keeps 2 % as allocator reserve; plain FSDP has no TP overlap and keeps 5 %."""
    plan = {"tp_comm_overlap": True, **ONE_F_ONE_B}
    mega, fsdp = est({"framework": "megatron"}, plan), est({"framework": "fsdp"}, plan)
    assert fsdp.step_time_s > mega.step_time_s
    assert fsdp.memory.usable_gib < mega.memory.usable_gib
    assert get_stack("fsdp").overlap.tp_comm is False and get_stack("megatron").overlap.tp_comm


def test_deepspeed_pipeline_exposes_the_gradient_reduction() -> None:
    """DeepSpeed's pipeline engine reduces gradients after the last micro-batch
    (pipeline_grad_reduce false): with pp > 1 none of the DP reduction hides."""
    plan = {"overlap_grad_reduce": True, "overlap_param_gather": True, **ONE_F_ONE_B}
    mega = est({"framework": "megatron"}, plan)
    ds = est({"framework": "deepspeed"}, plan)
    assert ds.breakdown.dp_comm_overlapped_s == 0.0
    assert mega.breakdown.dp_comm_overlapped_s > 0.0
    assert ds.step_time_s > mega.step_time_s


def test_a_stack_refuses_a_kernel_it_cannot_run() -> None:
    with pytest.raises(SpecError) as exc:
        est({"framework": "megatron"}, {"attention": "triton"})
    assert exc.value.field == "plan.attention"


def test_flash3_runs_on_hopper_only() -> None:
    est(plan={"attention": "flash3"})
    with pytest.raises(SpecError) as exc:
        est(plan={"attention": "flash3"}, pool={"gpu": "A100-SXM-80GB"})
    assert exc.value.field == "plan.attention"


# ------------------------------------------------------------------ kernels
def test_attention_is_monotone_in_sequence_length() -> None:
    h100 = get_gpu("H100")
    seqs = np.array([512, 1024, 2048, 4096, 8192, 16384], dtype=float)
    for kernel in ("flash2", "flash3", "cudnn"):
        r = attention_rates(kernel, h100, 128, seqs)
        assert np.all(np.diff(r.fwd) >= 0) and np.all(np.diff(r.bwd) >= 0), kernel


def test_attention_matches_the_cited_table_at_its_points() -> None:
    """FlashAttention-3 paper, H100 forward causal head dim 128: FA3 292 → 616 TFLOP/s and
    cuDNN 315 → 539 from 512 to 16k (shared/reference/kernels.md)."""
    h100 = get_gpu("H100")
    for kernel, lo, hi in (("flash3", 292, 616), ("cudnn", 315, 539)):
        r = attention_rates(kernel, h100, 128, np.array([512.0, 16384.0]))
        assert r.fwd[0] / 1e12 == pytest.approx(lo, rel=0.02)
        assert r.fwd[1] / 1e12 == pytest.approx(hi, rel=0.02)


def test_no_gemm_beats_its_measured_ceiling() -> None:
    """Ceiling check: over a spread of shapes no GEMM runs faster than the GPU's MAMF."""
    rng = np.random.default_rng(0)
    for gpu in ("A100-SXM-80GB", "H100-SXM-80GB", "B200-SXM-180GB", "GB200-186GB"):
        dev = Device.from_pool(GPUPool(name="p", gpu=gpu), "bf16", default_profile())
        m, n, k = (rng.integers(64, 32768, 400).astype(float) for _ in range(3))
        rate = 2 * m * n * k / gemm_time(m, n, k, dev)
        assert np.all(rate <= gemm_ceiling(get_gpu(gpu), "bf16").flops * (1 + 1e-9))


def _xla_grid(arch: str, dtype: str) -> list[tuple[float, float, float, float]]:
    """(m, n, k, TFLOP/s) of the plain GEMMs of the measured grid in gemm_shapes.json: every
    b = 1 entry, and the b = 2, 4 entries at the largest m as m = b·m GEMMs (the batch the
    grid folds into m; the other batched entries are not plain GEMMs)."""
    raw = json.loads(resources.files("costmodel").joinpath(
        "data/kernels/gemm_shapes.json").read_text())
    g = raw["grid"]
    values = iter(raw["archs"][arch][dtype])
    out = []
    for b in g["b"]:
        for m in g["m"]:
            for n in g["n"]:
                for k in g["k"]:
                    v = next(values)
                    if b == 1 or m == g["m"][-1]:
                        out.append((float(b * m), float(n), float(k), v))
    return out


def test_the_gemm_shape_grid_reproduces_its_measurements() -> None:
    """At every measured plain GEMM the grid's efficiency times its best rate is the
    measured rate."""
    for arch, gpu, dtype in (("hopper", "H100-SXM-80GB", "bf16"),
                             ("blackwell", "B200-SXM-180GB", "fp8")):
        grid = gemm_shapes(get_gpu(gpu), dtype)
        assert grid is not None
        points = _xla_grid(arch, dtype)
        best = max(p[3] for p in points)
        for m, n, k, tflops in points:
            assert float(grid(m, n, k)) * best == pytest.approx(tflops, rel=1e-9)


def test_hopper_gemms_follow_the_measured_shape_dependence() -> None:
    """Over XLA's measured H100 grid the model's GEMM rate is one constant fraction of the
    measured rate (the profile's derating and the ceiling's own shape), within 5 % either
    way; wave quantization alone ran from 0.11x (a small m·n with a long k, which cuBLAS
    splits over k) to 1.78x (k = 256) of it."""
    dev = Device.from_pool(GPUPool(name="p", gpu="H100-SXM-80GB"), "bf16", default_profile())
    pts = np.array([p for p in _xla_grid("hopper", "bf16") if p[0] >= 1024])
    m, n, k, meas = pts.T
    model = 2 * m * n * k / gemm_time(m, n, k, dev) / 1e12
    ratio = model / meas
    assert ratio.max() / ratio.min() < 1.05 ** 2
    # the split-K shape: now within the same band as the rest
    one = 2 * 1024 * 256 * 4096 / float(gemm_time(1024, 256, 4096, dev)) / 1e12
    measured = next(r for mm, nn, kk, r in _xla_grid("hopper", "bf16")
                    if (mm, nn, kk) == (1024, 256, 4096))
    assert one / measured == pytest.approx(float(np.median(ratio)), rel=0.05)


def test_gpus_without_a_measured_grid_keep_wave_quantization() -> None:
    for gpu in ("A100-SXM-80GB", "MI300X-192GB"):
        dev = Device.from_pool(GPUPool(name="p", gpu=gpu), "bf16", default_profile())
        assert dev.shapes is None and gemm_shapes(get_gpu(gpu), "bf16") is None
    b300 = Device.from_pool(GPUPool(name="p", gpu="B300-SXM-288GB"), "bf16", default_profile())
    assert b300.shapes is gemm_shapes(get_gpu("B200-SXM-180GB"), "bf16")


def test_a_grid_above_the_datasheet_peak_is_left_out() -> None:
    """XLA's sm_90 fp8 entries exceed the H100's dense fp8 peak, so they are not imported;
    Hopper fp8 GEMMs take the shape dependence of its bf16 grid."""
    raw = json.loads(resources.files("costmodel").joinpath(
        "data/kernels/gemm_shapes.json").read_text())
    assert "fp8" not in raw["archs"]["hopper"]
    assert any(e.startswith("sm_90 fp8") for e in raw["excluded"])
    h100 = get_gpu("H100-SXM-80GB")
    assert gemm_shapes(h100, "fp8") is gemm_shapes(h100, "bf16")
    for arch, entry in raw["archs"].items():
        gpu = get_gpu(entry["measured_on"])
        for dtype in ("bf16", "fp8"):
            if dtype in entry:
                assert max(entry[dtype]) <= gpu.peak_tflops[dtype], (arch, dtype)


# ------------------------------------------------------------------ FP8 per operation
def test_fp8_runs_only_the_linear_layers_in_fp8() -> None:
    """Attention stays 16-bit: its time is the same in an fp8 and a bf16 job; the linear
    layers get faster, the FP8 casts cost something, so the step is faster but by less than
    the 2x of the peaks."""
    bf, f8 = est(plan=ONE_F_ONE_B), est({"precision": "fp8"}, ONE_F_ONE_B)
    assert f8.step_time_s < bf.step_time_s
    assert bf.step_time_s / f8.step_time_s < 1.6
    assert "fp8 recipe delayed" in f8.stack


def test_te_stashes_fp8_inputs_torchao_16_bit_ones() -> None:
    """Transformer Engine keeps the FP8 copy of a linear input for wgrad (1 B/element),
    torchao the 16-bit input: the TE job stashes fewer activation bytes than the same stack
    in bf16; a torchao job without tensor parallelism as many as its own stack in bf16, and
    with it too under the rowwise recipe, whose all-gathers stay 16-bit. Under tensorwise
    torchtitan all-gathers the FP8 cast (Float8ColwiseParallel), so the gathered inputs it
    keeps are 1 byte: fewer."""
    plan = {"recompute": "none", **ONE_F_ONE_B}
    no_tp = {**plan, "tp": 1, "dp": 16, "sequence_parallel": False}

    def act(training: dict[str, Any], p: dict[str, Any]) -> float:
        return est(training, p).memory.per_stage[0].activations_gib

    def titan(precision: str, recipe: str | None = None) -> dict[str, Any]:
        return {"precision": precision, "framework": "torchtitan", "fp8_recipe": recipe}

    mega = [act({"precision": p, "framework": "megatron"}, plan) for p in ("fp8", "bf16")]
    assert mega[0] < mega[1]
    assert act(titan("fp8", "tensorwise"), no_tp) == pytest.approx(act(titan("bf16"), no_tp),
                                                                   rel=1e-9)
    assert act(titan("fp8", "rowwise"), plan) == pytest.approx(act(titan("bf16"), plan),
                                                               rel=1e-9)
    assert act(titan("fp8", "tensorwise"), plan) < act(titan("bf16"), plan)


def test_fp8_recipe_needs_fp8_and_a_gpu_that_runs_it() -> None:
    with pytest.raises(SpecError) as exc:
        est({"precision": "fp8", "fp8_recipe": "mxfp8"})  # MXFP8 is Blackwell only
    assert exc.value.field == "training.fp8_recipe"


# ------------------------------------------------------------------ recompute per stack
def _llama8b(framework: str, recompute: str = "selective") -> Estimate:
    return costmodel.estimate({
        "model": {"preset": "llama3-8b"},
        "training": {"global_batch_size": 8, "seq_len": 8192, "framework": framework},
        "cluster": {"pools": [{"name": "h", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                               "nodes": 1}]},
        "plan": {"dp": 8, "zero_stage": 3, "micro_batch_size": 1, "recompute": recompute}})


def _shard(framework: str, attention: str = "flash", release: str | None = None,
           tp: Any = 1.0, rc: int = 1, tp_overlap: bool = False) -> tuple[Any, Any, Any]:
    """(Llama 3 8B, one block's shard on one H100 under ``framework`` at ``release``, the
    device) at micro-batch 1, sequence 8192."""
    from costmodel.layer_cost import Shard
    from costmodel.specs.presets import get_preset
    from costmodel.specs.training import TrainingSpec
    from costmodel.stacks.stack import execution

    h100 = get_gpu("H100-SXM-80GB")
    ex = execution(TrainingSpec(global_batch_size=8, seq_len=8192, framework=framework,
                                framework_version=release), attention, h100)
    shard = Shard.for_stack(8192, 8, ex, b=1.0, tp=tp, cp=1.0, ep=1.0, sp=False, rc=rc,
                            flash=True, tp_overlap=tp_overlap)
    dev = Device.from_pool(GPUPool(name="h", gpu="H100-SXM-80GB"), "bf16", default_profile())
    return get_preset("llama3-8b"), shard, dev


def test_torchtitan_selective_keeps_what_its_policy_saves() -> None:
    """torchtitan's per-op policy (costmodel/data/stacks/torchtitan.json: every mm output but
    every second one, and SDPA's) keeps, per token of a Llama 3 8B block: its input, wq, wv,
    w1 and w2 outputs, the attention output and its fp32 log-sum-exp per head. Megatron's
    selective (Korthikanti et al.) keeps every tensor but the attention core's: more."""
    from costmodel.memory import block_activation_bytes

    model, shard, _ = _shard("torchtitan")
    h, kv, f = 4096, 8 * 128, 14336
    tokens = 8192
    want = 2 * tokens * (h + h + kv + f + h + h) + 4 * 32 * tokens
    assert float(block_activation_bytes(model, shard)) == pytest.approx(want, rel=1e-12)
    _, mega, _ = _shard("megatron")
    assert float(block_activation_bytes(model, mega)) > 2 * want
    titan, megatron = _llama8b("torchtitan"), _llama8b("megatron")
    acts = [e.memory.per_stage[0].activations_gib for e in (titan, megatron)]
    assert acts[0] < acts[1]


def test_torchtitan_selective_recomputes_every_second_linear_layer() -> None:
    """The recomputed forward work of a block is wk, wo and w3 (the 2nd, 4th and 6th mm of
    wq, wk, wv, wo, w1, w3, w2), so torchtitan's selective step is slower than Megatron's,
    which recomputes only the attention core."""
    from costmodel.layer_cost import block_cost

    model, shard, dev = _shard("torchtitan")
    h, kv, f, tokens = 4096, 8 * 128, 14336, 8192
    want = 2 * tokens * (kv * h + h * h + f * h)
    assert float(block_cost(model, shard, dev).flops_recompute) == pytest.approx(want, rel=1e-12)
    titan, megatron = _llama8b("torchtitan"), _llama8b("megatron")
    assert titan.breakdown.recompute_s > megatron.breakdown.recompute_s
    assert titan.step_time_s > megatron.step_time_s
    # full recompute keeps the same checkpoint (the block input) on both stacks; the one
    # block rebuilt in the backward is larger under torchtitan's eager norms and rotation
    from dataclasses import replace

    from costmodel.memory import block_activation_bytes

    _, mega, _ = _shard("megatron")
    kept = [float(block_activation_bytes(model, replace(sh, rc=np.asarray(2))))
            for sh in (shard, mega)]
    assert kept[0] == pytest.approx(kept[1], rel=1e-12)
    full = [_llama8b(fw, "full").memory.per_stage[0].activations_gib
            for fw in ("torchtitan", "megatron")]
    assert full[0] > full[1]


def _block_shards(tp: Any = 1.0, rc: int = 0, tp_overlap: bool = False,
                  release: str | None = None) -> tuple[Any, ...]:
    """Llama 3 8B block shards under torchtitan (``release``: None = the current one) and
    Megatron with the same attention kernel (FlashAttention-2), so that only the elementwise
    operations differ."""
    kw = {"tp": tp, "rc": rc, "tp_overlap": tp_overlap}
    model, titan, dev = _shard("torchtitan", "flash2", release, **kw)
    mega = _shard("megatron", "flash2", **kw)[1]
    return model, titan, mega, dev


# per token of a Llama 3 8B block, what torchtitan's eager ops move beyond Megatron's fused
# kernels (costmodel/data/stacks/torchtitan.json elementwise): the rotation of queries and
# keys at 20 B per element against 4 and silu * mul at 10 against 6 per FFN-wide element; its
# December 2024 code ("2024-12") also two RMSNorms at 36 against 4 and repeat_kv's copies of
# keys and values out to 32 heads
_H, _KV, _F, _Q = 4096, 8 * 128, 14336, 32 * 128
_EAGER_EXTRA = ((20 - 4) * (_Q + _KV) + (10 - 6) * _F, (6 - 1) + (2 - 1))
_EAGER_2024_EXTRA = (_EAGER_EXTRA[0] + 2 * (36 - 4) * _H + 2 * 2 * (_KV + _Q),
                     _EAGER_EXTRA[1] + 2 * (8 - 1) + 2)
"""(bytes, kernels) per token of one block's forward."""


@pytest.mark.parametrize(("release", "extra"), [(None, _EAGER_EXTRA),
                                                ("2024-12", _EAGER_2024_EXTRA)])
def test_torchtitan_eager_block_pays_for_its_separate_ops(release: str | None,
                                                          extra: tuple[int, int]) -> None:
    """Without torch.compile each torch op of torchtitan's block is its own kernel over the
    whole tensor: the block's forward takes exactly those extra bytes at the device's HBM
    rate and those extra kernels' latency longer than Megatron's fused block, and the
    backward twice that."""
    from costmodel.layer_cost import block_cost

    model, titan, mega, dev = _block_shards(release=release)
    t, m = block_cost(model, titan, dev), block_cost(model, mega, dev)
    nbytes, kernels = extra
    want = nbytes * 8192 / dev.hbm + kernels * dev.kernel_latency
    assert float(t.fwd - m.fwd) == pytest.approx(want, rel=1e-9)
    assert float(t.bwd_input - m.bwd_input) == pytest.approx(2 * want, rel=1e-9)
    assert float(t.bwd_weight) == pytest.approx(float(m.bwd_weight), rel=1e-12)


@pytest.mark.parametrize(("release", "extra"), [
    (None, 4 * (_Q + _KV) + 2 * _F),
    ("2024-12", 4 * (_Q + _KV) + 2 * _F + 2 * (6 - 2) * _H + 2 * 2 * (_Q - _KV))])
def test_torchtitan_eager_block_keeps_its_fp32_intermediates(release: str | None,
                                                             extra: int) -> None:
    """Without recompute autograd keeps what each eager op saves: the rotation's fp32
    operand (4 B per query/key element) and silu's output (2 B per FFN-wide element); the
    December 2024 code also its norms' fp32 copy of x and 16-bit output (6 B against the
    fused norm's 2) and the keys and values copied out to every query head."""
    from costmodel.memory import block_activation_bytes

    model, titan, mega, _ = _block_shards(release=release)
    got = float(block_activation_bytes(model, titan) - block_activation_bytes(model, mega))
    assert got == pytest.approx(extra * 8192, rel=1e-12)


@pytest.mark.parametrize(("precision", "gathered"), [("bf16", 2.0), ("fp8", 1.0)])
@pytest.mark.parametrize("tp", [2.0, 4.0, 8.0])
def test_torchtitan_keeps_the_gathered_input_of_its_tensor_parallel_linears(
        precision: str, gathered: float, tp: float) -> None:
    """With sequence parallelism Megatron-Core saves a column-parallel linear's sequence
    shard and re-gathers it in the backward; torchtitan's DTensor plan all-gathers the block's
    attention and feed-forward inputs before wq/wk/wv and w1/w3, which save the gathered
    tensor (costmodel/data/stacks/*.json memory.sp_saves_gathered_input). Without recompute a
    block keeps those two inputs whole, at 2 B, or 1 B under the tensorwise FP8 recipe,
    which casts before the all-gather, against 2 B over tp of them: exactly that many more
    bytes. Full recompute keeps only the block input, the same on both, and rebuilds the
    difference for the block in hand; the per-op policy does not save the all-gathers."""
    import dataclasses

    from costmodel.memory import block_activation_bytes, block_working_bytes

    model, shard, _ = _shard("torchtitan", "flash2", tp=tp, rc=0)
    if precision == "fp8":
        shard = dataclasses.replace(shard, fp8=get_stack("torchtitan").fp8.recipes["tensorwise"])
    shard = dataclasses.replace(shard, sp=np.asarray(True))
    assert shard.sp_gathered
    sharded = dataclasses.replace(shard, sp_gathered=False)
    tokens_h = 8192 * _H
    extra = 2 * (gathered - 2.0 / tp) * tokens_h
    assert float(block_activation_bytes(model, shard) - block_activation_bytes(model, sharded)
                 ) == pytest.approx(extra, rel=1e-12)
    full, full_sharded = (dataclasses.replace(x, rc=np.asarray(2)) for x in (shard, sharded))
    assert float(block_activation_bytes(model, full)) == pytest.approx(
        float(block_activation_bytes(model, full_sharded)), rel=1e-12)
    assert float(block_working_bytes(model, full) - block_working_bytes(model, full_sharded)
                 ) == pytest.approx(extra, rel=1e-12)
    sac, sac_sharded = (dataclasses.replace(x, rc=np.asarray(1)) for x in (shard, sharded))
    assert float(block_activation_bytes(model, sac)) == pytest.approx(
        float(block_activation_bytes(model, sac_sharded)), rel=1e-12)
    assert not _shard("megatron", "flash2", tp=tp, rc=0)[1].sp_gathered


@pytest.mark.parametrize(("recipe", "gather_bytes"), [(None, 2.0), ("rowwise", 2.0),
                                                      ("tensorwise", 1.0)])
def test_torchtitan_tensorwise_fp8_all_gathers_one_byte(recipe: str | None,
                                                       gather_bytes: float) -> None:
    """Under the tensorwise recipe torchao casts a column-parallel linear's input to FP8
    before the sequence-parallel all-gather, and the output gradient before the backward
    one (costmodel/data/stacks/torchtitan.json fp8.recipes.tensorwise.tp_gather_bytes); the
    reduce-scatters stay 16-bit, and rowwise and bf16 gather 16-bit elements. A block's four
    all-gather + reduce-scatter pairs take exactly those bytes' collective time."""
    import dataclasses

    from costmodel.layer_cost import block_cost
    from costmodel.ops import collective_time

    model, shard, dev = _shard("torchtitan", "flash2", tp=4.0, rc=0)
    if recipe is not None:
        shard = dataclasses.replace(shard, fp8=get_stack("torchtitan").fp8.recipes[recipe])
    shard = dataclasses.replace(shard, sp=np.asarray(True))
    tokens_h = 8192.0 * _H
    pair = (collective_time("all_gather", 4.0, tokens_h * gather_bytes, 4.0, dev)
            + collective_time("reduce_scatter", 4.0, tokens_h * 2.0, 4.0, dev))
    assert float(block_cost(model, shard, dev).tp_comm) == pytest.approx(4 * float(pair),
                                                                         rel=1e-12)


@pytest.mark.parametrize("cp", [2.0, 4.0, 8.0])
def test_context_parallel_exchanges_key_value_blocks_as_the_stack_does(cp: float) -> None:
    """Megatron-Core passes key/value blocks ring-wise (--cp-comm-type p2p), each step hidden
    behind the attention of the block in hand; torchtitan's PyTorch context parallelism
    all-gathers them once behind the first block's attention, gathers again in the backward
    and returns the 16-bit blocks' gradients ring-wise in fp32, the last one exposed
    (costmodel/data/stacks/*.json overlap.cp_kv_exchange). A block's exposed exchange is
    exactly that, from the collectives' own times."""
    import dataclasses

    from costmodel.layer_cost import _attention, block_cost
    from costmodel.ops import collective_time

    got = {}
    for fw in ("torchtitan", "megatron"):
        model, shard, dev = _shard(fw, "flash2", rc=0)
        shard = dataclasses.replace(shard, cp=np.asarray(cp))
        a_fwd, a_bwd = (float(x) for x in _attention(model, shard, dev)[:2])
        got[fw] = float(block_cost(model, shard, dev).cp_comm)
    kv = 2.0 * (8192 / cp) * _KV * 2.0
    pair = 2.0 if cp <= 8 else 1.0
    step = float(collective_time("send_recv", 2.0, kv, pair, dev))
    grads = float(collective_time("send_recv", 2.0, 2.0 * kv, pair, dev))
    gather = float(collective_time("all_gather", cp, cp * kv, cp, dev))
    ring = max(0.0, (cp - 1) * (step - a_fwd / cp)) + max(0.0, (cp - 1) * (2 * step - a_bwd / cp))
    all_gather = (max(0.0, gather - a_fwd / cp) + max(0.0, gather - a_bwd / cp)
                  + (cp - 1) * max(0.0, grads - a_bwd / cp) + grads)
    assert got["megatron"] == pytest.approx(ring, rel=1e-12, abs=1e-15)
    assert got["torchtitan"] == pytest.approx(all_gather, rel=1e-12)
    assert got["torchtitan"] > 0.0


def test_torchtitan_compiles_where_async_tp_needs_it() -> None:
    """torchtitan compiles its blocks only with async tensor parallelism (tp > 1 and the
    overlap asked for); there its pointwise chains are fused: of the eager extras only one
    more rotation kernel than Megatron's is left (the launch config's side:
    tests/runtime/test_launch_torchtitan.py
    test_compile_is_on_exactly_where_the_estimate_costs_compiled_blocks)."""
    import dataclasses

    from costmodel.layer_cost import block_cost

    model, titan, mega, dev = _block_shards(tp=np.array([1.0, 2.0, 2.0]), tp_overlap=True)
    assert titan.compiled.tolist() == [False, True, True]
    assert titan.ew("rope_bytes").tolist() == [20.0, 4.0, 4.0]
    assert not np.any(mega.compiled)
    # the same tensor-parallel overlap for both, so that only the pointwise kernels differ
    # (how each stack runs its overlapped GEMMs: test_tp_overlap_gemms_run_as_the_stack_runs_them)
    titan = dataclasses.replace(titan, tp_gemms=None)
    mega = dataclasses.replace(mega, tp_gemms=None)
    t, m = block_cost(model, titan, dev), block_cost(model, mega, dev)
    assert float((t.fwd - m.fwd)[1]) == pytest.approx(dev.kernel_latency, rel=1e-9)
    stack = get_stack("torchtitan")
    assert bool(stack.compiled(True, 2)) and not bool(stack.compiled(False, 2))
    assert not bool(stack.compiled(True, 1)) and not bool(get_stack("megatron").compiled(True, 8))
    assert "eager blocks" in _llama8b("torchtitan").stack


def test_plan_torch_compile_chooses_the_kernels_where_the_stack_compiles() -> None:
    """plan.torch_compile true costs torchtitan's blocks compiled (faster, less kept for the
    backward), false eager; a stack without a compiled path refuses true and torchtitan
    refuses false under async TP, naming the field."""
    def titan(**plan: Any) -> Estimate:
        return est({"framework": "torchtitan"}, {"recompute": "none", **ONE_F_ONE_B, **plan})

    eager, default, compiled = titan(torch_compile=False), titan(), titan(torch_compile=True)
    assert default.step_time_s == eager.step_time_s
    assert compiled.step_time_s < eager.step_time_s
    assert (compiled.memory.per_stage[0].activations_gib
            < eager.memory.per_stage[0].activations_gib)
    assert "under torch.compile" in compiled.stack and "eager blocks" in eager.stack
    for fw in ("megatron", "deepspeed", "fsdp"):
        with pytest.raises(SpecError) as exc:
            est({"framework": fw}, {**ONE_F_ONE_B, "torch_compile": True})
        assert exc.value.field == "plan.torch_compile"
    assert est({"framework": "megatron"}, {**ONE_F_ONE_B, "torch_compile": False})
    with pytest.raises(SpecError) as exc:
        titan(torch_compile=False, tp_comm_overlap=True)
    assert exc.value.field == "plan.torch_compile"


def test_torchtitan_compile_gain_matches_its_published_measurement() -> None:
    """torchtitan measured what torch.compile gains on Llama 3.1 8B under FSDP (1.157x on 8
    H100s, 1.162x on 128: benchmarks/llama3_h100_202412_torchtitan.md, Tables 1 and 3); the
    estimate predicts it from the eager ops' bytes read off torchtitan's model code
    (torchtitan.json elementwise), with no parameter taken from those runs: within 2 %."""
    for table, predicted, reported in _torchtitan_check().compile_gains():
        assert predicted == pytest.approx(reported, rel=0.02), table


def _torchtitan_check() -> Any:
    """tools/check_torchtitan_published.py as a module (its published runs and predict())."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "tools" / "check_torchtitan_published.py"
    spec = importlib.util.spec_from_file_location("check_torchtitan_published", path)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_torchtitan_published_peaks_lie_in_the_memory_band() -> None:
    """Every peak torchtitan published for its Llama 3.1 H100 runs (max reserved, GiB:
    benchmarks/llama3_h100_202412_torchtitan.md, none of them used to set a parameter) lies
    where the memory verdict says the true peak can be, [predicted / (1 + over), predicted /
    (1 - under)]: under-predicting it would call a plan that runs out of memory ``fits``."""
    band = memory_band()
    tool = _torchtitan_check()
    for case in tool.CASES:
        if case.mem is None:
            continue
        peak = tool.predict(case)[1]
        assert peak / (1 + band.over) <= case.mem <= peak / (1 - band.under), case.label


def test_the_loss_holds_the_stacks_bytes_per_logit() -> None:
    """torchtitan's F.cross_entropy(pred.float()) holds 12 bytes per logit at the start of
    the backward, Megatron's vocab-parallel cross-entropy 6 (the stack files' sources); both
    keep the final norm's and the LM head's 16-bit inputs (tp 1: whole)."""
    logits = [_llama8b(fw).memory.per_stage[0].logits_gib for fw in ("torchtitan", "megatron")]
    tokens, vocab, h = 8192, 128256, 4096
    inputs = 2 * 2 * tokens * h / 2**30
    assert logits == pytest.approx([12 * tokens * vocab / 2**30 + inputs,
                                    6 * tokens * vocab / 2**30 + inputs])


@pytest.mark.parametrize(("release", "per_logit"), [(None, 4.0), ("2024-12", 12.0)])
def test_torchtitan_compiles_its_loss_with_the_model(release: str | None,
                                                      per_logit: float) -> None:
    """torchtitan's releases compile the loss with the model (compile.components 'loss'):
    Inductor keeps the 16-bit logits and writes a 16-bit gradient, 4 B per logit, where the
    eager fp32 log-softmax holds 12; its December 2024 code left the loss eager ('compiling
    loss function causes CUDA errors', train.py at 9dec370)."""
    def logits(compiled: bool) -> float:
        r = copy.deepcopy(CONTRACT)
        r["model"] = {"preset": "llama3-8b"}
        r["training"].update({"global_batch_size": 8, "seq_len": 8192,
                              "framework": "torchtitan", "framework_version": release})
        r["cluster"]["pools"][0].update({"gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                                         "nodes": 1})
        r["plan"] = {"dp": 8, "zero_stage": 3, "micro_batch_size": 1,
                     "recompute": "selective", "torch_compile": compiled}
        return costmodel.estimate(r).memory.per_stage[0].logits_gib * 2**30

    tokens, vocab = 8192, 128256
    assert logits(False) - logits(True) == pytest.approx((12.0 - per_logit) * tokens * vocab)


@pytest.mark.parametrize(("framework", "per_logit", "head_whole"),
                         [("torchtitan", 16.0, True), ("megatron", 6.0, False)])
def test_vocab_parallel_loss_holds_the_stacks_bytes(framework: str, per_logit: float,
                                                    head_whole: bool) -> None:
    """At tp 8 with sequence parallelism torchtitan's loss_parallel() backward holds the fp32
    log-probabilities, zeros_like of them, their exp and the sum, 16 B per local logit
    (torch.distributed.tensor.parallel.loss _nll_loss_and_log_softmax_backward), and its
    ColwiseParallel head keeps the all-gathered input; Megatron's 6 B and the head input's
    sequence shard (its stack file; Korthikanti §4.3)."""
    r = copy.deepcopy(CONTRACT)
    r["model"] = {"preset": "llama3-8b"}
    r["training"].update({"global_batch_size": 8, "seq_len": 8192, "framework": framework})
    r["cluster"]["pools"][0].update({"gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 1})
    r["plan"] = {"tp": 8, "sequence_parallel": True, "micro_batch_size": 1,
                 "recompute": "full"}
    logits = costmodel.estimate(r).memory.per_stage[0].logits_gib * 2**30
    tokens, vocab, h = 8192, 128256, 4096
    norm_in = 2 * tokens * h / 8
    head_in = 2 * tokens * h / (1 if head_whole else 8)
    assert logits == pytest.approx(per_logit * tokens * vocab / 8 + norm_in + head_in)


def test_torchtitan_keeps_a_pipeline_stage_gathered_under_zero3() -> None:
    """With FSDP and a pipeline, torchtitan does not reshard after forward and torch's pipeline
    stage accumulates unsharded gradients until the last micro-batch (the stack file's
    sources): a rank holds its stage's 16-bit weights and fp32 gradients whole, on top of the
    shards. Without a pipeline the unit-at-a-time rule applies to both stacks."""
    def stage(framework: str, pp: int, zero: int) -> Any:
        e = costmodel.estimate({
            "model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": 32, "seq_len": 4096, "framework": framework},
            "cluster": {"pools": [{"name": "h", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                                   "nodes": 1}]},
            "plan": {"pp": pp, "dp": 8 // pp, "zero_stage": zero, "micro_batch_size": 1,
                     "schedule": "1F1B", "recompute": "none"}})
        return e.memory.per_stage[0]

    whole = stage("torchtitan", 2, 0)
    params = whole.weights_gib / 2.0  # GiB of parameters: bf16 weights unsharded
    titan = stage("torchtitan", 2, 3)
    assert titan.weights_gib == pytest.approx(params * 2 / 4 + params * 2, rel=1e-9)
    assert titan.grads_gib == pytest.approx(params * 4 / 4 + params * 4, rel=1e-9)
    mega = stage("megatron", 2, 3)
    assert mega.weights_gib < params * 2 / 4 + params  # one block gathered, not the stage
    flat = [stage(fw, 1, 3) for fw in ("torchtitan", "megatron")]
    assert flat[0].weights_gib == pytest.approx(flat[1].weights_gib)
    assert flat[0].grads_gib == pytest.approx(flat[1].grads_gib)


def test_deepspeed_fp16_without_zero_makes_its_fp32_gradients_in_the_step() -> None:
    """DeepSpeed's FP16_Optimizer casts the 16-bit .grad to fp32 inside step()
    (costmodel/data/stacks/deepspeed.json): through forward and backward a rank holds only the
    16-bit gradient, and the step briefly holds 8 bytes per parameter (the fp32 copies and
    their flat buffer) with no activations; bf16 (BF16_Optimizer) and ZeRO keep the fp32
    gradient held."""
    def stage(precision: str, zero: int, seq: int) -> Any:
        e = costmodel.estimate({
            "model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": 8, "seq_len": seq, "precision": precision,
                         "framework": "deepspeed"},
            "cluster": {"pools": [{"name": "h", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                                   "nodes": 1}]},
            "plan": {"dp": 8, "zero_stage": zero, "micro_batch_size": 1, "recompute": "full"}})
        return e.memory.per_stage[0]

    fp16, bf16, zero1 = stage("fp16", 0, 4096), stage("bf16", 0, 4096), stage("fp16", 1, 4096)
    params = fp16.weights_gib / 2.0
    assert fp16.grads_gib == pytest.approx(params * 2.0, rel=1e-9)
    assert bf16.grads_gib == pytest.approx(params * 6.0, rel=1e-9)
    assert zero1.grads_gib == pytest.approx(params * 6.0, rel=1e-9)
    short = stage("fp16", 0, 128)  # activations far below the step's 8 bytes per parameter
    held = (short.weights_gib + short.grads_gib + short.optimizer_gib + short.comm_buffers_gib
            + short.cuda_context_gib)
    assert short.activations_gib + short.logits_gib < 8.0 * params
    assert short.total_gib == pytest.approx(held + 8.0 * params, rel=1e-9)


# ------------------------------------------------------------------ memory verdict
def test_memory_verdict_has_three_states() -> None:
    band = MemoryBand(under=0.2, over=0.1, provenance="test")
    assert memory_verdict(60.0, 80.0, band) == ("fits", 20.0)  # 60 / 0.8 = 75 <= 80
    assert memory_verdict(70.0, 80.0, band)[0] == "tight"  # 87.5 > 80 >= 63.6
    assert memory_verdict(90.0, 80.0, band)[0] == "does_not_fit"  # 90 / 1.1 = 81.8 > 80


def test_estimate_reports_fit_margin_and_band() -> None:
    e = est()
    assert e.memory.fit in ("fits", "tight", "does_not_fit")
    assert e.fits == (e.memory.fit != "does_not_fit")
    assert e.memory.margin_gib == pytest.approx(
        min(sm.usable_gib - sm.total_gib for sm in e.memory.per_stage))
    assert e.memory.band[0] > 0 and e.memory.band[1] > 0
    big = est(plan={"recompute": "none", "micro_batch_size": 4, **ONE_F_ONE_B})
    assert big.memory.fit == "does_not_fit" and not big.fits
    assert any("does not fit" in w for w in big.warnings)


# ------------------------------------------------------------------ Megatron leniency
def test_sequence_parallel_with_tp_1_is_disabled_with_a_warning() -> None:
    e = est(plan={"tp": 1, "pp": 4, "dp": 16, "sequence_parallel": True, **ONE_F_ONE_B},
            training={"global_batch_size": 1024})
    assert e.plan.sequence_parallel is False
    assert any("sequence_parallel" in w and "tp = 1" in w for w in e.warnings)


# ------------------------------------------------------------------ warnings
def test_mfu_above_the_best_published_says_so() -> None:
    best = best_published_mfu("hopper", "bf16")
    assert best is not None and 0 < best[0] < 1 and best[1]
    e = est()
    flagged = any("exceeds the best published" in w for w in e.warnings)
    assert flagged == (e.mfu > best[0])


def test_an_unmeasured_kernel_is_a_warning_not_silence() -> None:
    """cuDNN attention on Blackwell has no published curve: it is scaled from Hopper with a
    sourced factor and the estimate says so."""
    e = est(pool={"gpu": "B200-SXM-180GB"})
    assert any("no published curve" in w or "no measurement" in w for w in e.warnings)
    # the whole derivation, not an excerpt cut mid-word (it read '... Dao et al. 2026, ar...)')
    data = json.loads(resources.files("costmodel").joinpath(
        "data/kernels/attention.json").read_text())
    source = next(s["source"] for s in data["scaled"]
                  if (s["kernel"], s["arch"]) == ("cudnn", "blackwell"))
    assert any(w.endswith(source) for w in e.warnings if "no published curve" in w)


def test_a_gpu_without_datasheet_or_measurement_says_so() -> None:
    """H100-SXM-96GB (Grand Teton's HBM2e H100 at 500 W) has neither a datasheet peak nor a
    GEMM measurement: its GEMMs and attention run at the H100 SXM's measured fraction of the
    catalog's lower-bound peak (H100 NVL's 835 TFLOP/s), and its estimates say so."""
    sxm, grand_teton = get_gpu("H100-SXM-80GB"), get_gpu("H100-SXM-96GB")
    ratio = 835.0 / 989.0
    for precision in ("bf16", "fp8"):
        got = gemm_ceiling(grand_teton, precision)
        assert got.flops == pytest.approx(gemm_ceiling(sxm, precision).flops * ratio, rel=1e-3)
        assert got.warning and "meshplan-runtime calibrate" in got.warning
    seqs = np.array([2048.0, 8192.0])
    a, b = attention_rates("flash2", grand_teton, 128, seqs), attention_rates(
        "flash2", sxm, 128, seqs)
    assert np.allclose(a.fwd / b.fwd, ratio) and np.allclose(a.bwd / b.bwd, ratio)
    e = est(pool={"gpu": "H100-SXM-96GB"})
    assert any("H100-SXM-96GB: no published GEMM measurement" in w for w in e.warnings)
    assert not any("no published GEMM measurement" in w for w in est().warnings)


def test_pre_hopper_kernels_gain_on_hopper_what_flash2_gains() -> None:
    """FlashAttention-1 and the Triton flash kernel of llm-foundry (Ampere mma.sync code, no
    wgmma/TMA) are scaled A100 -> H100 by FlashAttention-2's own measured H100/A100 ratio,
    not by the GEMM-ceiling ratio; so on H100 they stay below the measured FlashAttention-2
    curve, as they are below it on A100 (FlashAttention-2 paper, Fig. 4)."""
    a100, h100 = get_gpu("A100-SXM-80GB"), get_gpu("H100-SXM-80GB")
    seqs = np.array([512.0, 2048.0, 16384.0])
    fa2_h, fa2_a = (attention_rates("flash2", g, 128, seqs) for g in (h100, a100))

    def fwd_bwd(r):  # type: ignore[no-untyped-def]  # the rate of the fused pass (3.5 units)
        return 3.5 / (1.0 / r.fwd + 2.5 / r.bwd)

    ratio = float(np.mean(fwd_bwd(fa2_h) / fwd_bwd(fa2_a)))
    gemm_ratio = gemm_ceiling(h100, "bf16").flops / gemm_ceiling(a100, "bf16").flops
    for kernel in ("triton", "flash1"):
        h, a = attention_rates(kernel, h100, 128, seqs), attention_rates(kernel, a100, 128, seqs)
        assert np.allclose(h.fwd / a.fwd, 1.66) and abs(1.66 - ratio) < 0.1, kernel
        assert np.all(h.fwd / a.fwd < 0.7 * gemm_ratio), kernel
        assert np.all(fwd_bwd(h) < fwd_bwd(fa2_h)), kernel
        assert h.warning and "scaled by 1.66" in h.warning


def _chunked(T: float, groups: list[tuple[float, float]], splits: float, streams: float,
             dev: Any, scale: float = 1.0) -> float:
    """What running each (n, k) GEMM of ``groups`` as ``splits`` row chunks, ``streams`` at a
    time, adds over running it whole."""
    from costmodel.ops import gemm_time

    rows = min(streams * T / splits, T)
    return sum(max(0.0, scale * T / rows * float(gemm_time(rows, n, k, dev, linear=True))
                   - float(gemm_time(T, n, k, dev, linear=True))) for n, k in groups)


@pytest.mark.parametrize("framework", ["torchtitan", "megatron"])
def test_tp_overlap_gemms_run_as_the_stack_runs_them(framework: str) -> None:
    """The GEMMs that carry TP collectives pay for how the stack overlaps them
    (overlap.tp_comm_gemms). torchtitan's async TP (PyTorch's micro-pipelined TP): one row
    chunk per rank on two streams, forward and for the fused input gradients, plus the local
    shard's copy into the symmetric buffer and the sum of the tp partials, twice per pass.
    Megatron's Transformer Engine userbuffers: column-parallel forwards and row-parallel input
    gradients in tp ring-exchange chunks, row-parallel forwards in 4 pipelined chunks on the
    SMs the reduce-scatter leaves (132 - 16 on an H100), three streams each; the
    column-parallel input and weight gradients run whole beside the bulk collectives on those
    SMs. Both overlap only the all-gathers and reduce-scatters of sequence parallelism
    (Megatron-LM refuses --tp-comm-overlap without it), so without it the all-reduces run
    exposed."""
    import dataclasses

    from costmodel.layer_cost import block_cost
    from costmodel.ops import gemm_time, mem_time

    tp, T = 8.0, 8192.0
    model, sh, dev = _shard(framework, "flash2", tp=tp, rc=0, tp_overlap=True)
    sh = dataclasses.replace(sh, sp=np.asarray(True))
    assert sh.tp_gemms is not None
    bare = dataclasses.replace(sh, tp_gemms=None)
    got, ref = block_cost(model, sh, dev), block_cost(model, bare, dev)
    col = [((_Q + 2 * _KV) / tp, _H), (2 * _F / tp, _H)]
    row = [(_H, _Q / tp), (_H, _F / tp)]
    shard = T / tp * _H
    if framework == "torchtitan":
        mem = 2 * float(mem_time(2 * shard * 2, dev)) + 2 * float(mem_time(T * _H * 2 + shard * 2,
                                                                          dev))
        fwd = _chunked(T, col, tp, 2, dev) + _chunked(T, row, tp, 2, dev) + mem
        bwd_w = 0.0
    else:
        margin = 132 / (132 - 16)
        fwd = _chunked(T, col, tp, 3, dev) + _chunked(T, row, 4, 3, dev, margin)
        bwd_w = (margin - 1) * sum(float(gemm_time(T, n, k, dev, linear=True)) for n, k in col)
    assert fwd > 0.0
    assert float(got.fwd - ref.fwd) == pytest.approx(fwd, rel=1e-9)
    assert float(got.bwd_weight - ref.bwd_weight) == pytest.approx(bwd_w, rel=1e-9, abs=1e-15)
    # the input gradients pay at least the row-parallel layers' chunking
    assert float(got.bwd_input - ref.bwd_input) >= _chunked(T, row, tp, 3 if framework ==
                                                            "megatron" else 2, dev) * (1 - 1e-12)

    no_sp = dataclasses.replace(sh, sp=np.asarray(False))
    exposed = dataclasses.replace(no_sp, tp_overlap=np.asarray(False))
    a, b = block_cost(model, no_sp, dev), block_cost(model, exposed, dev)
    assert float(a.fwd) == pytest.approx(float(b.fwd), rel=1e-12)
    assert float(a.bwd_input) == pytest.approx(float(b.bwd_input), rel=1e-12)


@pytest.mark.parametrize("sp", [False, True])
def test_tp_overlap_without_sequence_parallel_says_its_all_reduces_run_exposed(sp: bool) -> None:
    """An estimate that asks torchtitan for async TP without sequence parallelism says that the
    overlap cannot happen there, and costs the step as the same plan without the overlap (the
    same rule holds for Megatron: overlap.tp_comm_gemms.needs_sequence_parallel)."""
    def est(overlap: bool) -> Estimate:
        return costmodel.estimate({
            "model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": 8, "seq_len": 8192, "framework": "torchtitan"},
            "cluster": {"pools": [{"name": "h", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                                   "nodes": 1}]},
            "plan": {"dp": 4, "tp": 2, "zero_stage": 3, "micro_batch_size": 1,
                     "recompute": "selective", "sequence_parallel": sp,
                     "tp_comm_overlap": overlap, "torch_compile": True}})

    on, off = est(True), est(False)
    said = [w for w in on.warnings if "overlap fuses only the all-gathers" in w]
    assert bool(said) is (not sp)
    if sp:
        assert on.step_time_s < off.step_time_s
    else:
        assert on.step_time_s == pytest.approx(off.step_time_s, rel=1e-12)
