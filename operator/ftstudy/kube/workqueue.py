"""A queue of keys (studies) for a fixed pool of reconcile threads: client-go's delaying workqueue, in small.

Why a pool rather than a thread per study: the number of threads stays bounded whatever the number of studies, and
the wait for one is measured (``ftstudy_reconcile_queue_wait_seconds``), where a hundred threads would only be seen
contending. A pass mostly waits for the API server and the database, so the pool must be wide enough to overlap
those waits: with 100 studies of 10 parallel trials on two cores, decision latency p95 was 47 s with 8 threads, 5.6
s with 32 and 6.7 s with 100 (docs/benchmarks.md), hence 32.

The rules, those of client-go's workqueue that matter here:

- a key is processed by one thread at a time; asked for while it is being processed, it is processed once more
  right after (at the earlier of the two times asked for), so a wake-up during a pass is never lost;
- a key waits in the queue once: asking for it again only brings its time forward;
- ``done`` says when the key is due next (a study's poll), ``add`` without a time makes it due now (a wake-up).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

RECONCILE_THREADS = 32  # the default pool (``ftstudy operator --reconcile-threads``)


class WorkQueue:
    def __init__(self, observe_wait: Callable[[float], None] | None = None) -> None:
        """``observe_wait``: told, for each key taken, how many seconds after its time it was (waiting for a
        thread). Times are ``time.monotonic()``, the clock ``Condition.wait`` counts in."""
        self._observe_wait = observe_wait
        self._cond = threading.Condition()
        self._due: dict[str, float] = {}  # waiting keys -> when due (the heap may hold stale entries)
        self._heap: list[tuple[float, int, str]] = []
        self._order = itertools.count()  # ties go first come, first served
        self._active: set[str] = set()
        self._again: dict[str, float] = {}  # active keys asked for meanwhile -> the earliest time asked
        self._closed = False

    def add(self, key: str, at: float | None = None) -> None:
        """Process ``key`` at ``at`` (monotonic; default now), or earlier if it is already due earlier."""
        at = time.monotonic() if at is None else at
        with self._cond:
            if self._closed:
                return
            if key in self._active:
                self._again[key] = min(at, self._again.get(key, at))
                return
            self._push(key, at)

    def _push(self, key: str, at: float) -> None:
        current = self._due.get(key)
        if current is not None and current <= at:
            return
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._order), key))
        self._cond.notify()

    def get(self) -> str | None:
        """The next due key, once it is due (blocking); None once the queue is closed. Call ``done`` after."""
        with self._cond:
            while not self._closed:
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # moved earlier since: a stale entry
                if not self._heap:
                    self._cond.wait()
                    continue
                at, _, key = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                del self._due[key]
                self._active.add(key)
                if self._heap:
                    self._cond.notify()  # another thread may take the next one
                if self._observe_wait is not None:
                    self._observe_wait(-wait)
                return key
            return None

    def done(self, key: str, next_at: float | None) -> None:
        """``key``'s processing ended; it is due again at ``next_at`` (None: not unless asked for again)."""
        with self._cond:
            self._active.discard(key)
            again = self._again.pop(key, None)
            times = [t for t in (next_at, again) if t is not None]
            if times and not self._closed:
                self._push(key, min(times))

    def waiting(self) -> int:
        """Keys due now or later, not being processed."""
        with self._cond:
            return len(self._due)

    def close(self) -> None:
        """Every ``get`` returns None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
