"""Predicted against reported for torchtitan's published Llama 3.1 runs (an independent check;
these rows are not in shared/validation and set no parameter).

Source: pytorch/torchtitan@b5bcd76c66d0acb1a08b176d9639425bc55e0b2a
``benchmarks/llama3_h100_202412_torchtitan.md`` (torch 1963fc8, torchao eab345c, torchtitan
9dec370, 2024-12). Their GPUs are H100 SXM with 96 GB of HBM2e (2.4 TB/s) at a 500 W power
limit: the estimates run on the catalog's H100-SXM-96GB (:data:`GPU`), whose tensor peak is the
lower bound torchtitan gives for it (H100 NVL's), so throughput may come out below the reported
one by up to the SXM/NVL peak ratio (1.18x). Reported memory is torchtitan's max reserved.
Micro-batches follow torchtitan's default (as many as pipeline stages). Each row runs with
``plan.torch_compile`` as the table says (Tables 1 and 3 with and without it, 2, 4 and 5 with
it); Table 2's context parallelism is PyTorch's, all-gathering keys and values
(``overlap.cp_kv_exchange`` of the stack file),
so the eager rows against their compiled twins check the stack file's eager elementwise
accounting on its own: torchtitan measured compile's gain, the estimate predicts it from the
bytes of torchtitan's model code; the async-TP pairs check what the stack file's TP overlap
credits (PyTorch's micro-pipelined TP, ``overlap.tp_comm_gemms``: each collective
behind the one GEMM it is fused with, split per rank; still high: predicted 1.13-1.23x
against 1.04-1.16x). Run: ``python tools/check_torchtitan_published.py``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import costmodel

RELEASE = "2024-12"
"""The torchtitan of these runs (9dec370): its own eager RMSNorm and repeat_kv, which the
stack file's ``releases["2024-12"]`` costs (the PyPI releases use torch's fused RMSNorm)."""

GPU = "H100-SXM-96GB"
"""The runs' GPU: Grand Teton's HBM2e H100 at 500 W (the benchmark file's Hardware section)."""


class Case(NamedTuple):
    """One published run: what it ran and what it reported."""

    label: str
    preset: str
    gpus: int
    gbs: int
    precision: str
    plan: dict[str, Any]
    tps: float
    """Reported tokens/s per GPU."""
    mem: float | None
    """Reported peak memory (max reserved), GiB; None where the source reports none."""
    seq: int = 8192
    gpu: str = GPU
    release: str = RELEASE
    """The stack file's release the run's torchtitan matches."""
    recipe: str | None = None
    """training.fp8_recipe (None: the stack's default, tensorwise on Hopper)."""


def _eight_b(table: str, gpus: int, reported: list[tuple[float, float]]) -> list[Case]:
    """Tables 1 and 3: Llama 3.1 8B, FSDP over every GPU, local batch 2, selective AC, eager,
    compiled and compiled with Float8; ``reported`` are their (TPS/GPU, GiB)."""
    plan = {"dp": gpus, "zero_stage": 3, "recompute": "selective", "micro_batch_size": 2}
    runs = [(f"{table} 8B FSDP {gpus}, selective", "bf16", False),
            (f"{table} + torch.compile", "bf16", True),
            (f"{table} + torch.compile + Float8", "fp8", True)]
    return [Case(label, "llama3-8b", gpus, 2 * gpus, precision,
                 {**plan, "torch_compile": compiled}, tps, mem)
            for (label, precision, compiled), (tps, mem) in zip(runs, reported, strict=True)]


def _context_parallel() -> list[Case]:
    """Table 2: Llama 3.1 8B on 8 GPUs, FSDP × CP, local batch 1, full AC, compiled, Float8;
    every rank holds 32,768 tokens of a sequence 32,768 × CP long."""
    reported = [(1, 3890, 83.9), (2, 2540, 84.2), (4, 1071, 84.0), (8, 548, 84.5)]
    return [Case(f"T2 8B FSDP {8 // cp} CP {cp}, seq {32768 * cp // 1024}K", "llama3-8b", 8,
                 8 // cp, "fp8", {"dp": 8 // cp, "cp": cp, "zero_stage": 3, "recompute": "full",
                                  "micro_batch_size": 1, "torch_compile": True},
                 tps, mem, 32768 * cp)
            for cp, tps, mem in reported]


