"""Text form of a rendered launch config (or of a refusal) for the pinned outputs."""

from __future__ import annotations

from typing import Any

from costmodel.errors import SpecError
from runtime.launch import LaunchConfig, render


def dump(cfg: LaunchConfig) -> str:
    parts = [f"== {cfg.format}: {cfg.filename} ({cfg.media_type})", cfg.content.rstrip("\n")]
    for name, text in cfg.files.items():
        parts += [f"== file {name}", text.rstrip("\n")]
    parts.append("== notes")
    parts += [f"- {n}" for n in cfg.notes]
    return "\n".join(parts) + "\n"


def dump_error(exc: SpecError) -> str:
    return "== refused\n" + "".join(f"- {p.field}: {p.rule}\n" for p in exc.problems)


def rendered(fmt: str, request: dict[str, Any], version: str | None = None) -> str:
    try:
        return dump(render(fmt, request, version=version))
    except SpecError as exc:
        return dump_error(exc)
