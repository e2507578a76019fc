"""Goodput of Llama-3-405B on 16,384 H100 under each recovery scheme (README figures).

The layout is Meta's (Dubey et al. 2024, Table 4: tp 8, cp 1, pp 16, dp 128, 2,048 sequences
of 8,192 tokens); failures at Llama 3's rate (419 in 54 days, §3.3.4, the default); storage
at Tectonic's sustained 2 TB/s (§3.3.1). restart_s is an assumption, printed with the table.

    .venv/bin/python benchmarks/goodput_405b.py [--restart-s 600]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import costmodel
from costmodel.specs.presets import get_preset


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--restart-s", type=float, default=600.0)
    args = parser.parse_args()
    model = get_preset("llama3-405b")
    schemes = [("checkpoint", {}), ("in_memory", {"scheme": "in_memory"}),
               ("checkfree", {"scheme": "checkfree"}),
               ("checkfree+", {"scheme": "checkfree", "checkfree_plus": True})]
    print(f"Llama-3-405B, 16,384 H100 (tp 8, pp 16, dp 128), restart {args.restart_s:.0f} s, "
          "storage 2,000 GB/s aggregate, Llama 3 failure rate")
    print(f"{'scheme':<12} {'fail/day':>8} {'ckpt GB':>8} {'write s':>8} {'interval s':>10} "
          f"{'goodput':>8} {'days for 15.6T tokens':>22}")
    for name, extra in schemes:
        body = {
            "model": model.model_dump(),
            "training": {"global_batch_size": 2048, "seq_len": 8192,
                         "train_tokens": 15_600_000_000_000,
                         "reliability": {"restart_s": args.restart_s,
                                         "checkpoint_GBps_per_node": 25,
                                         "checkpoint_GBps_aggregate": 2000, **extra}},
            "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "nodes": 2048,
                                   "gpus_per_node": 8, "price_per_gpu_hour": 2.0}]},
            "plan": {"pool": "h100", "tp": 8, "pp": 16, "dp": 128, "micro_batch_size": 1,
                     "schedule": "Interleaved1F1B", "virtual_stages": 2,
                     "sequence_parallel": True},
        }
        est = costmodel.estimate(body)
        g = est.goodput
        assert g is not None
        interval = f"{g.checkpoint_interval_s:.0f}" if g.checkpoint_interval_s else "-"
        print(f"{name:<12} {g.failures_per_day:>8.2f} {g.checkpoint_bytes / 1e9:>8.0f} "
              f"{g.checkpoint_write_s:>8.1f} {interval:>10} {g.goodput:>8.3f} "
              f"{g.time_to_train_days or 0:>22.1f}")
    print(f"steady-state step {est.step_time_s:.2f} s, {est.tokens_per_s / 1e6:.2f} M tokens/s, "
          f"MFU {est.mfu:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
