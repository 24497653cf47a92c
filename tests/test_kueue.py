"""Trials through a real Kueue (tests/cluster/kueue.py): a study with ``trialTemplate.queueName`` submits each
trial's Job suspended to its LocalQueue, and Kueue admits them within the ClusterQueue's quota, whatever the nodes
could hold. A study whose LocalQueue does not exist gets a condition naming it, and no Job."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ftstudy.kube import rbac
from tests.cluster.control_plane import ControlPlane
from tests.cluster.gpu_nodes import GpuNodes
from tests.cluster.kueue import Kueue, cluster_queue, local_queue, priority_class, resource_flavor
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


@pytest.mark.timeout(900)
def test_a_study_through_kueue_runs_no_more_trials_at_once_than_its_cluster_queue_admits(
    queued_operators: Operators,
    kueue: Kueue,
    gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes],
    postgres_url: str,
    tmp_path: Path,
) -> None:
    """Four GPUs on the node, parallelism 4, a ClusterQueue of 2 GPUs: Kueue admits two trials at a time; the others
    wait suspended and the status counts them as queued, not running. Every trial completes on its first attempt."""
    ops, plane, ns = queued_operators, queued_operators.plane, queued_operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 4})
    kueue.apply(resource_flavor(), cluster_queue(f"gpus-{ns}", 2), local_queue(ns, "trials", f"gpus-{ns}"))
    ops.start()
    apply(plane, ns, study_manifest("queued", tmp_path / "artifacts", trialTemplate={"queueName": "trials"},
                                    budget={"maxTrials": 4, "parallelism": 4}))  # fmt: skip

    def some_queued() -> dict[str, Any] | None:
        trials = (get_study(plane, ns, "queued").get("status") or {}).get("trials") or {}
        return trials if trials.get("queued", 0) >= 1 and trials.get("running", 0) <= 2 else None

    seen = wait_for("trials queued by Kueue", some_queued, 240, diagnosis(ops, "queued", nodes))
    assert seen["running"] + seen["queued"] <= 4, seen
    submitted = jobs(plane, ns)
    assert all(j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "trials" for j in submitted), submitted
    assert kueue.workloads(ns), "Kueue made a Workload for each Job"
    study = wait_for_phase(ops, "queued", ("Succeeded", "Failed"), 600, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert study["status"]["trials"].get("queued", 0) == 0
    runs = [r for r in nodes.runs if r["namespace"] == ns and r["pod"].startswith("queued-t")]
    assert most_at_once(runs) <= 2, runs
    trials = optuna_trials(postgres_url, ns, "queued")
    assert [t.system_attrs["ftstudy:attempts"] for t in trials] == [1] * 4, "no retry"
    waited = [t.system_attrs["ftstudy:admitted_at"] - t.datetime_start.timestamp() for t in trials]
    assert min(waited) >= -1 and max(waited) > 1, f"GPU-seconds count from admission; seconds queued: {waited}"
    admitted = study_events(ops, "queued", "TrialAdmitted")
    assert len(admitted) == 4 and all("in LocalQueue trials" in e["message"] for e in admitted), admitted
    launched = study_events(ops, "queued", "TrialLaunched")
    assert launched and all("queued in LocalQueue trials" in e["message"] for e in launched), launched


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
    """A ClusterQueue with no GPU quota: Kueue keeps the trial's Job suspended for good, and the study said "queued"
    for ever. After budget.pendingSeconds the trial fails with its LocalQueue named, without a retry."""
    ops, plane, ns = queued_operators, queued_operators.plane, queued_operators.namespace
    kueue.apply(resource_flavor(), cluster_queue(f"none-{ns}", 0), local_queue(ns, "starved", f"none-{ns}"))
    ops.start()
    budget = {"maxTrials": 1, "parallelism": 1, "maxFailedTrials": 1, "retriesPerTrial": 1, "pendingSeconds": 8}
    apply(plane, ns, study_manifest("starved", trialTemplate={"queueName": "starved"}, budget=budget))
    study = wait_for_phase(ops, "starved", ("Succeeded", "Failed"), 180)
    assert study["status"]["phase"] == "Failed", study["status"]
    words = "its Job did not start within budget.pendingSeconds (8 s): Kueue did not admit its Job: LocalQueue starved"
    assert words in study["status"]["lastFailure"]["reason"], study["status"]
    (trial,) = optuna_trials(postgres_url, ns, "starved")
    assert trial.system_attrs["ftstudy:attempts"] == 1, "not retried: it would wait the same way"
    assert any(words in e["message"] for e in study_events(ops, "starved", "TrialFailed"))


def test_trials_left_suspended_when_their_local_queue_goes_are_named_in_a_condition(
    queued_operators: Operators, kueue: Kueue
) -> None:
    """A LocalQueue deleted mid-study (or Kueue uninstalled) leaves the trials' Jobs suspended with nothing to admit
    them: the study says so and names them (QueueAvailable False, a Warning Event) instead of counting them as
    merely queued until budget.pendingSeconds."""
    ops, plane, ns = queued_operators, queued_operators.plane, queued_operators.namespace
    kueue.apply(resource_flavor(), cluster_queue(f"full-{ns}", 0), local_queue(ns, "doomed", f"full-{ns}"))
    ops.start()
    budget = {"maxTrials": 1, "parallelism": 1, "pendingSeconds": 600}
    apply(plane, ns, study_manifest("orphaned", trialTemplate={"queueName": "doomed"}, budget=budget))
    wait_for_condition(ops, "orphaned", "QueueAvailable", "QueueExists", timeout=120)
    wait_for("the trial queued", lambda: ((get_study(plane, ns, "orphaned").get("status") or {}).get("trials")
                                         or {}).get("queued"), 120)  # fmt: skip
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


@pytest.mark.timeout(900)
def test_a_trial_preempted_by_kueue_for_urgent_work_resumes_from_its_checkpoint_and_spends_no_retry(
    queued_operators: Operators,
    kueue: Kueue,
    gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes],
    postgres_url: str,
    tmp_path: Path,
) -> None:
    """A ClusterQueue of one GPU: the study's trial holds it (held after step 7 of 15 by a fault point) when a Job
    of a higher WorkloadPriorityClass arrives. Kueue evicts the trial's Workload: its Job is suspended and its pod
    deleted; the trainer checkpoints on that SIGTERM and exits "preempted", which the Job ignores. The urgent Job
    runs, Kueue admits the trial's Job again, and its new pod resumes after step 7. One attempt, no retry, and the
    study says the trial was preempted."""
    ops, plane, ns = queued_operators, queued_operators.plane, queued_operators.namespace
    # One GPU on the node as in the queue: Kueue hands the quota over once the trial's pod is terminating, and the
    # scheduler then places the urgent pod only when that pod (still checkpointing) is gone.
    nodes = gpu_nodes_factory({"gpu-a": 1})
    cq = f"one-{ns}"
    kueue.apply(resource_flavor(), cluster_queue(cq, 1), local_queue(ns, "one", cq), priority_class("urgent", 1000))
    ops.start()
    held = {"queueName": "one", "env": held_after(7)}
    apply(plane, ns, study_manifest("bumped", tmp_path / "artifacts", trialTemplate=held,
                                    budget={"maxTrials": 1, "parallelism": 1}))  # fmt: skip

    def runs(prefix: str) -> list[dict[str, Any]]:
        return [r for r in nodes.runs if r["namespace"] == ns and r["pod"].startswith(prefix)]

    def log(run: dict[str, Any]) -> str:
        return nodes.log(ns, run["pod"])

    wait_for("the trial held after step 7", lambda: runs("bumped-t") and "holding for" in log(runs("bumped-t")[0]),
             300, diagnosis(ops, "bumped", nodes))  # fmt: skip
    kueue.apply(urgent_job(ns, "one"))
    study = wait_for_phase(ops, "bumped", ("Succeeded", "Failed"), 420, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    first, second = runs("bumped-t")
    (urgent,) = runs("urgent-")
    assert first["exit_code"] == 75 and "preempted after step 7: checkpointed" in log(first), (first, log(first))
    assert first["ended"] <= urgent["started"] and urgent["ended"] <= second["started"], (first, urgent, second)
    assert "resumed from the checkpoint written when this trial was preempted at step 7" in log(second)
    (trial,) = optuna_trials(postgres_url, ns, "bumped")
    assert trial.state.name == "COMPLETE" and trial.system_attrs["ftstudy:attempts"] == 1, trial
    told = study_events(ops, "bumped", "TrialPreempted")
    assert len(told) == 1 and "preempted after step 7" in told[0]["message"], told
    print(
        f"preempted after step 7 of 15; steps lost: 0 (the resumed run began at step 8); trainer runs: "
        f"{[(r['pod'], r['exit_code']) for r in runs('bumped-t')]}"
    )
