"""The operator's own Jobs and pods, kept in memory by watches the API server filters with a label selector.

Each study's pass needs its Jobs and their pods. Listing them afresh each pass cost two requests a pass, about 5.4 per
trial at 100 studies (docs/benchmarks.md), more than the TokenReview a report over HTTPS added. Here, as client-go's
informers do, one list per resource and namespace (the whole cluster in cluster-wide mode) gives the current
resourceVersion, a watch from it keeps a copy of every object up to date, and passes read that copy: no request at
all. The selector (``app.kubernetes.io/managed-by=ftstudy-operator``) is applied by the API server, so other Jobs
and pods never reach the operator (kopf filters on the client side, and would stream them all).

What a copy can get wrong, and how it is kept from mattering:
- *Behind the API server by a few milliseconds* (an event in flight): a pass then sees what a list made a moment
  earlier would have shown, which the executor already handles (a Job's pod not yet created, a pod still ending).
- *Behind the operator's own writes*: a Job the operator has just created is put into the copy from the API
  server's answer (``put``), so the next pass cannot take a launched trial for a lost one and launch it again.
  Deleting is safe to be late on: a deleted Job seen once more is deleted again, which the API server answers 404.
- *A watch that broke*: the copy of that scope is marked stale at once, readers get ``None`` and list from the API
  server as before, and the watch lists anew (every object replaced, deleted ones dropped) before it is trusted
  again. A watch the API server simply ends after ``WATCH_SECONDS`` is resumed from the last version seen, losing
  nothing.

What a Job watch delivers also wakes studies (``on_change``: a Job that ended), as before; the poll stays the safety
net for what no watch reports.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ftstudy.kube import names
from ftstudy.kube.api import ApiError, Kube, path

log = logging.getLogger(__name__)

SELECTOR = f"{names.MANAGED_BY}={names.OPERATOR}"
# Labels every selector of a pass names one of (a study's UID; a helper Job's name, for its pods): indexed, so a
# pass reads its own study's objects instead of matching every object of the operator's against its selector
INDEXED: tuple[str, ...] = (names.STUDY_UID, "job-name")
WATCH_SECONDS = 300  # the API server ends each watch after this; it is then resumed from the last version seen


def _terms(selector: str) -> dict[str, str]:
    """An equality-based label selector (``a=b,c=d``), the only kind the executor uses, as label -> value."""
    return dict(term.partition("=")[::2] for term in filter(None, selector.split(",")))


def _matches(obj: dict[str, Any], terms: dict[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in terms.items())


def _version(obj: dict[str, Any]) -> int | None:
    """An object's resourceVersion as a number. Kubernetes calls it opaque; etcd's are increasing integers, and it
    is compared only to keep an object the watch already delivered from being replaced by an older answer."""
    try:
        return int(str((obj.get("metadata") or {}).get("resourceVersion")))
    except ValueError:
        return None


class WatchCache:
    """One resource (``group``, ``version``, ``plural``) of the operator's, in the watched namespaces (the whole
    cluster when ``namespaces`` is empty), one thread per namespace; ``on_change(obj)`` for each object added or
    modified."""

    def __init__(
        self,
        kube: Kube,
        group: str,
        version: str,
        plural: str,
        namespaces: list[str],
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.kube = kube
        self.plural = plural
        self.on_change = on_change
        self._resource = (group, version, plural)
        self._scopes: list[str | None] = list(namespaces) or [None]
        self._objects: dict[str, dict[str, Any]] = {}  # by UID
        self._index: dict[tuple[str, str], set[str]] = {}  # (an INDEXED label, its value) -> UIDs
        self._synced: set[str | None] = set()  # scopes whose copy is current (listed, watch running since)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(scope,), name=f"watch-{plural}-{scope or 'all'}", daemon=True)
            for scope in self._scopes
        ]

    def start(self) -> WatchCache:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _scope(self, namespace: str) -> str | None:
        return None if self._scopes == [None] else namespace

    def items(self, namespace: str, selector: str) -> list[dict[str, Any]] | None:
        """The objects of ``namespace`` that match ``selector``, as the watch last saw them; None while its copy is
        not current (not listed yet, or the watch broke): the caller lists from the API server then."""
        terms = _terms(selector)
        key = next((key for key in INDEXED if key in terms), None)
        with self._lock:
            if self._scope(namespace) not in self._synced:
                return None
            if key is None:
                candidates: Iterable[dict[str, Any]] = self._objects.values()
            else:
                candidates = (self._objects[uid] for uid in self._index.get((key, terms[key]), ()))
            return [obj for obj in candidates
                    if obj["metadata"].get("namespace") == namespace and _matches(obj, terms)]  # fmt: skip

    def _set(self, uid: str, obj: dict[str, Any]) -> None:
        """Hold ``obj`` (the lock held): the copy and the index together."""
        self._drop(uid)
        self._objects[uid] = _slim(obj)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for key in INDEXED:
            if key in labels:
                self._index.setdefault((key, str(labels[key])), set()).add(uid)

    def _drop(self, uid: str) -> None:
        held = self._objects.pop(uid, None)
        if held is None:
            return
        labels = held["metadata"].get("labels") or {}
        for key in INDEXED:
            entry = (key, str(labels.get(key)))
            if key in labels and entry in self._index:
                self._index[entry].discard(uid)
                if not self._index[entry]:
                    del self._index[entry]

    def get(self, uid: str) -> dict[str, Any] | None:
        """One object by UID, if the copy has it (current or not: the caller checks what it gets)."""
        with self._lock:
            return self._objects.get(uid)

    def put(self, obj: dict[str, Any]) -> None:
        """The API server's answer to the operator's own write: into the copy at once, unless the watch has already
        delivered a newer version."""
        uid = (obj.get("metadata") or {}).get("uid")
        if not uid:
            return
        with self._lock:
            held = self._objects.get(uid)
            new, old = _version(obj), _version(held) if held is not None else None
            if held is None or new is None or old is None or new > old:
                self._set(uid, obj)

    def _replace(self, scope: str | None, listed: list[dict[str, Any]]) -> None:
        with self._lock:
            for uid in [uid for uid, obj in self._objects.items()
                        if scope is None or obj["metadata"].get("namespace") == scope]:  # fmt: skip
                self._drop(uid)
            for obj in listed:
                self._set(obj["metadata"]["uid"], obj)
            self._synced.add(scope)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        uid = (obj.get("metadata") or {}).get("uid")
        if not uid:
            return
        with self._lock:
            if kind == "DELETED":
                self._drop(uid)
            else:
                self._set(uid, obj)

    def _run(self, scope: str | None) -> None:
        backoff = 0.5
        version: str | None = None
        resource_path = path(*self._resource, scope)
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = self.kube.request("GET", resource_path, query={"labelSelector": SELECTOR})
                    version = str(listed["metadata"]["resourceVersion"])
                    items = listed.get("items") or []
                    self._replace(scope, items)
                    for obj in items:
                        self._changed(obj)
                query = {"labelSelector": SELECTOR, "resourceVersion": version, "allowWatchBookmarks": "true",
                         "timeoutSeconds": str(WATCH_SECONDS)}  # fmt: skip
                for event in self.kube.watch(resource_path, query, WATCH_SECONDS + 30, self._stop):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:  # the version is too old: list again
                            version = None
                            break
                        raise ApiError(int(obj.get("code") or 500), str(obj.get("reason")), str(obj.get("message")))
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._apply(str(kind), obj)
                    if kind in ("ADDED", "MODIFIED"):
                        self._changed(obj)
                backoff = 0.5
            except Exception as error:  # readers list from the API server meanwhile, and the poll covers wake-ups
                with self._lock:
                    self._synced.discard(scope)
                if self._stop.is_set():
                    return
                version = None  # events may have been missed: list anew before the copy is trusted again
                log.warning("watching the operator's %s%s failed (%s); again in %.0f s", self.plural,
                            f" in {scope}" if scope else "", error, backoff)  # fmt: skip
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _changed(self, obj: dict[str, Any]) -> None:
        if self.on_change is not None:
            try:
                self.on_change(obj)
            except Exception:
                log.exception("handling a change of %s %s", self.plural, (obj.get("metadata") or {}).get("name"))


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """Without managedFields, which nothing reads and which are often half an object's size."""
    metadata = obj.get("metadata") or {}
    if "managedFields" not in metadata:
        return obj
    return {**obj, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}


class TrialObjects:
    """The two copies a study's executor reads: the operator's Jobs and their pods."""

    def __init__(self, kube: Kube, namespaces: list[str], on_job: Callable[[dict[str, Any]], None]) -> None:
        self.jobs = WatchCache(kube, "batch", "v1", "jobs", namespaces, on_job)
        self.pods = WatchCache(kube, "", "v1", "pods", namespaces)

    def start(self) -> TrialObjects:
        self.jobs.start()
        self.pods.start()
        return self

    def stop(self) -> None:
        self.jobs.stop()
        self.pods.stop()
