"""Print the runtime worker's measured-vs-predicted figures in pytest's terminal summary (they
are also written to ``artifacts/runtime_figures.txt``), so they show without ``-s``."""

from __future__ import annotations

import pytest

FIGURES = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    text = terminalreporter.config.stash.get(FIGURES, None)
    if text:
        terminalreporter.section("meshplan-runtime: measured vs predicted (CPU, 2 gloo ranks)")
        terminalreporter.write_line(text)
