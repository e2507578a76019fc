"""One settings class for the service, read from the environment (prefix ``MESHPLAN_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class Settings(BaseSettings):
    """Service settings; every field can be set as ``MESHPLAN_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="MESHPLAN_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface `meshplan serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `meshplan serve` listens on.")
    log_level: LogLevel = "info"
    max_request_bytes: int = Field(
        1 << 20, ge=0, description="Largest request body accepted; larger ones get 413.")
    max_schedule_cells: int = Field(
        1_000_000, ge=1,
        description="Admission limit on the pipeline-schedule simulation an estimate may ask "
        "for: pp·virtual_stages × micro-batches per step. The simulation's run time grows "
        "linearly with this product; the limit keeps one request from tying up a worker.")
    max_layers: int = Field(
        100_000, ge=1, description="Admission limit on model.num_hidden_layers (per-layer "
        "tables are built for each estimate).")


def get_settings() -> Settings:
    """Settings from the environment (a fresh read each call; the app keeps its own copy)."""
    return Settings()
