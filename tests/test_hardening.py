"""The operator where it could reach too far, mix Jobs up, or wedge: on the real control plane, as a least-privilege
ServiceAccount, in namespaces that enforce the `restricted` Pod Security Standard.

- a study whose template asks for more than the trial policy allows gets a condition and an Event, and no Job;
  fixed, its trial pods are admitted under `restricted`;
- a Job of the study's name that is not the study's (another owner, a deleted and re-created Optuna study) is never
  adopted: a JobConflict condition says which and why, and nothing is launched or changed; Optuna records deleted
  under a running study fail it with a condition and one Event;
- an operator killed right after asking for a trial, and again right after creating its Job, spends no retry;
- a Job whose pod is never created (a missing PriorityClass), a Job the API server refuses (422), a pod no node
  will take (budget.pendingSeconds), and a pod that waited for a GPU before failing to pull its image: each fails
  its trial with the reason, at the right time;
- a malformed trainer report fails its trial, not the study; a Job deleted by hand is retried only once its pod has
  stopped (no two attempts overlap);
- no storage password in anything a study leaves: outputs, Events, status, Jobs, pods, logs, files.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from ftstudy.kube import names
from ftstudy.kube.api import Kube, load_config
from ftstudy.kube.policy import TrialPolicy
from ftstudy.kube.reconciler import Settings, StudyReconciler
from ftstudy.study_store import FORGETTING
from tests.cluster.builds import cached_build
from tests.cluster.control_plane import ControlPlane
from tests.cluster.gpu_nodes import GpuNodes
from tests.conftest import PrivateDatabase, command_lines
from tests.conftest import encoded as encode
from tests.test_operator import (
    LATER_SECRET,
    Operators,
    apply,
    diagnosis,
    events,
    get_study,
    jobs,
    optuna_trials,
    runs_per_attempt,
    study_manifest,
    wait_for,
    wait_for_phase,
)

ROOT = Path(__file__).resolve().parents[1]
# The `operators` fixture (tests/test_operator.py) comes through tests/conftest.py.
FAKE_TRAINER = [sys.executable, str(ROOT / "tests" / "fake_trainer.py")]


def condition(ops: Operators, name: str, kind: str) -> dict[str, Any] | None:
    conditions = (get_study(ops.plane, ops.namespace, name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


def wait_for_condition(ops: Operators, name: str, kind: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        seen = condition(ops, name, kind)
        return seen if seen is not None and seen.get("reason") == reason else None

    result: dict[str, Any] = wait_for(f"{name}: {kind} {reason}", found, timeout, diagnosis(ops, name))
    return result


def study_events(ops: Operators, name: str, reason: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in events(ops.plane, ops.namespace)
        if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == "FineTuneStudy"
        and (reason is None or e["reason"] == reason)
    ]  # fmt: skip


def job_names(ops: Operators, study: str) -> set[str]:
    return {j["metadata"]["name"] for j in jobs(ops.plane, ops.namespace) if j["metadata"]["name"].startswith(study)}


def held_after(step: int) -> list[dict[str, str]]:
    """A trial template's env that holds the real trainer after ``step`` (once) until a SIGTERM, for a test to stop
    it there (``ftstudy.faults``); one thread each, as study_manifest's env."""
    return [{"name": "OMP_NUM_THREADS", "value": "1"}, {"name": "MKL_NUM_THREADS", "value": "1"},
            {"name": "FTSTUDY_FAULTS", "value": f"trainer.after-step.{step}=1:hold=600"}]  # fmt: skip


def no_tracebacks(ops: Operators, identity: str = "replica-a") -> None:
    assert "Traceback" not in ops.log(identity), ops.log(identity)[-4000:]


def test_a_study_asking_for_more_than_the_trial_policy_allows_gets_no_job(operators: Operators) -> None:
    ops, plane, ns = operators, operators.plane, operators.namespace
    ops.start()
    name = "greedy"
    greedy = {
        "volumes": [
            {"name": "artifacts", "persistentVolumeClaim": {"claimName": "artifacts"}},
            {"name": "node", "hostPath": {"path": "/"}},
        ],
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "ftstudy-db", "key": "url"}}}],
        "serviceAccountName": "deployer",
        # a shared cluster's scheduling: onto the control plane, ahead of every other tenant
        "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}],
        "priorityClassName": "system-node-critical",
    }
    apply(plane, ns, study_manifest(name, trialTemplate=greedy))
    refused = wait_for_condition(ops, name, "Ready", "TrialPolicyViolation")
    message = refused["message"]
    for words in (
        "spec.trialTemplate.volumes[1]: hostPath volumes are never allowed",
        "spec.trialTemplate.env[0].valueFrom.secretKeyRef: trials may not read Secrets through env",
        "spec.trialTemplate.serviceAccountName: 'deployer' is not allowed for trials",
        "spec.trialTemplate.tolerations[0]: tolerates key 'node-role.kubernetes.io/control-plane'",
        "spec.trialTemplate.priorityClassName: 'system-node-critical' is not allowed",
    ):
        assert words in message, message
    assert get_study(plane, ns, name)["status"]["phase"] == "Pending"
    warning = study_events(ops, name, "TrialPolicyViolation")
    assert len(warning) == 1 and warning[0]["type"] == "Warning" and "hostPath" in warning[0]["message"]
    time.sleep(3)  # several passes: still nothing
    assert not jobs(plane, ns), "no Job for a refused study"
    assert len(study_events(ops, name, "TrialPolicyViolation")) == 1, "one Event, not one per pass"

    apply(plane, ns, study_manifest(name))  # the template is editable: fixed, the study starts
    wait_for_condition(ops, name, "Ready", "Reconciled")

    def pods() -> list[dict[str, Any]]:
        listed = json.loads(plane.kubectl("get", "pods", "-n", ns, "-l", "ftstudy.io/trial", "-o", "json").stdout)
        return list(listed["items"])

    created = wait_for("the trial pods admitted under restricted", lambda: len(pods()) == 2, 60, diagnosis(ops, name))
    assert created
    for pod in pods():
        spec = pod["spec"]
        assert spec["securityContext"]["fsGroup"] == 10001 and spec["automountServiceAccountToken"] is False
        container = spec["containers"][0]["securityContext"]
        assert container["readOnlyRootFilesystem"] is True and container["allowPrivilegeEscalation"] is False
    failed_creates = [e for e in events(plane, ns) if e["reason"] == "FailedCreate"]
    assert not failed_creates, failed_creates
    no_tracebacks(ops)


