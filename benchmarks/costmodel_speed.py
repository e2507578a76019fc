"""Speed of the cost model: bulk evaluation (the search's hot path) and one full estimate.

Targets (issue 2): >= 100,000 plans/s in bulk; one full estimate with the pipeline simulator
for pp=16 and 128 micro-batches in <= 20 ms (the torch schedules; Chimera and BitPipe, two
model replicas, are printed too). Prints measured figures; asserts nothing.

    python benchmarks/costmodel_speed.py
"""

from __future__ import annotations

import statistics
import time

from costmodel import evaluate
from costmodel.bulk import Candidates, evaluate_bulk
from costmodel.specs.cluster import Cluster, GPUPool
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.presets import get_preset
from costmodel.specs.training import TrainingSpec


def bench(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    model = get_preset("llama3-70b")
    training = TrainingSpec(global_batch_size=1024, seq_len=8192)
    pool = GPUPool(name="h100", gpu="H100-SXM-80GB", gpus_per_node=8, nodes=512)
    cands = Candidates.grid(
        tp=[1, 2, 4, 8], pp=[1, 2, 4, 8, 16], dp=[1, 2, 4, 8, 16, 32, 64, 128], cp=[1, 2],
        mbs=[1, 2], v=[1, 2, 4],
        schedule=["1F1B", "Interleaved1F1B", "InterleavedZeroBubble", "ZBVZeroBubble"],
        recompute=["none", "selective", "full"], sp=[False, True], zero=[0, 1, 3])
    evaluate_bulk(model, training, pool, cands)  # warm caches
    times = bench(lambda: evaluate_bulk(model, training, pool, cands), 5)
    med = statistics.median(times)
    res = evaluate_bulk(model, training, pool, cands)
    print(f"bulk: {len(cands):,} candidate plans (llama3-70b, 4096 x H100), "
          f"median {med * 1e3:.1f} ms -> {len(cands) / med:,.0f} plans/s "
          f"({int(res.valid.sum()):,} valid, {int(res.fits.sum()):,} fit)")

    cluster = Cluster(pools=[GPUPool(name="h100", gpu="H100-SXM-80GB", nodes=64)])
    training2 = TrainingSpec(global_batch_size=512, seq_len=8192)
    for sched, v in (("1F1B", 1), ("Interleaved1F1B", 5), ("InterleavedZeroBubble", 1),
                     ("ZBVZeroBubble", 2), ("Chimera", 1), ("BitPipe", 2)):
        plan = ParallelPlan(tp=8, pp=16, dp=4, micro_batch_size=1, schedule=sched,  # type: ignore[arg-type]
                            virtual_stages=v, recompute="selective", sequence_parallel=True)
        evaluate(model, training2, cluster, plan)  # warm the schedule cache
        t = bench(lambda plan=plan: evaluate(model, training2, cluster, plan), 20)  # type: ignore[misc]
        cold = bench(lambda plan=plan: _cold(model, training2, cluster, plan), 3)
        warm_ms, cold_ms = statistics.median(t) * 1e3, statistics.median(cold) * 1e3
        print(f"estimate pp=16, 128 micro-batches, {sched:<22} median {warm_ms:6.2f} ms"
              f" (schedule cache cold: {cold_ms:6.2f} ms)")


def _cold(model, training, cluster, plan):  # type: ignore[no-untyped-def]
    from costmodel.pipeline import schedules, simulator

    simulator.encoded_schedule.cache_clear()
    schedules.build_schedule_cached.cache_clear()
    return evaluate(model, training, cluster, plan)


if __name__ == "__main__":
    main()
