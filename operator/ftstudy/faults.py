"""Fault-injection points, for the chaos tests only: a process that passes a named point dies there, as if killed.

A SIGKILL from outside lands wherever the process happens to be, which is rarely inside the few microseconds
between two writes that must both happen (a Job created, then its launch counted). Named points put the kill
exactly there. They are off unless ``$FTSTUDY_FAULTS`` names them (``name=N``: die with SIGKILL the N-th time the
point is passed; ``name=N:hold=S``: stop there for S seconds instead, a thread stuck mid-sequence, or a trainer held
at a step for a test to signal it; several, comma-separated), which nothing but the tests sets.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter

ENV = "FTSTUDY_FAULTS"
_passed: Counter[str] = Counter()
_lock = threading.Lock()
log = logging.getLogger(__name__)


def _armed() -> dict[str, tuple[int, float | None]]:
    """Point name -> (the pass that triggers it, seconds to hold there; None: die)."""
    armed: dict[str, tuple[int, float | None]] = {}
    for item in os.environ.get(ENV, "").split(","):
        name, _, rest = item.strip().partition("=")
        count, _, hold = rest.partition(":hold=")
        if name and count.isdigit():
            armed[name] = (int(count), float(hold) if hold else None)
    return armed


def point(name: str, wake: threading.Event | None = None) -> None:
    """Die here (SIGKILL, no clean-up of any kind) if ``$FTSTUDY_FAULTS`` says so; otherwise nothing. ``wake``
    ends a hold early once set (a trainer's stop event: the signal the test sends while it waits here)."""
    if ENV not in os.environ:
        return
    armed = _armed().get(name)
    if armed is None:
        return
    wanted, hold = armed
    with _lock:
        _passed[name] += 1
        hit = _passed[name] == wanted
    if hit and hold is not None:
        log.warning("fault point %s: holding for %.0f s", name, hold)  # a test waits for this line
        if wake is None:
            time.sleep(hold)
        else:
            wake.wait(hold)
    elif hit:
        log.warning("fault point %s: killed here", name)  # which point ended the process, for a test to read
        os.kill(os.getpid(), signal.SIGKILL)