def test_a_screening_study_without_a_volume_for_its_checkpoints_waits_with_the_reason(operators: Operators) -> None:
    """Screening (the default mode) resumes trials from checkpoints under outputDir: without a volume there, every
    trial would screen and then fail its resume. Refused before any Job; a fixed trialTemplate lets it start."""
    ops, plane, ns = operators, operators.plane, operators.namespace
    ops.start()
    name = "no-volume"
    screen = {"policy": "topK", "k": 2, "mode": "screen", "auditFraction": 0.0}
    apply(plane, ns, study_manifest(name, promotion=screen, trialTemplate={"volumes": [], "volumeMounts": []}))
    message = wait_for_condition(ops, name, "Ready", "CheckpointVolumeMissing")["message"]
    assert "no volume is mounted there" in message and "promotion.mode: online" in message, message
    assert get_study(plane, ns, name)["status"]["phase"] == "Pending" and not jobs(plane, ns)
    apply(plane, ns, study_manifest(name, promotion=screen))
    wait_for_condition(ops, name, "Ready", "Reconciled")
    no_tracebacks(ops)


def test_jobs_that_are_not_the_studys_are_never_adopted(operators: Operators, postgres_url: str) -> None:
    ops, plane, ns = operators, operators.plane, operators.namespace
    name = "adopt"
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{name}-t0-a1", "labels": {"team": "someone-else"}},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{"name": "c", "image": "busybox", "securityContext": {
                        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
                }
            },
        },
    }  # fmt: skip
    apply(plane, ns, foreign)
    foreign_uid = jobs(plane, ns)[0]["metadata"]["uid"]
    ops.start()
    apply(plane, ns, study_manifest(name, budget={"maxTrials": 3, "parallelism": 2}))
    conflict = wait_for_condition(ops, name, "Ready", "JobConflict")
    assert f"Job {name}-t0-a1 already exists but is not this trial's" in conflict["message"], conflict
    time.sleep(3)
    assert [j["metadata"]["uid"] for j in jobs(plane, ns)] == [foreign_uid], "the foreign Job alone, untouched"
    assert len(study_events(ops, name, "JobConflict")) == 1

    plane.kubectl("delete", "job", f"{name}-t0-a1", "-n", ns, "--wait=true")
    wait_for("the study's own Jobs", lambda: job_names(ops, name) == {f"{name}-t0-a1", f"{name}-t1-a1"}, 60,
             diagnosis(ops, name))  # fmt: skip
    wait_for_condition(ops, name, "Ready", "Reconciled")
    ours = {j["metadata"]["name"]: j["metadata"]["uid"] for j in jobs(plane, ns)}

    # The Optuna study deleted and created again while no operator ran: the Jobs belong to the old one.
    ops.stop_all()
    optuna.delete_study(study_name=get_study(plane, ns, name)["status"]["optunaStudy"], storage=postgres_url)
    ops.start("replica-b")
    conflict = wait_for_condition(ops, name, "Ready", "JobConflict")
    assert "was made for another Optuna study" in conflict["message"], conflict
    time.sleep(3)
    assert {j["metadata"]["name"]: j["metadata"]["uid"] for j in jobs(plane, ns)} == ours, "nothing acted on"
    assert len(optuna_trials(postgres_url, ns, name)) == 0, "no trial asked for in the new Optuna study"
    no_tracebacks(ops, "replica-b")


def test_optuna_records_deleted_under_a_running_study_fail_it_with_one_event(
    operators: Operators, postgres_url: str
) -> None:
    ops, plane, ns = operators, operators.plane, operators.namespace
    ops.start()
    name = "vanish"
    apply(plane, ns, study_manifest(name))
    wait_for("two trials launched", lambda: len(job_names(ops, name)) == 2, 60, diagnosis(ops, name))
    recorded = wait_for("status.optunaStudy",
                        lambda: (get_study(plane, ns, name).get("status") or {}).get("optunaStudy"), 30)  # fmt: skip
    optuna.delete_study(study_name=recorded, storage=postgres_url)
    failed = wait_for_condition(ops, name, "Failed", "StudyRecordsDeleted")
    assert failed["status"] == "True" and "were deleted from its database while it ran" in failed["message"]
    assert get_study(plane, ns, name)["status"]["phase"] == "Failed"
    time.sleep(4)
    assert len(study_events(ops, name, "StudyRecordsDeleted")) == 1
    no_tracebacks(ops)


def test_a_study_created_again_under_its_name_starts_afresh_and_can_continue_on_purpose(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str
) -> None:
    """Deleted (its Jobs with it) and applied again: the new object gets Optuna records of its own and runs its
    trials, the old records stay as they were; with ``spec.storage.continueFrom`` a third one continues them, and
    with its budget already spent there, ends at once. (Keyed by name alone, the second would have taken the first's
    finished trials as its own and ended without a trial.)"""
    ops, plane, ns = operators, operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    ops.start()
    name = "again"
    manifest = study_manifest(name, budget={"maxTrials": 2, "parallelism": 2})
    apply(plane, ns, manifest)
    first = wait_for_phase(ops, name, ("Succeeded", "Failed"), 180, nodes)
    assert first["status"]["phase"] == "Succeeded", first["status"]
    first_records = first["status"]["optunaStudy"]
    assert first_records == f"{ns}.{name}.{first['metadata']['uid']}"
    plane.kubectl("delete", "fts", name, "-n", ns, "--wait=true", "--timeout=60s")
    wait_for("the first study's Jobs gone", lambda: not jobs(plane, ns), 60)

    apply(plane, ns, manifest)
    second = wait_for_phase(ops, name, ("Succeeded", "Failed"), 180, nodes)
    assert second["status"]["phase"] == "Succeeded", second["status"]
    assert second["status"]["optunaStudy"] == f"{ns}.{name}.{second['metadata']['uid']}" != first_records
    assert len(optuna_trials(postgres_url, ns, name)) == 2, "its own two trials"
    old = optuna.load_study(study_name=first_records, storage=postgres_url).get_trials(deepcopy=False)
    assert [t.state.name for t in old] == ["COMPLETE", "COMPLETE"], "the first study's records untouched"
    assert runs_per_attempt(nodes, ns) == {f"{name}-t0-a1": 2, f"{name}-t1-a1": 2}, "each study ran its own trials"

    continued = study_manifest("continued", budget={"maxTrials": 2, "parallelism": 2})
    continued["spec"]["storage"]["continueFrom"] = first_records
    apply(plane, ns, continued)
    third = wait_for_phase(ops, "continued", ("Succeeded", "Failed"), 120, nodes)
    assert third["status"]["optunaStudy"] == first_records and third["status"]["trials"]["completed"] == 2
    assert not [j for j in jobs(plane, ns) if j["metadata"]["name"].startswith("continued")], "nothing to run"
    elsewhere = study_manifest("elsewhere")
    elsewhere["spec"]["storage"]["continueFrom"] = f"other-namespace.{name}.{first['metadata']['uid']}"
    apply(plane, ns, elsewhere)
    refused = wait_for_condition(ops, "elsewhere", "Failed", "ContinueFromRefused")
    assert "is not a study of namespace" in refused["message"], refused


