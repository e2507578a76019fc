"""Predicted against reported for torchtitan's published Llama 3.1 runs (an independent check;
these rows are not in shared/validation and set no parameter).

Source: pytorch/torchtitan@b5bcd76c66d0acb1a08b176d9639425bc55e0b2a
``benchmarks/llama3_h100_202412_torchtitan.md`` (torch 1963fc8, torchao eab345c, torchtitan
9dec370, 2024-12). Their GPUs are H100 SXM with 96 GB of HBM2e (2.4 TB/s) at a 500 W power
limit, not in meshplan's catalog: the estimates run on H100-SXM-80GB (3.35 TB/s, 700 W), so
throughput is expected above the reported one. Reported memory is torchtitan's max reserved.
Micro-batches follow torchtitan's default (as many as pipeline stages). Each row runs with
``plan.torch_compile`` as the table says (Tables 1 and 3 with and without it, 4 and 5 with it),
so the eager rows against their compiled twins check the stack file's eager elementwise
accounting on its own: torchtitan measured compile's gain, the estimate predicts it from the
bytes of torchtitan's model code. Run: ``python tools/check_torchtitan_published.py``.
"""

from __future__ import annotations

from typing import Any

import costmodel

RELEASE = "2024-12"
"""The torchtitan of these runs (9dec370): its own eager RMSNorm and repeat_kv, which the
stack file's ``releases["2024-12"]`` costs (the PyPI releases use torch's fused RMSNorm)."""
Case = tuple[str, str, int, int, str, dict[str, Any], float, float]
"""(label, preset, GPUs, global batch, precision, plan, reported TPS/GPU, reported GiB)."""


def _eight_b(table: str, gpus: int, reported: list[tuple[float, float]]) -> list[Case]:
    """Tables 1 and 3: Llama 3.1 8B, FSDP over every GPU, local batch 2, selective AC, eager,
    compiled and compiled with Float8; ``reported`` are their (TPS/GPU, GiB)."""
    plan = {"dp": gpus, "zero_stage": 3, "recompute": "selective", "micro_batch_size": 2}
    runs = [(f"{table} 8B FSDP {gpus}, selective", "bf16", False),
            (f"{table} + torch.compile", "bf16", True),
            (f"{table} + torch.compile + Float8", "fp8", True)]
    return [(label, "llama3-8b", gpus, 2 * gpus, precision,
             {**plan, "torch_compile": compiled}, tps, mem)
            for (label, precision, compiled), (tps, mem) in zip(runs, reported, strict=True)]


SEVENTY_B = {"tp": 8, "dp": 32, "zero_stage": 3, "recompute": "full", "micro_batch_size": 16,
             "sequence_parallel": True, "torch_compile": True}
CASES: list[Case] = [
    *_eight_b("T1", 8, [(5762, 82.4), (6667, 77.0), (8532, 76.8)]),
    *_eight_b("T3", 128, [(5605, 67.0), (6514, 62.0), (8380, 61.8)]),
    ("T4 70B FSDP 32 TP 8, full, fp8", "llama3-70b", 256, 512, "fp8",
     {**SEVENTY_B, "tp_comm_overlap": False}, 829, 71.9),
    ("T4 same + async TP", "llama3-70b", 256, 512, "fp8",
     {**SEVENTY_B, "tp_comm_overlap": True}, 876, 67.6),
    ("T5 405B FSDP 8 TP 8 PP 8, 1F1B", "llama3-405b", 512, 256, "fp8",
     {"tp": 8, "pp": 8, "dp": 8, "zero_stage": 3, "recompute": "full", "micro_batch_size": 4,
      "sequence_parallel": True, "tp_comm_overlap": True, "schedule": "1F1B",
      "torch_compile": True}, 100, 82.5),
    ("T5 same, Interleaved 1F1B", "llama3-405b", 512, 256, "fp8",
     {"tp": 8, "pp": 8, "dp": 8, "zero_stage": 3, "recompute": "full", "micro_batch_size": 2,
      "sequence_parallel": True, "tp_comm_overlap": True, "schedule": "Interleaved1F1B",
      "virtual_stages": 2, "torch_compile": True}, 128, 72.7),
]


def predict(preset: str, gpus: int, gbs: int, precision: str, plan: dict[str, Any]
            ) -> tuple[float, float, str]:
    """(tokens/s per GPU, peak GiB, memory verdict) of one published run, estimated with
    the stack of the torchtitan it ran (:data:`RELEASE`) on H100-SXM-80GB at sequence
    8192."""
    est = costmodel.estimate({
        "model": {"preset": preset},
        "training": {"global_batch_size": gbs, "seq_len": 8192, "precision": precision,
                     "framework": "torchtitan", "framework_version": RELEASE},
        "cluster": {"pools": [{"name": "h", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                               "nodes": gpus // 8}]},
        "plan": plan})
    return est.tokens_per_s / gpus, est.memory.peak_gib, est.memory.fit


COMPILE_PAIRS = (("T1", "T1 8B FSDP 8, selective", "T1 + torch.compile"),
                 ("T3", "T3 8B FSDP 128, selective", "T3 + torch.compile"))
"""The same bf16 run eager and under torch.compile (Tables 1 and 3)."""


def compile_gains() -> list[tuple[str, float, float]]:
    """(table, predicted, reported) throughput ratio of compiled over eager."""
    by_label = {c[0]: c for c in CASES}
    out = []
    for table, eager, compiled in COMPILE_PAIRS:
        _, p, g, b, pr, plan_e, tps_e, _ = by_label[eager]
        plan_c, tps_c = by_label[compiled][5], by_label[compiled][6]
        gain = predict(p, g, b, pr, plan_c)[0] / predict(p, g, b, pr, plan_e)[0]
        out.append((table, gain, tps_c / tps_e))
    return out


def main() -> None:
    print(f"{'run':34s} {'TPS/GPU':>8s} {'reported':>8s} {'err':>6s} {'peak GiB':>9s} "
          f"{'reported':>8s} {'err':>6s}  verdict")
    seen: dict[str, tuple[float, float, float, float]] = {}
    for label, preset, gpus, gbs, precision, plan, tps, mem in CASES:
        got, peak, fit = predict(preset, gpus, gbs, precision, plan)
        print(f"{label:34s} {got:8.0f} {tps:8.0f} {got / tps - 1:+6.0%} {peak:9.1f} "
              f"{mem:8.1f} {peak / mem - 1:+6.0%}  {fit}")
        seen[label] = (got, tps, peak, mem)
    print("\ntorch.compile's gain, the same run eager and compiled (bf16):")
    print(f"{'table':6s} {'TPS predicted':>13s} {'reported':>9s} {'memory predicted':>17s} "
          f"{'reported':>9s}")
    for table, eager, compiled in COMPILE_PAIRS:
        e, c = seen[eager], seen[compiled]
        print(f"{table:6s} {c[0] / e[0]:12.3f}x {c[1] / e[1]:8.3f}x {c[2] - e[2]:+13.1f} GiB "
              f"{c[3] - e[3]:+5.1f} GiB")


if __name__ == "__main__":
    main()
