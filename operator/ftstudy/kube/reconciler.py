"""One FineTuneStudy's reconcile loop: read its Secret, open its Optuna study, step the engine, write status.

The same ``Engine.step`` as ``ftstudy run`` (observe, ``core.decide``, apply), with the Job executor. Every step
starts from what the database and the API server say, so a reconcile interrupted anywhere (operator killed, database
down, API server gone) is simply repeated by the next one. Problems a person can fix (a missing Secret, an
unreachable database, a template the trial policy refuses, a Job that is not the study's) become a condition and a
Warning Event on the study; nothing is lost while they last. Bad data cannot wedge the loop either: a malformed
trainer report fails its trial (``ftstudy.trial_reports``), Optuna records deleted under a running study fail the
study with a condition. Nothing written here shows a storage password (``ftstudy.redact``).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from ftstudy import core, spec
from ftstudy.kube import fencing, jobs, names
from ftstudy.kube import identity as identity_module
from ftstudy.kube.api import ApiError, Kube, Unreachable, path
from ftstudy.kube.executor import JobExecutor
from ftstudy.kube.identity import SpecChanged, check_unchanged, study_identity
from ftstudy.kube.metrics import METRICS, OperatorMetrics
from ftstudy.kube.policy import SCRATCH_PATH, TrialPolicy, check_spec
from ftstudy.kube.problems import Problem
from ftstudy.kube.status import (
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    condition,
    merge_conditions,
    study_status,
    trust_condition,
    untrusted,
)
from ftstudy.kube.times import api_time
from ftstudy.kube.watch_cache import TrialObjects
from ftstudy.redact import redact, remember
from ftstudy.retry import RetryPolicy, StorageUnavailable
from ftstudy.runner import OUTAGE_BACKOFF_SECONDS, Engine, Event, generated_data_name
from ftstudy.study_store import StudyConflict, StudyStore, open_storage
from ftstudy.trainer.cli import EXIT_ARTIFACTS
from ftstudy.trial_reports import check_all

log = logging.getLogger(__name__)

STORAGE_POOL_SIZE = 8  # connections per database for all the studies of one operator (plus 2 overflow)
_storages: dict[str, tuple[RDBStorage, int]] = {}  # url -> (its storage, how many reconcilers use it)
_storages_lock = threading.Lock()
_opening: dict[str, threading.Lock] = {}  # url -> held while that URL's pool is being opened

UNEXPECTED_RETRY_SECONDS = 10.0  # after an error no branch of reconcile expects: doubled each time, up to
UNEXPECTED_RETRY_MAX_SECONDS = 300.0
STATUS_REFRESH_SECONDS = 30.0  # GPU seconds tick up all the time; other changes are written at once
DATA_CHECKED = "ftstudy:data-checked"  # in the Optuna study's system attributes: the data check Job passed
STORAGE_REASONS = ("DatabaseUnreachable", "SecretNotFound", "SecretKeyMissing", "SecretForbidden", "StorageURLInvalid")


@dataclass
class Settings:
    # A study is reconciled this often when nothing wakes it earlier; reports (PostgreSQL NOTIFY) and Jobs that end
    # do, so this is the safety net. While its reports cannot wake it (no listener: notifications off, not
    # PostgreSQL, the listener reconnecting) it is reconciled at least every unnotified_poll_seconds.
    poll_seconds: float = 10.0
    unnotified_poll_seconds: float = 2.0
    idle_seconds: float = 30.0  # a finished study is looked at this often (a raised maxTrials resumes it)
    storage_retry_seconds: float = 15.0  # per call; past it the reconcile ends and the next one tries again
    # A built study's Secret is read again after this long, not on every pass (it was a GET per report): a rotated
    # URL is picked up within it, or sooner when the database refuses the old one (the loop then reopens the study).
    secret_refresh_seconds: float = 60.0
    stuck_seconds: float = 120.0
    policy: TrialPolicy = field(default_factory=TrialPolicy)
    reports: jobs.Reports | None = None  # trials report to the operator's endpoint (--report-url), not the database
    # the operator's Jobs and pods as its watches keep them (ftstudy.kube.watch_cache); None: each pass lists them
    objects: TrialObjects | None = None


@dataclass
class _Built:
    generation: int
    url: str
    engine: Engine
    store: StudyStore
    data_checked: bool = False
    trials_root: PurePosixPath | str = ""  # where the trials write (jobs.trials_root), shown as status.trialsRoot


def _secret_url(kube: Kube, namespace: str, ref: spec.SecretKeyRef) -> str:
    try:
        secret = kube.get(path("", "v1", "secrets", namespace, ref.name))
    except ApiError as error:
        if error.status == 404:
            raise Problem(
                "SecretNotFound",
                f"Secret {namespace}/{ref.name} (spec.storage.secretRef) does not exist; create it with key "
                f"{ref.key!r} holding the storage URL (postgresql+psycopg2://user:password@host:5432/db)",
            ) from None
        if error.status == 403:
            raise Problem(
                "SecretForbidden",
                f"the operator may not read Secret {namespace}/{ref.name}: {error.message}; grant it get on secrets "
                "in this namespace (the Helm chart's watchNamespaces)",
            ) from None
        raise
    value = (secret.get("data") or {}).get(ref.key)
    if not value:
        keys = ", ".join(sorted((secret.get("data") or {}).keys())) or "none"
        raise Problem("SecretKeyMissing", f"Secret {namespace}/{ref.name} has no key {ref.key!r} (its keys: {keys})")
    url = base64.b64decode(value).decode().strip()
    remember(url)  # the log hides it from now on, wherever it is quoted
    return url


def shared_storage(url: str, retry: RetryPolicy) -> RDBStorage:
    """One connection pool per database, shared by every study the operator reconciles: twenty studies must not hold
    eighty connections (PostgreSQL's default limit is a hundred, for everything that uses the server). Each call
    counts a user of the pool; ``release_storage`` ends that use."""
    with _storages_lock:
        opening = _opening.setdefault(url, threading.Lock())
    # One opening per URL at a time: a hundred studies starting together would otherwise each open (and then drop)
    # a pool of their own, a burst of connections (measured: 70) that a small max_connections refuses. Not under
    # _storages_lock, since opening may retry for a while and other databases' studies must not wait for it.
    with opening:
        with _storages_lock:
            if url in _storages:
                storage, users = _storages[url]
                _storages[url] = (storage, users + 1)
                return storage
        storage = open_storage(url, retry, pool_size=STORAGE_POOL_SIZE, application="ftstudy-operator")
        fencing.fence_engine(storage.engine)  # no statement once this replica may no longer lead
        with _storages_lock:
            _storages[url] = (storage, 1)
        return storage


def release_storage(url: str) -> None:
    """One user of ``url``'s pool is done with it; the last one closes its connections. A rotated Secret's old URL
    (an old password) must not keep connections open, nor stay usable from this process."""
    with _storages_lock:
        if url not in _storages:
            return
        storage, users = _storages[url]
        if users > 1:
            _storages[url] = (storage, users - 1)
            return
        del _storages[url]
    storage.engine.dispose()


@dataclass
class StudyReconciler:
    kube: Kube
    namespace: str
    name: str
    uid: str
    settings: Settings = field(default_factory=Settings)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    built: _Built | None = None
    written: dict[str, Any] = field(default_factory=dict)
    written_at: float = 0.0
    last_problem: str | None = None
    unexpected_in_a_row: int = 0  # passes that ended in an error no branch expects: their retries back off
    url: str | None = None  # the storage URL last read from the Secret: what must never be shown
    url_read_at: float = float("-inf")  # time.monotonic() of that read
    events: list[Event] = field(default_factory=list)
    metrics: OperatorMetrics = field(default_factory=lambda: METRICS)
    trials_seen: dict[int, FrozenTrial] = field(default_factory=dict)  # the newest reading, for the metrics
    warned_unplaced: set[int] = field(default_factory=set)  # trials told TrialUnschedulable (once while waiting)
    warned_queue: str | None = None  # what the last QueueAvailable=False Event said (once per cause)
    # the study's storage is open at url, its records under this Optuna name: wake on their reports
    listen: Callable[[str, str], None] = lambda url, optuna_name: None
    created: datetime | None = None  # the FineTuneStudy's creationTimestamp (which records are its own)
    listening: Callable[[str], bool] = lambda url: False  # is a listener on url connected now?

    @property
    def status_path(self) -> str:
        return path(names.GROUP, names.VERSION, names.PLURAL, self.namespace, self.name) + "/status"

    def reconcile(self, body: dict[str, Any]) -> float:
        """One pass; returns the seconds until the next. Never raises for a problem of the study itself."""
        generation = int(body["metadata"].get("generation", 1))
        status = body.get("status") or {}
        if status.get("phase") in (SUCCEEDED, FAILED) and status.get("observedGeneration") == generation:
            self.metrics.observe_status(self.namespace, self.name, status)  # metrics: a restarted operator's view
            self._tidy(body, generation, status)
            return self.settings.idle_seconds
        self.metrics.study_seen(self.namespace, self.name)
        started = time.monotonic()
        try:
            study = spec.parse(body, f"FineTuneStudy {self.namespace}/{self.name}")
            built = self._build(study, generation)
            self._check_data(built, study)
            if built.engine.outcome is not None:
                built.engine.outcome = None  # the spec changed after the end (more trials): decide again
            built.engine.step()
            self._write(built, generation, body)
            self.last_problem = None
            self.unexpected_in_a_row = 0
            return self.next_poll(built.url)
        except spec.SpecError as error:
            self._problem(body, generation, Problem("InvalidSpec", str(error), permanent=True))
        except StudyConflict as error:
            self._problem(body, generation, Problem("StudyConflict", str(error), permanent=True))
        except SpecChanged as error:
            self._problem(body, generation, Problem("SpecChanged", str(error)))
        except Problem as problem:
            self._problem(body, generation, problem)
        except StorageUnavailable as error:
            self.close()  # reopen once the database is back
            self.metrics.database_reached(self.namespace, self.name, False)
            self._problem(body, generation, Problem("DatabaseUnreachable", f"{error}; running trials continue"))
        except KeyError as error:
            if not self._records_deleted():
                return self._unexpected(body, generation, error)
            name = self.built.store.name if self.built is not None else "?"
            message = (
                f"the study's Optuna records ({name!r}) were deleted from its database while it ran, so its history "
                "is gone and its trials cannot report; delete and create the FineTuneStudy again to start over"
            )
            self._problem(body, generation, Problem("StudyRecordsDeleted", message, permanent=True))
            log.debug("%s/%s: %r", self.namespace, self.name, error)
        except Unreachable as error:
            log.warning("%s/%s: %s; retrying", self.namespace, self.name, error)
        except ApiError as error:  # the API server answered with an error (overloaded, restarting): try again
            log.warning("%s/%s: %s; retrying", self.namespace, self.name, redact(str(error), self.url))
        except Exception as error:  # a bug, or data no check foresaw: on the study, not only in the log
            return self._unexpected(body, generation, error)
        finally:
            self._post_events(body)
            self.metrics.observe_reconcile(self.namespace, self.name, time.monotonic() - started)
        return max(min(self.settings.poll_seconds, self.settings.unnotified_poll_seconds), 5.0)

    def _tidy(self, body: dict[str, Any], generation: int, status: dict[str, Any]) -> None:
        """An ended study's last pass may have started checkpoint deletions (a failed study's suspended trials'):
        followed to their end, retried and told as on any pass (``Engine.tidy``). The status counts them
        (``checkpointsToDelete``), so that an operator restarted after the end opens the study's database for them
        too, and for nothing else."""
        pending = int(status.get("checkpointsToDelete") or 0)
        if not pending and (self.built is None or not self.built.engine.forgetting):
            return
        try:
            if self.built is None:
                self._build(spec.parse(body, f"FineTuneStudy {self.namespace}/{self.name}"), generation)
            assert self.built is not None
            self.built.engine.tidy()
            left = len(self.built.engine.forgetting)
            if left != pending:
                self.kube.merge_patch(self.status_path, {"status": {"checkpointsToDelete": left}})
        except (spec.SpecError, Problem, StorageUnavailable, ApiError, Unreachable) as error:
            log.warning("%s/%s: checkpoint cleanup: %s; retrying", self.namespace, self.name,
                        redact(str(error), self.url))  # fmt: skip
        finally:
            self._post_events(body)

    def _unexpected(self, body: dict[str, Any], generation: int, error: Exception) -> float:
        """An error no branch of ``reconcile`` expects (a bug, a value the API server accepted and the operator
        cannot read): a condition and one Event on the study that name it, the traceback in the log once per
        distinct error, and retries that back off (10 s, doubling, at most 5 minutes) instead of a traceback every
        10 s that nobody sees."""
        self.unexpected_in_a_row += 1
        delay = min(UNEXPECTED_RETRY_SECONDS * 2.0 ** (self.unexpected_in_a_row - 1), UNEXPECTED_RETRY_MAX_SECONDS)
        described = f"{type(error).__name__}: {error}"
        message = redact(
            f"the operator failed on this study ({described}) and retries, backing off from "
            f"{UNEXPECTED_RETRY_SECONDS:.0f} s to {UNEXPECTED_RETRY_MAX_SECONDS / 60:.0f} minutes; each pass stops "
            "at the error, so the study waits. The operator's log has the traceback: please report it",
            self.url,
        )
        if self.last_problem != message:  # the traceback once per distinct error; _problem posts the Event once
            log.exception("%s/%s: unexpected error", self.namespace, self.name)
        self._problem(body, generation, Problem("ReconcileError", message))
        return delay

    def next_poll(self, url: str) -> float:
        """Seconds to the next pass if nothing wakes the loop earlier: the slow safety net while the study's reports
        can wake it, the faster poll while they cannot."""
        if self.listening(url):
            return self.settings.poll_seconds
        return min(self.settings.poll_seconds, self.settings.unnotified_poll_seconds)

    def _build(self, study: spec.FineTuneStudy, generation: int) -> _Built:
        if study.spec.storage is None:
            raise Problem(
                "StorageMissing",
                "spec.storage.secretRef is required in a cluster: name a Secret holding the storage URL",
                permanent=True,
            )
        refused = check_spec(study.spec, self.settings.policy)
        if refused:  # before the Secret is read: a study may name only Secrets the platform team allows
            raise Problem(
                "TrialPolicyViolation",
                "the trial policy refuses this study, so no trial is launched; fix the spec: " + "; ".join(refused),
            )
        missing = jobs.checkpoint_volume_missing(study.spec)
        if missing:  # before any trial: each would screen, then fail its resume for want of the checkpoint
            raise Problem("CheckpointVolumeMissing", missing)
        fresh = time.monotonic() - self.url_read_at < self.settings.secret_refresh_seconds
        if self.built is not None and self.built.generation == generation and fresh:
            return self.built
        url = _secret_url(self.kube, self.namespace, study.spec.storage.secret_ref)
        self.url, self.url_read_at = url, time.monotonic()
        if self.built is not None and self.built.generation == generation and self.built.url == url:
            return self.built
        retry = RetryPolicy(deadline_seconds=self.settings.storage_retry_seconds)
        try:
            storage = shared_storage(url, retry)
        except (ValueError, ImportError, sqlalchemy.exc.ArgumentError) as error:  # NoSuchModuleError: an ArgumentError
            ref = study.spec.storage.secret_ref
            raise Problem(
                "StorageURLInvalid",
                f"the storage URL in Secret {self.namespace}/{ref.name} (key {ref.key!r}) is not one SQLAlchemy can "
                f"use ({type(error).__name__}: {redact(str(error), url)}); it should look like "
                "postgresql+psycopg2://user:password@host:5432/db",
            ) from None
        try:
            optuna_name = identity_module.optuna_name(storage, retry, self.namespace, self.name, self.uid,
                                                      self.created, study.spec.storage.continue_from)  # fmt: skip
            store = StudyStore(url, optuna_name, study.spec, retry, storage=storage)
            identity_module.record_owner(store, self.uid)
            identity = study_identity(store)
            check_unchanged(store, study.spec)
            directory = identity_module.trials_directory(store, self.name, self.uid)
        except BaseException:
            release_storage(url)
            raise
        root = jobs.trials_root(study.spec, self.namespace, directory)
        executor = JobExecutor(
            self.kube,
            self.namespace,
            self.name,
            self.uid,
            study.spec,
            stuck_seconds=self.settings.stuck_seconds,
            policy=self.settings.policy,
            store=store,
            identity=identity,
            reports=self.settings.reports,
            trials_root=root,
            objects=self.settings.objects,
        )
        # Where the trials read their data: a generated dataset beside their files on the volume, or in each pod's
        # scratch space when the files go to an object store (every trial generates the same pages); a relative
        # dataset.path is on the trials' output volume (spec refuses it with an object store); an absolute one is
        # any path in the container.
        local_root = jobs.LOCAL_DATA if isinstance(root, str) else root
        if study.spec.dataset.generate is not None:
            data_dir, generate = local_root / generated_data_name(study.spec), True
        else:
            assert study.spec.dataset.path is not None
            data_dir, generate = local_root.parent.parent / study.spec.dataset.path, False
        engine = Engine(
            study,
            store,
            executor,  # trials read the URL from the Secret, through their environment
            data_dir,
            root,
            on_event=self.events.append,
            study_name=optuna_name,
            generate_data=generate,
        )
        engine.restarts_when_preempted = jobs.restarts_when_preempted(study.spec)
        self.close()  # the previous generation's, or another URL's (a rotated Secret)
        self.built = _Built(generation, url, engine, store, trials_root=root)
        self.listen(url, optuna_name)
        return self.built

    def _check_data(self, built: _Built, study: spec.FineTuneStudy) -> None:
        """A study with ``dataset.path``, or with its files in an object store: before its first trial, a CPU Job
        reads the dataset once and writes to the store once (``JobExecutor.check_data``). Raises a Problem while it
        runs (phase Pending, a Normal Event) and a permanent one if the data cannot be read or the store cannot be
        written (no trial ever launched, no GPU spent); passed, it is recorded in the study's records and not run
        again. A study that already has trials (started before this check existed, or resumed after it passed) is
        not held up."""
        has_data = study.spec.dataset.path is not None
        root = built.trials_root
        in_store = spec.is_store_url(study.spec.trial_template.output_dir)
        if (not has_data and not in_store) or built.data_checked:
            return
        store = built.store
        attrs = store.retry.call("read the study", lambda: store.storage.get_study_system_attrs(store.study_id))
        if attrs.get(DATA_CHECKED) or store.trials():
            built.data_checked = True
            return
        executor = built.engine.executor
        assert isinstance(executor, JobExecutor)
        data_dir = PurePosixPath(str(built.engine.data_dir)) if has_data else None
        state, reason, code = executor.check_data(data_dir, str(root) if in_store else SCRATCH_PATH)
        if state is core.Process.SUCCEEDED:
            record = store.storage.set_study_system_attr
            store.retry.call("record the data check", lambda: record(store.study_id, DATA_CHECKED, True))
            built.data_checked = True
            return
        if state is core.Process.FAILED and code == EXIT_ARTIFACTS:
            raise Problem("ObjectStoreUnusable", f"the object store at spec.trialTemplate.outputDir ({root}) cannot "
                          f"be written, so no trial was launched: {reason}; fix the bucket or its credentials "
                          "(spec.trialTemplate.artifactSecret) and create the study again", permanent=True)  # fmt: skip
        if state is core.Process.FAILED:
            where = built.engine.data_dir
            raise Problem("DataInvalid", f"the dataset at spec.dataset.path ({where}) cannot be read, so no trial "
                          f"was launched: {reason}; fix it and create the study again", permanent=True)  # fmt: skip
        what = "the dataset and the object store" if has_data and in_store else (
            "the dataset" if has_data else "the object store")  # fmt: skip
        raise Problem("CheckingData", f"checking {what} once in a CPU Job "
                      f"({names.data_check_job_name(self.name)}) before any trial takes a GPU")  # fmt: skip

    def close(self) -> None:
        """Forget the built engine and release its connection pool (the study ended, or its URL changed)."""
        if self.built is not None:
            release_storage(self.built.url)
            self.built = None

    def _records_deleted(self) -> bool:
        """After a KeyError: are the study's Optuna records gone (or replaced) from under the built store?"""
        if self.built is None:
            return False
        store = self.built.store
        try:
            found = store.retry.call("find the study", lambda: store.storage.get_study_id_from_name(store.name))
        except KeyError:
            return True
        return bool(found != store.study_id)

    def _write(self, built: _Built, generation: int, body: dict[str, Any]) -> None:
        now = self.clock()
        trials, _malformed = check_all(built.store.trials())  # the engine fails those trials; the status skips them
        study_spec = built.engine.spec
        promotion = study_spec.promotion
        status = study_status(
            trials,
            study_spec.budget.max_trials,
            jobs.gpus_per_trial(study_spec),
            study_spec.training.early_fraction,
            now,
            k=promotion.k if promotion.policy == "topK" else 5,
            audit_fraction=built.store.audit_fraction,
            rungs=promotion.rungs,
        )
        executor = built.engine.executor
        if isinstance(executor, JobExecutor) and (study_spec.trial_template.queue_name or executor.in_kueue()):
            queued = min(executor.queued(), status["trials"]["running"])
            status["trials"] |= {"queued": queued, "running": status["trials"]["running"] - queued}
        status["checkpointsToDelete"] = len(built.engine.forgetting)  # (``_tidy``)
        failure = status.get("lastFailure")
        if failure:  # a trainer's last log line may quote the storage URL, or its password alone
            failure["reason"] = redact(str(failure["reason"]), built.url)
        outcome = built.engine.outcome
        old = body.get("status") or {}
        conditions = [
            condition("StorageReady", True, "Connected", "the study's database answers", generation, now),
            condition("Ready", True, "Reconciled", "the operator acts on the study", generation, now),
        ]
        if isinstance(outcome, core.StudyDone):
            phase, message = SUCCEEDED, "every trial has ended"
            conditions.append(condition("Complete", True, "AllTrialsEnded", message, generation, now))
        elif isinstance(outcome, core.StudyFailed):
            phase, message = FAILED, redact(outcome.reason, built.url)  # it quotes a trainer's reason
            conditions.append(condition("Failed", True, "TooManyFailedTrials", message, generation, now))
        else:
            phase = RUNNING
            counts = status["trials"]
            message = f"{counts['running']} trial(s) running"
            conditions.append(condition("Complete", False, "TrialsRunning", message, generation, now))
            conditions.append(
                condition("Failed", False, "WithinFailureBudget", "failures within budget", generation, now)
            )
        conditions.append(self._outages(built.engine.outages, built.url, generation, now))
        if isinstance(built.engine.executor, JobExecutor):
            conditions.append(self._placed(built.engine.executor.unplaced, study_spec, generation, now))
            if built.engine.restarts_when_preempted:  # only then: a study whose trials resume needs no word on it
                conditions.append(condition("PreemptionSafe", False, "CheckpointsEndWithPod",
                                            built.engine.restarts_when_preempted, generation, now))  # fmt: skip
            if study_spec.trial_template.queue_name:
                conditions.append(self._admissible(built.engine.executor.queue_gone, generation, now))
            for number, queue in built.engine.executor.newly_queued:
                self.events.append(Event(number, f"waiting in LocalQueue {queue} for Kueue to admit it", "TrialQueued"))
            for number, waited, queue in built.engine.executor.admitted:
                text = f"admitted by Kueue after {waited:.0f} s in LocalQueue {queue}"
                self.events.append(Event(number, text, "TrialAdmitted"))
        trusted = trust_condition(status["earlyScoreTrust"], study_spec.training.early_fraction, generation, now)
        if trusted is not None:
            conditions.append(trusted)
            if trusted["status"] == "True" and not self._warned_untrusted(old):
                self.events.append(Event(None, trusted["message"], "EarlyScoresUntrusted"))
        status.update(
            optunaStudy=built.store.name,
            phase=phase,
            message=message,
            observedGeneration=generation,
            conditions=merge_conditions(old.get("conditions") or [], conditions),
            startTime=old.get("startTime") or body["metadata"].get("creationTimestamp"),
        )
        if built.trials_root:
            status["trialsRoot"] = str(built.trials_root)
        if phase in (SUCCEEDED, FAILED):
            status["completionTime"] = old.get("completionTime") or api_time(now)
        self._observe(trials, status)
        self._patch_status(status)

    def _placed(self, unplaced: dict[int, str], study_spec: spec.StudySpec, generation: int,
                now: datetime) -> dict[str, Any]:  # fmt: skip
        """The TrialsSchedulable condition: False while a trial's pod is one no node can take (more GPUs than any
        node has, a selector no node matches, GPUs all taken), with the scheduler's message, so a study that asks
        for too much says so at once rather than waiting ``budget.pendingSeconds``; a Warning Event per trial."""
        for number in sorted(set(unplaced) - self.warned_unplaced):
            self.events.append(Event(number, f"no node can take its pod now: {unplaced[number]}", "TrialUnschedulable"))
        self.warned_unplaced = set(unplaced)
        if not unplaced:
            return condition("TrialsSchedulable", True, "Scheduled", "every trial's pod has a node or has ended",
                             generation, now)  # fmt: skip
        numbers = sorted(unplaced)
        gpus = jobs.gpus_per_trial(study_spec)
        message = (
            f"trial(s) {', '.join(map(str, numbers))} wait for a node ({gpus} GPU(s) each); the scheduler says, of "
            f"trial {numbers[0]}: {unplaced[numbers[0]]}. They wait until a node can take them (GPUs freed, or a "
            f"node added) and fail after budget.pendingSeconds ({study_spec.budget.pending_seconds:.0f} s)"
        )
        return condition("TrialsSchedulable", False, "Unschedulable", message, generation, now)

    @staticmethod
    def _outages(outages: dict[int, tuple[int, float, str]], url: str, generation: int,
                 now: datetime) -> dict[str, Any]:  # fmt: skip
        """The TrialsReachStorage condition: False while a trial waits to launch again after an outage (its trainer
        could not reach the database or report endpoint, or use the object store: ``Engine._waited_out``). The
        study waits rather than fails: each launch that meets the outage spends no retry, so nothing is lost."""
        if not outages:
            return condition("TrialsReachStorage", True, "NoOutage", "no trial waits out an outage", generation, now)
        numbers = sorted(outages)
        base, cap = OUTAGE_BACKOFF_SECONDS
        why = redact(outages[numbers[0]][2], url)  # a trainer's last line may quote the URL
        message = (
            f"trial(s) {', '.join(map(str, numbers))} wait to launch again after an outage; of trial {numbers[0]}: "
            f"{why}. Each is launched again after a back-off ({base:.0f} s, doubled up to {cap / 60:.0f} min), "
            "spending no retry, until the outage ends"
        )
        return condition("TrialsReachStorage", False, "TrialOutage", message, generation, now)

    def _admissible(self, gone: Problem | None, generation: int, now: datetime) -> dict[str, Any]:
        """The QueueAvailable condition of a study that queues its trials in Kueue: False, with the Jobs left
        suspended, once Kueue can no longer admit them (``JobExecutor._recheck_queue``); a Warning Event when it
        turns False."""
        if gone is None:
            self.warned_queue = None
            return condition("QueueAvailable", True, "QueueExists", "the LocalQueue exists: Kueue admits the trials "
                             "as its ClusterQueue's quota allows", generation, now)  # fmt: skip
        if self.warned_queue != gone.message:
            self.events.append(Event(None, gone.message, gone.reason))
            self.warned_queue = gone.message
        return condition("QueueAvailable", False, gone.reason, gone.message, generation, now)

    def _warned_untrusted(self, old: dict[str, Any]) -> bool:
        """Was the study already told that its early scores are not to be trusted? Its stored status says so (across
        operator restarts), or what this reconciler last wrote does (the watch may not have delivered it yet): the
        Warning Event goes out once, when the condition turns True, not on every pass."""
        return untrusted(old.get("conditions") or []) or untrusted(self.written.get("conditions") or [])

    def _observe(self, trials: list[FrozenTrial], status: dict[str, Any]) -> None:
        """Metrics: the database answered; the status gauges; per-trial accuracies (events are counted when posted)."""
        self.trials_seen = {t.number: t for t in trials}
        self.metrics.database_reached(self.namespace, self.name, True)
        self.metrics.observe_status(self.namespace, self.name, status)
        self.metrics.observe_trials(self.namespace, self.name, trials)

    def _patch_status(self, status: dict[str, Any]) -> None:
        """Write only what changed, and GPU seconds (always changing while trials run) at most every 30 s."""
        steady = {k: v for k, v in status.items() if k not in ("gpuSeconds", "conditions")}
        steady["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]]
        fresh = steady != self.written
        if not fresh and time.monotonic() - self.written_at < STATUS_REFRESH_SECONDS:
            return
        try:
            self.kube.merge_patch(self.status_path, {"status": status})
        except ApiError as error:
            if error.status == 404:
                return  # the study was deleted meanwhile
            raise
        self.written, self.written_at = steady, time.monotonic()

    def _problem(self, body: dict[str, Any], generation: int, problem: Problem) -> None:
        now = self.clock()
        old = body.get("status") or {}
        text = redact(problem.message, self.url)
        if problem.reason in STORAGE_REASONS:
            kind = "StorageReady"
        else:
            kind = "Failed" if problem.permanent else "Ready"
        conditions = [condition(kind, kind == "Failed", problem.reason, text, generation, now)]
        phase = FAILED if problem.permanent else (old.get("phase") or PENDING)
        if phase in (SUCCEEDED, FAILED) and not problem.permanent:
            phase = RUNNING
        status = {
            "phase": phase,
            "message": text,
            "observedGeneration": generation if problem.permanent else old.get("observedGeneration"),
            "conditions": merge_conditions(old.get("conditions") or [], conditions),
        }
        if problem.permanent:
            status["completionTime"] = old.get("completionTime") or api_time(now)
        self.metrics.set_phase(self.namespace, self.name, phase)
        if self.last_problem != text:
            # a normal step that holds the study (the data check) is news, not a warning
            (log.info if problem.reason in NORMAL else log.warning)(
                "%s/%s: %s: %s", self.namespace, self.name, problem.reason, text
            )
            self.events.append(Event(None, text, problem.reason))
            self.last_problem = text
            self.written = {}
        try:
            self._patch_status(status | {"gpuSeconds": None})
        except (ApiError, Unreachable) as error:
            log.warning("%s/%s: could not write status: %s", self.namespace, self.name, error)

    def _post_events(self, body: dict[str, Any]) -> None:
        pending = list(self.events)
        self.events.clear()  # the engine appends to this very list
        self.metrics.observe_events(self.namespace, self.name, pending, self.trials_seen)
        for event in pending:
            post_event(self.kube, body, event)


# What a study does when all is well; every other reason (a failure, a retry, a problem to fix) is a Warning.
NORMAL = {"TrialLaunched", "TrialContinued", "TrialCancelled", "TrialFinished", "StudySucceeded", "TrialPromoted",
          "TrialPruned", "TrialResumed", "TrialPromotedPastRung", "CheckingData",
          "TrialPreempted", "ArtifactsDeleting", "TrialQueued", "TrialAdmitted"}  # fmt: skip


def post_event(kube: Kube, body: dict[str, Any], event: Event) -> None:
    """A core/v1 Event on the study, as ``kubectl describe fts`` shows them; best effort, never fails a reconcile."""
    metadata = body["metadata"]
    now = api_time(datetime.now(UTC))
    reason = event.reason or "StudyEvent"
    warning = reason not in NORMAL
    text = redact(f"trial {event.trial}: {event.text}" if event.trial is not None else event.text)
    manifest = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": f"{names.GROUP}/{names.VERSION}",
            "kind": names.KIND,
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
        },
        "reason": reason,
        "message": text[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": names.OPERATOR},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": names.OPERATOR,
        "reportingInstance": names.OPERATOR,
    }
    try:
        kube.create(path("", "v1", "events", metadata["namespace"]), manifest)
    except (ApiError, Unreachable) as error:
        log.warning("could not post an Event on %s/%s: %s", metadata["namespace"], metadata["name"], error)
