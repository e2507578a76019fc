"""The GPU catalog (costmodel/data/gpus.json via costmodel.specs.gpus) against the contract's
canonical names (ARCHITECTURE.md) and the dense datasheet figures of
shared/reference/gpus.md (NVIDIA/AMD datasheets and whitepapers; torchtitan's
``get_peak_flops`` uses the same dense BF16 numbers). Vendors quote "with sparsity" peaks:
these are the dense ones. MI250X is one module of two GCDs that frameworks see as two devices,
so one device is half of the module's 383 TFLOP/s and 128 GB.
"""

from __future__ import annotations

import pytest

from costmodel.specs.cluster import GPUPool
from costmodel.specs.gpus import canonical_gpu_name, catalog, get_gpu

# canonical name: (dense BF16 TFLOP/s or None, dense FP16 TFLOP/s, FP8 or None, memory GB)
DATASHEET: dict[str, tuple[float | None, float, float | None, float]] = {
    "V100-SXM-32GB": (None, 125, None, 32),  # FP16 tensor cores only
    "A100-SXM-40GB": (312, 312, None, 40),
    "A100-SXM-80GB": (312, 312, None, 80),
    "H100-SXM-80GB": (989, 989, 1979, 80),
    "H100-PCIe-80GB": (756, 756, 1513, 80),
    "H200-SXM-141GB": (989, 989, 1979, 141),
    "B200-SXM-180GB": (2250, 2250, 4500, 180),
    "L40S-48GB": (362, 362, 733, 48),
    "L4-24GB": (121, 121, 242, 24),
    "A10G-24GB": (125, 125, None, 24),  # not published; the A10 figure (gpus.md)
    "RTX4090-24GB": (165, 165, 330, 24),  # FP32 accumulate
    "MI250X-128GB": (383 / 2, 383 / 2, None, 128 / 2),  # per GCD = half a module
    "MI300X-192GB": (1307, 1307, 2615, 192),
    # issue 10's additions (datasheet figures per GPU; NVL72 racks divided by 72)
    "H20-96GB": (148, 148, 296, 96),
    "GB200-186GB": (2500, 2500, 5000, 186),
    "B300-SXM-288GB": (2250, 2250, 4500, 288),
    "GB300-288GB": (2500, 2500, 5000, 279),
    "MI325X-256GB": (1307, 1307, 2615, 256),
    "MI355X-288GB": (2500, 2500, 5000, 288),
    # beyond the contract's list: the HBM2e H100 at 500 W that torchtitan benchmarks on, no
    # datasheet of its own: H100 NVL's peaks as the lower bound torchtitan states (gpus.json)
    "H100-SXM-96GB": (835, 835, 1670, 96),
}
# HBM/GDDR bandwidth, GB/s (gpus.md); MI250X per GCD
HBM = {"V100-SXM-32GB": 900, "A100-SXM-40GB": 1555, "A100-SXM-80GB": 2039,
       "H100-SXM-80GB": 3350, "H100-PCIe-80GB": 2000, "H200-SXM-141GB": 4800,
       "B200-SXM-180GB": 8000, "L40S-48GB": 864, "L4-24GB": 300, "A10G-24GB": 600,
       "RTX4090-24GB": 1008, "MI250X-128GB": 3200 / 2, "MI300X-192GB": 5300,
       "H20-96GB": 4000, "GB200-186GB": 8000, "B300-SXM-288GB": 8000, "GB300-288GB": 8000,
       "MI325X-256GB": 6000, "MI355X-288GB": 8000, "H100-SXM-96GB": 2400}
# one-direction GPU-to-GPU link per device: half the bidirectional NVLink / Infinity Fabric
# aggregate (gpus.md), or half the PCIe x16 aggregate where there is no NVLink.
LINK_ONE_WAY = {"A100-SXM-80GB": 300, "H100-SXM-80GB": 450, "H200-SXM-141GB": 450,
                "B200-SXM-180GB": 900, "V100-SXM-32GB": 150, "MI300X-192GB": 448,
                "H100-PCIe-80GB": 64, "L40S-48GB": 32}


