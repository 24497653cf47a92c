"""Trials through a real Kueue (tests/cluster/kueue.py, its admission webhooks served): a study with
``trialTemplate.queueName`` submits each trial's Job suspended to its LocalQueue, and Kueue admits them within the
ClusterQueue's quota. Two studies share one ClusterQueue while a higher-priority Job preempts a trial, which resumes
from its checkpoint (issue 23's goal). A study whose LocalQueue does not exist, or goes, or never admits, says so."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from ftstudy.kube import rbac
from tests.cluster.control_plane import ControlPlane
from tests.cluster.gpu_nodes import GpuNodes
from tests.cluster.kueue import Kueue, cluster_queue, local_queue, priority_class, resource_flavor
from tests.cluster.kueue import build as kueue_build
from tests.test_hardening import held_after, study_events, wait_for_condition
from tests.test_operator import (
    SA,
    Operators,
    apply,
    diagnosis,
    get_study,
    jobs,
    optuna_trials,
    study_manifest,
    wait_for,
    wait_for_phase,
)
from tests.test_preemption import same_training


@pytest.fixture(scope="module")
def kueue(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    manager = Kueue(control_plane, tmp_path_factory.mktemp("kueue")).start()
    yield manager
    manager.stop()


@pytest.fixture
def queued_operators(operators: Operators, kueue: Kueue) -> Operators:
    """The operator's ServiceAccount may also read LocalQueues (the chart's kueue.enabled)."""
    ns = operators.namespace
    manifests = [rbac.role("ftstudy-operator-kueue", ns, rbac.KUEUE_RULES),
                 rbac.role_binding("ftstudy-operator-kueue", ns, SA, ns)]  # fmt: skip
    operators.plane.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in manifests))
    return operators


def most_at_once(runs: list[dict[str, Any]]) -> int:
    """The most trainer processes that ran at the same moment."""
    moments = sorted([(r["started"], 1) for r in runs] + [(r["ended"], -1) for r in runs if r["ended"] is not None])
    running = peak = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    return peak


def test_a_study_whose_local_queue_does_not_exist_launches_nothing_and_says_so(
    queued_operators: Operators, kueue: Kueue
) -> None:
    ops, plane, ns = queued_operators, queued_operators.plane, queued_operators.namespace
    ops.start()
    apply(plane, ns, study_manifest("unqueued", trialTemplate={"queueName": "nope"}))
    found = wait_for_condition(ops, "unqueued", "Ready", "QueueNotFound")
    assert "LocalQueue nope does not exist" in found["message"], found
    assert study_events(ops, "unqueued", "QueueNotFound")
    assert not jobs(plane, ns), "no Job until the queue exists"


def test_a_trial_kueue_never_admits_fails_after_budget_pending_seconds_naming_its_queue(
    queued_operators: Operators, kueue: Kueue, postgres_url: str
) -> None:
    """A ClusterQueue with no GPU quota, and one with no GPU flavor at all: Kueue keeps each trial's Job suspended for
    good, and the study said "queued" for ever. After budget.pendingSeconds each trial fails with its LocalQueue
    named and Kueue's own reason, read off its Workload, without a retry. A trialTemplate.workloadPriorityClassName,
    which the trial policy allows, is the priority Kueue gives the Workload."""
    ops, plane, ns = queued_operators, queued_operators.plane, queued_operators.namespace
    high = f"high-{ns}"
    kueue.apply(resource_flavor(), cluster_queue(f"none-{ns}", 0), local_queue(ns, "starved", f"none-{ns}"),
                cluster_queue(f"cpu-{ns}", None), local_queue(ns, "cpu-only", f"cpu-{ns}"),
                priority_class(high, 500))  # fmt: skip
    ops.extra_args += ["--trial-workload-priority-class", high]
    ops.start()
    budget = {"maxTrials": 1, "parallelism": 1, "maxFailedTrials": 1, "retriesPerTrial": 1, "pendingSeconds": 8}
    template = {"queueName": "starved", "workloadPriorityClassName": high}
    apply(plane, ns, study_manifest("starved", trialTemplate=template, budget=budget))
    apply(plane, ns, study_manifest("cpu-only", trialTemplate={"queueName": "cpu-only"}, budget=budget))

    def workload_priorities() -> list[Any]:
        listed = plane.kubectl("get", "workloads.kueue.x-k8s.io", "-n", ns, "-o", "json", check=False)
        items = json.loads(listed.stdout)["items"] if listed.returncode == 0 else []
        return [w["spec"].get("priority") for w in items]

    assert sorted(wait_for("Kueue's Workloads for the trials", lambda: len(workload_priorities()) == 2 and
                           workload_priorities(), 60)) == [0, 500]  # fmt: skip
    for name, says in (
        ("starved", "insufficient quota for nvidia.com/gpu"),
        ("cpu-only", "resource nvidia.com/gpu unavailable in ClusterQueue"),
    ):
        study = wait_for_phase(ops, name, ("Succeeded", "Failed"), 180)
        assert study["status"]["phase"] == "Failed", study["status"]
        reason = study["status"]["lastFailure"]["reason"]
        words = (
            f"its Job did not start within budget.pendingSeconds (8 s): Kueue did not admit its Job: LocalQueue {name}"
        )
        assert words in reason and "; Kueue says: couldn't assign flavors" in reason and says in reason, reason
        (trial,) = optuna_trials(postgres_url, ns, name)
        assert trial.system_attrs["ftstudy:attempts"] == 1, "not retried: it would wait the same way"
        assert any(words in e["message"] for e in study_events(ops, name, "TrialFailed"))


def queued_for_good(ops: Operators, kueue: Kueue, queue: str, name: str) -> None:
    """Study ``name`` of one trial, its Job waiting in LocalQueue ``queue``, whose ClusterQueue has no GPU quota:
    it stays queued until something happens to the queue."""
    ns = ops.namespace
    kueue.apply(resource_flavor(), cluster_queue(f"{queue}-{ns}", 0), local_queue(ns, queue, f"{queue}-{ns}"))
    ops.start()
    budget = {"maxTrials": 1, "parallelism": 1, "pendingSeconds": 600}
    apply(ops.plane, ns, study_manifest(name, trialTemplate={"queueName": queue}, budget=budget))
    wait_for_condition(ops, name, "QueueAvailable", "QueueExists", timeout=120)
    wait_for("the trial queued", lambda: ((get_study(ops.plane, ns, name).get("status") or {}).get("trials")
                                         or {}).get("queued"), 120)  # fmt: skip


def test_trials_left_suspended_when_their_local_queue_goes_are_named_in_a_condition(
    queued_operators: Operators, kueue: Kueue
) -> None:
    """A LocalQueue deleted mid-study (or Kueue uninstalled) leaves the trials' Jobs suspended with nothing to admit
    them: the study says so and names them (QueueAvailable False, a Warning Event) instead of counting them as
    merely queued until budget.pendingSeconds."""
    ops, plane, ns = queued_operators, queued_operators.plane, queued_operators.namespace
    queued_for_good(ops, kueue, "doomed", "orphaned")
    plane.kubectl("delete", "localqueue", "doomed", "-n", ns)
    found = wait_for_condition(ops, "orphaned", "QueueAvailable", "QueueNotFound", timeout=90)
    assert "LocalQueue doomed does not exist" in found["message"], found
    assert "left suspended, which nothing will admit: orphaned-t0-a1" in found["message"], found
    assert study_events(ops, "orphaned", "QueueNotFound")


def urgent_job(namespace: str, queue: str) -> dict[str, Any]:
    """Someone else's work, of a higher WorkloadPriorityClass, asking for the queue's one GPU (a few seconds)."""
    security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
    container = {"name": "work", "image": "ftstudy/trainer:test", "command": [sys.executable, "-c",
                 "import time; time.sleep(3)"], "resources": {"limits": {"nvidia.com/gpu": 1}},
                 "securityContext": security}  # fmt: skip
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "urgent", "namespace": namespace,
                         "labels": {"kueue.x-k8s.io/queue-name": queue, "kueue.x-k8s.io/priority-class": "urgent"}},
            "spec": {"suspend": True, "backoffLimit": 0,
                     "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}}  # fmt: skip


def scheduling_priority_class(name: str, value: int) -> dict[str, Any]:
    """A pod PriorityClass: Kueue takes a Workload's priority from it when no WorkloadPriorityClass label is set."""
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
            "value": value, "preemptionPolicy": "Never"}  # fmt: skip


