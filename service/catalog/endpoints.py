"""``GET /v1/gpus[/{name}]`` and ``GET /v1/models[/{name}]``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from service.catalog import service
from service.catalog.schemas import GPUInfo, ModelInfo
from service.errors import Problem

router = APIRouter(tags=["catalog"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such entry."},
}


@router.get("/gpus", summary="The GPU catalog")
def list_gpus() -> list[GPUInfo]:
    return service.list_gpus()


@router.get("/gpus/{name}", summary="One GPU (aliases resolve)", responses=NOT_FOUND)
def get_gpu(name: str) -> GPUInfo:
    try:
        return service.get_gpu(name)
    except service.NotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/models", summary="The model presets")
def list_models() -> list[ModelInfo]:
    return service.list_models()


@router.get("/models/{name}", summary="One model preset", responses=NOT_FOUND)
def get_model(name: str) -> ModelInfo:
    try:
        return service.get_model(name)
    except service.NotFound as exc:
        raise HTTPException(404, str(exc)) from None
