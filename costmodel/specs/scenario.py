"""A what-if scenario: which GPUs, stages, nodes, pools or links of a plan run slower than
the estimate assumes, and how much their speed varies from step to step
(:func:`costmodel.what_if.what_if`).

A factor multiplies a time: 1.25 makes the compute (or the communication, for links) take
25 % longer, 0.8 makes it 20 % shorter. Factors that apply to one GPU multiply (a GPU on a
slowed node of a slowed pool runs at the product). Field paths in errors are those of this
object (``ranks.12``, ``links.between.0.nodes``).

Placement: global ranks count the plan's GPUs in Megatron's order, pipeline outermost
(pipeline rank ``r`` holds GPUs ``r·tp·cp·dp`` .. ``(r+1)·tp·cp·dp − 1``); ``stages`` are
pipeline ranks (with virtual stages, every model chunk the rank holds); nodes are numbered
across the cluster, pools in the cluster's order (node ``k`` of the second pool is
``nodes(first pool) + k``), each pool's GPUs filled in ``plan.node_order`` (or index) order.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class NodePairSlowdown(BaseModel):
    """A slower link between two nodes (a degraded cable, a congested switch port)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: tuple[int, int] = Field(description="The two nodes (cluster node indices).",
                                   examples=[[0, 1]])
    factor: float = Field(description="Multiplier on communication between them.",
                          examples=[2.0])


class LinkScenario(BaseModel):
    """Slower (factor > 1) or faster links: pipeline send/recv and data-parallel gradient
    communication. Tensor/context/expert-parallel collectives are part of the stage compute
    times and follow the compute factors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intra_node: float = Field(1.0, description="Multiplier on communication inside a node "
                              "(NVLink).", examples=[1.0])
    inter_node: float = Field(1.0, description="Multiplier on communication between nodes "
                              "(the NICs).", examples=[1.5])
    between: list[NodePairSlowdown] = Field(
        default_factory=list, description="Multipliers on the links between two given nodes, "
        "on top of inter_node.", examples=[[{"nodes": [0, 1], "factor": 2.0}]])


class JitterSpec(BaseModel):
    """Step-to-step variation of every GPU's speed: each step, each GPU's compute time is
    multiplied by a log-normal draw of mean 1 and the given coefficient of variation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cv: float = Field(0.0, description="Coefficient of variation of every GPU's compute time "
                      "per step.", examples=[0.05])
    cv_per_rank: dict[int, float] = Field(
        default_factory=dict, description="Coefficient of variation of given global ranks "
        "(replaces cv for them).", examples=[{"0": 0.2}])
    steps: int = Field(32, description="Steps simulated (1..10000).", examples=[32])
    seed: int = Field(0, description="Seed of the draws: the same seed gives the same steps.",
                      examples=[0])


class Scenario(BaseModel):
    """What runs slower than the plan's estimate assumes. Every part is optional; an empty
    scenario answers the plan's own step time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ranks: dict[int, float] = Field(
        default_factory=dict, description="Global rank (GPU) → compute-time multiplier.",
        examples=[{"3": 1.1}])
    stages: dict[int, float] = Field(
        default_factory=dict, description="Pipeline stage (pipeline rank) → compute-time "
        "multiplier of all its GPUs.", examples=[{"0": 1.0}])
    nodes: dict[int, float] = Field(
        default_factory=dict, description="Node (cluster node index) → compute-time "
        "multiplier of its GPUs.", examples=[{"0": 1.0}])
    pools: dict[str, float] = Field(
        default_factory=dict, description="Pool name → compute-time multiplier of its GPUs.",
        examples=[{"h100": 1.0}])
    links: LinkScenario | None = Field(None, description="Slower or faster links.")
    jitter: JitterSpec | None = Field(None, description="Per-step variation of GPU speed.")
