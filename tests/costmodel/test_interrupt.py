"""A cancelled search stops inside one long pipeline simulation (costmodel.interrupt), not
after it: the simulator polls the installed check every POLL_EVERY wakes and raises."""

from __future__ import annotations

import time

import pytest

from costmodel import interrupt
from costmodel.pipeline.simulator import simulate_named

BIG = ("Interleaved1F1B", 16, 512, 2)  # 16 ranks x 512 micro-batches x 2 chunks: 49k actions


def test_the_simulator_polls_an_installed_check_and_stops_when_it_says_so() -> None:
    calls: list[bool] = []

    def never() -> bool:
        calls.append(False)
        return False

    with interrupt.interruptible(never):
        done = simulate_named(*BIG, 1.0, 0.5, 0.5)
    assert done.step_time > 0 and len(calls) >= 2  # polled during one simulation

    asked: list[bool] = []

    def at_once() -> bool:
        asked.append(True)
        return True

    with interrupt.interruptible(at_once), pytest.raises(interrupt.Interrupted) as exc:
        simulate_named(*BIG, 1.0, 0.5, 0.5)
    assert exc.value.reason == "stop" and asked == [True]  # the first poll stopped it


def test_without_a_check_nothing_is_polled_and_checks_do_not_leak() -> None:
    assert interrupt.checker() is None
    with interrupt.interruptible(lambda: False):
        assert interrupt.checker() is not None
    assert interrupt.checker() is None
    simulate_named(*BIG, 1.0, 0.5, 0.5)


def test_until_interrupts_past_a_deadline_and_keeps_an_outer_stop() -> None:
    with interrupt.until(time.perf_counter() - 1.0), pytest.raises(interrupt.Interrupted) as exc:
        simulate_named(*BIG, 1.0, 0.5, 0.5)
    assert exc.value.reason == "deadline"
    with (interrupt.interruptible(lambda: True), interrupt.until(time.perf_counter() + 3600),
          pytest.raises(interrupt.Interrupted) as exc):
        simulate_named(*BIG, 1.0, 0.5, 0.5)
    assert exc.value.reason == "stop"
    # nested checks: either stopping is enough
    with (interrupt.interruptible(lambda: True), interrupt.interruptible(lambda: False),
          pytest.raises(interrupt.Interrupted)):
        interrupt.poll()