@pytest.mark.timeout(900)
def test_two_studies_and_a_preempting_job_share_a_two_gpu_cluster_queue_each_trial_once_gpu_seconds_as_admitted(
    queued_operators: Operators,
    kueue: Kueue,
    gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes],
    postgres_url: str,
    trainer_cmd: list[str],
    tmp_path: Path,
) -> None:
    """Issue 23's goal. One ClusterQueue of 2 GPUs, two LocalQueues in it: study ``held`` (one trial, held after
    step 7 of 15 until a SIGTERM) in ``team-a``; study ``busy`` (three trials, two at a time, PriorityClass
    ``ftstudy-batch-low``, which Kueue takes as its Workloads' priority) in ``team-b``. Kueue admits two trials at a
    time; the third waits suspended, counted as queued. Then someone else's Job of a higher WorkloadPriorityClass
    asks for a GPU: Kueue evicts the lowest-priority Workload, held's trial, whose trainer checkpoints on the
    SIGTERM and exits "preempted"; the Job waits in the queue again (busy's trials, of higher priority, go first) and
    its new pod resumes after step 7. Every trial ends on its one attempt (no retry spent on the preemption), the
    steps lost are measured, and each study's GPU-seconds are the time its trainers held a GPU (the pods' lifetimes
    on the node), not the time its trials waited in the queue, before or after the preemption.

    Two GPUs on the node as in the queue: Kueue hands the quota over once the evicted pod is terminating, and the
    scheduler then places the urgent pod only when that pod (still checkpointing) is gone."""
    ops, plane, ns = queued_operators, queued_operators.plane, queued_operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    cq = f"shared-{ns}"
    plane.kubectl("apply", "-f", "-", input=json.dumps(scheduling_priority_class("ftstudy-batch-low", 10)))
    kueue.apply(resource_flavor(), cluster_queue(cq, 2), local_queue(ns, "team-a", cq), local_queue(ns, "team-b", cq),
                priority_class("urgent", 1000))  # fmt: skip
    ops.extra_args += ["--trial-priority-class", "ftstudy-batch-low"]
    ops.start()
    everything = {"policy": "topK", "k": 3, "mode": "online", "auditFraction": 0.0}  # every trial to its end
    apply(plane, ns, study_manifest("held", tmp_path / "artifacts", promotion=everything,
                                    trialTemplate={"queueName": "team-a", "env": held_after(7)},
                                    budget={"maxTrials": 1, "parallelism": 1}))  # fmt: skip

    def runs(prefix: str) -> list[dict[str, Any]]:
        return [r for r in nodes.runs if r["namespace"] == ns and r["pod"].startswith(prefix)]

    def log(run: dict[str, Any]) -> str:
        return nodes.log(ns, run["pod"])

    wait_for("held's trial held after step 7", lambda: runs("held-t") and "holding for" in log(runs("held-t")[0]),
             300, diagnosis(ops, "held", nodes))  # fmt: skip
    apply(plane, ns, study_manifest("busy", tmp_path / "artifacts", promotion=everything,
                                    trialTemplate={"queueName": "team-b", "priorityClassName": "ftstudy-batch-low"},
                                    budget={"maxTrials": 3, "parallelism": 2}))  # fmt: skip

    def one_queued() -> dict[str, Any] | None:
        trials = (get_study(plane, ns, "busy").get("status") or {}).get("trials") or {}
        return trials if trials.get("queued", 0) >= 1 else None

    seen = wait_for("one of busy's trials queued by Kueue", one_queued, 240, diagnosis(ops, "busy", nodes))
    assert seen.get("running", 0) <= 1, ("Kueue admits one of busy's trials beside held's", seen)
    submitted = jobs(plane, ns)
    assert all(j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] in ("team-a", "team-b") for j in submitted)
    assert any(j["spec"].get("suspend") for j in submitted), "the queued trial's Job waits suspended, not Pending"
    kueue.apply(urgent_job(ns, "team-b"))
    for name in ("held", "busy"):
        study = wait_for_phase(ops, name, ("Succeeded", "Failed"), 420, nodes)
        assert study["status"]["phase"] == "Succeeded", study["status"]
        assert study["status"]["trials"].get("queued", 0) == 0
        trials = optuna_trials(postgres_url, ns, name)
        assert [(t.state.name, t.system_attrs["ftstudy:attempts"]) for t in trials] == [("COMPLETE", 1)] * len(trials)
        admitted = study_events(ops, name, "TrialAdmitted")
        assert len(admitted) == len(trials) and all("in LocalQueue team-" in e["message"] for e in admitted)
        # a Job seen waiting is told once (one Kueue admits before the operator sees it waiting is not)
        queued = [e["message"] for e in study_events(ops, name, "TrialQueued")]
        assert all(re.fullmatch(r"trial \d+: waiting in LocalQueue team-[ab] for Kueue to admit it", m) for m in queued)
        assert queued or name == "held", "busy waited (one_queued above), and was told so"
        launched = study_events(ops, name, "TrialLaunched")
        assert launched and all("queued in LocalQueue team-" in e["message"] for e in launched), launched
    assert most_at_once(runs("held-t") + runs("busy-t")) <= 2, "never more trials at once than the queue's GPUs"

    # the preemption: checkpointed at step 7 on the SIGTERM, resumed after it, once the urgent Job had run. Kueue may
    # preempt held's re-admitted Job again before its trainer trains a step (busy's trials rank higher): such pods
    # in between lose nothing, and the last one resumes from the step-7 checkpoint all the same
    first, *between, last = runs("held-t")
    (urgent,) = runs("urgent-")
    assert first["exit_code"] == 75 and "preempted after step 7: checkpointed" in log(first), (first, log(first))
    assert first["ended"] <= urgent["started"] and urgent["ended"] <= last["started"], (first, urgent, last)
    assert all(" train loss " not in log(run) for run in between), [log(run)[-2000:] for run in between]
    # the steps lost: those the first pod had trained (7: it was held after step 7 when the SIGTERM came) less
    # those the last did not train again (it starts after the step its checkpoint holds)
    resumed = re.search(r"resumed from the checkpoint written when this trial was preempted at step (\d+)", log(last))
    assert resumed is not None and "step 15/15" in log(last), log(last)
    lost = 7 - int(resumed[1])
    assert lost == 0, log(last)
    told = study_events(ops, "held", "TrialPreempted")
    assert told and "preempted after step 7" in told[0]["message"], [e["message"] for e in told]
    assert "Kueue: Preempted to accommodate a workload" in told[0]["message"], [
        e["message"] for e in told
    ]  # Kueue's reason, from its Event

    # GPU-seconds: each study's, from its status, against its trainers' time on the node (a few seconds apart per
    # pod: admission to the pod's start, the final report to the process's exit)
    for name in ("held", "busy"):
        spent = get_study(plane, ns, name)["status"]["gpuSeconds"]["spent"]
        pods = runs(f"{name}-t")
        on_node = sum(r["ended"] - r["started"] for r in pods)
        print(f"{name}: GPU-seconds {spent:.1f}; its trainers on the node {on_node:.1f} s in {len(pods)} pods")
        assert abs(spent - on_node) <= 6 * len(pods), (name, spent, on_node)
    (trial,) = optuna_trials(postgres_url, ns, "held")
    # and it ends exactly as the same trial trained here without a stop: the same loss at every step, adapter and
    # scores (its trainer pods and this run are the same program on the same machine)
    (job,) = [j for j in jobs(plane, ns) if j["metadata"]["name"] == "held-t0-a1"]
    same_training(*uninterrupted(trainer_cmd, job, trial.params, tmp_path / "artifacts", tmp_path / "whole"))
    waited_again, _ = trial.system_attrs["ftstudy:requeued"]
    in_between = sum(r["ended"] - r["started"] for r in between)
    assert waited_again > last["started"] - first["ended"] - in_between - 5 * (1 + len(between)), trial
    print(f"held: preempted after step 7 of 15 ({len(told)} TrialPreempted, {len(between)} pod(s) preempted again "
          f"before a step), resumed after step {resumed[1]}: {lost} steps lost; it waited {waited_again:.1f} s in "
          f"the queue after its eviction (not GPU time); the Event: {told[0]['message']}")  # fmt: skip


