"""A device described by measurement rather than by a datasheet.

The GPU catalog (``costmodel/data/gpus.json``) knows datasheet peaks of the GPUs people rent.
A device that is not in it — the CPU host a CI job calibrates on, or a GPU the catalog does not
list — is described by the calibration profile that measured it (``calibration.device``):
its peaks are the best sustained throughput measured, its memory bandwidth the measured copy
rate, its link the measured bus bandwidth. A cluster pool then names it (``"gpu": "cpu"``) and
the estimate request resolves the name through its ``calibration`` (see
:class:`~costmodel.specs.request.EstimateRequest`), so a measured device goes through exactly
the cost-model code of a catalog GPU.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from costmodel.specs.gpus import GPUType, canonical_gpu_name

DEVICE_PRECISIONS = ("bf16", "fp16", "fp8", "fp32")


class MeasuredDevice(BaseModel):
    """Per-device figures of a measured (non-catalog) device; each carries its provenance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, description="Name a cluster pool uses in "
                      "its 'gpu' field (e.g. 'cpu'); must not be a catalog GPU name or alias.")
    vendor: str = Field("measured", description="Free-form vendor label.")
    arch: str = Field(description="Key of the profile's efficiency.archs entry that describes "
                      "the device (its per-kernel latency); 'default' when it has none.")
    peak_tflops: dict[str, PositiveFloat] = Field(
        min_length=1, description="Peak FLOP/s by precision (bf16, fp16, fp8, fp32) in TFLOP/s: "
        "the best sustained GEMM throughput measured (MFU is reported against it).")
    memory_gib: PositiveFloat = Field(description="Memory one rank may use.")
    hbm_GBps: PositiveFloat = Field(description="Memory bandwidth (measured copy rate).")
    intra_node_GBps: PositiveFloat = Field(
        description="One-direction per-device link rate between devices of one node "
        "(measured large-message bus bandwidth).")
    nic_Gbps: PositiveFloat | None = Field(
        None, description="Per-device network rate between nodes; null = not measured (one-node "
        "calibration): a pool of several nodes must then give inter_node_Gbps.")
    pcie_GBps: PositiveFloat | None = Field(
        None, description="Host link, bidirectional aggregate; null = hbm_GBps (a CPU's own "
        "memory is its host memory).")
    compute_units: PositiveInt = Field(
        1, description="Streaming multiprocessors / compute units for GEMM wave quantization; "
        "1 = none (a CPU rank runs a GEMM as one unit of work).")
    provenance: str = Field(min_length=1, description="How each figure was obtained.")

    @field_validator("name")
    @classmethod
    def _not_catalog(cls, v: str) -> str:
        try:
            known = canonical_gpu_name(v)
        except ValueError:
            return v.strip()
        raise ValueError(f"{v!r} is the catalog GPU {known}; a measured device needs its own name "
                         "(measure a catalog GPU with profile.gpu instead)")

    @field_validator("peak_tflops")
    @classmethod
    def _precisions(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) - set(DEVICE_PRECISIONS))
        if bad:
            raise ValueError(f"unknown precision(s) {', '.join(bad)}; use "
                             f"{', '.join(DEVICE_PRECISIONS)}")
        return v

    def gpu_type(self) -> GPUType:
        """The device as the catalog's record type, so every consumer of ``pool.gpu_type``
        (estimate, search, memory checks) treats it like a catalog GPU."""
        return GPUType(
            name=self.name, vendor=self.vendor, arch=self.arch,
            peak_tflops=dict(self.peak_tflops), memory_gib=self.memory_gib,
            hbm_GBps=self.hbm_GBps, intra_node="measured", intra_node_GBps=self.intra_node_GBps,
            nic_Gbps=self.nic_Gbps if self.nic_Gbps is not None else self.intra_node_GBps * 8,
            pcie_GBps=self.pcie_GBps if self.pcie_GBps is not None else self.hbm_GBps,
            sm_count=self.compute_units, aliases=(), source=self.provenance,
        )
