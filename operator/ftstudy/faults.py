"""Fault-injection points, for the chaos tests only: a process that passes a named point dies there, as if killed.

A SIGKILL from outside lands wherever the process happens to be, which is rarely inside the few microseconds
between two writes that must both happen (a Job created, then its launch counted). Named points put the kill
exactly there. They are off unless ``$FTSTUDY_FAULTS`` names them (``name=N``: die with SIGKILL the N-th time the
point is passed; several, comma-separated), which nothing but the tests sets.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

ENV = "FTSTUDY_FAULTS"
_passed: Counter[str] = Counter()
_lock = threading.Lock()


def _armed() -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in os.environ.get(ENV, "").split(","):
        name, _, count = item.strip().partition("=")
        if name and count.isdigit():
            armed[name] = int(count)
    return armed


def point(name: str) -> None:
    """Die here (SIGKILL, no clean-up of any kind) if ``$FTSTUDY_FAULTS`` says so; otherwise nothing."""
    if ENV not in os.environ:
        return
    wanted = _armed().get(name)
    if wanted is None:
        return
    with _lock:
        _passed[name] += 1
        hit = _passed[name] == wanted
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)
