"""Trials through a real Kueue (tests/cluster/kueue.py): a study with ``trialTemplate.queueName`` submits each
trial's Job suspended to its LocalQueue, and Kueue admits them within the ClusterQueue's quota, whatever the nodes
could hold. A study whose LocalQueue does not exist gets a condition naming it, and no Job."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ftstudy.kube import rbac
from tests.cluster.control_plane import ControlPlane
from tests.cluster.gpu_nodes import GpuNodes
from tests.cluster.kueue import Kueue, cluster_queue, local_queue, resource_flavor
from tests.test_hardening import study_events, wait_for_condition
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
