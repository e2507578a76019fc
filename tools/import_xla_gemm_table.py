"""Write ``costmodel/data/kernels/gemm_shapes.json`` from XLA's measured matmul table.

XLA's GPU cost model ships the FLOP/s it measured for a grid of GEMM shapes on each GPU
generation it supports (``kDefaultMatmulPTable`` in
``xla/service/gpu/model/matmul_interpolator_data.h``): batch b ∈ {1, 2, 4} and m, n, k ∈
{256, …, 4096}, per operand type. The file is public; the TensorFlow wheel carries it as a
header. To regenerate the data file::

    pip download tensorflow==2.21.0 --no-deps -d /tmp/tf
    unzip -o /tmp/tf/tensorflow-2.21.0-*.whl \
        'tensorflow/include/xla/service/gpu/model/matmul_interpolator_data.h' -d /tmp/tf
    python tools/import_xla_gemm_table.py \
        /tmp/tf/tensorflow/include/xla/service/gpu/model/matmul_interpolator_data.h

Only the numbers are taken (TFLOP/s, rounded to 0.1); the rule that turns them into a rate
for another shape lives in :mod:`costmodel.kernels`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "costmodel" / "data" / "kernels" / "gemm_shapes.json"
ARCHS = {"sm_90": ("hopper", "H100-SXM-80GB"), "sm_100": ("blackwell", "B200-SXM-180GB")}
DTYPES = {"bf16xbf16->bf16": "bf16", "BF16xBF16->BF16": "bf16",
          "f8e4m3fnxf8e4m3fn->bf16": "fp8"}
PEAK_TFLOPS = {("sm_90", "bf16"): 989.0, ("sm_90", "fp8"): 1979.0,
               ("sm_100", "bf16"): 2250.0, ("sm_100", "fp8"): 4500.0}
"""Dense datasheet peaks of the measured parts (H100 SXM, B200: costmodel/data/gpus.json): a
table whose best entry exceeds its peak is not a dense-GEMM measurement and is left out."""
BATCH = [1, 2, 4]
DIMS = [256, 512, 1024, 2048, 4096]
ENTRY = re.compile(r"entries \{\s*b: (\d+)\s*m: (\d+)\s*n: (\d+)\s*k: (\d+)\s*"
                   r"((?:flops \{[^}]*\}\s*)+)\}")
FLOPS = re.compile(r'flops \{ key: "([^"]+)" value: (\d+) \}')


def parse(text: str) -> dict[str, dict[str, dict[tuple[int, int, int, int], float]]]:
    """{sm: {dtype: {(b, m, n, k): TFLOP/s}}} of the header's text."""
    out: dict[str, dict[str, dict[tuple[int, int, int, int], float]]] = {}
    parts = re.split(r'key: "(sm_\d+)"', text)
    for sm, body in zip(parts[1::2], parts[2::2], strict=True):
        tables = out.setdefault(sm, {})
        for b, m, n, k, flops in ENTRY.findall(body):
            for key, value in FLOPS.findall(flops):
                if key in DTYPES:
                    tables.setdefault(DTYPES[key], {})[(int(b), int(m), int(n), int(k))] = (
                        int(value) / 1e12)
    return out


def main(header: str) -> None:
    tables = parse(Path(header).read_text())
    archs = {}
    excluded = []
    for sm, (arch, gpu) in ARCHS.items():
        if sm not in tables:
            continue
        entry: dict[str, object] = {"xla_device": sm, "measured_on": gpu}
        for dtype, points in sorted(tables[sm].items()):
            best, peak = max(points.values()), PEAK_TFLOPS[(sm, dtype)]
            if best > peak:
                excluded.append(f"{sm} {dtype}: its best entry, {best:.1f} TFLOP/s, exceeds "
                                f"the {gpu} dense {dtype} peak of {peak:g}, so it is not a "
                                "dense-GEMM measurement of that part")
                continue
            grid = [round(points[(b, m, n, k)], 1)
                    for b in BATCH for m in DIMS for n in DIMS for k in DIMS]
            entry[dtype] = grid
        archs[arch] = entry
    data = {
        "format": "meshplan-gemm-shapes/1",
        "_provenance": (
            "GEMM FLOP/s measured by XLA on a grid of shapes (batch b, m, n, k), per GPU "
            "generation and operand type: openxla/xla xla/service/gpu/model/"
            "matmul_interpolator_data.h kDefaultMatmulPTable, as shipped in the tensorflow "
            "2.21.0 wheel on PyPI (tensorflow/include/xla/service/gpu/model/"
            "matmul_interpolator_data.h, built 2026-03-05); sm_90 = Hopper (H100), sm_100 = "
            "Blackwell (B200); the table does not name the SKU or the library version. fp8 is "
            "its e4m3 x e4m3 -> bf16 entry. Values in TFLOP/s, rounded to 0.1. Imported by "
            "tools/import_xla_gemm_table.py. The cost model uses the shape dependence only: "
            "a shape's rate over the table's best rate, times the GPU's own measured ceiling "
            "(gemm.json): costmodel/kernels.py GemmShapes, gemm_shapes."),
        "grid": {"b": BATCH, "m": DIMS, "n": DIMS, "k": DIMS,
                 "order": "b, m, n, k (k fastest)"},
        "archs": archs,
        "excluded": excluded,
    }
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT} ({', '.join(archs)})")


if __name__ == "__main__":
    main(sys.argv[1])
