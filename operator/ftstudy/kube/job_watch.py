"""The operator's own watch of its trial Jobs, filtered by the API server with a label selector.

kopf filters the objects it watches on the client side: a handler on Jobs, even one with ``labels=``, streams every
Job of the watched namespaces (of the whole cluster in cluster-wide mode) into the operator, which then drops all
but its own. This watch asks the API server for the operator's Jobs only (``app.kubernetes.io/managed-by=
ftstudy-operator``), as client-go's informers do: a list for the current resourceVersion, then a watch from it,
listed again when the API server says the version is gone (410), and resumed after any error with backoff. What it
delivers is only a wake-up (a Job ended: its study acts now, not at its next poll), so an event missed in a gap is
caught by the poll, as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ftstudy.kube import names
from ftstudy.kube.api import ApiError, Kube, path

log = logging.getLogger(__name__)

SELECTOR = f"{names.MANAGED_BY}={names.OPERATOR}"
WATCH_SECONDS = 300  # the API server ends each watch after this; it is then resumed from the last version seen


class JobWatch:
    """One thread per watched namespace (one for the whole cluster when ``namespaces`` is empty) that calls
    ``on_job(job)`` for each added or modified Job of the operator's."""

    def __init__(self, kube: Kube, namespaces: list[str], on_job: Callable[[dict[str, Any]], None]) -> None:
        self.kube = kube
        self.on_job = on_job
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(namespace,), name=f"job-watch-{namespace or 'all'}", daemon=True)
            for namespace in (namespaces or [None])  # type: ignore[list-item]
        ]

    def start(self) -> JobWatch:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self, namespace: str | None) -> None:
        backoff = 0.5
        version: str | None = None
        jobs_path = path("batch", "v1", "jobs", namespace)
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = self.kube.request("GET", jobs_path, query={"labelSelector": SELECTOR})
                    version = str(listed["metadata"]["resourceVersion"])
                    for job in listed.get("items") or []:
                        self.on_job(job)
                query = {"labelSelector": SELECTOR, "resourceVersion": version, "allowWatchBookmarks": "true",
                         "timeoutSeconds": str(WATCH_SECONDS)}  # fmt: skip
                for event in self.kube.watch(jobs_path, query, WATCH_SECONDS + 30, self._stop):
                    kind, job = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if job.get("code") == 410:  # the version is too old: list again
                            version = None
                            break
                        raise ApiError(int(job.get("code") or 500), str(job.get("reason")), str(job.get("message")))
                    version = str((job.get("metadata") or {}).get("resourceVersion") or version)
                    if kind in ("ADDED", "MODIFIED"):
                        self.on_job(job)
                backoff = 0.5
            except Exception as error:  # the poll covers meanwhile
                log.warning("watching the trial Jobs%s failed (%s); again in %.0f s",
                            f" of {namespace}" if namespace else "", error, backoff)  # fmt: skip
                if isinstance(error, ApiError) and error.status == 410:
                    version = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
