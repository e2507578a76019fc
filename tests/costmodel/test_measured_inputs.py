"""Measured inputs replace modelled ones: attention and per-layer profile measurements, and
the cluster's node-to-node bandwidth matrix."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

import costmodel
from costmodel.ops import Device, flash_attention_time
from costmodel.profile import CalibrationProfile
from costmodel.specs.cluster import GPUPool

EXAMPLE = json.loads((Path(__file__).parents[2] / "examples" / "llama3-70b-h100.json").read_text())


def _profile(**measurements: object) -> CalibrationProfile:
    return CalibrationProfile(name="t", gpu="H100", provenance={"source": "test"},  # type: ignore[arg-type]
                              measurements=measurements)  # type: ignore[arg-type]


def test_measured_attention_time_is_reproduced_and_interpolated() -> None:
    """Two measured shapes: each is reproduced exactly; between them the achieved FLOP/s is
    interpolated linearly in log FLOPs (FlashAttention's counting: causal = half)."""
    pts = [dict(batch=1, heads=8, seq_q=s, seq_kv=s, head_dim=128, causal=True,
                fwd_s=f, bwd_s=b) for s, f, b in ((2048, 1e-4, 3e-4), (8192, 1e-3, 3e-3))]
    dev = Device.from_pool(GPUPool(name="h", gpu="H100"), "bf16", _profile(attention=pts))
    for s, f, b in ((2048, 1e-4, 3e-4), (8192, 1e-3, 3e-3)):
        flops = 4.0 * 8 * s * s * 128 / 2
        fwd, bwd = flash_attention_time(flops, dev, "flash2", 128, s)
        assert float(fwd) == pytest.approx(f)
        assert float(bwd) == pytest.approx(b)
    lo, hi = 4.0 * 8 * 2048**2 * 128 / 2, 4.0 * 8 * 8192**2 * 128 / 2
    mid = float(np.sqrt(lo * hi))
    rate_lo, rate_hi = lo / 1e-4, hi / 1e-3
    fwd, _ = flash_attention_time(mid, dev, "flash2", 128, 4096)
    assert mid / float(fwd) == pytest.approx((rate_lo + rate_hi) / 2)


def test_measured_layer_time_replaces_the_modelled_block() -> None:
    req = copy.deepcopy(EXAMPLE)
    req["plan"]["sequence_parallel"] = False
    req["plan"]["recompute"] = "none"
    layer = dict(hidden_size=8192, intermediate_size=28672, num_attention_heads=64,
                 num_key_value_heads=8, seq_len=8192, micro_batch_size=1, tp=8, dtype="bf16",
                 fwd_s=0.010, bwd_s=0.020)
    est = costmodel.estimate({**req, "calibration": _profile(layers=[layer]).model_dump()})
    # stage 1 (a middle stage of Interleaved1F1B) holds only transformer blocks
    n1 = est.pipeline.layers_per_stage[1]
    assert est.pipeline.stage_forward_s[1] == pytest.approx(n1 * 0.010)
    assert (est.pipeline.stage_backward_input_s[1] + est.pipeline.stage_backward_weight_s[1]
            ) == pytest.approx(n1 * 0.020)
    other = dict(layer, seq_len=4096)  # a different shape does not apply
    base = costmodel.estimate(req)
    est2 = costmodel.estimate({**req, "calibration": _profile(layers=[other]).model_dump()})
    assert est2.step_time_s == pytest.approx(base.step_time_s)


def test_node_bandwidth_matrix_slows_cross_node_send_recv() -> None:
    req = copy.deepcopy(EXAMPLE)
    req["cluster"]["pools"] = [req["cluster"]["pools"][0]]
    nodes = req["cluster"]["pools"][0]["nodes"]
    base = costmodel.estimate(req)
    req["cluster"]["node_bandwidth_Gbps"] = [[0.0 if i == j else 100.0 for j in range(nodes)]
                                             for i in range(nodes)]
    slow = costmodel.estimate(req)
    # 100 Gb/s = 12.5 GB/s instead of the 400 Gb/s NIC: the bandwidth part grows 4x
    assert all(s > 3 * b for s, b in zip(slow.pipeline.p2p_s, base.pipeline.p2p_s, strict=True))
    assert slow.step_time_s > base.step_time_s


def test_node_bandwidth_matrix_must_cover_all_nodes() -> None:
    req = copy.deepcopy(EXAMPLE)
    req["cluster"]["node_bandwidth_Gbps"] = [[1.0, 1.0], [1.0, 1.0]]
    with pytest.raises(costmodel.SpecError) as err:
        costmodel.estimate(req)
    assert err.value.field == "cluster"
    assert "96x96" in err.value.rule