SEVENTY_B = {"tp": 8, "dp": 32, "zero_stage": 3, "recompute": "full", "micro_batch_size": 16,
             "sequence_parallel": True, "torch_compile": True}
FOUR_O_FIVE_B = {"tp": 8, "pp": 8, "dp": 8, "zero_stage": 3, "recompute": "full",
                 "sequence_parallel": True, "tp_comm_overlap": True, "torch_compile": True}
CASES: list[Case] = [
    *_eight_b("T1", 8, [(5762, 82.4), (6667, 77.0), (8532, 76.8)]),
    *_context_parallel(),
    *_eight_b("T3", 128, [(5605, 67.0), (6514, 62.0), (8380, 61.8)]),
    Case("T4 70B FSDP 32 TP 8, full, fp8", "llama3-70b", 256, 512, "fp8",
         {**SEVENTY_B, "tp_comm_overlap": False}, 829, 71.9),
    Case("T4 same + async TP", "llama3-70b", 256, 512, "fp8",
         {**SEVENTY_B, "tp_comm_overlap": True}, 876, 67.6),
    Case("T5 405B FSDP 8 TP 8 PP 8, 1F1B", "llama3-405b", 512, 256, "fp8",
         {**FOUR_O_FIVE_B, "micro_batch_size": 4, "schedule": "1F1B"}, 100, 82.5),
    Case("T5 same, Interleaved 1F1B", "llama3-405b", 512, 256, "fp8",
         {**FOUR_O_FIVE_B, "micro_batch_size": 2, "schedule": "Interleaved1F1B",
          "virtual_stages": 2}, 128, 72.7),
    *[Case(f"H1 8B FSDP {gpus} H200 compile+Float8", "llama3-8b", gpus, 2 * gpus, "fp8",
           {"dp": gpus, "zero_stage": 3, "recompute": "selective", "micro_batch_size": 2,
            "torch_compile": True}, tps, mem, gpu="H200-SXM-141GB", release="0.2")
      for gpus, tps, mem in ((32, 10938, 47.96), (64, 10753, 46.97))],
    *[Case(f"A{n} {size} FSDP {dp} TP 8 {quant}{' async' if overlap else ''}",
           f"llama3-{size.lower()}", 8 * dp, local * dp, "bf16" if quant == "bf16" else "fp8",
           {"tp": 8, "dp": dp, "zero_stage": 3, "recompute": rc, "micro_batch_size": local,
            "sequence_parallel": True, "tp_comm_overlap": overlap, "torch_compile": True},
           tps, None, release="0.2", recipe=None if quant == "bf16" else quant)
      for n, size, dp, local, rc, runs in (
          (1, "70B", 32, 16, "full", (("bf16", 597.3, 652.4), ("tensorwise", 809.8, 942.4),
                                       ("rowwise", 599.6, 624.8))),
          (2, "8B", 8, 12, "selective", (("bf16", 4378, 4809.4), ("tensorwise", 5078.1, 5570.1),
                                         ("rowwise", 3708.5, 3914.9))))
      for quant, vanilla, async_tp in runs
      for overlap, tps in ((False, vanilla), (True, async_tp))],
]
"""T1-T5: the December 2024 benchmark file. H1: Trainy's H200 runs of June 2025 (pytorch/
torchtitan@b5bcd76c66d0acb1a08b176d9639425bc55e0b2a
``benchmarks/llama3-8b_h200_202506_trainy-whitefiber.md``: torchtitan e7c0cae, llama3_8b.toml
(sequence 8192, FSDP over every GPU, per-op selective AC), local batch 2, compile, Float8
tensorwise with its float8 FSDP all-gather, which the estimate does not model (it gathers
16-bit weights); 400 Gb/s per GPU). e7c0cae is the week before v0.1.0, estimated as release
0.2: torch's fused RMSNorm and a compiled loss as there, its repeat_kv aside. A1-A2: the
async-TP benchmark of June 2025 on the December runs' Grand Teton H100s (the same repository,
``benchmarks/asyncTP_llama3_h100_2025-06_torchtitan.md``, torchtitan 820504e: tokens/s per
GPU, no memory; its note: the vanilla-TP rowwise baseline is slow, pytorch/torchtitan#1207)."""


