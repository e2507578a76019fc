"""The estimate gate admits waiting threads in the order they arrived."""

from __future__ import annotations

import threading
import time

from service.fair_gate import FairGate


def test_waiters_enter_in_arrival_order_one_at_a_time() -> None:
    gate = FairGate()
    order: list[int] = []
    inside = 0
    most_inside = 0
    lock = threading.Lock()

    def work(i: int) -> None:
        nonlocal inside, most_inside
        with gate:
            with lock:
                inside += 1
                most_inside = max(most_inside, inside)
                order.append(i)
            time.sleep(0.01)
            with lock:
                inside -= 1

    threads = []
    with gate:  # hold it while the others line up, one after another
        for i in range(8):
            t = threading.Thread(target=work, args=(i,))
            t.start()
            threads.append(t)
            while len(gate._waiters) < i + 1:  # until thread i waits in the queue
                time.sleep(0.001)
    for t in threads:
        t.join(10)
    assert order == list(range(8))
    assert most_inside == 1


def test_an_exception_inside_releases_the_gate() -> None:
    gate = FairGate()
    try:
        with gate:
            raise ValueError("boom")
    except ValueError:
        pass
    acquired = threading.Event()
    t = threading.Thread(target=lambda: (gate.__enter__(), acquired.set()))
    t.start()
    t.join(5)
    assert acquired.is_set()
