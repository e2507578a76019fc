"""Device names as torch reports them, mapped to the GPU catalog (pure, no torch)."""

from __future__ import annotations

import re

from costmodel.specs.gpus import canonical_gpu_name

_PREFIXES = ("nvidia geforce ", "nvidia ", "tesla ", "amd instinct ", "amd ")


def catalog_gpu(device_name: str) -> str | None:
    """The catalog name of a CUDA/ROCm device name (``torch.cuda.get_device_name``), or None
    when the catalog does not list that part (it is then described by measurement).

    >>> catalog_gpu("NVIDIA H100 80GB HBM3")
    'H100-SXM-80GB'
    >>> catalog_gpu("NVIDIA A100-SXM4-40GB")
    'A100-SXM-40GB'
    >>> catalog_gpu("NVIDIA A100 80GB PCIe") is None
    True
    """
    name = device_name.strip().lower()
    for p in _PREFIXES:
        if name.startswith(p):
            name = name[len(p):]
            break
    try:
        return canonical_gpu_name(name.replace(" ", "-"))
    except ValueError:
        pass
    pcie = "pcie" in name
    mem = re.search(r"(\d+)\s*gb", name)
    gib = int(mem.group(1)) if mem else None
    if name.startswith("gh200") or "h100 nvl" in name:
        return None  # Grace Hopper and H100 NVL parts: not in the catalog
    if "h100" in name:
        if pcie:
            return "H100-PCIe-80GB"
        return "H100-SXM-96GB" if gib == 96 else "H100-SXM-80GB"
    if "a100" in name:
        if pcie:
            return None  # the catalog lists the SXM parts only
        return "A100-SXM-40GB" if gib == 40 else "A100-SXM-80GB"
    for key, canon in (("h200", "H200-SXM-141GB"), ("b200", "B200-SXM-180GB"),
                       ("l40s", "L40S-48GB"), ("a10g", "A10G-24GB"),
                       ("rtx 4090", "RTX4090-24GB"), ("mi300x", "MI300X-192GB"),
                       ("mi250x", "MI250X-128GB"), ("v100", "V100-SXM-32GB")):
        if key in name:
            if key == "v100" and (pcie or gib == 16):
                return None
            return canon
    if re.fullmatch(r"l4(\b.*)?", name):
        return "L4-24GB"
    return None
