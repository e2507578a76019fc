"""``training.reliability``: how often the job's GPUs fail and how it recovers.

The default failure rate is Meta's for Llama 3 405B pre-training: 419 unexpected interruptions
in 54 days on 16,384 H100 (Dubey et al. 2024, "The Llama 3 Herd of Models", §3.3.4), i.e. one
per 54 × 24 × 16,384 / 419 ≈ 50,680 GPU-hours. Restart time and checkpoint bandwidth depend
on the site and have no default: they are inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from costmodel.errors import ProblemCollector

if TYPE_CHECKING:  # the specs that hold this one
    from costmodel.specs.cluster import Cluster
    from costmodel.specs.training import TrainingSpec

LLAMA3_GPU_MTBF_HOURS = 54 * 24 * 16_384 / 419
"""GPU-hours per unexpected interruption in Llama 3 405B pre-training (Dubey et al. 2024,
§3.3.4: 419 in 54 days on 16,384 H100)."""

RecoveryScheme = Literal["checkpoint", "in_memory", "checkfree"]


class ReliabilitySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_mtbf_hours: float = Field(
        LLAMA3_GPU_MTBF_HOURS, gt=0, le=1e9,
        description="Mean GPU-hours between unexpected interruptions, per GPU (the job fails "
        "when any of its GPUs does). Default: Llama 3 405B's 419 interruptions in 54 days on "
        "16,384 H100 (Dubey et al. 2024, §3.3.4) ≈ 50,680 h.")
    pool_gpu_mtbf_hours: dict[str, float] = Field(
        default_factory=dict, description="gpu_mtbf_hours of named pools (cluster.pools[].name "
        "-> GPU-hours per interruption), for inventories whose GPU types or sites fail at "
        "different rates; pools not named take gpu_mtbf_hours.", examples=[{"a100": 30000}])
    restart_s: float = Field(
        gt=0, le=1e6, description="Seconds from a failure to training again (detection, "
        "rescheduling, process start, loading), excluding the lost work.", examples=[600])
    checkpoint_GBps_per_node: float = Field(
        gt=0, le=1e5, description="Checkpoint write bandwidth of one node to storage, GB/s.",
        examples=[5])
    checkpoint_GBps_aggregate: float | None = Field(
        None, gt=0, le=1e8, description="The storage system's total write bandwidth, GB/s; "
        "null = the nodes' sum.", examples=[400])
    scheme: RecoveryScheme = Field(
        "checkpoint", description="checkpoint: periodic checkpoints to storage, the interval "
        "chosen optimally; in_memory: checkpoints to a peer node's host memory over the "
        "network; checkfree: a failed intermediate pipeline stage is rebuilt from its "
        "neighbours' weights without a checkpoint (CheckFree, 2025), end-stage failures from "
        "checkpoints unless checkfree_plus.", examples=["checkpoint"])
    checkfree_plus: bool = Field(
        False, description="With checkfree: end stages recovered from neighbours too "
        "(CheckFree+, out-of-order pipelining), so no checkpoints are needed for failures.")
    checkpoint_interval_s: float | None = Field(
        None, gt=0, le=1e8, description="Seconds of training between checkpoints; null = the "
        "interval that maximises goodput under this model.")

    @field_validator("pool_gpu_mtbf_hours")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, h in v.items() if not (0 < h <= 1e9)]
        if bad:
            raise ValueError(f"GPU-hours per interruption must be in (0, 1e9]; not for {bad}")
        return v

    def mtbf_hours(self, pool: str) -> float:
        """GPU-hours per interruption of one GPU of pool ``pool``."""
        return self.pool_gpu_mtbf_hours.get(pool, self.gpu_mtbf_hours)


def check_reliability_pools(training: TrainingSpec, cluster: Cluster,
                            c: ProblemCollector) -> None:
    """``training.reliability.pool_gpu_mtbf_hours`` names only pools of the cluster."""
    rel = training.reliability
    if rel is None or not rel.pool_gpu_mtbf_hours:
        return
    names = {p.name for p in cluster.pools}
    unknown = sorted(set(rel.pool_gpu_mtbf_hours) - names)
    c.check(not unknown, "training.reliability.pool_gpu_mtbf_hours",
            f"unknown pools {unknown}; pools: {', '.join(sorted(names))}")
