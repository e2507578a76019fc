"""The GPU catalog: datasheet figures per canonical GPU type (``costmodel/data/gpus.json``).

Each figure's source is in the data file. Names resolve case-insensitively, and aliases such as
``H100`` or ``A100-80GB`` map to the canonical names of the contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from costmodel.errors import problem

DTYPE_FIELDS = {"bf16": "bf16_tflops", "fp16": "fp16_tflops", "fp8": "fp8_tflops"}


@dataclass(frozen=True, slots=True)
class GPUType:
    """Per-device figures (a multi-die package such as MI250X is split into its devices)."""

    name: str
    vendor: str
    arch: str
    peak_tflops: dict[str, float]
    """Dense tensor-core peak by precision (``bf16``, ``fp16``, ``fp8``); absent = unsupported."""
    memory_gib: float
    hbm_GBps: float
    intra_node: str
    """``nvlink`` | ``xgmi`` | ``pcie``: the link between devices of one node."""
    intra_node_GBps: float
    """One-direction per-device link rate (NVLink: half the bidirectional aggregate)."""
    nic_Gbps: float
    """Per-device network rate of the vendor's reference node."""
    pcie_GBps: float
    """Host link, bidirectional aggregate (datasheet convention)."""
    sm_count: int
    aliases: tuple[str, ...]
    source: str
    host_link_GBps: float | None = None
    """GPU–host-memory link, bidirectional aggregate, where it is not the PCIe link (Grace
    superchips: NVLink-C2C). None = ``pcie_GBps``."""
    nvlink_domain: int | None = None
    """GPUs that share one NVLink fabric when it spans more than a node (GB200/GB300 NVL72:
    72); a pool of such GPUs may set ``gpus_per_node`` up to it. None = the node."""

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30

    @property
    def host_GBps_per_direction(self) -> float:
        """One direction of the link activations are offloaded over (half the aggregate)."""
        return (self.host_link_GBps or self.pcie_GBps) / 2

    def peak_flops(self, precision: str) -> float:
        """Peak FLOP/s at ``precision``; raises if the GPU has no such tensor cores."""
        try:
            return self.peak_tflops[precision] * 1e12
        except KeyError:
            supported = ", ".join(sorted(self.peak_tflops))
            raise problem("training.precision",
                          f"{self.name} has no {precision} tensor cores (supported: {supported})"
                          ) from None

    def public(self) -> dict[str, Any]:
        """JSON view for the API's GPU catalog."""
        return {
            "name": self.name, "vendor": self.vendor, "arch": self.arch,
            "aliases": list(self.aliases), "peak_tflops": self.peak_tflops,
            "memory_gib": self.memory_gib, "hbm_GBps": self.hbm_GBps,
            "intra_node": self.intra_node, "intra_node_GBps": self.intra_node_GBps,
            "nic_Gbps": self.nic_Gbps, "sm_count": self.sm_count, "source": self.source,
            "nvlink_domain": self.nvlink_domain,
        }


def _build(name: str, raw: dict[str, Any]) -> GPUType:
    per = int(raw.get("devices_per_package", 1))
    peaks = {dt: float(raw[f]) / per for dt, f in DTYPE_FIELDS.items() if raw.get(f) is not None}
    if raw["intra_node"] == "pcie":
        link = float(raw["pcie_GBps"]) / 2
    else:
        link = float(raw["nvlink_GBps"]) / 2 / per
    return GPUType(
        name=name, vendor=raw["vendor"], arch=raw["arch"], peak_tflops=peaks,
        memory_gib=float(raw["memory_gib"]) / per, hbm_GBps=float(raw["hbm_GBps"]) / per,
        intra_node=raw["intra_node"], intra_node_GBps=link,
        nic_Gbps=float(raw["nic_Gbps"]) / per, pcie_GBps=float(raw["pcie_GBps"]) / per,
        sm_count=int(raw["sm_count"]) // per,
        aliases=tuple(raw.get("aliases", ())), source=raw["source"],
        host_link_GBps=(float(raw["host_link_GBps"]) / per if raw.get("host_link_GBps")
                        else None),
        nvlink_domain=raw.get("nvlink_domain"),
    )


@cache
def catalog() -> dict[str, GPUType]:
    """All canonical GPU types, by canonical name."""
    text = resources.files("costmodel").joinpath("data/gpus.json").read_text()
    raw = json.loads(text)["gpus"]
    return {name: _build(name, spec) for name, spec in raw.items()}


@cache
def _alias_index() -> dict[str, str]:
    idx: dict[str, str] = {}
    for name, gpu in catalog().items():
        for key in (name, *gpu.aliases):
            idx[key.lower().replace(" ", "-")] = name
    return idx


def canonical_gpu_name(name: str) -> str:
    """Canonical name for ``name`` or an alias; ValueError listing the known names otherwise."""
    key = name.strip().lower().replace(" ", "-")
    try:
        return _alias_index()[key]
    except KeyError:
        known = ", ".join(catalog())
        raise ValueError(f"unknown GPU {name!r}; known GPUs: {known}") from None


def get_gpu(name: str) -> GPUType:
    return catalog()[canonical_gpu_name(name)]