def uninterrupted(
    trainer_cmd: list[str], job: dict[str, Any], params: dict[str, Any], volume: Path, out: Path
) -> tuple[Path, Path]:
    """The trial of ``job`` trained again here from start to end: its trainer's arguments with its output and data
    moved under ``out`` and its hyperparameters given (a Job's trainer asks the study for them). Returns the Job's
    output directory on this machine (``volume``: the host directory of its /artifacts claim) and this run's."""
    args = list(job["spec"]["template"]["spec"]["containers"][0]["args"])
    value = {flag: args[args.index(flag) + 1] for flag in ("--output", "--data", "--study", "--trial", "--params")
             if flag in args}  # fmt: skip
    for flag in ("--study", "--trial", "--params", "--output", "--data"):
        if flag in args:
            del args[args.index(flag) : args.index(flag) + 2]
    fixed = json.loads(value.get("--params", "{}"))
    args += ["--output", str(out / "run"), "--data", str(out / "data"), "--params", json.dumps(fixed | params)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTSTUDY_")}  # no study to report to
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # as the trials' template
    done = subprocess.run([*trainer_cmd, *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return volume / PurePosixPath(value["--output"]).relative_to("/artifacts"), out / "run"


def test_a_study_naming_no_queue_is_queued_by_a_local_queue_named_default_and_counts_gpu_seconds_from_admission(
    queued_operators: Operators,
    kueue: Kueue,
    gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes],
    postgres_url: str,
) -> None:
    """Kueue's LocalQueueDefaulting: in a namespace with a LocalQueue named ``default``, Kueue's webhook queues every
    Job that names no queue, the study's trials and its checkpoint-cleanup Jobs included. The study runs through that
    queue as through one it named: each trial's admission is recorded (GPU-seconds count from it, not from the
    Job's creation; before, only a study with trialTemplate.queueName recorded them) and told as TrialAdmitted
    naming the queue, and the cleanups complete."""
    ops, plane, ns = queued_operators, queued_operators.plane, queued_operators.namespace
    kueue.apply(resource_flavor(), cluster_queue(f"dflt-{ns}", 2), local_queue(ns, "default", f"dflt-{ns}"))
    nodes = gpu_nodes_factory({"gpu-a": 2})
    ops.start()
    promotion = {"policy": "topK", "k": 1, "mode": "screen", "auditFraction": 0}
    apply(plane, ns, study_manifest("plain", promotion=promotion, budget={"maxTrials": 3, "parallelism": 2}))
    study = wait_for_phase(ops, "plain", ("Succeeded", "Failed"), 240, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    labelled = {j["metadata"]["name"]: (j["metadata"].get("labels") or {}).get("kueue.x-k8s.io/queue-name")
                for j in jobs(plane, ns)}  # fmt: skip
    assert labelled and set(labelled.values()) == {"default"}, labelled
    assert any(name.endswith("-forget") for name in labelled), "a pruned trial's cleanup went through the queue too"
    trials = optuna_trials(postgres_url, ns, "plain")
    assert all("ftstudy:admitted_at" in t.system_attrs for t in trials), [t.system_attrs for t in trials]
    admitted = study_events(ops, "plain", "TrialAdmitted")
    assert len(admitted) == len(trials), admitted
    assert all("in LocalQueue default" in e["message"] for e in admitted), admitted
    queued = study_events(ops, "plain", "TrialQueued")
    assert all("waiting in LocalQueue default for Kueue" in e["message"] for e in queued), queued


def test_kueue_uninstalled_mid_study_names_the_jobs_left_suspended(queued_operators: Operators, kueue: Kueue) -> None:
    """Kueue uninstalled mid-study (its LocalQueue CRD deleted, so the API server no longer serves the kind): a 404
    for the kind, which the real API server words differently from a 404 for a missing LocalQueue, and the study
    says which (QueueAvailable False, reason KueueNotInstalled, a Warning Event) and names the Jobs left suspended.
    Last in the module: the CRD is restored after it, but nothing here relies on Kueue's manager afterwards."""
    ops, plane = queued_operators, queued_operators.plane
    queued_for_good(ops, kueue, "uninstalled", "stranded")
    crd = str(kueue_build() / "config" / "crd" / "kueue.x-k8s.io_localqueues.yaml")
    try:
        plane.kubectl("delete", "-f", crd, "--wait=true", "--timeout=60s")
        found = wait_for_condition(ops, "stranded", "QueueAvailable", "KueueNotInstalled", timeout=90)
        assert "serves no kueue.x-k8s.io/v1beta2 LocalQueues" in found["message"], found
        assert "left suspended, which nothing will admit: stranded-t0-a1" in found["message"], found
        assert study_events(ops, "stranded", "KueueNotInstalled")
    finally:
        plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", crd)
        plane.kubectl("wait", "--for=condition=Established", "--timeout=120s", "-f", crd)
