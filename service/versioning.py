"""The cost-model version stored with every search and plan, and part of a search's content hash.

``costmodel.__version__`` alone would not do: a fix to the simulator or a new calibration
default changes predictions without a release. The version is the package version plus a
digest of every source and data file of ``costmodel`` and ``solver`` as installed, so a stored
result is reused only by the code that would compute it again.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

import costmodel

PACKAGES = ("costmodel", "solver")
SUFFIXES = (".py", ".json")


def _files(root: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    out: list[tuple[str, Traversable]] = []
    for child in root.iterdir():
        name = f"{prefix}/{child.name}" if prefix else child.name
        if child.is_dir():
            if child.name != "__pycache__":
                out += _files(child, name)
        elif child.name.endswith(SUFFIXES):
            out.append((name, child))
    return out


@cache
def cost_model_version() -> str:
    """``<costmodel version>+<12 hex digits of the code and data digest>``."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for name, file in sorted(_files(resources.files(package)), key=lambda t: t[0]):
            digest.update(f"{package}/{name}\0".encode())
            digest.update(file.read_bytes())
            digest.update(b"\0")
    return f"{costmodel.__version__}+{digest.hexdigest()[:12]}"