def test_a_study_deleted_with_its_jobs_orphaned_and_applied_again_leaves_the_running_trial_alone(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str
) -> None:
    """Issue 22's reproduction: ``kubectl delete --cascade=orphan`` while a trial runs, then the same manifest
    again. Keyed by name, the new object took the old records as its own and launched the running trial again
    (a retry spent, two attempts writing one trial). Now the new object has records of its own; the orphaned Job,
    whose trainer still runs, is named in a JobConflict with the fix and left alone; the old trial's records are
    untouched; once the orphan is deleted, the new study runs its own trial 0."""
    ops, plane, ns = operators, operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    ops.start()
    name = "orphans"
    manifest = study_manifest(name, trialTemplate={"command": [*FAKE_TRAINER, "linger"]},
                              budget={"maxTrials": 1, "parallelism": 1})  # fmt: skip

    def runs() -> list[dict[str, Any]]:
        return [r for r in nodes.runs if r["pod"].startswith(f"{name}-t0-")]

    apply(plane, ns, manifest)
    wait_for("the first study's trainer", lambda: len(runs()) == 1, 60, diagnosis(ops, name, nodes))
    first = get_study(plane, ns, name)
    first_records = first["status"]["optunaStudy"]
    plane.kubectl("delete", "fts", name, "-n", ns, "--cascade=orphan", "--wait=true", "--timeout=60s")
    (orphan,) = jobs(plane, ns)
    assert orphan["metadata"]["name"] == f"{name}-t0-a1" and not orphan["metadata"].get("ownerReferences"), orphan

    apply(plane, ns, manifest)
    conflict = wait_for_condition(ops, name, "Ready", "JobConflict")
    assert f"Job {name}-t0-a1 already exists but is not this trial's" in conflict["message"], conflict
    assert repr(first["metadata"]["uid"]) in conflict["message"], "it names the old study's UID"
    assert f"kubectl delete job {name}-t0-a1 -n {ns}" in conflict["message"], "and the fix"
    second = get_study(plane, ns, name)
    newest = names.newest_optuna_study(optuna.get_all_study_names(postgres_url), ns, name)
    assert newest == f"{ns}.{name}.{second['metadata']['uid']}" != first_records, "records of its own"
    time.sleep(3)  # passes of the new study: nothing acted on
    assert [j["metadata"]["uid"] for j in jobs(plane, ns)] == [orphan["metadata"]["uid"]], "the orphan alone"
    assert len(runs()) == 1 and runs()[0]["ended"] is None, "its trainer still runs, and no second one"
    (old,) = optuna.load_study(study_name=first_records, storage=postgres_url).get_trials(deepcopy=False)
    assert old.state.name == "RUNNING" and old.system_attrs["ftstudy:attempts"] == 1, "the old records untouched"
    assert len(study_events(ops, name, "JobConflict")) == 1

    plane.kubectl("delete", "job", f"{name}-t0-a1", "-n", ns, "--wait=false")
    wait_for("the new study's trainer", lambda: len(runs()) == 2, 90, diagnosis(ops, name, nodes), every=0.2)
    # (the orphan's pod may still be stopping: it is another study's trial, with records and files of its own)
    (trial,) = optuna_trials(postgres_url, ns, name)
    assert trial.system_attrs["ftstudy:attempts"] == 1, "the new study's first attempt, no retry spent"
    (job,) = jobs(plane, ns)
    assert job["metadata"]["labels"][names.STUDY_UID] == second["metadata"]["uid"], job["metadata"]["labels"]
    plane.kubectl("delete", "fts", name, "-n", ns, "--wait=true", "--timeout=60s")
    no_tracebacks(ops)


def test_an_operator_killed_inside_a_launch_spends_no_retry(operators: Operators, postgres_url: str) -> None:
    """Killed (fault points) right after asking Optuna for trial 0, then right after creating its Job and before
    counting it: trial 0 runs as attempt 1, once."""
    ops, plane, ns = operators, operators.plane, operators.namespace
    name = "faulty"
    apply(plane, ns, study_manifest(name, budget={"maxTrials": 3, "parallelism": 3, "retriesPerTrial": 0}))
    for fault in ("launch.before=1", "launch.between=1"):
        ops.env = {"FTSTUDY_FAULTS": fault}
        proc = ops.start()
        assert proc.wait(60) == -signal.SIGKILL, ops.log()[-3000:]
    assert job_names(ops, name) == {f"{name}-t0-a1"}, "killed after the create: the Job exists, its count does not"
    assert optuna_trials(postgres_url, ns, name)[0].system_attrs.get("ftstudy:attempts") is None
    ops.env = {}
    ops.start()
    wanted = {f"{name}-t{n}-a1" for n in range(3)}
    wait_for("every trial launched once", lambda: job_names(ops, name) == wanted, 60, diagnosis(ops, name))
    time.sleep(2)
    assert job_names(ops, name) == wanted
    trials = optuna_trials(postgres_url, ns, name)
    assert [t.system_attrs.get("ftstudy:attempts") for t in trials] == [1, 1, 1]
    assert all(t.state == optuna.trial.TrialState.RUNNING for t in trials), "retriesPerTrial 0, yet nothing failed"


def a_day_ahead() -> dict[str, str]:
    """The environment that sets a process's wall clock a day ahead of this machine's (and so of the API server's):
    libfaketime preloaded (Debian's, scripts/faketime.sh), the monotonic clock left alone. Checked on a Python."""
    env = {"LD_PRELOAD": str(cached_build(ROOT / "scripts" / "faketime.sh")), "FAKETIME": "+1d",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}  # fmt: skip
    ahead = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], env={**os.environ, **env},
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert float(ahead.stdout) - time.time() > 86000, ("libfaketime did not move the clock", ahead)
    return env


