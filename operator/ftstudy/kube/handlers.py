"""The kopf handlers: thin. They hand each FineTuneStudy to the reconcile threads and clean up on request.

Why a pool of reconcile threads instead of a kopf daemon per study: kopf puts a finalizer on every object that has a
daemon, so with the operator down (or uninstalled) no study could be deleted. Here a study carries a finalizer only when
its spec asks the operator to delete its Optuna records (``cleanup.deleteStudyRecords``), the one thing that needs the
operator at deletion time; its Jobs go through owner references either way. kopf still watches the studies, lists
every one at start-up (which is how a restarted operator adopts them), serves the liveness probe and logs in; the
operator's Jobs are watched by ``ftstudy.kube.watch_cache``, with a label selector the API server applies (kopf would
stream every Job of the watched namespaces and filter them itself).

Each study is reconciled every ``--poll-seconds`` (``--unnotified-poll-seconds`` while its trainers' reports cannot wake
it) and whenever something wakes it: a change of the study, one of its Jobs that ended, or a trainer's report (the
report endpoint, or PostgreSQL NOTIFY, ``ftstudy.notify``). The poll is the safety net for what a watch or a
notification can miss.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf

from ftstudy.kube import identity, names
from ftstudy.kube.api import Kube
from ftstudy.kube.executor import JobExecutor, job_ended
from ftstudy.kube.metrics import METRICS, OperatorMetrics
from ftstudy.kube.policy import TrialPolicy
from ftstudy.kube.problems import Problem
from ftstudy.kube.reconciler import Settings, StudyReconciler, _secret_url, post_event, release_storage, shared_storage
from ftstudy.kube.report_server import Target
from ftstudy.kube.workqueue import RECONCILE_THREADS, WorkQueue
from ftstudy.notify import Notifications
from ftstudy.redact import redact
from ftstudy.retry import RetryPolicy
from ftstudy.runner import Event
from ftstudy.spec import SecretKeyRef

log = logging.getLogger(__name__)


ERROR_RETRY_SECONDS = 10.0


@dataclass
class _Study:
    """What the pool knows of one FineTuneStudy: kopf's newest body and, once a pass ran, its reconciler."""

    body: dict[str, Any]
    wake: Callable[[], None]  # one object, so that the notifications registered with it can be removed with it
    reconciler: StudyReconciler | None = None
    optuna_name: str | None = None  # the Optuna study its notifications are registered under