def predict(case: Case, plan: dict[str, Any] | None = None) -> tuple[float, float, str]:
    """(tokens/s per GPU, peak GiB, memory verdict) of one published run (``plan``: another
    plan for it), estimated with the stack of the torchtitan it ran on its GPU."""
    gpus = case.gpus
    est = costmodel.estimate({
        "model": {"preset": case.preset},
        "training": {"global_batch_size": case.gbs, "seq_len": case.seq,
                     "precision": case.precision, "fp8_recipe": case.recipe,
                     "framework": "torchtitan", "framework_version": case.release},
        "cluster": {"pools": [{"name": "h", "gpu": case.gpu, "gpus_per_node": 8,
                               "nodes": gpus // 8}]},
        "plan": case.plan if plan is None else plan})
    return est.tokens_per_s / gpus, est.memory.peak_gib, est.memory.fit


ASYNC_PAIRS = [("T4 70B FSDP 32 TP 8, full, fp8", "T4 same + async TP"),
               *[(c.label.removesuffix(" async"), c.label) for c in CASES
                 if c.label.endswith(" async")]]
"""The same run with and without async tensor parallelism (Table 4, A1, A2)."""

COMPILE_PAIRS = (("T1", "T1 8B FSDP 8, selective", "T1 + torch.compile"),
                 ("T3", "T3 8B FSDP 128, selective", "T3 + torch.compile"))
"""The same bf16 run eager and under torch.compile (Tables 1 and 3)."""


def compile_gains() -> list[tuple[str, float, float]]:
    """(table, predicted, reported) throughput ratio of compiled over eager."""
    by_label = {c.label: c for c in CASES}
    out = []
    for table, eager, compiled in COMPILE_PAIRS:
        e, c = by_label[eager], by_label[compiled]
        gain = predict(e, c.plan)[0] / predict(e)[0]
        out.append((table, gain, c.tps / e.tps))
    return out


def main() -> None:
    w = max(len(c.label) for c in CASES)
    print(f"{'run':{w}s} {'TPS/GPU':>8s} {'reported':>8s} {'err':>6s} {'peak GiB':>9s} "
          f"{'reported':>8s} {'err':>6s}  verdict")
    seen: dict[str, tuple[float, float, float, float]] = {}
    for case in CASES:
        got, peak, fit = predict(case)
        reported = (f"{case.mem:8.1f} {peak / case.mem - 1:+6.0%}" if case.mem is not None
                    else f"{'-':>8s} {'':6s}")
        print(f"{case.label:{w}s} {got:8.0f} {case.tps:8.0f} {got / case.tps - 1:+6.0%} "
              f"{peak:9.1f} {reported}  {fit}")
        seen[case.label] = (got, case.tps, peak, case.mem or 0.0)
    print("\ntorch.compile's gain, the same run eager and compiled (bf16):")
    print(f"{'table':6s} {'TPS predicted':>13s} {'reported':>9s} {'memory predicted':>17s} "
          f"{'reported':>9s}")
    for table, eager, compiled in COMPILE_PAIRS:
        e, c = seen[eager], seen[compiled]
        print(f"{table:6s} {c[0] / e[0]:12.3f}x {c[1] / e[1]:8.3f}x {c[2] - e[2]:+13.1f} GiB "
              f"{c[3] - e[3]:+5.1f} GiB")
    print("\nasync TP's gain, the same run with vanilla and async tensor parallelism:")
    print(f"{'run':{w}s} {'predicted':>9s} {'reported':>9s}")
    for vanilla, overlapped in ASYNC_PAIRS:
        v, a = seen[vanilla], seen[overlapped]
        print(f"{vanilla:{w}s} {a[0] / v[0]:8.3f}x {a[1] / v[1]:8.3f}x")


if __name__ == "__main__":
    main()
