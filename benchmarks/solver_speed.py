"""Search time of the solver on the issue's two reference problems (median of repeated runs).

(a) llama3-70b, global batch 1024 × 8192 tokens, one pool of 512 nodes × 8 H100-SXM-80GB,
    objective throughput, full space — target ≤ 1 s;
(b) the same model on three pools (32 × 8 H100, 64 × 8 A100-SXM-80GB, 32 × 8 L40S, different
    prices), objective cost — target ≤ 10 s.
Prints the median time, the optimality status, the bound and the gap; asserts nothing.

    python benchmarks/solver_speed.py
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import solver
from solver.explain import describe

TRAINING = {"global_batch_size": 1024, "seq_len": 8192, "precision": "bf16"}
CASES: dict[str, dict[str, Any]] = {
    "(a) 512 x 8 H100, throughput": {
        "model": {"preset": "llama3-70b"}, "training": TRAINING, "objective": "throughput",
        "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                               "nodes": 512, "price_per_gpu_hour": 2.49}]},
        "top_k": 3, "time_limit_s": 60},
    "(b) H100 + A100 + L40S, cost": {
        "model": {"preset": "llama3-70b"}, "training": TRAINING, "objective": "cost",
        "cluster": {"pools": [
            {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 32,
             "price_per_gpu_hour": 2.49},
            {"name": "a100", "gpu": "A100-SXM-80GB", "gpus_per_node": 8, "nodes": 64,
             "price_per_gpu_hour": 1.29},
            {"name": "l40s", "gpu": "L40S-48GB", "gpus_per_node": 8, "nodes": 32,
             "price_per_gpu_hour": 0.89}]},
        "top_k": 3, "time_limit_s": 60},
}


def main(repeat: int = 5) -> None:
    for name, req in CASES.items():
        solver.search(req)  # warm imports and caches
        times, result = [], None
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = solver.search(req)
            times.append(time.perf_counter() - t0)
        assert result is not None
        o, s = result.optimality, result.stats
        best = result.plans[0]
        print(f"{name}: median {statistics.median(times):.3f} s over {repeat} runs; "
              f"status {o.status}, {o.objective} = {o.value:.6g}, bound {o.bound:.6g}, "
              f"gap {o.gap:.2%}; {s.candidates:,} candidates, {s.fitting:,} fit, "
              f"{s.simulated} simulated, {s.partitions_solved} CP-SAT partitions")
        print(f"    best: {describe(best.plan)}; {best.estimate.tokens_per_s:,.0f} tokens/s, "
              f"MFU {best.estimate.mfu:.1%}, ${best.estimate.cost_per_million_tokens:.3f}/M tokens")


if __name__ == "__main__":
    main()