def test_trials_whose_pods_cannot_start_fail_with_the_reason_at_the_right_time(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str
) -> None:
    """Run by an operator whose clock is a day ahead of the API server's (issue 22: a skew larger than
    --stuck-seconds or budget.pendingSeconds failed pods at once): how long a pod waited is measured on the API
    server's clock, so each failure still comes at its time, and a pod that has only just got its GPU is not
    stuck."""
    ops, plane, ns = operators, operators.plane, operators.namespace
    ops.extra_args = ["--stuck-seconds", "6"]
    ops.env = a_day_ahead()
    ops.start()
    one = {"maxTrials": 1, "parallelism": 1, "maxFailedTrials": 1, "retriesPerTrial": 1}
    apply(plane, ns, study_manifest("no-class", trialTemplate={"priorityClassName": "no-such-class"}, budget=one))
    apply(
        plane,
        ns,
        study_manifest(
            "invalid", budget=one, trialTemplate={"resources": {"limits": {"nvidia.com/gpu": 1, "memory": "lots"}}}
        ),
    )
    apply(plane, ns, study_manifest("late-gpu", trialTemplate={"image": "ftstudy/trainer:missing"}, budget=one))
    # a node selector no node matches: unschedulable for good, failed after budget.pendingSeconds
    apply(plane, ns, study_manifest("no-node", trialTemplate={"nodeSelector": {"gpu": "none"}},
                                    budget={**one, "pendingSeconds": 8}))  # fmt: skip
    # more GPUs than any node will have: it waits (a node may yet be added), and says why at once
    apply(plane, ns, study_manifest("too-big", trialTemplate={"gpus": 2}, budget=one))
    applied = time.monotonic()

    for name, words in (
        ("no-class", "its pod could not be created: "),
        ("no-class", "no PriorityClass with name no-such-class was found"),
        ("invalid", "the API server refused its Job invalid-t0-a1: "),
        ("invalid", "quantities must match the regular expression"),
        ("no-node", "its pod did not start within budget.pendingSeconds (8 s): the scheduler could not place it: "),
    ):
        study = wait_for_phase(ops, name, ("Succeeded", "Failed"), 90)
        assert study["status"]["phase"] == "Failed", study["status"]
        (trial,) = optuna_trials(postgres_url, ns, name)
        assert words in trial.user_attrs["failure_reason"], trial.user_attrs
        assert trial.system_attrs["ftstudy:attempts"] == 1, "not retried: it would fail the same way"
        assert any(words in e["message"] for e in study_events(ops, name, "TrialFailed"))
        assert words in study["status"]["lastFailure"]["reason"], study["status"]

    # late-gpu waited for a GPU far longer than --stuck-seconds; scheduled, it fails to pull: stuck from then on
    time.sleep(max(0.0, applied + 12 - time.monotonic()))  # twice --stuck-seconds without a GPU
    assert get_study(plane, ns, "late-gpu")["status"]["phase"] == "Running"
    nodes = gpu_nodes_factory({"gpu-a": 1})

    def pulling() -> bool:
        listed = json.loads(plane.kubectl("get", "pods", "-n", ns, "-l", "ftstudy.io/study=late-gpu",
                                          "-o", "json").stdout)["items"]  # fmt: skip
        states = [s.get("state", {}) for p in listed for s in p.get("status", {}).get("containerStatuses") or []]
        return any(s.get("waiting", {}).get("reason") == "ErrImagePull" for s in states)

    wait_for("the image pull to fail", pulling, 60, diagnosis(ops, "late-gpu", nodes), every=0.2)

    def too_big() -> dict[str, Any] | None:  # the scheduler's word once a GPU node exists: not GPUs enough
        seen = condition(ops, "too-big", "TrialsSchedulable")
        return seen if seen and "Insufficient nvidia.com/gpu" in seen.get("message", "") else None

    waiting = wait_for("too-big: TrialsSchedulable False", too_big, 60, diagnosis(ops, "too-big", nodes))
    assert waiting["status"] == "False" and waiting["reason"] == "Unschedulable", waiting
    assert "trial(s) 0 wait for a node (2 GPU(s) each)" in waiting["message"], waiting
    assert len(study_events(ops, "too-big", "TrialUnschedulable")) == 1, "one Warning while it waits"
    assert get_study(plane, ns, "too-big")["status"]["phase"] == "Running"
    (job,) = json.loads(plane.kubectl("get", "jobs", "-n", ns, "-l", "ftstudy.io/study=too-big",
                                      "-o", "json").stdout)["items"]  # fmt: skip
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2" and "--processes" in container["args"]
    failing_since = time.monotonic()
    time.sleep(3)
    assert get_study(plane, ns, "late-gpu")["status"]["phase"] == "Running", "not stuck yet: it just got its GPU"
    study = wait_for_phase(ops, "late-gpu", ("Succeeded", "Failed"), 60, nodes)
    assert study["status"]["phase"] == "Failed" and time.monotonic() - failing_since >= 4
    (trial,) = optuna_trials(postgres_url, ns, "late-gpu")
    assert "its pod cannot start: ErrImagePull" in trial.user_attrs["failure_reason"], trial.user_attrs
    no_tracebacks(ops)


def job_quota(plane: ControlPlane, ns: str, name: str, jobs: int) -> dict[str, Any]:
    """A ResourceQuota of ``jobs`` Jobs in ``ns``, once the quota controller has counted it (before that the API
    server admits anything); the manifest, to raise it later."""
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
             "spec": {"hard": {"count/jobs.batch": str(jobs)}}}  # fmt: skip
    apply(plane, ns, quota)
    wait_for("the quota counted", lambda: plane.kubectl("get", "resourcequota", name, "-n", ns, "-o",
                                                         "jsonpath={.status.hard}").stdout, 30)  # fmt: skip
    return quota


