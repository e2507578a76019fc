"""``meshplan gpus`` and ``meshplan models``: the GPU catalog and the model presets."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from service.cli.common import EXIT_OK, table


def register(sub: Any) -> None:
    gpus = sub.add_parser("gpus", help="list the GPU catalog")
    gpus.add_argument("--json", action="store_true", help="print the catalog as JSON")
    gpus.set_defaults(func=cmd_gpus)

    models = sub.add_parser("models", help="list the model presets")
    models.add_argument("--json", action="store_true", help="print the presets as JSON")
    models.set_defaults(func=cmd_models)


def cmd_gpus(args: argparse.Namespace) -> int:
    from service.catalog import service

    gpus = service.list_gpus()
    if args.json:
        json.dump([g.model_dump(mode="json") for g in gpus], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    header = ("name", "memory GiB", "bf16 TFLOPS", "fp8 TFLOPS", "HBM GB/s", "link GB/s",
              "aliases")
    rows = [(g.name, f"{g.memory_gib:g}", _tf(g.peak_tflops.get("bf16")),
             _tf(g.peak_tflops.get("fp8")), f"{g.hbm_GBps:g}",
             f"{g.intra_node} {g.intra_node_GBps:g}", ", ".join(g.aliases)) for g in gpus]
    table(header, rows, sys.stdout)
    return EXIT_OK


def _tf(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def cmd_models(args: argparse.Namespace) -> int:
    from service.catalog import service

    models = service.list_models()
    if args.json:
        json.dump([m.model_dump(mode="json") for m in models], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    header = ("name", "params", "active", "layers", "hidden", "heads", "kv heads", "vocab")
    rows = [(m.name, _count(m.num_params), _count(m.num_active_params),
             str(m.dims.num_hidden_layers), str(m.dims.hidden_size),
             str(m.dims.num_attention_heads), str(m.dims.kv_heads), str(m.dims.vocab_size))
            for m in models]
    table(header, rows, sys.stdout)
    return EXIT_OK


def _count(n: int) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)

