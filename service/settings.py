"""One settings class for the service, read from the environment (prefix ``MESHPLAN_``).

The same class configures the API (``meshplan serve``), the workers (``meshplan worker``) and
the maintenance commands (``meshplan db``, ``meshplan apikey``), so that one set of variables
describes a deployment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/meshplan`` (``~/.local/share/meshplan``): where the embedded SQLite
    database lives when ``MESHPLAN_DATABASE_URL`` is not set, whatever the working directory."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "meshplan"


class Settings(BaseSettings):
    """Service settings; every field can be set as ``MESHPLAN_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="MESHPLAN_", extra="ignore")

    # ------------------------------------------------------------------ HTTP
    host: str = Field("127.0.0.1", description="Interface `meshplan serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `meshplan serve` listens on.")
    log_level: LogLevel = "info"
    header_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="A connection that has not sent a complete request "
        "line and headers this many seconds after connecting (or after its previous response) "
        "is closed, so slow clients cannot hold sockets.")
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, le=3600, description="An idle keep-alive connection is closed after this "
        "many seconds (uvicorn's timeout_keep_alive).")
    max_request_bytes: int = Field(
        1 << 20, ge=0, description="Largest request body accepted; larger ones get 413.")

    # ------------------------------------------------------------------ estimate limits
    max_schedule_cells: int = Field(
        1_000_000, ge=1,
        description="Admission limit on the pipeline-schedule simulation an estimate may ask "
        "for: pp·virtual_stages × micro-batches per step. The simulation's run time grows "
        "linearly with this product; the limit keeps one request from tying up a worker.")
    heavy_estimate_cells: int = Field(
        20_000, ge=0,
        description="Estimates whose schedule simulation has more cells than this "
        "(pp·virtual_stages × micro-batches; ~40 µs each on one core) run in a process pool "
        "of their own, so that cheap estimates never wait behind them.")
    heavy_estimate_processes: int = Field(
        1, ge=1, le=64, description="Processes of that pool (each uses one core while busy).")
    heavy_estimate_queue: int = Field(
        4, ge=1, le=1024, description="Large estimates admitted at a time (running or "
        "waiting for a process); one more is answered 503 with Retry-After.")
    max_layers: int = Field(
        100_000, ge=1, description="Admission limit on model.num_hidden_layers (per-layer "
        "tables are built for each estimate).")

    # ------------------------------------------------------------------ search limits
    max_search_time_s: float = Field(
        120.0, gt=0, le=600, description="Largest time_limit_s a search may ask for (the "
        "solver's own ceiling is 600 s). A search holds one worker process for that long.")
    max_top_k: int = Field(20, ge=1, le=50, description="Largest top_k a search may ask for "
                           "(each plan is re-simulated, refined and stored).")
    max_search_gpus: int = Field(
        131_072, ge=1, description="Largest inventory (GPUs over all pools) a search may "
        "describe: the enumerated space grows with the divisors of each pool's GPU count.")
    max_search_global_batch: int = Field(
        1 << 20, ge=1, description="Largest training.global_batch_size (sequences) a search "
        "may ask for: the micro-batch counts it simulates grow with it (Llama 3 405B trained "
        "with 2,048 sequences of 8,192 tokens; 1,048,576 leaves room for short sequences).")
    max_search_pools: int = Field(16, ge=1, description="Most pools a search may describe "
                                  "(each is enumerated; mixed pipelines combine them).")
    max_search_memory_mb: int = Field(
        1536, ge=64, description="Cap on the arrays a search keeps for its candidates "
        "(enumerated plans, their bulk estimates, the branch and bound's arrays), MiB; a pool "
        "that would exceed it is not searched and the result says so (stats.skipped_pools). "
        "One chunk's intermediates (~0.2 GiB) come on top. The default leaves room for two "
        "workers and the API on a 2-core, 24 GiB machine at the other maxima.")

    # ------------------------------------------------------------------ persistence
    database_url: str = Field(
        "", description="SQLAlchemy URL of the database: `postgresql+psycopg://user:pw@host/db` "
        "in production; empty = an embedded SQLite file in data_dir, migrated on start.")
    data_dir: Path = Field(default_factory=default_data_dir,
                           description="Directory of the embedded SQLite database.")

    http_workers: int = Field(
        1, ge=1, le=256, description="API server processes of `meshplan serve` (uvicorn's "
        "workers). An estimate is CPU-bound Python, so one process serves one core; set it to "
        "the cores the API may use.")

    # ------------------------------------------------------------------ jobs and workers
    workers: int = Field(
        1, ge=0, le=256, description="Worker processes: the ones `meshplan serve` starts next "
        "to the API (0 = none; run `meshplan worker` elsewhere), and the default of "
        "`meshplan worker --processes`.")
    lease_s: float = Field(
        30.0, gt=0, description="How long a claimed search stays a worker's without a "
        "heartbeat; after that it is taken up again by another worker.")
    heartbeat_s: float = Field(
        5.0, gt=0, description="Interval of a worker's heartbeat (lease renewal, progress, "
        "cancellation check). Must be under half the lease.")
    cancel_poll_s: float = Field(
        0.5, gt=0, description="How often a running search's worker reads whether a client "
        "cancelled it (a cheap read between heartbeats): DELETE stops a search within about "
        "this plus the solver's reaction time.")
    search_overrun_s: float = Field(
        30.0, gt=0, description="A search still running this long after its time_limit_s is "
        "stopped and failed (its worker no longer renews the lease); a worker process whose "
        "solver does not stop then within the same margin exits and is replaced.")
    max_attempts: int = Field(
        3, ge=1, description="Claims of a search whose worker died before it is marked failed "
        "(a search that kills its workers is not retried forever).")
    poll_s: float = Field(0.5, gt=0, description="How often an idle worker looks for work.")
    worker_max_rss_mb: int = Field(
        2048, ge=0, description="A worker process whose resident memory is above this many MiB "
        "after a search exits and is replaced by a fresh one (a large search's arrays are not "
        "all returned to the OS otherwise); 0 = never.")
    max_wait_s: float = Field(
        60.0, ge=0, description="Longest `?wait=` a client may ask for (the request is held "
        "open, polling the database, not running the search).")

    # ------------------------------------------------------------------ auth
    auth: bool = Field(
        False, description="Require an API key (created with `meshplan apikey create`) on every "
        "endpoint except /healthz, /readyz, /metrics and the documentation; each key sees only "
        "the searches and plans it created.")

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        if self.heartbeat_s * 2 > self.lease_s:
            raise ValueError(f"heartbeat_s={self.heartbeat_s} must be at most half of "
                             f"lease_s={self.lease_s}, or a live worker may lose its lease")
        return self

    @property
    def effective_database_url(self) -> str:
        """``database_url``, or the embedded SQLite file in ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'meshplan.db'}"


def get_settings() -> Settings:
    """Settings from the environment (a fresh read each call; the app keeps its own copy)."""
    return Settings()