def test_a_job_refused_by_a_resource_quota_waits_until_the_quota_allows_it(
    operators: Operators, postgres_url: str
) -> None:
    """Not a failure of the trial (it would succeed later) nor a spent retry: a condition, and the Job is created once
    the quota is raised."""
    ops, plane, ns = operators, operators.plane, operators.namespace
    quota = job_quota(plane, ns, "jobs", 1)
    ops.start()
    name = "quota"
    apply(plane, ns, study_manifest(name, budget={"maxTrials": 2, "parallelism": 2, "retriesPerTrial": 0}))
    waiting = wait_for_condition(ops, name, "Ready", "JobQuotaExceeded")
    assert f"trial 1 waits for its Job {name}-t1-a1: " in waiting["message"] and "exceeded quota" in waiting["message"]
    time.sleep(3)
    assert job_names(ops, name) == {f"{name}-t0-a1"}
    trials = optuna_trials(postgres_url, ns, name)
    assert [t.system_attrs.get("ftstudy:attempts") for t in trials] == [1, None], "the refused launch is not counted"
    assert len(study_events(ops, name, "JobQuotaExceeded")) == 1
    quota["spec"]["hard"]["count/jobs.batch"] = "2"
    apply(plane, ns, quota)
    wait_for("the second Job", lambda: len(job_names(ops, name)) == 2, 60, diagnosis(ops, name))
    wait_for_condition(ops, name, "Ready", "Reconciled")
    trials = optuna_trials(postgres_url, ns, name)
    assert [t.system_attrs.get("ftstudy:attempts") for t in trials] == [1, 1]
    assert all(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    no_tracebacks(ops)


def test_finished_trials_jobs_make_room_under_a_job_count_quota(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str
) -> None:
    """A count/jobs.batch quota of 2 and four trials one at a time: the Jobs of finished trials were never deleted,
    so the third trial waited for ever (JobQuotaExceeded). Now a refused create deletes the ended Jobs of trials whose
    result is recorded, and the study runs to its end, each trial once."""
    ops, plane, ns = operators, operators.plane, operators.namespace
    job_quota(plane, ns, "two-jobs", 2)
    nodes = gpu_nodes_factory({"gpu-a": 1})
    ops.start()
    name = "full"
    apply(plane, ns, study_manifest(name, budget={"maxTrials": 4, "parallelism": 1, "retriesPerTrial": 0}))
    study = wait_for_phase(ops, name, ("Succeeded", "Failed"), 420, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    trials = optuna_trials(postgres_url, ns, name)
    assert [t.system_attrs.get("ftstudy:attempts") for t in trials] == [1, 1, 1, 1], "each once, no retry spent"
    assert "deleted Job full-t0-a1: its trial has ended and its result is recorded" in ops.log()
    assert len(job_names(ops, name)) <= 2
    no_tracebacks(ops)


class JobAdmissionPolicy:
    """A ValidatingAdmissionPolicy (built into the API server; Gatekeeper and Kyverno webhooks answer alike) that
    denies creating the Jobs ``expression`` holds for in one namespace, with ``message``; enforced on return (the
    API server takes a moment to load a policy). ``lift`` unbinds it and waits until it no longer denies."""

    def __init__(self, plane: ControlPlane, namespace: str, name: str, expression: str, message: str,
                 probe_labels: dict[str, str] | None = None) -> None:  # fmt: skip
        self.plane, self.namespace, self.name, self.message = plane, namespace, name[:63], message
        policy = {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": self.name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                                                        "operations": ["CREATE"], "resources": ["jobs"]}]},
                "validations": [{"expression": expression, "reason": "Forbidden", "message": message}],
            },
        }  # fmt: skip
        binding = {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": self.name},
            "spec": {"policyName": self.name, "validationActions": ["Deny"],
                     "matchResources": {"namespaceSelector": {
                         "matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
        }  # fmt: skip
        self.probe = {"apiVersion": "batch/v1", "kind": "Job",
                      "metadata": {"name": "probe", "labels": probe_labels or {}},
                      "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                     "containers": [{"name": "c", "image": "x"}]}}}}  # fmt: skip
        apply(plane, namespace, policy)
        apply(plane, namespace, binding)
        wait_for("the policy enforced", self.denying, 60)

    def denying(self) -> bool:
        result = self.plane.kubectl("create", "--dry-run=server", "-n", self.namespace, "-f", "-",
                                    input=json.dumps(self.probe), check=False)  # fmt: skip
        return result.returncode != 0 and self.message in result.stderr

    def lift(self) -> None:
        self.plane.kubectl("delete", "validatingadmissionpolicybinding", self.name, check=False)
        wait_for("the policy lifted", lambda: not self.denying(), 20)

    def remove(self) -> None:
        self.plane.kubectl("delete", "validatingadmissionpolicybinding", self.name, check=False)
        self.plane.kubectl("delete", "validatingadmissionpolicy", self.name, check=False)


def test_a_job_an_admission_policy_denies_fails_its_trial_with_the_policys_message(
    operators: Operators, postgres_url: str
) -> None:
    """A platform's admission rule (here a ValidatingAdmissionPolicy, built into the API server; Gatekeeper and
    Kyverno webhooks answer alike) denies the Job with 403: that was read as RBAC ("grant it create on jobs") and
    retried for ever. Now the trial fails once, with the policy's message, and spends no retry."""
    ops, plane, ns = operators, operators.plane, operators.namespace
    policy = JobAdmissionPolicy(plane, ns, f"no-{ns}", "false", "team policy: no GPU Jobs in this namespace today")
    try:
        ops.start()
        study = "denied"
        apply(plane, ns, study_manifest(study, budget={"maxTrials": 1, "parallelism": 1, "maxFailedTrials": 1,
                                                       "retriesPerTrial": 1}))  # fmt: skip
        found = wait_for_phase(ops, study, ("Succeeded", "Failed"), 90)
        assert found["status"]["phase"] == "Failed", found["status"]
        (trial,) = optuna_trials(postgres_url, ns, study)
        reason = trial.user_attrs["failure_reason"]
        assert reason.startswith(f"an admission policy refused its Job {study}-t0-a1: "), reason
        assert "team policy: no GPU Jobs in this namespace today" in reason
        assert trial.system_attrs["ftstudy:attempts"] == 1, "not retried: it would be denied again"
        assert not study_events(ops, study, "JobForbidden")
        no_tracebacks(ops)
    finally:
        policy.remove()


def test_a_refused_checkpoint_cleanup_is_an_event_and_is_tried_again_until_the_checkpoint_is_gone(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str
) -> None:
    """A pruned trial's checkpoint is deleted by a helper Job. An admission policy refuses that Job: the study says
    so in a Warning Event that names the policy's message, keeps the deletion on record, and tries again after
    its back-off, past the study's own end, which its status shows (checkpointsToDelete). The operator restarted
    after the end, with the policy gone, finds them there, the Job runs and the record is cleared. (A refusal used
    to be asked for once: it went to the operator's log and the checkpoint stayed.)"""
    ops, plane, ns = operators, operators.plane, operators.namespace
    helper = f"object.metadata.?labels[{json.dumps(names.COMPONENT)}].orValue('') == {json.dumps(names.CLEANUP)}"
    policy = JobAdmissionPolicy(plane, ns, f"nocleanup-{ns}", f"!({helper})", "team policy: no helper Jobs today",
                                probe_labels={names.COMPONENT: names.CLEANUP})  # fmt: skip
    try:
        nodes = gpu_nodes_factory({"gpu-a": 3})
        ops.start()
        study = "keeps"
        apply(plane, ns, study_manifest(study, promotion={"policy": "topK", "k": 1, "mode": "screen",
                                                          "auditFraction": 0},
                                        budget={"maxTrials": 3, "parallelism": 3}))  # fmt: skip
        failed = wait_for("a refused cleanup told", lambda: study_events(ops, study, "CheckpointCleanupFailed"),
                          180, diagnosis(ops, study, nodes))  # fmt: skip
        message = failed[0]["message"]
        assert failed[0]["type"] == "Warning" and "(try 1 of 3)" in message, message
        assert "team policy: no helper Jobs today" in message and message.endswith("trying again in 30 s"), message
        assert not any(j.endswith("-forget") for j in job_names(ops, study))
        (number,) = (int(m) for m in re.findall(r"^trial (\d+):", message, re.M))
        assert _forgetting(postgres_url, ns, study)[str(number)] == 1, "on record, so a restart goes on"

        def pending() -> int:
            status = get_study(plane, ns, study).get("status") or {}
            return int(status.get("checkpointsToDelete") or 0) if status.get("phase") == "Succeeded" else 0

        # the study ends with the deletions still refused; its operator stops before their third try (90 s in)
        wait_for("the study's end, deletions pending", pending, 80, diagnosis(ops, study, nodes))
        ops.stop_all()
        assert _forgetting(postgres_url, ns, study), "still on record"
        policy.lift()
        ops.start("replica-b")  # a restarted operator finds the ended study's pending deletions in its status
        wait_for("the record cleared", lambda: _forgetting(postgres_url, ns, study) == {}, 120,
                 diagnosis(ops, study, nodes))  # fmt: skip
        wait_for("the status cleared", lambda: get_study(plane, ns, study)["status"]["checkpointsToDelete"] == 0, 60)
        refused = {int(m) for e in study_events(ops, study, "CheckpointCleanupFailed")
                   for m in re.findall(r"^trial (\d+):", e["message"], re.M)}  # fmt: skip
        completed = {j["metadata"]["name"] for j in jobs(plane, ns)
                     if any(c["type"] == "Complete" and c["status"] == "True"
                            for c in j.get("status", {}).get("conditions", []))}  # fmt: skip
        assert {f"{study}-t{n}-forget" for n in refused} <= completed, (refused, completed)
        assert get_study(plane, ns, study)["status"]["phase"] == "Succeeded"
        assert not study_events(ops, study, "CheckpointKept")
        no_tracebacks(ops, "replica-b")
        no_tracebacks(ops)
    finally:
        policy.remove()


def _forgetting(url: str, namespace: str, name: str) -> Any:
    """The study's record of the checkpoints still to delete (``ftstudy.study_store.FORGETTING``)."""
    found = names.newest_optuna_study(optuna.get_all_study_names(url), namespace, name)
    assert found is not None
    storage = optuna.storages.RDBStorage(url)
    try:
        return storage.get_study_system_attrs(storage.get_study_id_from_name(found)).get(FORGETTING)
    finally:
        storage.engine.dispose()


def test_a_malformed_report_fails_its_trial_and_a_deleted_job_is_retried_only_once_its_pod_is_gone(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str
) -> None:
    ops, plane, ns = operators, operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    ops.start()
    apply(plane, ns, study_manifest("garbage", trialTemplate={"command": [*FAKE_TRAINER, "malformed"]},
                                    budget={"maxTrials": 2, "parallelism": 1, "maxFailedTrials": 2}))  # fmt: skip
    apply(plane, ns, study_manifest("handdelete", trialTemplate={"command": [*FAKE_TRAINER, "linger"]},
                                    budget={"maxTrials": 1, "parallelism": 1}))  # fmt: skip

    study = wait_for_phase(ops, "garbage", ("Succeeded", "Failed"), 120, nodes)
    assert study["status"]["phase"] == "Failed" and study["status"]["trials"]["failed"] == 2, study["status"]
    for trial in optuna_trials(postgres_url, ns, "garbage"):
        reason = trial.user_attrs["failure_reason"]
        assert "the trainer reported malformed results: final_accuracy = 'abc' (str)" in reason, reason
        assert trial.system_attrs["ftstudy:attempts"] == 1

    def lingerers() -> list[dict[str, Any]]:
        return [r for r in nodes.runs if r["pod"].startswith("handdelete-")]

    wait_for("the lingering trainer", lambda: len(lingerers()) == 1, 60, diagnosis(ops, "handdelete", nodes))
    time.sleep(1)
    plane.kubectl("delete", "job", "handdelete-t0-a1", "-n", ns, "--wait=false")  # background, as kubectl does
    wait_for("the retry", lambda: len(lingerers()) == 2, 90, diagnosis(ops, "handdelete", nodes), every=0.2)
    first, second = lingerers()
    assert first["ended"] is not None and second["started"] >= first["ended"], (first, second)
    assert second["pod"].startswith("handdelete-t0-a2-")
    (trial,) = optuna_trials(postgres_url, ns, "handdelete")
    assert trial.system_attrs["ftstudy:attempts"] == 2
    plane.kubectl("delete", "fts", "handdelete", "-n", ns, "--wait=true", "--timeout=60s")
    no_tracebacks(ops)


def test_a_deleted_studys_artifacts_cleanup_that_fails_is_retried_by_its_job(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], tmp_path: Path
) -> None:
    """``cleanup.deleteArtifacts``: the Job that deletes a deleted study's files has no study left to follow it, so
    it retries a failed deletion itself. A file its first pod cannot delete (made immutable, as a store or a volume
    that refuses for a while) fails that pod; once the file can go, the Job's next pod, after the Job controller's
    back-off, deletes everything. (With ``backoffLimit: 0`` the Job fails and the files stay for good.)"""
    ops, plane, ns = operators, operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 1})
    ops.start()
    name = "leaving"
    apply(plane, ns, study_manifest(name, budget={"maxTrials": 1, "parallelism": 1},
                                    cleanup={"deleteArtifacts": True}))  # fmt: skip
    done = wait_for_phase(ops, name, ("Succeeded", "Failed"), 180, nodes)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    root = tmp_path / "artifacts" / Path(done["status"]["trialsRoot"]).relative_to("/artifacts")
    stuck = next(path for path in root.rglob("*") if path.is_file())
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    try:
        plane.kubectl("delete", "fts", name, "-n", ns, "--wait=true", "--timeout=60s")

        def cleanups() -> list[dict[str, Any]]:
            return [r for r in nodes.runs if r["pod"].startswith(f"{name}-delete-")]

        wait_for("the cleanup's first pod to fail", lambda: cleanups() and cleanups()[0]["ended"] is not None, 90,
                 diagnosis(ops, name, nodes))  # fmt: skip
        assert cleanups()[0]["exit_code"] != 0 and root.exists(), cleanups()
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    wait_for("the Job's next pod to delete the study's files", lambda: not root.exists(), 120,
             diagnosis(ops, name, nodes))  # fmt: skip
    (job,) = [j for j in jobs(plane, ns) if j["metadata"]["name"].startswith(f"{name}-delete-")]
    wait_for("the cleanup Job to complete", lambda: any(
        c["type"] == "Complete" and c["status"] == "True"
        for c in (json.loads(plane.kubectl("get", "job", job["metadata"]["name"], "-n", ns, "-o", "json").stdout)
                  .get("status") or {}).get("conditions") or []), 60)  # fmt: skip
    assert [r["exit_code"] for r in cleanups()][-1] == 0 and len(cleanups()) == 2, cleanups()
    no_tracebacks(ops)


def test_a_trial_pod_evicted_by_a_drain_is_replaced_by_its_job_and_spends_no_retry(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str
) -> None:
    """A shared cluster disrupts pods that did nothing wrong (a drain's eviction, preemption): the API server marks
    them DisruptionTarget, the trial's Job ignores that failure (podFailurePolicy) and starts a new pod of the same
    attempt, after the evicted one has stopped. Without it the Job would fail (backoffLimit 0) and the study would
    spend a retry on it."""
    ops, plane, ns = operators, operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 1})
    ops.start()
    apply(plane, ns, study_manifest("drained", trialTemplate={"command": [*FAKE_TRAINER, "linger"]},
                                    budget={"maxTrials": 1, "parallelism": 1}))  # fmt: skip

    def runs() -> list[dict[str, Any]]:
        return [r for r in nodes.runs if r["pod"].startswith("drained-")]

    wait_for("the lingering trainer", lambda: len(runs()) == 1, 60, diagnosis(ops, "drained", nodes))
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": runs()[0]["pod"], "namespace": ns}}
    plane.kubectl("create", "--raw", f"/api/v1/namespaces/{ns}/pods/{runs()[0]['pod']}/eviction", "-f", "-",
                  input=json.dumps(eviction))  # fmt: skip
    wait_for("the replacement pod", lambda: len(runs()) == 2, 90, diagnosis(ops, "drained", nodes), every=0.2)
    first, second = runs()
    assert first["ended"] is not None and second["started"] >= first["ended"], (first, second)
    assert second["pod"].startswith("drained-t0-a1-"), "the same attempt's Job, a new pod"
    time.sleep(3)  # a pass or two: nothing is retried or failed
    (trial,) = optuna_trials(postgres_url, ns, "drained")
    assert trial.system_attrs["ftstudy:attempts"] == 1 and trial.state.name == "RUNNING", trial
    assert [j["metadata"]["name"] for j in jobs(plane, ns)] == ["drained-t0-a1"]
    plane.kubectl("delete", "fts", "drained", "-n", ns, "--wait=true", "--timeout=60s")
    no_tracebacks(ops)


