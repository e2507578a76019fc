"""Response schemas of the catalog endpoints."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from costmodel.specs.model import ModelSpec


class GPUInfo(BaseModel):
    """One catalog GPU (``costmodel.specs.gpus.GPUType.public()``); keys the cost model adds
    later pass through."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Canonical name; use it (or an alias) as a pool's `gpu`.")
    vendor: str
    arch: str
    aliases: list[str]
    peak_tflops: dict[str, float] = Field(
        description="Dense tensor-core peak per precision; a missing precision is unsupported.")
    memory_gib: float
    hbm_GBps: float
    intra_node: str = Field(description="nvlink | xgmi | pcie")
    intra_node_GBps: float = Field(description="One-direction per-device link rate.")
    nic_Gbps: float = Field(description="Per-device network rate of the reference node.")
    sm_count: int
    source: str = Field(description="Where the figures come from.")


class ModelInfo(BaseModel):
    """One built-in model preset."""

    name: str = Field(description='Use as `"model": {"preset": name}`.')
    num_params: int
    num_active_params: int = Field(description="Parameters a token passes through (MoE: top-k).")
    source: str = Field(description="Where the dimensions come from.")
    dims: ModelSpec = Field(description="The model's fields (Hugging Face config.json names); "
                            "also valid as an explicit `model`.")
