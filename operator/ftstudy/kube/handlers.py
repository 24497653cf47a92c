"""The kopf handlers: thin. They hand each FineTuneStudy to its reconcile loop and clean up on request.

Why a worker thread per study instead of a kopf daemon: kopf puts a finalizer on every object that has a daemon, so
with the operator down (or uninstalled) no study could be deleted. Here a study carries a finalizer only when its
spec asks the operator to delete its Optuna records (``cleanup.deleteStudyRecords``), the one thing that needs the
operator at deletion time; its Jobs go through owner references either way. kopf still watches, lists every study
at start-up (which is how a restarted operator adopts them), serves the liveness probe and logs in.

A loop reconciles its study every ``--poll-seconds`` (``--unnotified-poll-seconds`` while its trainers' reports cannot
wake it) and whenever something wakes it: a change of the study, an
event of one of its Jobs (kopf watches the operator's Jobs), or a trainer's report (PostgreSQL NOTIFY,
``ftstudy.notify``). The poll is the safety net for what a watch or a notification can miss.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import kopf

from ftstudy.kube import names
from ftstudy.kube.api import Kube
from ftstudy.kube.executor import job_ended
from ftstudy.kube.metrics import METRICS, OperatorMetrics
from ftstudy.kube.reconciler import Settings, StudyReconciler, _secret_url, post_event
from ftstudy.notify import Notifications
from ftstudy.runner import Event
from ftstudy.spec import SecretKeyRef

log = logging.getLogger(__name__)


@dataclass
class _Worker:
    thread: threading.Thread
    wake: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    body: dict[str, Any] = field(default_factory=dict)


class Workers:
    """One reconcile thread per FineTuneStudy, fed the newest body kopf has seen."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        metrics: OperatorMetrics = METRICS,
        notifications: Notifications | None = None,
    ) -> None:
        """``notifications``: trainers' reports, which wake a study's loop before its next poll (``ftstudy.notify``)."""
        self.kube = kube
        self.settings = settings
        self.metrics = metrics
        self.notifications = notifications or Notifications(enabled=False)
        self.workers: dict[str, _Worker] = {}
        self.lock = threading.Lock()

    def update(self, body: dict[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None or not worker.thread.is_alive():
                thread = threading.Thread(target=self._run, args=(uid,), name=f"study-{body['metadata']['name']}")
                thread.daemon = True
                worker = _Worker(thread, body=body)
                self.workers[uid] = worker
                thread.start()
                return
            old_generation = worker.body.get("metadata", {}).get("generation")
            worker.body = body
            if body["metadata"].get("generation") != old_generation:
                worker.wake.set()  # a spec change is acted on now, not at the next poll

    def wake(self, uid: str) -> None:
        """Reconcile the study now rather than at its next poll (one of its Jobs changed)."""
        with self.lock:
            worker = self.workers.get(uid)
        if worker is not None:
            worker.wake.set()

    def forget(self, uid: str) -> None:
        with self.lock:
            worker = self.workers.pop(uid, None)
        if worker is not None:
            worker.stop.set()
            worker.wake.set()

    def stop_all(self, timeout: float = 10.0) -> None:
        with self.lock:
            workers, self.workers = list(self.workers.values()), {}
        for worker in workers:
            worker.stop.set()
            worker.wake.set()
        for worker in workers:
            worker.thread.join(timeout)
        self.notifications.close()

    def _run(self, uid: str) -> None:
        with self.lock:
            body = self.workers[uid].body
            wake = self.workers[uid].wake
        metadata = body["metadata"]
        optuna_name = names.optuna_study_name(metadata["namespace"], metadata["name"])
        reconciler = StudyReconciler(
            self.kube,
            metadata["namespace"],
            metadata["name"],
            uid,
            self.settings,
            metrics=self.metrics,
            listen=lambda url: self.notifications.watch(url, optuna_name, wake.set),
            listening=self.notifications.listening,
        )
        while True:
            with self.lock:
                worker = self.workers.get(uid)
            if worker is None or worker.stop.is_set():
                self.notifications.forget(optuna_name, wake.set)
                reconciler.close()
                self._forget_metrics(uid, metadata["namespace"], metadata["name"])
                return
            worker.wake.clear()  # before the pass: a report that lands during it wakes the next one at once
            try:
                delay = reconciler.reconcile(worker.body)
            except Exception:  # a bug must not end the study's loop for good: log it and try again later
                log.exception("reconciling %s/%s failed", metadata["namespace"], metadata["name"])
                delay = 10.0
            worker.wake.wait(delay)

    def _forget_metrics(self, uid: str, namespace: str, name: str) -> None:
        """The study's loop ended (deleted, or the operator stops): remove its metric series, here in its own thread
        after its last reconcile, unless a study of the same name was created again meanwhile."""
        with self.lock:
            again = any(
                (w.body["metadata"]["namespace"], w.body["metadata"]["name"]) == (namespace, name)
                for other, w in self.workers.items()
                if other != uid
            )
        if not again:
            self.metrics.forget(namespace, name)


def register(workers: Workers) -> None:
    """Register the handlers with kopf's default registry (called once, before ``kopf.run``)."""

    @kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
    def study_changed(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        data = dict(body)
        if event.get("type") == "DELETED" or data["metadata"].get("deletionTimestamp"):
            workers.forget(data["metadata"]["uid"])
        else:
            workers.update(_plain(data))

    @kopf.on.event("batch", "v1", "jobs", labels={names.MANAGED_BY: names.OPERATOR})
    def job_changed(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        """A trial's Job ended: its study acts now (a finished trial frees a slot for the next, a crashed one is
        retried), not at its next poll. Only endings wake it: every other change of a Job (created, its pod
        started, annotated by the operator itself) would cost a pass that decides nothing, and on a busy operator
        those passes delay the ones that do. The poll stays, for what a watch can miss."""
        uid = (body.get("metadata", {}).get("labels") or {}).get(names.STUDY_UID)
        if uid and event.get("type") != "DELETED" and job_ended(_plain(dict(body))):
            workers.wake(str(uid))

    def wants_cleanup(spec: kopf.Spec, **_: Any) -> bool:
        return bool((spec.get("cleanup") or {}).get("deleteStudyRecords"))

    @kopf.on.delete(names.GROUP, names.VERSION, names.PLURAL, when=wants_cleanup)
    def delete_records(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        """Delete the study's Optuna records; if that cannot be done, say so and let the deletion go on (a study
        that cannot be deleted is worse than records left behind)."""
        import optuna

        data = _plain(dict(body))
        namespace = namespace or data["metadata"]["namespace"]
        ref = ((data.get("spec") or {}).get("storage") or {}).get("secretRef") or {}
        try:
            url = _secret_url(workers.kube, namespace, SecretKeyRef(name=ref["name"], key=ref.get("key", "url")))
            optuna.delete_study(study_name=names.optuna_study_name(namespace, name), storage=url)
            log.info("deleted the Optuna records of %s/%s", namespace, name)
        except KeyError:
            log.info("no Optuna records of %s/%s to delete", namespace, name)
        except Exception as error:
            message = f"could not delete the study's records: {error}; they stay in the database"
            log.warning("%s/%s: %s", namespace, name, message)
            post_event(workers.kube, data, Event(None, message, "CleanupFailed"))

    @kopf.on.cleanup()
    def stop_workers(**_: Any) -> None:
        workers.stop_all()

    @kopf.on.login()
    def login(**_: Any) -> kopf.ConnectionInfo:
        """kopf connects with the credentials the operator already loaded (``--kubeconfig`` or in-cluster), read
        again at each login so that rotated service-account tokens are picked up."""
        config = workers.kube.api.configuration
        header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
        scheme, _separator, token = (header or "").partition(" ")
        return kopf.ConnectionInfo(
            server=config.host,
            ca_path=config.ssl_ca_cert,
            insecure=not config.verify_ssl,
            scheme=scheme or None,
            token=token or None,
            certificate_path=config.cert_file,
            private_key_path=config.key_file,
        )


def _plain(value: Any) -> Any:
    """kopf's bodies are live views; the worker keeps a plain snapshot."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
