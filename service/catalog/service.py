"""Catalog look-ups over :mod:`costmodel.specs` (shared by the endpoints and the CLI)."""

from __future__ import annotations

from costmodel.specs import gpus, presets
from service.catalog.schemas import GPUInfo, ModelInfo


class NotFound(LookupError):
    """No catalog entry of that name; the message lists the known ones."""


def list_gpus() -> list[GPUInfo]:
    return [GPUInfo.model_validate(g.public()) for g in gpus.catalog().values()]


def get_gpu(name: str) -> GPUInfo:
    """The GPU ``name`` or one of its aliases (case-insensitive)."""
    try:
        return GPUInfo.model_validate(gpus.get_gpu(name).public())
    except ValueError as exc:
        raise NotFound(str(exc)) from None


def _model_info(key: str) -> ModelInfo:
    spec = presets.get_preset(key)
    return ModelInfo(name=key, num_params=spec.num_params(),
                     num_active_params=spec.num_active_params(),
                     source=presets.preset_source(key), dims=spec)


def list_models() -> list[ModelInfo]:
    return [_model_info(key) for key in presets.preset_names()]


def get_model(name: str) -> ModelInfo:
    """The preset ``name`` (case-insensitive)."""
    key = name.strip().lower()
    if key not in presets.preset_names():
        known = ", ".join(presets.preset_names())
        raise NotFound(f"unknown model preset {name!r}; known presets: {known}")
    return _model_info(key)
