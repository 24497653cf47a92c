"""The trainer's SIGTERM handler sets its stop flag wherever the main thread was, including inside a wait on it."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from ftstudy.trainer.stop_event import StopEvent


def test_a_stop_set_at_any_line_of_a_wait_on_it_wakes_the_wait_and_never_deadlocks() -> None:
    """A Python signal handler runs on the main thread between two of its lines, so the handler's ``set`` can come
    inside the ``wait`` it is meant to end (a fault point's hold, a retry's backoff): simulated here by a trace
    function that calls ``set`` at the k-th line the wait runs, for every k. A plain ``threading.Event`` deadlocks
    at the line where its Condition holds the lock (threading.py's ``self._waiters.append(waiter)``); the trainer
    then hung until the kubelet's SIGKILL, its preemption checkpoint unwritten."""
    k = 0
    while True:
        k += 1
        stop, thread, fired, returned = _wait_with_set_at_line(k)
        if not fired:  # k is past the lines the wait runs before it blocks: the signal comes while it blocks
            stop.set()
            thread.join(5)
            assert not thread.is_alive() and returned == [True], "a stop set while the wait blocks ends it"
            break
        assert not thread.is_alive(), f"set() at line {k} of the wait ({fired[0]}) deadlocked it"
        assert returned == [True], f"set() at line {k} of the wait ({fired[0]}) did not end it"
    assert k > 1, "the trace reached no line of the wait"


def _wait_with_set_at_line(k: int) -> tuple[StopEvent, threading.Thread, list[str], list[bool]]:
    """A thread waits on a new stop, which its own trace function sets at the k-th line the wait runs; returned
    once the thread has ended or 2 s have passed: the stop, the thread, where it was set (empty when the wait
    blocked first) and what the wait returned."""
    stop = StopEvent()
    lines, fired, returned = 0, [], []

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal lines
        if event == "line":
            lines += 1
            if lines == k and not fired:
                fired.append(f"{frame.f_code.co_filename}:{frame.f_lineno}")
                stop.set()  # what the handler does, where the signal came
        return tracer

    def waiter() -> None:
        sys.settrace(tracer)
        try:
            returned.append(stop.wait(60))
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    thread.join(2)
    return stop, thread, fired, returned


def test_a_real_sigterm_during_the_wait_ends_it_and_a_stop_is_final() -> None:
    stop = StopEvent()
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        assert stop.wait(30) is True and stop.is_set()
        assert stop.wait(0) is True, "still set: the trainer does not start again"
        assert StopEvent().wait(0.01) is False, "a wait that times out says so"
    finally:
        signal.signal(signal.SIGTERM, previous)