def test_catalog_is_exactly_the_contract_names() -> None:
    """The contract's names (ARCHITECTURE.md) and the extensions listed in DATASHEET."""
    assert set(catalog()) == set(DATASHEET)


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_dense_peaks(name: str) -> None:
    bf16, fp16, fp8, _ = DATASHEET[name]
    peaks = get_gpu(name).peak_tflops
    assert peaks.get("fp16") == pytest.approx(fp16)
    if bf16 is None:
        assert "bf16" not in peaks
    else:
        assert peaks["bf16"] == pytest.approx(bf16)
    if fp8 is None:
        assert "fp8" not in peaks
    else:
        # datasheets print 242.5 (L4) and 2614.9 (MI300X); gpus.md rounds: allow 0.5%
        assert peaks["fp8"] == pytest.approx(fp8, rel=0.005)


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_memory_and_bandwidth(name: str) -> None:
    gpu = get_gpu(name)
    assert gpu.memory_gib == pytest.approx(DATASHEET[name][3])
    assert gpu.hbm_GBps == pytest.approx(HBM[name])


@pytest.mark.parametrize("name", sorted(LINK_ONE_WAY))
def test_link_rates(name: str) -> None:
    assert get_gpu(name).intra_node_GBps == pytest.approx(LINK_ONE_WAY[name])


def test_peak_flops_in_flop_per_second() -> None:
    assert get_gpu("H100-SXM-80GB").peak_flops("bf16") == pytest.approx(989e12)
    assert get_gpu("MI250X-128GB").peak_flops("fp16") == pytest.approx(191.5e12)


def test_reference_node_nics() -> None:
    """gpus.md: DGX A100 has one 200 Gb/s HDR NIC per GPU; DGX H100 one 400 Gb/s NDR."""
    assert get_gpu("A100-SXM-80GB").nic_Gbps == 200
    assert get_gpu("H100-SXM-80GB").nic_Gbps == 400


@pytest.mark.parametrize(("alias", "canonical"), [
    ("H100", "H100-SXM-80GB"),
    ("A100-80GB", "A100-SXM-80GB"),
    ("h100", "H100-SXM-80GB"),          # case-insensitive
    ("H100 SXM", "H100-SXM-80GB"),
    ("H100-SXM-80GB", "H100-SXM-80GB"),  # a canonical name resolves to itself
    ("MI300X", "MI300X-192GB"),
])
def test_aliases_resolve(alias: str, canonical: str) -> None:
    assert canonical_gpu_name(alias) == canonical
    assert get_gpu(alias).name == canonical
    assert GPUPool(name="p", gpu=alias).gpu == canonical


def test_aliases_are_unambiguous() -> None:
    seen: dict[str, str] = {}
    for name, gpu in catalog().items():
        for key in (name, *gpu.aliases):
            k = key.lower().replace(" ", "-")
            assert seen.setdefault(k, name) == name, key


def test_unknown_gpu_lists_the_catalog() -> None:
    with pytest.raises(ValueError, match=r"known GPUs: .*H100-SXM-80GB"):
        canonical_gpu_name("Z100")


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_every_entry_has_a_source(name: str) -> None:
    gpu = get_gpu(name)
    assert len(gpu.source.strip()) > 20
    assert gpu.public()["source"] == gpu.source


def test_unsupported_precision_is_a_spec_error_on_training_precision() -> None:
    from costmodel.errors import SpecError
    with pytest.raises(SpecError) as exc:
        get_gpu("A100").peak_flops("fp8")
    assert exc.value.field == "training.precision"
    assert "no fp8 tensor cores" in exc.value.rule


def test_nvl72_parts_name_their_nvlink_domain() -> None:
    """GB200/GB300 NVL72: one NVLink fabric of 72 GPUs, so a pool may put up to 72 GPUs in
    one 'node' and its collectives run on NVLink; other parts leave it to the node."""
    assert get_gpu("GB200").nvlink_domain == 72
    assert get_gpu("GB300").nvlink_domain == 72
    assert get_gpu("B200").nvlink_domain is None
    pool = GPUPool(name="rack", gpu="GB200", gpus_per_node=72, nodes=2)
    assert pool.num_gpus == 144
