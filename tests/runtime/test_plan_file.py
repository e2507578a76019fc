"""The plan a worker runs (runtime.plan_file, pure) and device-name mapping (runtime.devices):
the runtime launch format, scaling the model down (recorded as overrides), the request that
predicts the run on the calibrated device, and the layer split and stage placement the run
shares with the cost model (and with torch's own stage-to-rank mapping).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from costmodel.errors import SpecError
from costmodel.profile import CalibrationProfile
from runtime import plan_file
from runtime.devices import catalog_gpu

BODY: dict[str, Any] = {
    "format": "meshplan-runtime-plan/1",
    "model": {"preset": "llama3-8b"},
    "training": {"global_batch_size": 64, "seq_len": 4096},
    "cluster": {"pools": [{"name": "h100", "gpu": "H100", "gpus_per_node": 8, "nodes": 1}]},
    "plan": {"tp": 2, "pp": 2, "dp": 2, "micro_batch_size": 1, "schedule": "1F1B"},
}


def test_read_plan_accepts_the_runtime_format_and_a_bare_request(tmp_path: Path) -> None:
    """Checks: the format key is dropped; a bare estimate request reads the same."""
    f = tmp_path / "p.json"
    f.write_text(json.dumps(BODY))
    a = plan_file.read_plan(f)
    b = plan_file.read_plan({k: v for k, v in BODY.items() if k != "format"})
    assert a == b and "format" not in a


@pytest.mark.parametrize(("raw", "field"), [
    ({**BODY, "format": "other/1"}, "format"),
    ({k: v for k, v in BODY.items() if k != "plan"}, "plan"),
    ([1, 2], "plan file"),
])
def test_read_plan_rejects_foreign_input(raw: Any, field: str, tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text(json.dumps(raw))
    with pytest.raises(SpecError) as exc:
        plan_file.read_plan(f)
    assert exc.value.field == field


def test_scale_resolves_the_preset_and_records_overrides() -> None:
    """Checks: --layers/--hidden/--heads/--kv-heads/--ffn/--vocab/--seq/--global-batch change
    the fields, the preset becomes explicit fields, unchanged values are not recorded."""
    body = plan_file.read_plan(BODY)
    out, changed = plan_file.scale(body, layers=4, hidden=256, heads=4, kv_heads=2, ffn=704,
                                   vocab=2048, seq=128, global_batch=8)
    assert changed == {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "intermediate_size": 704, "vocab_size": 2048,
                       "seq_len": 128, "global_batch_size": 8}
    assert out["model"]["num_hidden_layers"] == 4 and "preset" not in out["model"]
    assert out["training"]["seq_len"] == 128
    _, none = plan_file.scale(body, layers=32)  # llama3-8b has 32 layers already
    assert none == {}


def test_scaled_plan_must_stay_valid() -> None:
    """Checks: scaling to a shape the plan cannot run (3 heads with tp = 2) is a SpecError
    naming the broken rule."""
    with pytest.raises(SpecError) as exc:
        plan_file.scale(plan_file.read_plan(BODY), heads=3, kv_heads=3, hidden=192)
    assert any(p.field == "plan.tp" for p in exc.value.problems)


def test_local_request_predicts_on_the_calibrated_device() -> None:
    """Checks: the prediction request has one pool of the profile's device with the job's
    ranks per node, the plan on it, the run's precision and the profile."""
    prof = CalibrationProfile.model_validate({
        "name": "c", "provenance": {"source": "t"},
        "device": {"name": "cpu", "arch": "cpu", "peak_tflops": {"fp32": 0.1},
                   "memory_gib": 8, "hbm_GBps": 10, "intra_node_GBps": 1,
                   "provenance": "t"}})
    body, _ = plan_file.scale(plan_file.read_plan(BODY), layers=4, hidden=256, heads=4,
                              kv_heads=2, ffn=704, vocab=2048, seq=128, global_batch=8)
    req = plan_file.local_request(body, prof, 8, 1, "fp32")
    assert req["cluster"] == {"pools": [{"name": "local", "gpu": "cpu", "gpus_per_node": 8,
                                         "nodes": 1}]}
    assert req["plan"]["pool"] == "local" and req["training"]["precision"] == "fp32"
    assert req["calibration"]["name"] == "c"


