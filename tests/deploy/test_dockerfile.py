"""The Dockerfile, read instruction by instruction (no Docker engine runs here to build it).

Checks what the image promises: a builder stage and a runtime stage that copies only the built
environment, a fixed non-root user, the service extras without torch, port 8000 bound on all
interfaces, a health check of ``/healthz`` that needs no curl, and ``meshplan serve`` as the
default command. ``tests/deploy/test_wheel.py`` runs the builder stage's package commands.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile: comments dropped, continuation lines
    joined, ``${VAR}`` of ARGs with defaults substituted (Docker's scoping: ARGs before the
    first FROM serve the FROM lines, and a stage sees them only when it redeclares them)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    args: dict[str, str] = {}
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG":
            name, eq, default = rest.partition("=")
            if not stages:
                global_args[name] = default
            else:  # a global ARG is visible in a stage only when redeclared there
                args[name] = default if eq else global_args.get(name, "")
            continue
        if keyword == "FROM":
            words = _expand(rest, global_args).split()
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], alias, []))
            args = {}
            continue
        assert stages, f"{keyword} before the first FROM"
        stages[-1].instructions.append(Instruction(keyword, _expand(rest, args)))
    return global_args, stages


def _expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), value)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse((ROOT / "Dockerfile").read_text())[1]


def test_builder_and_runtime_stages_on_python_311_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "a multi-stage build"
    builder, runtime = stages[0], stages[-1]
    assert builder.name == "builder"
    for stage in (builder, runtime):
        assert stage.base == "python:3.11-slim"
    copies = runtime.all("COPY")
    assert copies == ["--from=builder /opt/meshplan /opt/meshplan"], (
        "the runtime stage takes only the built environment, at the builder's path")
    assert not any("pip " in r for r in runtime.all("RUN")), "nothing is built in the runtime"


def test_builder_installs_a_wheel_with_the_service_and_postgres_extras_and_no_torch(
        stages: list[Stage]) -> None:
    run = " ".join(stages[0].all("RUN"))
    assert "pip wheel --no-deps" in run
    extras = re.search(r"meshplan-\*\.whl\)\[([^\]]+)\]", run)
    assert extras, run
    assert set(extras.group(1).split(",")) == {"service", "postgres"}
    assert "runtime" not in extras.group(1) and "torch" not in run


def test_runs_as_a_fixed_non_root_user(stages: list[Stage]) -> None:
    runtime = stages[-1]
    users = runtime.all("USER")
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and gid.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert int(uid) >= 1000 and int(gid) >= 1000
    created = " ".join(runtime.all("RUN"))
    assert f"--uid {uid}" in created.replace('"', "") and f"--gid {gid}" in created.replace(
        '"', ""), "the user the image switches to is the one it creates"
    # USER comes after every RUN: nothing runs as root at container start.
    keywords = [i.keyword for i in runtime.instructions]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


def test_serves_on_port_8000_of_every_interface_with_a_health_check(
        stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert runtime.all("EXPOSE") == ["8000"]
    env = " ".join(runtime.all("ENV"))
    assert "MESHPLAN_HOST=0.0.0.0" in env and "MESHPLAN_PORT=8000" in env
    assert "/opt/meshplan/bin:$PATH" in env
    (health,) = runtime.all("HEALTHCHECK")
    options, _, command = health.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], "slim images have no curl"
    assert "/healthz" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")
    assert json.loads(runtime.all("ENTRYPOINT")[0]) == ["meshplan"]
    assert json.loads(runtime.all("CMD")[0]) == ["serve"]


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "artifacts", "**/__pycache__", ".mypy_cache"} <= ignored
    assert not ignored & {"pyproject.toml", "README.md", "service", "costmodel", "solver"}


def test_parser_reads_continuations_args_and_stage_names() -> None:
    _, stages = parse("ARG IMG=python:3.11-slim\n"
                      "FROM ${IMG} AS one\n# note\nRUN a \\\n  # inner\n  && b ${IMG}\n"
                      "FROM ${IMG}\nARG IMG\nARG U=7\nUSER ${U}:${IMG}\n")
    assert [(s.base, s.name) for s in stages] == [("python:3.11-slim", "one"),
                                                  ("python:3.11-slim", None)]
    assert stages[0].all("RUN") == ["a  && b ${IMG}"]  # not redeclared in the stage
    assert stages[1].all("USER") == ["7:python:3.11-slim"]