def test_a_trial_pod_deleted_mid_training_while_the_operator_is_down_resumes_from_its_checkpoint(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str
) -> None:
    """Preemption costs a trial nothing, even with no operator to see it: the real trainer, held after step 7 of 15
    by a fault point, gets SIGTERM from a pod deleted by hand (as Kueue or a person would stop it, with no
    DisruptionTarget condition) while the operator is killed. It checkpoints and exits 75 within its grace period
    (its report of the preemption finds no endpoint, and the SIGTERM ends the retries); the Job ignores that exit
    (podFailurePolicy) and starts a new pod, whose trainer resumes after step 7 and tells the preemption again.
    The operator, started again, finds the trial running on its first attempt and tells the preemption once (Event
    TrialPreempted, with the step); the trial completes on that attempt. Trials report over HTTPS, as the chart
    sets them up by default."""
    ops, plane, ns = operators, operators.plane, operators.namespace
    undo = ops.enable_reports()
    nodes = gpu_nodes_factory({"gpu-a": 1})
    operator = ops.start()
    apply(plane, ns, study_manifest("preempted", trialTemplate={"env": held_after(7)},
                                    budget={"maxTrials": 1, "parallelism": 1}))  # fmt: skip

    def runs() -> list[dict[str, Any]]:
        return [r for r in nodes.runs if r["pod"].startswith("preempted-")]

    def log(run: dict[str, Any]) -> str:
        return nodes.log(ns, run["pod"])

    wait_for("the trainer held after step 7", lambda: runs() and "holding for" in log(runs()[0]), 300,
             diagnosis(ops, "preempted", nodes))  # fmt: skip
    first_pod = runs()[0]["pod"]
    operator.send_signal(signal.SIGKILL)
    operator.wait()
    plane.kubectl("delete", "pod", first_pod, "-n", ns, "--wait=false")
    wait_for("the Job's new pod, no operator running", lambda: len(runs()) == 2, 120,
             diagnosis(ops, "preempted", nodes))  # fmt: skip
    assert runs()[0]["exit_code"] == 75, (runs()[0], log(runs()[0])[-2000:])  # not killed at the end of its grace
    assert "the study was not told of the preemption" in log(runs()[0])
    ops.start()  # (the new pod's trainer waits for the endpoint to read its parameters)
    done = wait_for_phase(ops, "preempted", ("Succeeded", "Failed"), 300, nodes)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    first, second = runs()
    assert first["exit_code"] == 75, first
    assert second["pod"].startswith("preempted-t0-a1-") and second["started"] >= first["ended"], (first, second)
    assert "preempted after step 7: checkpointed" in log(first)
    assert "resumed from the checkpoint written when this trial was preempted at step 7" in log(second)
    (trial,) = optuna_trials(postgres_url, ns, "preempted")
    assert trial.state.name == "COMPLETE" and trial.system_attrs["ftstudy:attempts"] == 1, trial
    assert trial.system_attrs["ftstudy:preemptions"] == 1 and trial.user_attrs["preempted_at_steps"] == [7]
    told = study_events(ops, "preempted", "TrialPreempted")
    assert len(told) == 1 and told[0]["type"] == "Normal", told
    assert "preempted after step 7" in told[0]["message"], told
    assert "it resumes from that checkpoint" in told[0]["message"], "the claim holds it: no PreemptionSafe=False"
    assert condition(ops, "preempted", "PreemptionSafe") is None
    assert not study_events(ops, "preempted", "TrialRelaunched"), "no retry"
    no_tracebacks(ops)
    undo()


