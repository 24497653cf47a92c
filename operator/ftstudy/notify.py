"""Reports that wake the operator: PostgreSQL ``NOTIFY`` from the trainer, ``LISTEN`` in the operator.

Polling alone puts a trial's early report up to one poll (2 s) away from its decision, and a trial that will be
cancelled keeps its GPU meanwhile. So a trainer, right after its early accuracy (or its outcome) is committed, sends
``NOTIFY ftstudy_trials, '<optuna study name>'``; the operator keeps one ``LISTEN`` connection per database (never
one per study) and wakes the study's reconcile loop at once. Nothing depends on a notification arriving: a lost one
(the listener reconnecting, a trainer of an older image) is caught by the poll, which stays as the safety net, and a
listener that reconnects wakes every study it serves, since it may have missed some. SQLite has no notifications:
``ftstudy run`` polls.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from ftstudy.redact import redact

CHANNEL = "ftstudy_trials"
log = logging.getLogger(__name__)


def supported(url: str) -> bool:
    return url.startswith("postgresql")


def notify(engine: Any, study_name: str) -> None:
    """Tell listeners that ``study_name`` has news (SQLAlchemy ``engine``). Best effort: the poll catches a miss,
    so a failure here is logged and never fails the trial."""
    if engine.dialect.name != "postgresql":
        return
    from sqlalchemy import text

    try:
        with engine.connect() as connection:
            connection.execute(
                text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": study_name}
            )
            connection.commit()
    except Exception as error:  # the report itself is committed; only the wake-up is lost
        log.warning("could not notify the operator (it will see the report at its next poll): %s", error)


def connect_kwargs(url: str) -> dict[str, Any]:
    """psycopg2's arguments for a SQLAlchemy URL (``postgresql+psycopg2://user:pw@host:port/db?sslmode=...``)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    kwargs: dict[str, Any] = parsed.translate_connect_args(username="user", database="dbname")
    kwargs.update({key: value for key, value in parsed.query.items() if isinstance(value, str)})
    kwargs.setdefault("connect_timeout", 10)
    kwargs.setdefault("application_name", "ftstudy-operator-listen")
    return kwargs


class Listener:
    """One ``LISTEN`` connection and the thread that reads it; ``deliver(payload)`` gets each notification's
    payload, ``resync()`` is called after every (re)connection, when notifications may have been missed."""

    CHECK_SECONDS = 30.0  # how often an idle connection is checked (a dead TCP peer says nothing by itself)

    def __init__(self, url: str, deliver: Callable[[str], None], resync: Callable[[], None]) -> None:
        self.url = url
        self.deliver = deliver
        self.resync = resync
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ftstudy-listen", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.5
            except Exception as error:
                self.connected.clear()
                log.warning("listening for trial reports failed (%s); polling covers until it reconnects in %.0f s",
                            redact(str(error), self.url), backoff)  # fmt: skip
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _listen(self) -> None:
        import psycopg2
        import psycopg2.extensions

        connection = psycopg2.connect(**connect_kwargs(self.url))
        try:
            connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
            self.connected.set()
            self.resync()
            checked = time.monotonic()
            while not self._stop.is_set():
                if select.select([connection], [], [], 1.0) != ([], [], []):
                    connection.poll()
                    while connection.notifies:
                        self.deliver(connection.notifies.pop(0).payload)
                elif time.monotonic() - checked > self.CHECK_SECONDS:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT 1")
                    checked = time.monotonic()
        finally:
            self.connected.clear()
            connection.close()


class Notifications:
    """The operator's listeners, one per database URL, and which study loop each payload wakes.

    ``watch`` is called by a study's loop whenever it (re)opens its storage; a URL no study uses any more (a rotated
    Secret) loses its listener."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._listeners: dict[str, Listener] = {}
        self._studies: dict[str, tuple[str, Callable[[], None]]] = {}  # optuna study name -> (url, wake)

    def watch(self, url: str, study_name: str, wake: Callable[[], None]) -> None:
        if not self.enabled or not supported(url):
            return
        with self._lock:
            previous = self._studies.get(study_name)
            self._studies[study_name] = (url, wake)
            if url not in self._listeners:
                self._listeners[url] = Listener(url, self._deliver, lambda: self._resync(url))
            stale = previous[0] if previous is not None and previous[0] != url else None
        if stale is not None:
            self._drop_unused(stale)

    def forget(self, study_name: str, wake: Callable[[], None]) -> None:
        """Only ``wake``'s registration: a study deleted and created again under the same name has its own."""
        with self._lock:
            previous = self._studies.get(study_name)
            if previous is None or previous[1] != wake:
                return
            del self._studies[study_name]
        self._drop_unused(previous[0])

    def listening(self, url: str) -> bool:
        with self._lock:
            listener = self._listeners.get(url)
        return listener is not None and listener.connected.is_set()

    def close(self) -> None:
        with self._lock:
            listeners, self._listeners = list(self._listeners.values()), {}
            self._studies.clear()
        for listener in listeners:
            listener.stop()

    def _drop_unused(self, url: str) -> None:
        with self._lock:
            if any(used == url for used, _wake in self._studies.values()):
                return
            listener = self._listeners.pop(url, None)
        if listener is not None:
            listener.stop()

    def _deliver(self, payload: str) -> None:
        with self._lock:
            found = self._studies.get(payload)
        if found is not None:
            found[1]()

    def _resync(self, url: str) -> None:
        with self._lock:
            wakes = [wake for used, wake in self._studies.values() if used == url]
        for wake in wakes:
            wake()
