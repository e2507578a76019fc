"""Predicted against reported for Meta's Llama 3 405B pre-training (an independent check: not
in shared/validation, and no parameter is set from it).

Source: Llama Team, AI @ Meta, "The Llama 3 Herd of Models" (arXiv:2407.21783, 2024), §3.3
and Table 4 (scaling configurations and MFU of each pre-training stage): H100-SXM 80 GB HBM3
at 700 W on Grand Teton servers, 400 Gb/s RoCE per GPU; TP 8, PP 16; DP 64 / 128 / 8, CP 1 /
1 / 16; sequence 8,192 / 8,192 / 131,072; 16M tokens per batch; 430 / 400 / 380 TFLOP/s per
GPU, BF16 MFU 43 / 41 / 38 %. The paper trains the 8K stages without activation
checkpointing, shards optimizer states and gradients over DP without resharding the weights
after the forward (ZeRO-2-like; costed here as ZeRO-1, which moves the same bytes per step)
and takes one layer off the first and the last pipeline stage (the estimate keeps meshplan's
default split of the 126 layers).

Meta's stack is its own; the estimate runs on the nearest of meshplan's, Megatron-Core, and
what differs is printed rather than modelled: its context parallelism all-gathers keys and
values (not Megatron's overlapped ring), and its interleaved schedule is modified to take
any number of micro-batches. The interleaving depth (virtual stages) is not stated, so each
plausible one is printed with its memory verdict.

Run: ``python tools/check_llama3_published.py``.
"""

from __future__ import annotations

import costmodel
from costmodel import SpecError

STAGES = [  # (label, dp, cp, seq, global batch in sequences, reported MFU)
    ("8K, 8,192 GPUs", 64, 1, 8192, 2048, 0.43),
    ("8K, 16,384 GPUs", 128, 1, 8192, 2048, 0.41),
    ("128K, 16,384 GPUs, CP 16", 8, 16, 131072, 128, 0.38),
]


def predict(dp: int, cp: int, seq: int, gbs: int, virtual: int) -> costmodel.Estimate:
    """Llama 3.1 405B as the paper ran it, interleaved over ``virtual`` stages per rank."""
    gpus = 8 * 16 * dp * cp
    return costmodel.estimate({
        "model": {"preset": "llama3-405b"},
        "training": {"global_batch_size": gbs, "seq_len": seq, "precision": "bf16",
                     "framework": "megatron"},
        "cluster": {"pools": [{"name": "h", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                               "nodes": gpus // 8}]},
        "plan": {"tp": 8, "pp": 16, "dp": dp, "cp": cp, "micro_batch_size": 1,
                 "schedule": "Interleaved1F1B" if virtual > 1 else "1F1B",
                 "virtual_stages": virtual, "sequence_parallel": True, "tp_comm_overlap": True,
                 "zero_stage": 1, "recompute": "none"}})


def main() -> None:
    print(f"{'stage':26s} {'v':>2s} {'MFU':>6s} {'reported':>8s} {'err':>6s} {'peak GiB':>9s}"
          "  verdict")
    for label, dp, cp, seq, gbs, mfu in STAGES:
        for v in (1, 2, 4):
            try:
                est = predict(dp, cp, seq, gbs, v)
            except SpecError as exc:
                print(f"{label:26s} {v:2d}  {exc}")
                continue
            print(f"{label:26s} {v:2d} {est.mfu:6.1%} {mfu:8.0%} {est.mfu / mfu - 1:+6.0%} "
                  f"{est.memory.peak_gib:9.1f}  {est.memory.fit}")


if __name__ == "__main__":
    main()
