"""Retrying database calls through transient outages.

A trainer that has trained for an hour must not lose its result because PostgreSQL restarted for a minute; nor
may a typo in a study name be retried for minutes. So only connection-level failures are retried, with capped
exponential backoff, until a deadline; everything else surfaces at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class StorageUnavailable(RuntimeError):
    """The database stayed unreachable past the retry deadline."""


class Stopped(RuntimeError):
    """A stop was asked for (the trainer's SIGTERM) while a call was failing: a pod being evicted has a grace period
    to leave in, which retrying for minutes would outlast (then SIGKILL, a failure); its caller stops as at any
    other safe point, and what it could not report is reported again by the run that resumes."""


def is_transient(error: BaseException) -> bool:
    """True for errors that mean "could not talk to the database", not "the database said no"."""
    import sqlalchemy.exc

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if isinstance(current, sqlalchemy.exc.DisconnectionError | sqlalchemy.exc.TimeoutError):
            return True
        if type(current).__module__.startswith("psycopg2") and type(current).__name__ in {
            "OperationalError",
            "InterfaceError",
        }:
            return True
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        current = current.__cause__ or current.__context__
    return False


@dataclass(frozen=True)
class RetryPolicy:
    deadline_seconds: float = 120.0
    first_delay: float = 0.5
    max_delay: float = 10.0
    target: str = "database"  # what was unreachable, in messages ("the operator's report endpoint" for a trial)
    # set: retrying ends (``Stopped``) at once instead of waiting for the next try (a trainer's SIGTERM)
    stop: threading.Event | None = field(default=None, compare=False, repr=False)

    def call(self, what: str, function: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
        """Run ``function``; on a transient error wait and try again until the deadline passes."""
        started = time.monotonic()
        delay = self.first_delay
        attempt = 1
        while True:
            try:
                return function()
            except Exception as error:
                if not is_transient(error):
                    raise
                if self.stop is not None and self.stop.is_set():
                    raise Stopped(f"stopped while trying to {what}: {self.target} unreachable "
                                  f"({_first_line(error)})") from error  # fmt: skip
                waited = time.monotonic() - started
                if waited + delay > self.deadline_seconds:
                    raise StorageUnavailable(
                        f"{self.target} unreachable while trying to {what}: gave up after {attempt} attempts over "
                        f"{waited:.0f}s (last error: {_first_line(error)})"
                    ) from error
                log.warning(
                    "%s unreachable while trying to %s (attempt %d): %s; retrying in %.1fs",
                    self.target,
                    what,
                    attempt,
                    _first_line(error),
                    delay,
                )
                if self.stop is None:
                    sleep(delay)
                elif self.stop.wait(delay):
                    raise Stopped(f"stopped while waiting to {what} again: {self.target} unreachable "
                                  f"({_first_line(error)})") from error  # fmt: skip
                delay = min(self.max_delay, delay * 2)
                attempt += 1


def _first_line(error: BaseException) -> str:
    root: BaseException = error
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(root).strip().splitlines()
    return f"{type(root).__name__}: {text[0] if text else ''}"