def test_a_study_whose_data_cannot_be_read_fails_once_before_any_trial_takes_a_gpu(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], tmp_path: Path
) -> None:
    """``dataset.path`` in a cluster: a CPU Job reads the dataset once before any trial. A missing dataset fails the
    study with the reason (DataInvalid, naming the file) and no GPU trial ever runs; a readable one passes the check
    and the study runs to the end."""
    from ftstudy.task.generator import SplitSizes, write_dataset

    ops, plane, ns = operators, operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    ops.start()
    write_dataset(tmp_path / "artifacts" / "good-data", 1, SplitSizes(40, 4, 4, 4))  # on the trials' volume
    for name, data in (("baddata", "missing-data"), ("gooddata", "good-data")):
        manifest = study_manifest(name, budget={"maxTrials": 2, "parallelism": 2})
        manifest["spec"]["dataset"] = {"path": data}
        apply(plane, ns, manifest)
    failed = wait_for_phase(ops, "baddata", ("Succeeded", "Failed"), 120, nodes)
    assert failed["status"]["phase"] == "Failed", failed["status"]
    invalid = condition(ops, "baddata", "Failed")
    assert invalid is not None and invalid["reason"] == "DataInvalid", invalid
    assert "missing-data/train.jsonl: dataset file not found" in invalid["message"], invalid
    assert [j["metadata"]["name"] for j in jobs(plane, ns) if j["metadata"]["name"].startswith("baddata")] == [
        "baddata-data-check"
    ], "no trial Job"
    assert {r["pod"].rsplit("-", 1)[0] for r in nodes.runs if r["pod"].startswith("baddata")} == {"baddata-data-check"}
    good = wait_for_phase(ops, "gooddata", ("Succeeded", "Failed"), 240, nodes)
    assert good["status"]["phase"] == "Succeeded", good["status"]
    assert study_events(ops, "gooddata", "CheckingData"), "a Normal Event while the data was read"
    no_tracebacks(ops)


