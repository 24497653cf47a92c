"""The Kubernetes executor: one Job per trial attempt, observed through the API server.

Implements the same small interface as the local executor (launch, observe, cancel), so the study engine and its
decision core run unchanged. What it observes comes from the cluster only (Jobs, their pods and Events, found by
label), so an operator restarted at any moment adopts every Job its predecessor started: after checking that the
Job is this study's, for this very trial (``ftstudy.kube.identity``). A Job that is not (a stale one, from a
deleted and re-created Optuna study, another database or a restored one) is a ``JobConflict``: the study gets a
condition that says which Job and why, and nothing is acted on until a person has looked.

How a Job reads to the core:
- active or pending (waiting for a GPU) -> running;
- Complete -> the trainer exited 0; Failed -> failed, with the reason from the Job and its pod (exit code, eviction,
  deadline); exit code 2 is bad input, which a retry would only repeat;
- a pod that cannot start (image pull errors, a missing Secret key) for longer than ``stuck_seconds``, counted from
  the pod's last change of state (not its age: a pod that waited an hour for a GPU has not been stuck for an hour),
  and a Job whose pod is never created (admission refused it, a missing PriorityClass; the Job's FailedCreate
  Events say why) for as long -> failed, without retries, since waiting longer costs a GPU slot and fixes nothing
  by itself. A pod refused by a ResourceQuota waits instead: capacity, like a GPU, frees up;
- a pod that the scheduler cannot place (no free GPU, a selector no node matches), or that stays in
  ContainerCreating (a volume that cannot be mounted), for ``budget.pendingSeconds`` after it was created -> failed
  with the scheduler's message, without retries; before that it is running: GPUs queue;
- an attempt that ended (failed, or its Job deleted by hand) while a pod of the trial still runs -> still running,
  until that pod is gone: a retry never overlaps the attempt it replaces.

Creating a Job that the API server refuses is not a crash loop: an invalid Job (422) or one an admission webhook or
policy denies (403 "denied") fails its trial with the server's message, a ResourceQuota (403) leaves the trial
waiting and retried, other refusals (RBAC) are a condition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from ftstudy.core import Process
from ftstudy.executor import (
    CAUSE_PENDING,
    EXIT_BAD_INPUT,
    OUTAGE_EXITS,
    Cleanup,
    Forgetting,
    TrialProcess,
    exit_reason,
    last_line,
    trial_output,
)
from ftstudy.kube import jobs, names
from ftstudy.kube.api import ApiError, Kube, Unreachable, path
from ftstudy.kube.identity import trial_key
from ftstudy.kube.policy import TrialPolicy, check_pod
from ftstudy.kube.problems import Problem
from ftstudy.kube.times import parse_api_time
from ftstudy.kube.watch_cache import TrialObjects
from ftstudy.spec import StudySpec
from ftstudy.study_store import ADMITTED, StudyStore, requeued
from ftstudy.trainer.cli import EXIT_PREEMPTED

log = logging.getLogger(__name__)

CANNOT_START = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
}
ENDED = ("Succeeded", "Failed")
QUEUE_RECHECK_SECONDS = 15.0  # while trials wait in Kueue: how often their LocalQueue is checked to still exist


class JobConflict(Problem):
    """A Job of this study that does not belong to its records: act on nothing, say what was found."""

    def __init__(self, message: str) -> None:
        super().__init__("JobConflict", message)


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def job_ended(job: dict[str, Any]) -> bool:
    """The Job controller has marked the Job Complete or Failed."""
    return bool(_condition(job, "Complete") or _condition(job, "Failed"))


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        state = status.get("state", {})
        if "terminated" in state:
            return dict(state["terminated"])
    return None


def _waiting(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        waiting = status.get("state", {}).get("waiting")
        if waiting and waiting.get("reason") in CANNOT_START:
            return dict(waiting)
    return None


def _live(pod: dict[str, Any]) -> bool:
    """A pod whose container may still run (or start): what a new attempt must not overlap."""
    return pod.get("status", {}).get("phase") not in ENDED


def _last_change(obj: dict[str, Any]) -> datetime | None:
    """When the pod last changed state, as the API shows it: its newest condition transition (scheduled,
    initialised, containers not ready...), else its creation."""
    moments = [parse_api_time(obj["metadata"].get("creationTimestamp"))]
    moments += [parse_api_time(c.get("lastTransitionTime")) for c in obj.get("status", {}).get("conditions") or []]
    known = [m for m in moments if m is not None]
    return max(known) if known else None


def _attempt(obj: dict[str, Any]) -> int | None:
    value = (obj["metadata"].get("labels") or {}).get(names.ATTEMPT)
    return int(value) if value is not None and value.isdigit() else None


def _resume(obj: dict[str, Any]) -> bool:
    return (obj["metadata"].get("labels") or {}).get(names.RESUME) == "true"


def job_process(
    job: dict[str, Any],
    pods: list[dict[str, Any]],
    now: datetime,
    stuck_seconds: float,
    failed_create: str | None = None,
    pending_seconds: float | None = None,
) -> TrialProcess:
    """What one trial attempt's Job and pods mean to the core (pure: the tests feed it API objects).
    ``failed_create``: the Job's latest FailedCreate Event message, when its pod could not be created;
    ``pending_seconds``: how long a pod may wait for a node, or in ContainerCreating (``budget.pendingSeconds``)."""
    found = _job_process(job, pods, now, stuck_seconds, failed_create, pending_seconds)
    return replace(found, resume=_resume(job), preempted=_preempted(job, pods))


def _ignored_failure(pod: dict[str, Any]) -> bool:
    """A failed pod that the trial Job's ``podFailurePolicy`` does not count (``jobs.job_manifest``)."""
    if pod.get("status", {}).get("phase") != "Failed":
        return False
    return _condition(pod, "DisruptionTarget") is not None or (_terminated(pod) or {}).get("exitCode") == EXIT_PREEMPTED


