"""A search at the service's maxima — 16 pools of 1,024 nodes × 8 GPUs (131,072 GPUs),
top_k 20, time_limit_s 10, the candidate-memory cap of the settings — timed and measured in a
fresh interpreter, side by side with a previous revision in the same run.

Two inventories: ``same`` (16 pools of two GPU types and sizes, so pools share hardware) and
``distinct`` (16 pools of distinct node counts, none shared). Prints wall time, peak resident
memory (ru_maxrss), plans returned and pools skipped; asserts nothing.

    python benchmarks/search_maxima.py
    python benchmarks/search_maxima.py --against da43345
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from beside import ROOT, load_average, revision

RUNNER = """
import json, resource, sys, time
import solver
from solver.request import SearchRequest
distinct = sys.argv[1] == "distinct"
gpus = ["H100-SXM-80GB", "A100-SXM-80GB"]
req = SearchRequest.model_validate({
    "model": {"preset": "llama3-70b"},
    "training": {"global_batch_size": 1024, "seq_len": 4096},
    "cluster": {"pools": [{"name": f"p{i}", "gpu": gpus[i % 2], "gpus_per_node": 8,
                           "nodes": 1024 - i if distinct else 1024,
                           "price_per_gpu_hour": 2.0 + 0.01 * i} for i in range(16)]},
    "objective": "cost", "top_k": 20, "time_limit_s": 10})
kw = {}
try:
    from service.settings import Settings
    import inspect
    if "memory_cap_bytes" in inspect.signature(solver.search).parameters:
        kw["memory_cap_bytes"] = Settings().max_search_memory_mb << 20
except Exception:
    pass
t = time.perf_counter()
r = solver.search(req, **kw)
print(json.dumps({"elapsed_s": time.perf_counter() - t, "plans": len(r.plans),
                  "status": r.optimality.status,
                  "skipped": len(getattr(r.stats, "skipped_pools", [])),
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(tree: Path, which: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", RUNNER, which], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return (f"{r['elapsed_s']:.2f} s, peak RSS {r['maxrss_mib']:,.0f} MiB, {r['plans']} plans "
            f"({r['status']}), {r['skipped']} pools skipped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", help="a git revision to run beside this tree")
    args = ap.parse_args()
    with revision(args.against) as old:
        print(f"load average before: {load_average()}")
        for which in ("same", "distinct"):
            print(f"{which} hardware, time_limit_s 10:")
            print(f"  this tree: {run(ROOT, which)}", flush=True)
            if old is not None:
                print(f"  {args.against}: {run(old, which)}", flush=True)
        print(f"load average after: {load_average()}")

if __name__ == "__main__":
    main()
