"""Representative plans the launch tests pin (requests as the API takes them)."""

from __future__ import annotations

from typing import Any


def _req(model: str, gbs: int, seq: int, pool: dict[str, Any], plan: dict[str, Any],
         precision: str = "bf16") -> dict[str, Any]:
    return {"model": {"preset": model},
            "training": {"global_batch_size": gbs, "seq_len": seq, "precision": precision},
            "cluster": {"pools": [pool]}, "plan": plan}


H100 = {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8}

PLANS: dict[str, dict[str, Any]] = {
    # llama3-8b, data parallel only (DDP), one node
    "llama3_8b_dp": _req("llama3-8b", 64, 8192, {**H100, "nodes": 1},
                         {"dp": 8, "micro_batch_size": 2, "zero_stage": 0,
                          "recompute": "full"}),
    # llama3-70b, tp8 pp4 interleaved vp2, lighter end ranks (18 layers) than middle ranks (22)
    "llama3_70b_interleaved": _req(
        "llama3-70b", 256, 8192, {**H100, "nodes": 8},
        {"tp": 8, "pp": 4, "dp": 2, "schedule": "Interleaved1F1B", "virtual_stages": 2,
         "layers_per_stage": [9, 11, 11, 9, 9, 11, 11, 9], "sequence_parallel": True,
         "recompute": "selective", "zero_stage": 1}),
    # mixtral-8x7b with expert parallelism over the data-parallel ranks
    "mixtral_ep": _req("mixtral-8x7b", 512, 4096, {**H100, "nodes": 2},
                       {"pp": 2, "dp": 8, "ep": 8, "schedule": "1F1B", "micro_batch_size": 1,
                        "recompute": "full", "zero_stage": 1}),
    # llama3-8b with ZeRO-3 over 16 GPUs
    "llama3_8b_zero3": _req("llama3-8b", 128, 4096, {**H100, "nodes": 2},
                            {"dp": 16, "zero_stage": 3, "recompute": "selective"}),
    # llama3-8b GPipe pipeline, DeepSpeed's shape (tp 1, ZeRO-1)
    "llama3_8b_gpipe": _req("llama3-8b", 64, 4096,
                            {"name": "a100", "gpu": "A100-SXM-80GB", "gpus_per_node": 8,
                             "nodes": 1},
                            {"pp": 4, "dp": 2, "schedule": "GPipe", "micro_batch_size": 2,
                             "zero_stage": 1}),
    # torchtitan's first/last-stage-less-layers split: 15 + 17 layers over pp 2
    "llama3_8b_pp2_uneven": _req("llama3-8b", 32, 4096, {**H100, "nodes": 1},
                                 {"pp": 2, "dp": 4, "layers_per_stage": [15, 17],
                                  "zero_stage": 1}),
}