def _preempted(job: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[str, ...]:
    """The Job's pods that were stopped from outside and that its ``podFailurePolicy`` ignored (so the Job started
    another): marked DisruptionTarget by the API server (a drain's eviction, the scheduler's preemption, a node
    shutting down), or ended by the trainer's "preempted" exit (any SIGTERM not from the operator: a pod deleted by
    hand, Kueue suspending the Job). Oldest first, each with its cause and the trainer's last words. None while the
    Job is being deleted: the operator's own stop is no preemption."""
    if job["metadata"].get("deletionTimestamp"):
        return ()
    found = []
    for pod in sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", ""))):
        if not _ignored_failure(pod):
            continue
        disruption = _condition(pod, "DisruptionTarget")
        terminated = _terminated(pod) or {}
        cause = "it was stopped from outside (SIGTERM)"
        if disruption is not None:
            cause = f"{disruption.get('reason', 'DisruptionTarget')}: {(disruption.get('message') or '').strip()}"
        said = last_line(terminated.get("message"))
        found.append(f"pod {pod['metadata']['name']}: {cause}" + (f"; the trainer said: {said}" if said else ""))
    return tuple(found)


def _unscheduled(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The pod's PodScheduled condition while the scheduler cannot place it (its message says why: no node with a
    free GPU, a selector no node matches)."""
    for condition in pod.get("status", {}).get("conditions") or []:
        if (condition.get("type"), condition.get("status"), condition.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            return dict(condition)
    return None


# What a pod left in ContainerCreating says, until the executor finds the kubelet's FailedMount Event (_mount_reason)
STILL_CREATING = "its container was still being created (a volume that cannot be mounted? kubectl describe pod)"


def _never_ran(pod: dict[str, Any], now: datetime, pending_seconds: float) -> str | None:
    """Why a pod that has waited ``pending_seconds`` since it was created never ran, if it did not: not placed on a
    node, or its container still being created (a volume that cannot be mounted: a missing ConfigMap or claim)."""
    created = parse_api_time(pod["metadata"].get("creationTimestamp"))
    if (
        created is None
        or (now - created).total_seconds() < pending_seconds
        or pod.get("status", {}).get("phase") not in (None, "Pending")
    ):
        return None
    unscheduled = _unscheduled(pod)
    if unscheduled is not None:
        message = (unscheduled.get("message") or "").strip()
        return f"the scheduler could not place it: {message}" if message else "the scheduler could not place it"
    for status in pod.get("status", {}).get("containerStatuses") or []:
        waiting = status.get("state", {}).get("waiting") or {}
        if waiting.get("reason") == "ContainerCreating":
            return STILL_CREATING
    return None


def _local_queue(job: dict[str, Any]) -> str | None:
    """The Kueue LocalQueue holding the Job: the one its study named (``trialTemplate.queueName``), or ``default``
    when Kueue's LocalQueueDefaulting labelled a Job that named none; None when no queue holds it."""
    queue = (job["metadata"].get("labels") or {}).get(jobs.QUEUE_LABEL)
    return str(queue) if queue is not None else None


def _not_admitted(job: dict[str, Any], now: datetime, pending_seconds: float) -> str | None:
    """Why a Job that Kueue has kept suspended for ``pending_seconds`` (``trialTemplate.queueName``) never ran: its
    ClusterQueue had no room for it. Counted from when it was last suspended (the Job controller's Suspended
    condition), so a trial that Kueue admitted, preempted and suspended again waits afresh."""
    if not job.get("spec", {}).get("suspend"):
        return None
    suspended = _condition(job, "Suspended") or {}
    since = parse_api_time(suspended.get("lastTransitionTime")) or parse_api_time(
        job["metadata"].get("creationTimestamp")
    )
    if since is None or (now - since).total_seconds() < pending_seconds:
        return None
    queue = _local_queue(job) or "?"
    return (f"Kueue did not admit its Job: LocalQueue {queue}'s ClusterQueue had no room for it (kubectl get "
            f"workloads -n {job['metadata'].get('namespace', '')} says why)")  # fmt: skip


WORKLOAD_JOB_UID = "kueue.x-k8s.io/job-uid"  # the label Kueue puts on a Job's Workload


def workload_pending_message(workload: dict[str, Any]) -> str | None:
    """Why Kueue has not admitted a Workload, as it says on it: its QuotaReserved (else Admitted) condition's
    message while False."""
    conditions = {c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []}
    for kind in ("QuotaReserved", "Admitted"):
        found = conditions.get(kind) or {}
        if found.get("status") == "False" and str(found.get("message") or "").strip():
            return str(found["message"]).strip()
    return None


def _job_process(
    job: dict[str, Any],
    pods: list[dict[str, Any]],
    now: datetime,
    stuck_seconds: float,
    failed_create: str | None,
    pending_seconds: float | None,
) -> TrialProcess:
    attempt = _attempt(job)
    if job["metadata"].get("deletionTimestamp"):
        return TrialProcess(Process.FAILED, reason="its Job was deleted while the trial was running", attempt=attempt)
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        return TrialProcess(Process.SUCCEEDED, exit_code=0, attempt=attempt)
    failed = _condition(job, "Failed")
    if failed:
        return _failure(failed, pods, attempt)
    for pod in pods:
        waiting = _waiting(pod)
        since = _last_change(pod)
        if waiting and since and (now - since).total_seconds() >= stuck_seconds:
            reason = f"its pod cannot start: {waiting.get('reason')}: {waiting.get('message', '').strip()}"
            return TrialProcess(Process.FAILED, retryable=False, reason=reason.rstrip(": "), attempt=attempt)
    for pod in pods if pending_seconds is not None else ():
        why = _never_ran(pod, now, pending_seconds or 0.0)
        if why:
            reason = f"its pod did not start within budget.pendingSeconds ({pending_seconds:.0f} s): {why}"
            return TrialProcess(Process.FAILED, retryable=False, reason=reason, attempt=attempt)
    unadmitted = _not_admitted(job, now, pending_seconds) if pending_seconds is not None and not pods else None
    if unadmitted:
        reason = f"its Job did not start within budget.pendingSeconds ({pending_seconds:.0f} s): {unadmitted}"
        return TrialProcess(Process.FAILED, retryable=False, reason=reason, attempt=attempt)
    created = parse_api_time(job["metadata"].get("creationTimestamp"))
    if not pods and failed_create and created and (now - created).total_seconds() >= stuck_seconds:
        reason = f"its pod could not be created: {failed_create.strip()}"
        return TrialProcess(Process.FAILED, retryable=False, reason=reason, attempt=attempt)
    return TrialProcess(Process.RUNNING, attempt=attempt)


def _failure(condition: dict[str, Any], pods: list[dict[str, Any]], attempt: int | None) -> TrialProcess:
    job_reason = condition.get("reason") or "Failed"
    if job_reason == "DeadlineExceeded":
        reason = "the trial ran past trialTemplate.activeDeadlineSeconds"
        return TrialProcess(Process.FAILED, reason=reason, attempt=attempt)
    for pod in (p for p in pods if not _ignored_failure(p)):  # a preempted pod is not why the Job failed
        status = pod.get("status", {})
        if status.get("reason") == "Evicted":
            reason = f"its pod was evicted: {status.get('message', '').strip()}"
            return TrialProcess(Process.FAILED, reason=reason, attempt=attempt)
        terminated = _terminated(pod)
        if terminated is None:
            continue
        code = int(terminated.get("exitCode", 1))
        reason = exit_reason(code)
        if terminated.get("reason") == "OOMKilled":
            reason = "the trainer ran out of memory (OOMKilled); lower the batch size or raise the memory limit"
        detail = last_line(terminated.get("message"))
        return TrialProcess(
            Process.FAILED,
            exit_code=code,
            retryable=code != EXIT_BAD_INPUT,
            reason=f"{reason}: {detail}" if detail else reason,
            attempt=attempt,
            outage=code in OUTAGE_EXITS,
        )
    message = (condition.get("message") or "").strip()
    reason = f"its Job failed ({job_reason}){': ' + message if message else ''}"
    return TrialProcess(Process.FAILED, reason=reason, attempt=attempt)


def finished_trials_jobs(listed: list[dict[str, Any]], trials: Sequence[FrozenTrial]) -> list[tuple[str, datetime]]:
    """The ended trial Jobs (not checkpoint cleanups, which have a TTL of their own) of trials whose result is
    recorded (complete, pruned or failed in the study's records), with when each ended."""
    done = {t.number for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    found = []
    for job in listed:
        labels = job["metadata"].get("labels") or {}
        number = str(labels.get(names.TRIAL, ""))
        if (
            not number.isdigit()
            or int(number) not in done
            or not _attempt(job)
            or job["metadata"].get("deletionTimestamp")
        ):
            continue
        ended = _condition(job, "Complete") or _condition(job, "Failed")
        when = parse_api_time((ended or {}).get("lastTransitionTime")) or parse_api_time(
            job.get("status", {}).get("completionTime")
        )
        if ended is not None and when is not None:
            found.append((job["metadata"]["name"], when))
    return found


# What the API server says when admission, not RBAC, refused a request: "admission webhook "x" denied the request"
# or "ValidatingAdmissionPolicy 'p' with binding 'b' denied request"
ADMISSION_DENIALS = ("denied the request", "denied request")


class JobExecutor:
    """Trials of one FineTuneStudy as Jobs in its namespace.

    ``store`` and ``identity``: the study's records and the Optuna study's identity, which every Job is labelled
    with and checked against (``ftstudy.kube.identity``)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        study: str,
        uid: str,
        spec: StudySpec,
        stuck_seconds: float = 120.0,
        policy: TrialPolicy | None = None,
        store: StudyStore | None = None,
        identity: str = "",
        reports: jobs.Reports | None = None,
        trials_root: PurePosixPath | str | None = None,
        objects: TrialObjects | None = None,
    ) -> None:
        """``reports``: trials report over HTTPS to the operator (``--report-url``), else to the database.
        ``trials_root``: where the study's trials write (``jobs.trials_root``; by default under the study's name).
        ``objects``: the operator's Jobs and pods as its watches keep them (``ftstudy.kube.watch_cache``), read
        instead of listing them each pass; without it (or while a watch is not current) each pass lists them."""
        self.kube = kube
        self.objects = objects
        self.trials_root = trials_root or jobs.trials_root(spec, namespace, study)
        self.reports = reports
        self.namespace = namespace
        self.study = study
        self.uid = uid
        self.spec = spec
        self.stuck_seconds = stuck_seconds
        self.policy = policy or TrialPolicy()
        self.artifact_secret = spec.trial_template.artifact_secret
        self.store = store
        self.identity = identity
        self.jobs_path = path("batch", "v1", "jobs", namespace)
        self.latest: dict[int, dict[str, Any]] = {}  # trial number -> its newest attempt's Job, as last observed
        # trial number -> the scheduler's word on its newest attempt's pod, which no node can take now (last observe)
        self.unplaced: dict[int, str] = {}
        self.keys: dict[int, str] = {}  # trial number -> its key, from the study's records
        self.refused: dict[int, TrialProcess] = {}  # attempts whose Job the API server refused as invalid
        self.ended: list[tuple[str, datetime]] = []  # Jobs of finished trials (observe's reading): name, when ended
        self.queues_seen: set[str] = set()  # LocalQueues found to exist (trialTemplate.queueName)
        # While trials wait in the queue: why Kueue cannot admit them any more (its LocalQueue deleted, Kueue
        # uninstalled), naming the Jobs left suspended; None when it still can (``_recheck_queue``)
        self.queue_gone: Problem | None = None
        # trials the last observe found admitted: number, seconds queued, the LocalQueue
        self.admitted: list[tuple[int, float, str]] = []
        # trials whose Job the last observe found waiting for admission for the first time: number, the LocalQueue
        self.newly_queued: list[tuple[int, str]] = []
        self._told_queued: set[str] = set()  # the Jobs ``newly_queued`` named (in memory: a restart may tell one again)
        self._workload_says: dict[str, str | None] = {}  # Kueue's reason off a never-admitted Job's Workload, by UID
        self._pods: dict[str, dict[str, Any]] = {}  # the study's pods by UID, as the last observe listed them
        # Kueue's reason for stopping a Job (its Stopped Event), by Job UID, preemptions seen and the Job's last
        # suspension or admission: the reason ("" if none found yet) and how many times it was looked for
        self._stop_reasons: dict[tuple[str, int, str], tuple[str, int]] = {}
        self._queue_checked = -QUEUE_RECHECK_SECONDS

    def _key(self, number: int) -> str:
        if number not in self.keys and self.store is not None:
            self.keys[number] = trial_key(self.identity, self.store.trial(number))
        return self.keys.get(number, "")

    def pod(self, uid: str) -> dict[str, Any] | None:
        """One of the study's pods as the pod watch keeps it, or as the last ``observe`` listed it: the report
        endpoint matches a trainer's token with it (``ftstudy.kube.report_server.Pods``) without a list of its own.
        Read from the endpoint's threads: ``observe`` replaces the whole map at once."""
        found = self.objects.pods.get(uid) if self.objects is not None else None
        return found if found is not None else self._pods.get(uid)

    def _jobs(self, selector: str) -> list[dict[str, Any]]:
        """The Jobs of ``selector``, from the Job watch's copy when it is current, else listed."""
        cached = self.objects.jobs.items(self.namespace, selector) if self.objects is not None else None
        return cached if cached is not None else self.kube.list(self.jobs_path, selector)

    def _job_named(self, name: str, selector: str) -> dict[str, Any] | None:
        """The Job ``name`` if it exists: from the Job watch's copy when it is current (looked for among
        ``selector``'s, the labels the operator gives it; one of that name without them is found by the create's
        409), else read."""
        cached = self.objects.jobs.items(self.namespace, selector) if self.objects is not None else None
        if cached is not None:
            return next((job for job in cached if job["metadata"]["name"] == name), None)
        try:
            found: dict[str, Any] = self.kube.get(path("batch", "v1", "jobs", self.namespace, name))
        except ApiError as error:
            if error.status != 404:
                raise
            return None
        return found

    def _create(self, manifest: dict[str, Any]) -> None:
        """Create one of the study's Jobs and put the API server's answer into the Job watch's copy: the next pass
        sees it, whatever the watch's delay (a launch is never taken for a lost trial and launched again)."""
        created = self.kube.create(self.jobs_path, manifest)
        if self.objects is not None and isinstance(created, dict):
            self.objects.jobs.put(created)

    def _pods_of(self, selector: str) -> list[dict[str, Any]]:
        """The pods of ``selector``, from the pod watch's copy when it is current, else listed."""
        cached = self.objects.pods.items(self.namespace, selector) if self.objects is not None else None
        return cached if cached is not None else self.kube.list(path("", "v1", "pods", self.namespace), selector)

    def queued(self) -> int:
        """Trials whose newest Job waits, suspended, for Kueue to admit it (``trialTemplate.queueName``): waiting
        for quota, not running (as read by the last ``observe``)."""
        return len(self._queued_jobs())

    def in_kueue(self) -> bool:
        """Does Kueue hold the study's Jobs (``trialTemplate.queueName``, or a LocalQueue named ``default``, whose
        webhook labels Jobs that name none)? As read by the last ``observe``."""
        return any(_local_queue(job) for job in self.latest.values())

    def _queued_jobs(self) -> list[str]:
        """The names of the newest Jobs that wait, suspended, for Kueue (as read by the last ``observe``)."""
        return [job["metadata"]["name"] for job in self.latest.values()
                if job.get("spec", {}).get("suspend") and not job_ended(job)]  # fmt: skip

    def _check_queue(self) -> None:
        """A study whose LocalQueue does not exist gets a condition that names it and no Job: Kueue would keep such
        Jobs suspended, with the reason only on a Workload the study's author may not even see."""
        queue = self.spec.trial_template.queue_name
        if not queue or queue in self.queues_seen:
            return
        problem = self._queue_problem(queue)
        if problem is not None:
            raise problem
        self.queues_seen.add(queue)

    def _queue_problem(self, queue: str) -> Problem | None:
        try:
            self.kube.get(path("kueue.x-k8s.io", "v1beta2", "localqueues", self.namespace, queue))
        except ApiError as error:
            if error.status == 404 and "localqueues" in error.message and "not found" in error.message:
                return Problem("QueueNotFound", f"spec.trialTemplate.queueName: LocalQueue {queue} does not exist in "
                               f"namespace {self.namespace}; create it (pointing at a ClusterQueue) or fix the "
                               "name; no trial is launched until it exists")  # fmt: skip
            if error.status == 404:
                return Problem("KueueNotInstalled", "spec.trialTemplate.queueName is set but this cluster serves no "
                               "kueue.x-k8s.io/v1beta2 LocalQueues: install Kueue (v0.17 or later), or remove "
                               "queueName")  # fmt: skip
            if error.status == 403:
                return Problem("QueueForbidden", f"the operator may not read LocalQueue {queue}: install the chart "
                               "with kueue.enabled=true")  # fmt: skip
            raise
        return None

    def _record_admissions(self, newest: dict[int, dict[str, Any]], trials: Sequence[FrozenTrial]) -> None:
        """When Kueue first admitted each trial (its Job's startTime, set when the Job is unsuspended), recorded
        once: a trial's GPU-seconds count from there, not from its creation, which may be long before in the queue
        (``ftstudy.kube.status.trial_seconds``). A Job no queue holds starts at once: nothing to record. Queued is
        read off the Job, not the spec: in a namespace with a LocalQueue named ``default`` Kueue's
        LocalQueueDefaulting queues Jobs that name none. After that first admission, each time its Job waits in the
        queue again (Kueue preempted it, or it is a resume Job) is recorded too (``_record_requeue``), so that the
        GPU-seconds leave it out as well."""
        self.admitted, self.newly_queued = [], []
        if self.store is None:
            return
        unfinished = {t.number: t for t in trials if not t.state.is_finished()}
        for number, job in newest.items():
            trial = unfinished.get(number)
            queue = _local_queue(job)
            if trial is None or job_ended(job) or queue is None:
                continue
            started = parse_api_time((job.get("status") or {}).get("startTime"))
            suspended = bool(job.get("spec", {}).get("suspend"))
            job_name = job["metadata"]["name"]
            if suspended and started is None and job_name not in self._told_queued:
                self._told_queued.add(job_name)
                self.newly_queued.append((number, queue))
            if ADMITTED in trial.system_attrs:
                self._record_requeue(trial, job, suspended, started)
            elif started is not None and not suspended:
                self.store.record_admitted(number, started.timestamp())
                since = trial.datetime_start
                waited = started.timestamp() - since.timestamp() if since else 0.0
                self.admitted.append((number, waited, queue))

    def _record_requeue(self, trial: FrozenTrial, job: dict[str, Any], suspended: bool, started: datetime | None
                        ) -> None:  # fmt: skip
        """A trial Kueue admitted before whose newest Job is suspended again waits from the Job's Suspended
        condition's transition (the eviction, or the resume Job's creation); re-admitted (the Job controller resets
        startTime when it resumes a Job), that wait is added to what it waited before. An operator down across a
        whole wait misses it, and counts it as GPU time."""
        assert self.store is not None
        seconds, since = requeued(trial)
        if suspended and since is None:
            condition = _condition(job, "Suspended") or {}
            at = parse_api_time(condition.get("lastTransitionTime")) or self.kube.server_now()
            self.store.record_requeued(trial.number, seconds, at.timestamp())
        elif not suspended and since is not None and started is not None and started.timestamp() >= since:
            # (a startTime from before the wait is the one the Job controller has not reset yet: the next pass)
            self.store.record_requeued(trial.number, seconds + started.timestamp() - since, None)

    def _recheck_queue(self, suspended: list[str]) -> None:
        """Jobs wait suspended for Kueue: is it still there to admit them? A LocalQueue deleted or Kueue uninstalled
        mid-study would leave them suspended until ``budget.pendingSeconds``, looking merely queued; checked again
        every ``QUEUE_RECHECK_SECONDS`` while any waits (one GET), and the next launch checks afresh."""
        queue = self.spec.trial_template.queue_name
        if not queue or not suspended:
            self.queue_gone = None
            return
        if time.monotonic() - self._queue_checked < QUEUE_RECHECK_SECONDS:
            return
        self._queue_checked = time.monotonic()
        problem = self._queue_problem(queue)
        if problem is None:
            self.queue_gone = None
            return
        self.queues_seen.discard(queue)
        self.queue_gone = Problem(problem.reason, f"{problem.message}. Job(s) left suspended, which nothing will "
                                  f"admit: {', '.join(sorted(suspended))}")  # fmt: skip

    def launch(self, number: int, attempt: int, args: list[str], resume: bool = False) -> None:
        self._check_queue()
        args = [*args, "--checkpoint-on-stop"]  # a SIGTERM not the operator's is a preemption: the Job resumes it
        manifest = jobs.job_manifest(self.spec, self.namespace, self.study, self.uid, number, attempt, args,
                                     identity=self.identity, key=self._key(number), resume=resume,
                                     reports=self.reports)  # fmt: skip
        secret = self.spec.storage.secret_ref.name if self.spec.storage is not None else None
        refused = check_pod(manifest["spec"]["template"]["spec"], self.policy, secret, self.artifact_secret)
        if refused:
            raise Problem("TrialPolicyViolation", "the trial policy refuses the trial's Job: " + "; ".join(refused))
        name = manifest["metadata"]["name"]
        try:
            self._create(manifest)
        except ApiError as error:
            if error.status == 409:  # AlreadyExists: an earlier operator created this very attempt, or did it?
                self._adopt(manifest)
            elif error.status in (400, 422):  # the Job itself is invalid: it will be refused every time
                reason = f"the API server refused its Job {name}: {error.message}"
                self.refused[number] = TrialProcess(Process.FAILED, retryable=False, reason=reason, attempt=attempt,
                                                    resume=resume)  # fmt: skip
                log.warning("%s/%s: trial %d: %s", self.namespace, self.study, number, reason)
                return
            elif error.status == 403 and any(words in error.message for words in ADMISSION_DENIALS):
                # an admission webhook or a ValidatingAdmissionPolicy (Gatekeeper, Kyverno, a team's own rule): its
                # message is the reason, and the same Job would be refused again
                reason = f"an admission policy refused its Job {name}: {error.message}"
                self.refused[number] = TrialProcess(Process.FAILED, retryable=False, reason=reason, attempt=attempt,
                                                    resume=resume)  # fmt: skip
                log.warning("%s/%s: trial %d: %s", self.namespace, self.study, number, reason)
                return
            elif error.status == 403 and "exceeded quota" in error.message:
                # finished trials' Jobs count against a count/jobs.batch quota: free it now, and retry next pass
                self.delete_ended_jobs(self.kube.server_now(), 0.0)
                raise Problem(
                    "JobQuotaExceeded",
                    f"trial {number} waits for its Job {name}: {error.message}; it is created once the namespace's "
                    "ResourceQuota allows",
                ) from None
            elif error.status == 403:
                raise Problem(
                    "JobForbidden",
                    f"the operator may not create Job {name}: {error.message}; grant it create on jobs in this "
                    "namespace (the Helm chart's watchNamespaces)",
                ) from None
            else:
                raise
        self.refused.pop(number, None)
        self.latest[number] = manifest

    def _adopt(self, manifest: dict[str, Any]) -> None:
        """Adopt the existing Job of this name only if it is this study's, for this very trial and attempt."""
        name = manifest["metadata"]["name"]
        existing = self.kube.get(path("batch", "v1", "jobs", self.namespace, name))
        wanted = manifest["metadata"]["labels"]
        found = existing["metadata"].get("labels") or {}
        keys = (names.STUDY_UID, names.TRIAL, names.ATTEMPT, names.RESUME)  # RESUME: absent on a first launch
        differ = [key for key in keys if found.get(key) != wanted.get(key)]
        # a Job made before Jobs carried these two labels is judged by the three above
        differ += [key for key in (names.OPTUNA_STUDY, names.TRIAL_KEY) if key in found and found[key] != wanted[key]]
        if differ:
            shown = ", ".join(f"{key}={found.get(key)!r} (expected {wanted.get(key)!r})" for key in differ)
            raise JobConflict(
                f"Job {name} already exists but is not this trial's: {shown}. It is left alone and nothing is "
                f"launched until it is gone: delete it (kubectl delete job {name} -n {self.namespace}) if it is stale"
            )
        log.info("adopting existing Job %s", name)

    def _check(self, listed: list[dict[str, Any]], trials: Sequence[FrozenTrial]) -> None:
        """Every Job of this study must belong to one of its recorded trials."""
        known = {t.number for t in trials}
        for trial in trials:
            if trial.number not in self.keys:
                self.keys[trial.number] = trial_key(self.identity, trial)
        problems = []
        for job in listed:
            name, labels = job["metadata"]["name"], job["metadata"].get("labels") or {}
            label = labels.get(names.TRIAL)
            if not str(label or "").isdigit():  # edited by hand: which trial it runs cannot be known
                problems.append(f"Job {name} carries the study's labels but no trial number ({names.TRIAL}="
                                f"{label!r}: changed by hand?)")  # fmt: skip
                continue
            number = int(str(label))
            identity, key = labels.get(names.OPTUNA_STUDY), labels.get(names.TRIAL_KEY)
            if identity and self.identity and identity != self.identity:
                problems.append(f"Job {name} was made for another Optuna study ({identity}, this one is "
                                f"{self.identity}: deleted and created again, or another database)")  # fmt: skip
            elif number not in known:
                problems.append(f"Job {name} runs trial {number}, which the study's records do not have (a "
                                "database restored from an earlier backup?)")  # fmt: skip
            elif key and self.identity and key != self.keys[number]:
                problems.append(f"Job {name} was made for an earlier trial {number} (key {key}, the records' is "
                                f"{self.keys[number]})")  # fmt: skip
        if problems:
            selector = names.study_selector(self.uid)
            raise JobConflict(
                "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "") + ". "
                "Nothing is launched or changed until these Jobs are gone: delete the stale ones (kubectl get jobs "
                f"-n {self.namespace} -l {selector} -L {names.TRIAL},{names.ATTEMPT}) or restore the database they "
                "belong to"
            )

    def _latest_event(self, uid: str, reason: str) -> str | None:
        """The message of the newest Event of ``reason`` about the object ``uid``; None if there is none."""
        events = self.kube.list(path("", "v1", "events", self.namespace),
                                field_selector=f"involvedObject.uid={uid},reason={reason}")  # fmt: skip
        if not events:
            return None
        latest = max(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return str(latest.get("message") or "")

    def _mount_reason(self, process: TrialProcess, pods: list[dict[str, Any]]) -> TrialProcess:
        """A trial failed because its pod stayed in ContainerCreating: the kubelet's FailedMount Event says which
        volume and why (a ConfigMap or claim that does not exist); one Event list, once, as the trial fails."""
        if process.reason is None or STILL_CREATING not in process.reason:
            return process
        for pod in pods:
            message = self._latest_event(str(pod["metadata"].get("uid", "")), "FailedMount")
            if message:
                why = f"its container was never created: {message.strip()}"
                return replace(process, reason=process.reason.replace(STILL_CREATING, why))
        return process

    def _failed_create(self, job: dict[str, Any]) -> str | None:
        """Why the Job controller could not create the Job's pod, from its FailedCreate Events; None if it did not
        say, or if only a ResourceQuota stands in the way (waiting is right then)."""
        message = self._latest_event(job["metadata"]["uid"], "FailedCreate")
        return None if message is None or "exceeded quota" in message else message

    def _with_workload_reason(self, job: dict[str, Any], process: TrialProcess) -> TrialProcess:
        """A trial Kueue never admitted (``_not_admitted``) fails with Kueue's reason, read once off its Job's
        Workload (the operator's Role may list Workloads, with the chart's kueue.enabled); without it, or if none
        says, the reason points at ``kubectl get workloads``."""
        if process.state is not Process.FAILED or "Kueue did not admit its Job" not in (process.reason or ""):
            return process
        uid = str(job["metadata"]["uid"])
        if uid not in self._workload_says:
            try:
                workloads = self.kube.list(path("kueue.x-k8s.io", "v1beta2", "workloads", self.namespace),
                                           label_selector=f"{WORKLOAD_JOB_UID}={uid}")  # fmt: skip
            except (ApiError, Unreachable) as error:
                log.info("could not read Job %s's Workload for Kueue's reason: %s", job["metadata"]["name"], error)
                workloads = []
            self._workload_says[uid] = next((m for m in map(workload_pending_message, workloads) if m), None)
        said = self._workload_says[uid]
        if said is None:
            return process
        reason = (process.reason or "").replace("had no room for it (", f"had no room for it; Kueue says: {said} (", 1)
        return replace(process, reason=reason)

    def _with_kueue_reason(self, job: dict[str, Any], process: TrialProcess, admitted: bool) -> TrialProcess:
        """A queued trial's preemption, with Kueue's reason for it: the trainer only saw a SIGTERM, and the reason
        (preempted for a higher-priority workload, and which) is on the Workload, which the operator reads only for a
        trial Kueue never admitted (``_with_workload_reason``), and in the Stopped Event Kueue posts on the Job with
        the same message. Looked for once a stopped pod is seen,
        or while a Job of a trial Kueue had admitted is suspended again (its trainer may tell the study it was
        preempted before its pod is seen to end); one Event list per preemption, at most three while none is found,
        meanwhile ``CAUSE_PENDING`` (Kueue posts its Event a moment after it suspends the Job)."""
        if _local_queue(job) is None:
            return process
        if not process.preempted and not (admitted and job.get("spec", {}).get("suspend")):
            return process
        # one lookup per preemption: Kueue may preempt a Job again once its pods are gone, so the count of stopped
        # pods alone would repeat; the Suspended condition's transition changes with each eviction and admission
        flipped = str((_condition(job, "Suspended") or {}).get("lastTransitionTime") or "")
        key = (str(job["metadata"]["uid"]), len(process.preempted), flipped)
        reason, tries = self._stop_reasons.get(key, ("", 0))
        if not reason and tries < 3:  # an Event may land a moment after the pod ends; a drain posts none at all
            reason = (self._latest_event(key[0], "Stopped") or "").split("; preemptor path")[0].strip()
            tries += 1
            self._stop_reasons[key] = (reason, tries)
        if not reason:
            return replace(process, preempted=(*process.preempted, CAUSE_PENDING)) if tries < 3 else process
        if not process.preempted:
            return replace(process, preempted=(f"Kueue: {reason}",))
        return replace(process, preempted=(*process.preempted[:-1], f"{process.preempted[-1]}; Kueue: {reason}"))

    def observe(self, trials: Sequence[FrozenTrial] = ()) -> dict[int, TrialProcess]:
        selector = names.study_selector(self.uid)
        listed = self._jobs(selector)
        pods = self._pods_of(selector)
        self._pods = {str(p["metadata"]["uid"]): p for p in pods if (p.get("metadata") or {}).get("uid")}
        self._check(listed, trials)
        now = self.kube.server_now()  # the API server's clock, as the timestamps it is compared with
        self.ended = finished_trials_jobs(listed, trials)
        self.delete_ended_jobs(now, self.spec.cleanup.finished_jobs_seconds)
        newest: dict[int, dict[str, Any]] = {}
        for job in listed:
            number, attempt = int(job["metadata"]["labels"][names.TRIAL]), _attempt(job) or 0
            current = newest.get(number)
            if current is None or attempt > (_attempt(current) or 0):
                newest[number] = job
        self.latest = newest
        self._record_admissions(newest, trials)
        self._recheck_queue(self._queued_jobs())
        by_job: dict[str, list[dict[str, Any]]] = {}
        by_trial: dict[int, list[dict[str, Any]]] = {}
        for pod in pods:
            labels = pod["metadata"].get("labels", {})
            job_name = labels.get("job-name") or labels.get("batch.kubernetes.io/job-name", "")
            by_job.setdefault(job_name, []).append(pod)
            if str(labels.get(names.TRIAL, "")).isdigit():
                by_trial.setdefault(int(labels[names.TRIAL]), []).append(pod)
        seen: dict[int, TrialProcess] = {}
        self.unplaced = {}
        admitted = {t.number for t in trials if ADMITTED in t.system_attrs}
        for number, job in newest.items():
            own = by_job.get(job["metadata"]["name"], [])
            for pod in own:
                unscheduled = _unscheduled(pod) if pod.get("status", {}).get("phase") in (None, "Pending") else None
                if unscheduled is not None:
                    self.unplaced[number] = (unscheduled.get("message") or "").strip() or "no reason given"
            created = parse_api_time(job["metadata"].get("creationTimestamp"))
            failed_create = None
            unfinished = not job_ended(job)
            if not own and unfinished and created and (now - created).total_seconds() >= self.stuck_seconds:
                failed_create = self._failed_create(job)
            found = job_process(job, own, now, self.stuck_seconds, failed_create, self.spec.budget.pending_seconds)
            found = self._drained(self._mount_reason(found, own), by_trial.get(number, []))
            seen[number] = self._with_workload_reason(job, self._with_kueue_reason(job, found, number in admitted))
        for number, trial_pods in by_trial.items():  # pods whose Job is gone (deleted by hand): until they end
            live = [pod for pod in trial_pods if _live(pod)]
            if number not in seen and live:
                last = max(live, key=lambda pod: _attempt(pod) or 0)
                seen[number] = TrialProcess(Process.RUNNING, attempt=_attempt(last), resume=_resume(last))
        for number, refused in self.refused.items():  # an attempt whose Job was never created, newer than any Job
            shown = seen.get(number)
            if shown is None or (shown.attempt or 0) < (refused.attempt or 0):
                seen[number] = refused
        return seen

    def delete_ended_jobs(self, now: datetime, older_than: float) -> None:
        """Delete the Jobs (and, through the garbage collector, the pods) of trials whose result is recorded, once
        they ended ``older_than`` seconds ago (``cleanup.finishedJobsSeconds``; at once when a ResourceQuota
        refuses a new Job): they hold nothing the study needs, and would otherwise pile up without bound and fill a
        ``count/jobs.batch`` quota for good. A suspended (screened) trial's Job is never one of them: its trial is
        still running, and its Job says so."""
        kept = []
        for name, ended in self.ended:
            if (now - ended).total_seconds() < older_than:
                kept.append((name, ended))
                continue
            try:
                self.kube.delete(path("batch", "v1", "jobs", self.namespace, name))
                log.info("%s/%s: deleted Job %s: its trial has ended and its result is recorded", self.namespace,
                         self.study, name)  # fmt: skip
            except ApiError as error:
                if error.status != 404:
                    log.warning("%s/%s: could not delete the ended Job %s: %s", self.namespace, self.study, name,
                                error.message)  # fmt: skip
                    kept.append((name, ended))
        self.ended = kept

    @staticmethod
    def _drained(process: TrialProcess, trial_pods: list[dict[str, Any]]) -> TrialProcess:
        """An attempt that ended in a way that may be retried has not ended while a pod of the trial still runs:
        the next attempt must not overlap it (a deleted Job's pod lives on until the garbage collector and its
        grace period are done)."""
        if process.state is Process.FAILED and process.retryable and any(_live(pod) for pod in trial_pods):
            return replace(process, state=Process.RUNNING, reason="stopping: " + (process.reason or ""))
        return process

    def cancel(self, number: int) -> None:
        """Delete every attempt's Job of the trial; the garbage collector deletes their pods (SIGTERM, grace). A
        Job the watch's copy still shows though it is gone is deleted again: the API server's 404 is fine."""
        selector = f"{names.study_selector(self.uid)},{names.TRIAL}={number}"
        for job in self._jobs(selector):
            if not job["metadata"].get("deletionTimestamp"):
                self.kube.delete(path("batch", "v1", "jobs", self.namespace, job["metadata"]["name"]))

    def check_data(self, data_dir: PurePosixPath | None, output: str) -> tuple[Process, str | None, int | None]:
        """The study's data check Job (``jobs.data_check_manifest``), created if it does not exist yet: RUNNING
        while it runs, SUCCEEDED once the dataset read, FAILED with the reason (the trainer's last log line: which
        file, which line; or the object store's refusal) and the trainer's exit code otherwise. Its name is the
        study's, so a restarted operator finds it."""
        name = names.data_check_job_name(self.study)
        job = self._job_named(name, names.selector(names.data_check_labels(self.study, self.uid)))
        if job is None:
            manifest = jobs.data_check_manifest(self.spec, self.namespace, self.study, self.uid, data_dir, output)
            refused = check_pod(manifest["spec"]["template"]["spec"], self.policy, None, self.artifact_secret)
            if refused:
                why = "; ".join(refused)
                raise Problem("TrialPolicyViolation", f"the trial policy refuses the data check Job: {why}") from None
            try:
                self._create(manifest)
            except ApiError as error:
                if error.status != 409:  # a Job of that name that the copy does not hold: read it
                    raise
                job = self.kube.get(path("batch", "v1", "jobs", self.namespace, name))
            else:
                return Process.RUNNING, None, None
        if (job.get("metadata", {}).get("labels") or {}).get(names.STUDY_UID) != self.uid:
            raise Problem("JobConflict", f"Job {self.namespace}/{name} exists but is not this study's data check: "
                          "delete it, or name the study otherwise")  # fmt: skip
        if _condition(job, "Complete"):
            return Process.SUCCEEDED, None, None
        failed = _condition(job, "Failed")
        if failed:
            pods = self._pods_of(f"{names.MANAGED_BY}={names.OPERATOR},job-name={name}")
            found = _failure(failed, pods, None)
            return Process.FAILED, found.reason, found.exit_code
        return Process.RUNNING, None, None

    def forget_checkpoint(self, number: int) -> Forgetting:
        """A Job deletes the checkpoint on the trials' volume (``jobs.checkpoint_cleanup_manifest``). Its name is
        the trial's, so asking again (the next pass, a restarted operator) reports on that Job instead of starting
        another: RUNNING while it runs, DONE once Complete (its TTL removes it), FAILED with the reason (its
        trainer's last log line, or why it could not be created) once it failed, when it is also deleted so that a
        later try can create it again. A full ResourceQuota is WAITING: it clears as ended Jobs are deleted."""
        name = names.cleanup_job_name(self.study, number)
        job = self._job_named(name, names.selector(names.cleanup_labels(self.study, self.uid, number)))
        if job is None:
            return self._create_cleanup(number, name)
        if job["metadata"].get("deletionTimestamp"):  # a failed try's Job, still being deleted
            return Forgetting(Cleanup.RUNNING)
        if _condition(job, "Complete"):
            return Forgetting(Cleanup.DONE)
        failed = _condition(job, "Failed")
        if failed is None:
            return Forgetting(Cleanup.RUNNING)
        pods = self._pods_of(f"{names.MANAGED_BY}={names.OPERATOR},job-name={name}")
        reason = _failure(failed, pods, None).reason or "its Job failed"
        # the engine asks again only after a back-off, by when the watch's copy no longer shows this Job
        self.kube.delete(path("batch", "v1", "jobs", self.namespace, name))
        return Forgetting(Cleanup.FAILED, f"its cleanup Job {name} failed: {reason}")

    def _create_cleanup(self, number: int, name: str) -> Forgetting:
        run_dir = trial_output(self.trials_root, number)
        manifest = jobs.checkpoint_cleanup_manifest(self.spec, self.namespace, self.study, self.uid, number, run_dir)
        refused = check_pod(manifest["spec"]["template"]["spec"], self.policy, None, self.artifact_secret)
        if refused:
            return Forgetting(Cleanup.FAILED, "the trial policy refuses its cleanup Job: " + "; ".join(refused))
        try:
            self._create(manifest)
        except ApiError as error:
            if error.status == 409:  # created by an earlier pass whose answer the watch's copy does not show yet
                return Forgetting(Cleanup.RUNNING)
            if error.status == 403 and "exceeded quota" in error.message:
                return Forgetting(Cleanup.WAITING, f"its cleanup Job {name} waits for the ResourceQuota: "
                                  f"{error.message}")  # fmt: skip
            return Forgetting(Cleanup.FAILED, f"the API server refused its cleanup Job {name}: {error.message}")
        return Forgetting(Cleanup.RUNNING)

    def record_decision(self, number: int, decision: str) -> None:
        job = self.latest.get(number)
        if job is None:
            return
        patch = {"metadata": {"annotations": {names.DECISION: decision}}}
        try:
            self.kube.merge_patch(path("batch", "v1", "jobs", self.namespace, job["metadata"]["name"]), patch)
        except ApiError as error:
            if error.status != 404:
                raise
