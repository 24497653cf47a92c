"""The trainer's stop flag: a ``threading.Event`` that its SIGTERM handler may set at any moment.

``threading.Event.set`` takes the Event's lock, and a Python signal handler runs on the main thread between two of
its bytecodes. When those bytecodes were inside ``Event.wait`` on that same Event (a report's retry backoff, a fault
point's hold), at the instant ``Condition.wait`` holds that lock, the handler waited for the lock its own thread held:
the trainer hung on SIGTERM and was killed at the end of the pod's grace period, its preemption checkpoint never
written (seen once in tests/test_distributed.py under load, 2026-12-08). A pipe needs no lock: ``set`` writes one
byte (``os.write`` takes none), ``wait`` polls the read end, which stays readable once written.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading


class StopEvent(threading.Event):
    """Set once, never cleared: the trainer stops at its next safe point and does not start again."""

    def __init__(self) -> None:
        super().__init__()
        self._stopped = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def set(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(BlockingIOError):  # the pipe holds a byte already: readable, all wait() asks
            os.write(self._write, b"\0")

    def is_set(self) -> bool:
        return self._stopped

    def clear(self) -> None:
        raise RuntimeError("a trainer's stop is final")

    def wait(self, timeout: float | None = None) -> bool:
        # A flag set before the poll is seen by it (its byte was written first, or is written during it); the poll is
        # retried after a signal handler ran (PEP 475), and then sees the byte the handler wrote.
        if not self._stopped:
            poller = select.poll()
            poller.register(self._read, select.POLLIN)
            poller.poll(None if timeout is None else max(0.0, timeout) * 1000)
        return self._stopped

    def __del__(self) -> None:
        for fd in (getattr(self, "_read", None), getattr(self, "_write", None)):
            if fd is not None:
                os.close(fd)
