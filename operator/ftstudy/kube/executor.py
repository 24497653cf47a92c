"""The Kubernetes executor: one Job per trial attempt, observed through the API server.

Implements the same small interface as the local executor (launch, observe, cancel), so the study engine and its
decision core run unchanged. What it observes comes from the cluster only (Jobs and their pods, found by label), so
an operator restarted at any moment adopts every Job its predecessor started.

How a Job reads to the core:
- active or pending (waiting for a GPU) -> running;
- Complete -> the trainer exited 0; Failed -> failed, with the reason from the Job and its pod (exit code, eviction,
  deadline); exit code 2 is bad input, which a retry would only repeat;
- a pod that cannot start (image pull errors, a missing Secret key) for longer than ``stuck_seconds`` -> failed,
  without retries, since waiting longer costs a GPU slot and fixes nothing by itself.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from ftstudy.core import Process
from ftstudy.executor import EXIT_BAD_INPUT, TrialProcess, exit_reason
from ftstudy.kube import jobs, names
from ftstudy.kube.api import ApiError, Kube, path
from ftstudy.kube.times import parse_api_time
from ftstudy.spec import StudySpec

log = logging.getLogger(__name__)

CANNOT_START = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
}


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


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


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def job_process(job: dict[str, Any], pods: list[dict[str, Any]], now: datetime, stuck_seconds: float) -> TrialProcess:
    """What one trial attempt's Job and pods mean to the core (pure: the tests feed it API objects)."""
    if job["metadata"].get("deletionTimestamp"):
        return TrialProcess(Process.FAILED, reason="its Job was deleted while the trial was running")
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        return TrialProcess(Process.SUCCEEDED, exit_code=0)
    failed = _condition(job, "Failed")
    if failed:
        return _failure(failed, pods)
    for pod in pods:
        waiting = _waiting(pod)
        created = parse_api_time(pod["metadata"].get("creationTimestamp"))
        if waiting and created and (now - created).total_seconds() >= stuck_seconds:
            reason = f"its pod cannot start: {waiting.get('reason')}: {waiting.get('message', '').strip()}"
            return TrialProcess(Process.FAILED, retryable=False, reason=reason.rstrip(": "))
    return TrialProcess(Process.RUNNING)


def _failure(condition: dict[str, Any], pods: list[dict[str, Any]]) -> TrialProcess:
    job_reason = condition.get("reason") or "Failed"
    if job_reason == "DeadlineExceeded":
        return TrialProcess(Process.FAILED, reason="the trial ran past trialTemplate.activeDeadlineSeconds")
    for pod in pods:
        status = pod.get("status", {})
        if status.get("reason") == "Evicted":
            return TrialProcess(Process.FAILED, reason=f"its pod was evicted: {status.get('message', '').strip()}")
        terminated = _terminated(pod)
        if terminated is None:
            continue
        code = int(terminated.get("exitCode", 1))
        reason = exit_reason(code)
        if terminated.get("reason") == "OOMKilled":
            reason = "the trainer ran out of memory (OOMKilled); lower the batch size or raise the memory limit"
        detail = _last_line(terminated.get("message"))
        return TrialProcess(
            Process.FAILED,
            exit_code=code,
            retryable=code != EXIT_BAD_INPUT,
            reason=f"{reason}: {detail}" if detail else reason,
        )
    message = (condition.get("message") or "").strip()
    return TrialProcess(Process.FAILED, reason=f"its Job failed ({job_reason}){': ' + message if message else ''}")


class JobExecutor:
    """Trials of one FineTuneStudy as Jobs in its namespace."""

    def __init__(
        self, kube: Kube, namespace: str, study: str, uid: str, spec: StudySpec, stuck_seconds: float = 120.0
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.study = study
        self.uid = uid
        self.spec = spec
        self.stuck_seconds = stuck_seconds
        self.jobs_path = path("batch", "v1", "jobs", namespace)
        self.latest: dict[int, dict[str, Any]] = {}  # trial number -> its newest attempt's Job, as last observed
        self.started: dict[int, datetime] = {}

    def launch(self, number: int, attempt: int, args: list[str]) -> None:
        manifest = jobs.job_manifest(self.spec, self.namespace, self.study, self.uid, number, attempt, args)
        try:
            self.kube.create(self.jobs_path, manifest)
        except ApiError as error:
            if error.status != 409:  # AlreadyExists: an earlier operator created this very attempt; adopt it
                raise
            log.info("adopting existing Job %s", manifest["metadata"]["name"])
        self.latest[number] = manifest

    def observe(self) -> dict[int, TrialProcess]:
        selector = names.study_selector(self.uid)
        listed = self.kube.list(self.jobs_path, selector)
        pods = self.kube.list(path("", "v1", "pods", self.namespace), selector)
        newest: dict[int, dict[str, Any]] = {}
        for job in listed:
            labels = job["metadata"].get("labels", {})
            number, attempt = int(labels[names.TRIAL]), int(labels[names.ATTEMPT])
            current = newest.get(number)
            if current is None or attempt > int(current["metadata"]["labels"][names.ATTEMPT]):
                newest[number] = job
        self.latest = newest
        by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            job_name = pod["metadata"].get("labels", {}).get("job-name") or pod["metadata"].get("labels", {}).get(
                "batch.kubernetes.io/job-name", ""
            )
            by_job.setdefault(job_name, []).append(pod)
        now = datetime.now(UTC)
        return {
            number: job_process(job, by_job.get(job["metadata"]["name"], []), now, self.stuck_seconds)
            for number, job in newest.items()
        }

    def cancel(self, number: int) -> None:
        """Delete every attempt's Job of the trial; the garbage collector deletes their pods (SIGTERM, grace)."""
        selector = f"{names.study_selector(self.uid)},{names.TRIAL}={number}"
        for job in self.kube.list(self.jobs_path, selector):
            if not job["metadata"].get("deletionTimestamp"):
                self.kube.delete(path("batch", "v1", "jobs", self.namespace, job["metadata"]["name"]))

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