class Workers:
    """A fixed pool of reconcile threads sharing the studies (``ftstudy.kube.workqueue``): each study is reconciled
    by one thread at a time, every ``--poll-seconds`` and whenever something wakes it, with kopf's newest body."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        metrics: OperatorMetrics = METRICS,
        notifications: Notifications | None = None,
        threads: int = RECONCILE_THREADS,
    ) -> None:
        """``notifications``: trainers' reports, which wake a study before its next poll (``ftstudy.notify``)."""
        self.kube = kube
        self.settings = settings
        self.metrics = metrics
        self.notifications = notifications or Notifications(enabled=False)
        self.studies: dict[str, _Study] = {}
        self.retiring: dict[str, _Study] = {}  # deleted studies whose reconciler a thread has yet to close
        self.lock = threading.Lock()
        self.queue = WorkQueue(observe_wait=metrics.observe_queue_wait)
        self.threads = [
            threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True) for i in range(max(1, threads))
        ]
        for thread in self.threads:
            thread.start()

    def update(self, body: dict[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        with self.lock:
            study = self.studies.get(uid)
            if study is None:
                self.studies[uid] = _Study(body, functools.partial(self.wake, uid))
                self.queue.add(uid)
                return
            old_generation = study.body.get("metadata", {}).get("generation")
            study.body = body
        if body["metadata"].get("generation") != old_generation:
            self.queue.add(uid)  # a spec change is acted on now, not at the next poll

    def wake(self, uid: str) -> None:
        """Reconcile the study now rather than at its next poll (one of its Jobs ended, a trainer reported)."""
        with self.lock:
            known = uid in self.studies
        if known:
            self.queue.add(uid)

    def job_changed(self, job: dict[str, Any]) -> None:
        """One of the operator's Jobs as its watch saw it (``ftstudy.kube.watch_cache``). A Job that ended wakes its
        study now (a finished trial frees a slot for the next, a crashed one is retried), not at its next poll. Only
        endings wake it: every other change of a Job (created, its pod started, annotated by the operator itself)
        would cost a pass that decides nothing, and on a busy operator those passes delay the ones that do. The poll
        stays, for what a watch can miss."""
        uid = ((job.get("metadata") or {}).get("labels") or {}).get(names.STUDY_UID)
        if uid and job_ended(job):
            self.wake(str(uid))

    def report_target(self, uid: str) -> Target | None:
        """The study with this UID as the report endpoint needs it (``ftstudy.kube.report_server``)."""
        with self.lock:
            study = self.studies.get(uid)
        if study is None:
            return None
        metadata = study.body["metadata"]
        built = study.reconciler.built if study.reconciler is not None else None
        if built is None:
            return Target(metadata["namespace"], metadata["name"], None, study.wake)
        executor = built.engine.executor
        pod = executor.pod if isinstance(executor, JobExecutor) else Target.pod
        return Target(metadata["namespace"], metadata["name"], built.store, study.wake, pod)

    def forget(self, uid: str) -> None:
        """The study is deleted: a thread closes its reconciler after any pass under way."""
        with self.lock:
            study = self.studies.pop(uid, None)
            if study is not None:
                self.retiring[uid] = study
        if study is not None:
            self.queue.add(uid)

    def stop_all(self, timeout: float = 10.0) -> bool:
        """Stop the reconcile threads; True once every one has stopped (False: one is still inside a pass after
        ``timeout``, and may still act)."""
        self.queue.close()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stopped = not any(thread.is_alive() for thread in self.threads)
        if not stopped:
            return False
        with self.lock:
            studies = [*self.studies.items(), *self.retiring.items()]
            self.studies, self.retiring = {}, {}
        for uid, study in studies:
            self._retire(uid, study)
        self.notifications.close()
        return True

    def _work(self) -> None:
        while (uid := self.queue.get()) is not None:
            next_at = None
            try:
                next_at = self._process(uid)
            except Exception:  # a bug must not take a thread out of the pool: log it and try again later
                log.exception("reconcile thread: study %s", uid)
                next_at = time.monotonic() + ERROR_RETRY_SECONDS
            finally:
                self.queue.done(uid, next_at)

    def _process(self, uid: str) -> float | None:
        """One pass of the study; when it is due next (None: deleted, nothing more to do)."""
        with self.lock:
            retiring = self.retiring.pop(uid, None)
            study = self.studies.get(uid)
        if retiring is not None:
            self._retire(uid, retiring)
        if study is None:
            return None
        if study.reconciler is None:
            study.reconciler = self._reconciler(uid, study)
        metadata = study.body["metadata"]
        try:
            delay = study.reconciler.reconcile(study.body)
        except Exception:  # a bug must not end the study's reconciles for good: log it and try again later
            log.exception("reconciling %s/%s failed", metadata["namespace"], metadata["name"])
            delay = ERROR_RETRY_SECONDS
        return time.monotonic() + delay

    def _reconciler(self, uid: str, study: _Study) -> StudyReconciler:
        metadata = study.body["metadata"]

        def listen(url: str, optuna_name: str) -> None:
            if study.optuna_name is not None and study.optuna_name != optuna_name:
                self.notifications.forget(study.optuna_name, study.wake)
            study.optuna_name = optuna_name
            self.notifications.watch(url, optuna_name, study.wake)

        return StudyReconciler(
            self.kube,
            metadata["namespace"],
            metadata["name"],
            uid,
            self.settings,
            metrics=self.metrics,
            listen=listen,
            listening=self.notifications.listening,
            created=_timestamp(metadata.get("creationTimestamp")),
        )

    def _retire(self, uid: str, study: _Study) -> None:
        """Stop listening for the study's reports, close its storage, drop its metric series."""
        metadata = study.body["metadata"]
        if study.optuna_name is not None:
            self.notifications.forget(study.optuna_name, study.wake)
        if study.reconciler is not None:
            study.reconciler.close()
        self._forget_metrics(uid, metadata["namespace"], metadata["name"])

    def _forget_metrics(self, uid: str, namespace: str, name: str) -> None:
        """Remove the deleted study's metric series, after its last pass, unless a study of the same name was
        created again meanwhile."""
        with self.lock:
            again = any(
                (s.body["metadata"]["namespace"], s.body["metadata"]["name"]) == (namespace, name)
                for other, s in self.studies.items()
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

    def wants_cleanup(spec: kopf.Spec, **_: Any) -> bool:
        cleanup = spec.get("cleanup") or {}
        return bool(cleanup.get("deleteStudyRecords") or cleanup.get("deleteArtifacts"))

    @kopf.on.delete(names.GROUP, names.VERSION, names.PLURAL, when=wants_cleanup)
    def delete_records(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        data = _plain(dict(body))
        cleanup = (data.get("spec") or {}).get("cleanup") or {}
        where = namespace or data["metadata"]["namespace"]
        if cleanup.get("deleteStudyRecords"):
            delete_study_records(workers.kube, workers.settings.policy, where, data)
        if cleanup.get("deleteArtifacts"):
            delete_study_artifacts(workers.kube, workers.settings.policy, where, data)

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


def delete_study_records(kube: Kube, policy: TrialPolicy, namespace: str, data: dict[str, Any]) -> None:
    """``cleanup.deleteStudyRecords``: delete the study's Optuna records; if that cannot be done, say so and let the
    deletion go on (a study that cannot be deleted is worse than records left behind). The trial policy is passed
    first, as for a live study: a deleted study may name only a Secret the platform team allows, or the operator
    would read any Secret by name for whoever can create and delete a study. What is said is redacted."""
    import optuna

    name = data["metadata"]["name"]
    ref = ((data.get("spec") or {}).get("storage") or {}).get("secretRef") or {}
    secret = ref.get("name")
    url = None
    try:
        if secret not in policy.storage_secrets:
            allowed = ", ".join(sorted(policy.storage_secrets))
            raise Problem(
                "TrialPolicyViolation",
                f"the trial policy does not allow Secret {secret!r} as storage (allowed: {allowed}; Helm value "
                "trialPolicy.storageSecrets), so it was not read",
            )
        url = _secret_url(kube, namespace, SecretKeyRef(name=secret, key=ref.get("key", "url")))
        # the operator's own pool for that database (named ftstudy-operator, fenced: a replica that may no longer
        # lead deletes nothing), as its studies use it
        storage = shared_storage(url, RetryPolicy(deadline_seconds=15))
        try:
            optuna.delete_study(study_name=_records_of(namespace, data, storage), storage=storage)
        finally:
            release_storage(url)
        log.info("deleted the Optuna records of %s/%s", namespace, name)
    except KeyError:
        log.info("no Optuna records of %s/%s to delete", namespace, name)
    except Exception as error:
        detail = error.message if isinstance(error, Problem) else str(error)
        message = redact(f"could not delete the study's records: {detail}; they stay in the database", url)
        log.warning("%s/%s: %s", namespace, name, message)
        post_event(kube, data, Event(None, message, "CleanupFailed"))


def delete_study_artifacts(kube: Kube, policy: TrialPolicy, namespace: str, data: dict[str, Any]) -> None:
    """``cleanup.deleteArtifacts``: start the Job that deletes what the study's trials wrote
    (``jobs.artifacts_cleanup_manifest``), checked against the trial policy as every Job the operator builds. It is
    not waited for (the study's deletion goes on); a refusal is said in a Warning and the artifacts stay."""
    from ftstudy import spec as spec_module
    from ftstudy.kube import jobs
    from ftstudy.kube.api import ApiError, path
    from ftstudy.kube.policy import check_pod

    name, uid = data["metadata"]["name"], data["metadata"]["uid"]
    root = (data.get("status") or {}).get("trialsRoot")
    if not isinstance(root, str) or not root:  # never reconciled: no trial wrote anything
        log.info("%s/%s: no trials root in the status, so no artifacts to delete", namespace, name)
        return
    try:
        study = spec_module.parse(data).spec
        # Only a root this study can have had (identity.trials_directory): a status edited to name another place
        # must not delete that with the study's credentials.
        directories = (name, identity.keyed_trials_directory(name, uid))
        if root not in {str(jobs.trials_root(study, namespace, d)) for d in directories}:
            raise Problem("TrialsRootRefused", f"status.trialsRoot {root!r} is not a directory of this study")
        manifest = jobs.artifacts_cleanup_manifest(study, namespace, name, uid, root)
        refused = check_pod(manifest["spec"]["template"]["spec"], policy, None, study.trial_template.artifact_secret)
        if refused:
            raise Problem("TrialPolicyViolation", f"the trial policy refuses its Job: {'; '.join(refused)}")
        try:
            kube.create(path("batch", "v1", "jobs", namespace), manifest)
        except ApiError as error:
            if error.status != 409:  # created already (an operator restarted within the deletion): done
                raise
        log.info("%s/%s: Job %s deletes %s", namespace, name, manifest["metadata"]["name"], root)
        post_event(kube, data, Event(None, f"Job {manifest['metadata']['name']} deletes {root}", "ArtifactsDeleting"))
    except Exception as error:
        detail = error.message if isinstance(error, Problem | ApiError) else str(error)
        message = f"could not delete the study's artifacts: {detail}; they stay under trialTemplate.outputDir"
        log.warning("%s/%s: %s", namespace, name, message)
        post_event(kube, data, Event(None, message, "CleanupFailed"))


def _records_of(namespace: str, data: dict[str, Any], storage: Any) -> str:
    """The Optuna study of a deleted FineTuneStudy: what its status says (only within its namespace: a status edited
    to name another namespace's study must not delete that), else found as the reconciler finds it."""
    recorded = (data.get("status") or {}).get("optunaStudy")
    if isinstance(recorded, str) and recorded.startswith(f"{namespace}."):
        return recorded
    metadata = data["metadata"]
    return identity.optuna_name(storage, RetryPolicy(deadline_seconds=15), namespace, metadata["name"],
                                metadata["uid"], _timestamp(metadata.get("creationTimestamp")), None)  # fmt: skip


def _timestamp(value: Any) -> datetime | None:
    """An API server timestamp (``2026-12-04T10:00:00Z``) as an aware datetime; None if absent or unreadable."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    """kopf's bodies are live views; the worker keeps a plain snapshot."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
