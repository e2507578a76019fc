"""Built-in model presets (``costmodel/data/presets.json``), each with the source of its dims."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from costmodel.specs.model import ModelSpec


@cache
def _raw() -> dict[str, dict[str, Any]]:
    text = resources.files("costmodel").joinpath("data/presets.json").read_text()
    presets: dict[str, dict[str, Any]] = json.loads(text)["presets"]
    return presets


def preset_names() -> list[str]:
    return sorted(_raw())


def preset_source(name: str) -> str:
    return str(_raw()[name]["_source"])


@cache
def get_preset(name: str) -> ModelSpec:
    """The preset ``name`` (case-insensitive); ValueError listing the known presets otherwise."""
    key = name.strip().lower()
    raw = _raw().get(key)
    if raw is None:
        known = ", ".join(preset_names())
        raise ValueError(f"unknown model preset {name!r}; known presets: {known}")
    return ModelSpec.model_validate({k: v for k, v in raw.items() if not k.startswith("_")})
