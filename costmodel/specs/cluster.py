"""GPU inventory: pools of identical nodes, with prices and optional link overrides."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from costmodel.specs.gpus import GPUType, canonical_gpu_name, get_gpu
from costmodel.specs.measured_device import MeasuredDevice


class GPUPool(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Pool name; plans refer to it.")
    # declared before ``gpu`` so that gpu's validator sees it (pydantic validates in order)
    device: MeasuredDevice | None = Field(
        None, description="A measured device not in the catalog (a calibration profile's "
        "'device'); 'gpu' then names it. Filled in by the estimate request when 'gpu' names "
        "the device of the request's calibration; null = a catalog GPU.")
    gpu: str = Field(description="Catalog GPU name or alias (see GET /v1/gpus), or the name of "
                     "the measured device of the request's calibration (e.g. 'cpu').")
    gpus_per_node: PositiveInt = 8
    nodes: PositiveInt = 1
    price_per_gpu_hour: NonNegativeFloat = Field(0.0, le=1e6)
    preemption_per_hour: NonNegativeFloat = Field(
        0.0, le=1e3, description="Spot / preemptible capacity: expected preemptions per node "
        "per hour (per node-hour; e.g. 0.01 = one node in a hundred reclaimed each hour). "
        "With training.reliability, a plan's nodes of this pool add their preemptions to its "
        "interruption rate, each costing a restart and the lost work as a failure does "
        "(costmodel.goodput); without it, unused. 0 = on-demand capacity.", examples=[0.01])
    intra_node_GBps: float | None = Field(
        None, ge=0.01, le=1e6, description="One-direction per-GPU link rate inside a node; "
        "null = catalog."
    )
    inter_node_Gbps: float | None = Field(
        None, ge=0.01, le=1e7, description="Per-GPU network rate between nodes; null = catalog "
        "reference node."
    )

    @field_validator("gpu")
    @classmethod
    def _canonical(cls, v: str, info: ValidationInfo) -> str:
        device = info.data.get("device")
        if device is not None:
            if v.strip() != device.name:
                raise ValueError(f"names {v!r} but the pool's device is {device.name!r}")
            return device.name
        try:
            return canonical_gpu_name(v)
        except ValueError as exc:
            raise ValueError(f"{exc} (or the device a calibration profile in the request "
                             "measured, calibration.device.name)") from None

    @model_validator(mode="after")
    def _network_known(self) -> GPUPool:
        if (self.device is not None and self.device.nic_Gbps is None and self.nodes > 1
                and self.inter_node_Gbps is None):
            raise ValueError(f"device {self.device.name!r} was measured on one node (no network "
                             "rate); a pool of several nodes needs inter_node_Gbps")
        return self

    @property
    def gpu_type(self) -> GPUType:
        if self.device is not None:
            return self.device.gpu_type()
        return get_gpu(self.gpu)

    @property
    def num_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def link_GBps(self) -> float:
        return self.intra_node_GBps or self.gpu_type.intra_node_GBps

    @property
    def nic_GBps(self) -> float:
        """Per-GPU network rate in GB/s (the override, or the reference node's NIC)."""
        return (self.inter_node_Gbps or self.gpu_type.nic_Gbps) / 8


class Cluster(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pools: list[GPUPool] = Field(min_length=1)
    inter_pool_Gbps: float | None = Field(
        None, ge=0.01, le=1e7,
        description="Per-GPU rate between pools (send/recv between the stages of a "
        "heterogeneous pipeline, plan.stages, on different pools); null = the slower of the "
        "two pools' NIC rates."
    )
    node_bandwidth_Gbps: list[list[NonNegativeFloat]] | None = Field(
        None, description="Measured node-to-node bandwidth matrix over all nodes, pools in "
        "order (Pipette-style); used for placing pipeline stages."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Cluster:
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(dupes)}")
        if self.node_bandwidth_Gbps is not None:
            n = sum(p.nodes for p in self.pools)
            rows = self.node_bandwidth_Gbps
            if len(rows) != n or any(len(r) != n for r in rows):
                raise ValueError(f"node_bandwidth_Gbps must be a {n}x{n} matrix (all nodes)")
        return self

    def pool(self, name: str | None) -> GPUPool:
        if name is None:
            if len(self.pools) == 1:
                return self.pools[0]
            raise KeyError("the cluster has several pools; the plan must name one")
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)