def test_no_storage_password_in_anything_a_study_leaves(
    operators: Operators,
    gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes],
    awkward_database: PrivateDatabase,
    tmp_path: Path,
) -> None:
    """The password holds every character a URL or a redaction could trip on; it is looked for raw and
    URL-encoded, in everything the study leaves and in every process's command line while it runs."""
    ops, plane, ns = operators, operators.plane, operators.namespace
    password, url = awkward_database.password, awkward_database.url
    plane.kubectl("create", "secret", "generic", LATER_SECRET, "-n", ns, f"--from-literal=url={url}")
    nodes = gpu_nodes_factory({"gpu-a": 2})
    ops.start()
    name = "discreet"
    manifest = study_manifest(name, budget={"maxTrials": 3, "parallelism": 2})
    manifest["spec"]["storage"] = {"secretRef": {"name": LATER_SECRET}}
    apply(plane, ns, manifest)
    looked = 0

    def ended_showing_nothing() -> bool:
        nonlocal looked
        shown = command_lines()
        assert not [line for line in shown if password in line or encode(password) in line], "in a command line"
        looked += 1
        phase = (get_study(plane, ns, name).get("status") or {}).get("phase")
        return phase in ("Succeeded", "Failed")

    wait_for("the study, its processes looked at", ended_showing_nothing, 420, every=0.2)
    assert looked > 5
    study = get_study(plane, ns, name)
    assert study["status"]["phase"] == "Succeeded", study["status"]

    # And a Secret whose URL cannot be used, password and all: the condition explains without quoting it.
    broken = f"postgresql+psycopg2://{awkward_database.name}:{encode(password)}@127.0.0.1:notaport/x"
    plane.kubectl("delete", "secret", "ftstudy-db", "-n", ns)
    plane.kubectl("create", "secret", "generic", "ftstudy-db", "-n", ns, f"--from-literal=url={broken}")
    apply(plane, ns, study_manifest("broken"))
    invalid = wait_for_condition(ops, "broken", "StorageReady", "StorageURLInvalid")
    assert "invalid literal for int()" in invalid["message"], invalid

    secret = plane.kubectl("get", "secret", LATER_SECRET, "-n", ns, "-o", "jsonpath={.data.url}").stdout
    assert encode(password) in base64.b64decode(secret).decode(), "the search below would find it"
    shown = {
        "the operator's log": ops.log(),
        "Events": plane.kubectl("get", "events", "-n", ns, "-o", "yaml").stdout,
        "the studies": plane.kubectl("get", "fts", "-n", ns, "-o", "yaml").stdout,
        "Jobs and pods": plane.kubectl("get", "jobs,pods", "-n", ns, "-o", "yaml").stdout,
        "describe": plane.kubectl("describe", "fts", "-n", ns).stdout,
    }
    for what, text in shown.items():
        assert password not in text and encode(password) not in text, what
    assert nodes.workdir.is_relative_to(tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]  # artifacts, trainer logs, operator logs
    assert any(p.name == "result.json" for p in files) and any(p.suffix == ".log" for p in files)
    leaking = [
        str(p) for p in files if password.encode() in p.read_bytes() or encode(password).encode() in p.read_bytes()
    ]
    assert not leaking, leaking
    no_tracebacks(ops)


def connections(url: str, application: str) -> int:
    """Sessions of ``application`` in PostgreSQL, counted over a connection of its own (no pool)."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"
            return int(connection.execute(sqlalchemy.text(query), {"name": application}).scalar_one())
    finally:
        engine.dispose()


def test_a_rotated_secrets_old_connection_pool_is_closed(
    control_plane: ControlPlane, cluster_namespace: str, crd_installed: None, private_database: PrivateDatabase
) -> None:
    """One reconcile loop (in this process, as the admin), its Secret's URL rotated between two passes: the pool of
    the old URL is closed, not left holding connections with the old password. The Secret is read again once
    secret_refresh_seconds have passed, not on every pass."""
    plane, ns, name = control_plane, cluster_namespace, "rotated"
    old, new = (f"{private_database.url}?application_name=ftstudy-{which}" for which in ("old", "new"))
    plane.kubectl("create", "secret", "generic", "ftstudy-db", "-n", ns, f"--from-literal=url={old}")
    apply(plane, ns, study_manifest(name))
    body = get_study(plane, ns, name)
    kube, refresh = Kube(load_config(str(plane.kubeconfig))), 3600.0
    settings = Settings(secret_refresh_seconds=refresh, policy=TrialPolicy.of(claims=["artifacts"]))
    reconciler = StudyReconciler(kube, ns, name, body["metadata"]["uid"], settings)
    try:
        reconciler.reconcile(body)
        assert reconciler.built is not None and connections(private_database.url, "ftstudy-old") >= 1
        data = base64.b64encode(new.encode()).decode()
        plane.kubectl(
            "patch", "secret", "ftstudy-db", "-n", ns, "--type=merge", "-p", json.dumps({"data": {"url": data}})
        )
        reconciler.reconcile(get_study(plane, ns, name))  # within the refresh: the Secret is not read again
        assert connections(private_database.url, "ftstudy-new") == 0
        assert connections(private_database.url, "ftstudy-old") >= 1
        reconciler.url_read_at -= refresh  # as if secret_refresh_seconds had passed since it was read
        reconciler.reconcile(get_study(plane, ns, name))
        assert connections(private_database.url, "ftstudy-new") >= 1
        assert connections(private_database.url, "ftstudy-old") == 0
    finally:
        reconciler.close()
    assert connections(private_database.url, "ftstudy-new") == 0, "the last user of a pool closes it"


def test_check_pod_refuses_what_the_api_servers_pod_security_admission_refuses(operators: Operators) -> None:
    """check_pod against the real thing: each pod built to break one `restricted` rule (tests/test_kube_units.py's
    BREAKING marked PSA) is refused by the API server's Pod Security admission in a namespace that enforces
    `restricted` (a server-side dry run), and by check_pod; the unbroken trial pod is admitted by both."""
    import copy

    from ftstudy.kube.policy import TrialPolicy, check_pod
    from tests.test_kube_units import BREAKING, pod_spec_of, study

    plane, ns = operators.plane, operators.namespace

    def admitted(pod_spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": ns}, "spec": pod_spec}
        return plane.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)

    clean = pod_spec_of(study().spec)
    assert check_pod(clean, TrialPolicy(), "db") == []
    assert admitted(clean).returncode == 0, admitted(clean).stderr
    checked = 0
    for change, words, psa in BREAKING:
        if not psa:
            continue
        broken = copy.deepcopy(clean)
        change(broken)
        assert any(words in problem for problem in check_pod(broken, TrialPolicy(), "db")), words
        result = admitted(broken)
        assert result.returncode != 0 and "violates PodSecurity" in result.stderr, (words, result.stderr)
        checked += 1
    assert checked >= 10
