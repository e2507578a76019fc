"""Running a benchmark beside a previous revision in the same run: that revision checked out
in a temporary git worktree, and the machine's load average printed around the figures (this
machine is shared and noisy: only figures taken together compare)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def revision(rev: str | None) -> Iterator[Path | None]:
    """The source tree of ``rev`` (a temporary worktree, removed afterwards); None without."""
    if rev is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="meshplan-bench-") as tmp:
        tree = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), rev], cwd=ROOT,
                       check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