@pytest.mark.parametrize(("plan", "layers", "ranks"), [
    ({"pp": 2, "schedule": "1F1B"}, [2, 2], [0, 1]),
    ({"pp": 2, "schedule": "Interleaved1F1B", "virtual_stages": 2}, [1, 1, 1, 1], [0, 1, 0, 1]),
    ({"pp": 2, "schedule": "ZBVZeroBubble", "virtual_stages": 2}, [1, 1, 1, 1], [0, 1, 1, 0]),
    ({"pp": 2, "schedule": "1F1B", "layers_per_stage": [3, 1]}, [3, 1], [0, 1]),
])
def test_split_is_the_cost_models_and_torchs(plan: dict[str, Any], layers: list[int],
                                             ranks: list[int]) -> None:
    """Checks: layers per stage and stage placement (loop for interleaved, V for ZBV) as the
    cost model computes them, and the placement equals torch.distributed.pipelining's
    generate_stage_to_rank_mapping (when torch is installed)."""
    body = {**plan_file.read_plan(BODY),
            "model": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
                      "intermediate_size": 704, "vocab_size": 2048},
            "plan": {"micro_batch_size": 1, **plan}}
    s = plan_file.split(body)
    assert s.layers == layers and s.rank_of_stage == ranks
    starts = [s.block_range(i).start for i in range(len(layers))]
    assert starts == [sum(layers[:i]) for i in range(len(layers))]
    torch_utils = pytest.importorskip("torch.distributed.pipelining._utils")
    style = "v" if plan["schedule"] == "ZBVZeroBubble" else "loop"
    mapping = torch_utils.generate_stage_to_rank_mapping(2, len(layers), style=style)
    assert [mapping[i] for i in range(len(layers))] == ranks


def test_csv_split_reads_stage_owners_and_microbatches() -> None:
    """Checks: a compute-only schedule CSV gives each stage to the rank that computes it,
    an even layer split and the micro-batch count; a stage on two ranks is refused."""
    rows = [["0F0", "0F1", "2F0", "", "2B0", "0B1"], ["1F0", "3F0", "3B0", "1I0", "1W0"]]
    s = plan_file.csv_split(rows, 8)
    assert s.rank_of_stage == [0, 1, 0, 1] and s.layers == [2, 2, 2, 2]
    assert plan_file.csv_microbatches(rows) == 2
    with pytest.raises(SpecError):
        plan_file.csv_split([["0F0"], ["0B0"]], 4)


@pytest.mark.parametrize(("name", "canon"), [
    ("NVIDIA H100 80GB HBM3", "H100-SXM-80GB"), ("NVIDIA H100 PCIe", "H100-PCIe-80GB"),
    ("NVIDIA A100-SXM4-80GB", "A100-SXM-80GB"), ("NVIDIA A100-SXM4-40GB", "A100-SXM-40GB"),
    ("NVIDIA A100 80GB PCIe", None), ("NVIDIA H200", "H200-SXM-141GB"),
    ("NVIDIA L4", "L4-24GB"), ("NVIDIA L40S", "L40S-48GB"), ("NVIDIA A10G", "A10G-24GB"),
    ("NVIDIA GeForce RTX 4090", "RTX4090-24GB"), ("Tesla V100-SXM2-32GB", "V100-SXM-32GB"),
    ("AMD Instinct MI300X", "MI300X-192GB"), ("NVIDIA B200", "B200-SXM-180GB"),
    ("NVIDIA GeForce RTX 3090", None), ("NVIDIA H100 96GB HBM2e", "H100-SXM-96GB"),
    ("NVIDIA GH200 480GB", None), ("NVIDIA H100 NVL", None),
])
def test_catalog_gpu_of_torch_device_names(name: str, canon: str | None) -> None:
    assert catalog_gpu(name) == canon
