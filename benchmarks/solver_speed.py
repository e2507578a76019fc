"""Search time of the solver on issue 12's reference problems, side by side with a previous
revision in the same run (this machine is shared and noisy: only ratios taken together mean
something).

(a) llama3-70b, 1,024 × 8,192 tokens, 512 × 8 H100, throughput        — target ≤ 1.0 s
(b) the same on 2,048 × 8 H100 (16,384 GPUs)                           — target ≤ 3 s
(c) the same on three pools (H100, A100, L40S, their prices), cost     — target ≤ 3 s
(d) GPT-2-medium (24 layers, hidden 1,024), 32 × 1,024 tokens, 3 nodes × 4 V100 + 1 node ×
    4 L4 at 10 Gb/s, throughput                                         — target ≤ 2 s

Each case runs in a fresh interpreter, three calls in a row, and the median of the three is
printed with the first (cold) call included, as the issue asks (``--calls N`` makes N calls:
the median of all is printed, and of the warm ones beside it); with ``--against REV`` the
same cases run on REV (a git worktree made for it in a temporary folder), alternating with
the current code case by case. Prints figures and the machine's load; asserts nothing.

    python benchmarks/solver_speed.py                  # this tree
    python benchmarks/solver_speed.py --against HEAD~3 # and a previous revision beside it
    python benchmarks/solver_speed.py --calls 7        # seven calls per case
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from beside import ROOT, load_average, revision

TRAINING = {"global_batch_size": 1024, "seq_len": 8192, "precision": "bf16"}


def h100(nodes: int) -> dict[str, Any]:
    return {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": nodes,
            "price_per_gpu_hour": 2.49}


CASES: dict[str, tuple[float, dict[str, Any]]] = {
    "(a) 4,096 H100, throughput": (1.0, {
        "model": {"preset": "llama3-70b"}, "training": TRAINING, "objective": "throughput",
        "cluster": {"pools": [h100(512)]}, "top_k": 3, "time_limit_s": 60}),
    "(b) 16,384 H100, throughput": (3.0, {
        "model": {"preset": "llama3-70b"}, "training": TRAINING, "objective": "throughput",
        "cluster": {"pools": [h100(2048)]}, "top_k": 3, "time_limit_s": 60}),
    "(c) H100 + A100 + L40S, cost": (3.0, {
        "model": {"preset": "llama3-70b"}, "training": TRAINING, "objective": "cost",
        "cluster": {"pools": [
            h100(32),
            {"name": "a100", "gpu": "A100-SXM-80GB", "gpus_per_node": 8, "nodes": 64,
             "price_per_gpu_hour": 1.29},
            {"name": "l40s", "gpu": "L40S-48GB", "gpus_per_node": 8, "nodes": 32,
             "price_per_gpu_hour": 0.89}]},
        "top_k": 3, "time_limit_s": 60}),
    "(d) GPT-2-medium, 12 V100 + 4 L4": (2.0, {
        "model": {"name": "gpt2-medium", "num_hidden_layers": 24, "hidden_size": 1024,
                  "num_attention_heads": 16, "intermediate_size": 4096, "vocab_size": 50257,
                  "hidden_act": "gelu", "norm": "layernorm", "position_embedding": "learned",
                  "max_position_embeddings": 1024, "tie_word_embeddings": True},
        "training": {"global_batch_size": 32, "seq_len": 1024, "precision": "fp16"},
        "objective": "throughput",
        "cluster": {"pools": [
            {"name": "v100", "gpu": "V100", "gpus_per_node": 4, "nodes": 3,
             "inter_node_Gbps": 10},
            {"name": "l4", "gpu": "L4", "gpus_per_node": 4, "nodes": 1, "inter_node_Gbps": 10}]},
        "top_k": 3, "time_limit_s": 60}),
}

RUNNER = """
import json, sys, time
t0 = time.perf_counter()
import solver
req = json.loads(sys.argv[1])
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    r = solver.search(req)
    times.append(time.perf_counter() - t)
o = r.optimality
print(json.dumps({"times": times, "status": o.status, "gap": o.gap,
                  "candidates": r.stats.candidates, "simulated": r.stats.simulated,
                  "best": r.plans[0].plan.model_dump(mode="json") if r.plans else None}))
"""


def run(tree: Path, req: dict[str, Any], calls: int = 3) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(req), str(calls)], cwd=tree,
                         env=env,
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def line(label: str, r: dict[str, Any]) -> tuple[str, float | None]:
    if "error" in r:
        return f"{label}: {r['error']}", None
    med = statistics.median(r["times"])
    warm = (f", warm median {statistics.median(r['times'][1:]):.3f} s"
            if len(r["times"]) > 3 else "")
    gap = "" if r["gap"] in (None, 0.0) else f", gap {r['gap']:.2%}"
    return (f"{label}: median {med:.3f} s{warm} (calls "
            f"{', '.join(f'{x:.3f}' for x in r['times'])}); {r['status']}{gap}; "
            f"{r['candidates']:,} candidates, {r['simulated']} simulated", med)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", help="a git revision to run beside this tree")
    ap.add_argument("--calls", type=int, default=3, help="calls per case (default 3)")
    args = ap.parse_args()
    with revision(args.against) as old_tree:
        print(f"load average before: {load_average()}, {os.cpu_count()} CPUs")
        for name, (target, req) in CASES.items():
            print(f"{name} (target ≤ {target:g} s)")
            now_text, now = line("  this tree", run(ROOT, req, args.calls))
            print(now_text, flush=True)
            if old_tree is not None:
                old_text, old = line(f"  {args.against}", run(old_tree, req, args.calls))
                ratio = f" — ratio {now / old:.2f}" if now and old else ""
                print(old_text + ratio, flush=True)
        print(f"load average after: {load_average()}")

if __name__ == "__main__":
    main()
