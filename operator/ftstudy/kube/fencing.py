"""Fencing: a replica that can no longer be sure it leads sends no write.

The Lease alone does not stop a replica whose threads were paused (a stopped process, a frozen VM, a renewal thread
starved of the CPU): when they run again, a reconcile thread may write before the renewal thread has noticed that
the lease passed to a standby, which may be acting already. So every write the operator makes, a Kubernetes request
other than a read and a database statement, first calls ``check()``. Once the last successful renewal is older
than the renew deadline (the moment from which a standby may soon lead), the guard the leader elector installed
stops the process and the write never leaves it. The Lease's own requests are not fenced: they are how a replica
becomes sure again.

What it does not cover: a write already on the wire when the pause began (the client-side timeout bounds how long
that can take, not when the server applies it), and kopf's own requests (finalizers), which are idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


class LeadershipLost(RuntimeError):
    """A write refused because this replica may no longer lead."""


_guard: Callable[[], None] | None = None


def install(guard: Callable[[], None] | None) -> None:
    """``guard`` raises (or ends the process) when writing is no longer safe; None: no fencing (one replica)."""
    global _guard
    _guard = guard


def check() -> None:
    guard = _guard
    if guard is not None:
        guard()


def _before_statement(*_: Any) -> None:
    check()


def fence_engine(engine: Engine) -> None:
    """Check before every statement the engine sends (reads too: a replica that may not lead has no use for them);
    once per engine however often it is called."""
    if not event.contains(engine, "before_cursor_execute", _before_statement):
        event.listen(engine, "before_cursor_execute", _before_statement)
