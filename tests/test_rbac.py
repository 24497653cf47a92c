"""The operator's RBAC, derived from what it actually calls: the API server's audit log of every request its
ServiceAccount makes while the operator goes through every path that needs a permission.

The paths: a study run to the end with cancellations and continues, its trials reporting over HTTPS as the chart
sets up by default (Jobs created, annotated, deleted; pods and Jobs listed; the Secret read; status patched; Events
posted; the report TLS Secret filled; each report's token reviewed and its pod listed), a Job that exists but is
not the study's (read before refusing it), a Job whose pod is never created (its FailedCreate Events listed), a
study with ``cleanup.deleteStudyRecords`` deleted (kopf's finalizer), and leader election. Every rule of
``ftstudy.kube.rbac`` must be used by one of them, or be on the short list below with the reason it is granted
anyway; nothing the operator asks is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ftstudy.kube import rbac
from tests.cluster.gpu_nodes import GpuNodes
from tests.test_operator import (
    REPORT_TLS_SECRET,
    SA,
    SECRET,
    Operators,
    apply,
    diagnosis,
    jobs,
    study_manifest,
    wait_for,
    wait_for_phase,
)

# Granted though no request shows it, each for a reason the audit log cannot see.
NOT_A_REQUEST = {
    # An authorization check, not a request: the OwnerReferencesPermissionEnforcement admission plugin (on in this
    # control plane, as in many distributions) lets only a user who may update the owner's finalizers create a Job
    # whose owner reference blocks the owner's deletion.
    ("ftstudy.io", "finetunestudies/finalizers", "update"),
}

Permission = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def granted(rules: list[dict[str, object]]) -> set[Permission]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]  # type: ignore[attr-defined]
        for resource in rule["resources"]  # type: ignore[attr-defined]
        for verb in rule["verbs"]  # type: ignore[attr-defined]
    }


def used(events: list[dict[str, object]]) -> tuple[set[Permission], list[str]]:
    """What was asked, and what of it was refused."""
    asked, refused = set(), []
    for event in events:
        ref = event.get("objectRef")
        if not isinstance(ref, dict):
            continue  # a non-resource URL (/api, /version: discovery), open to every authenticated user
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        permission = (ref.get("apiGroup", ""), resource, str(event["verb"]))
        asked.add(permission)
        status = event.get("responseStatus") or {}
        assert isinstance(status, dict)
        if status.get("code") == 403:
            refused.append(f"{permission}: {status.get('message')}")
    return asked, refused


def test_every_rule_the_operator_is_granted_is_one_it_uses(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes]
) -> None:
    ops, plane, ns = operators, operators.plane, operators.namespace
    ops.extra_args = ["--stuck-seconds", "4"]
    undo = ops.enable_reports()  # the chart's default: trials report over HTTPS (TokenReviews, the TLS Secret)
    nodes = gpu_nodes_factory({"gpu-a": 2})
    foreign = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "rbac-t0-a1"},
               "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [
                   {"name": "c", "image": "busybox", "securityContext": {
                       "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                       "seccompProfile": {"type": "RuntimeDefault"}}}]}}}}  # fmt: skip
    apply(plane, ns, foreign)
    ops.start()
    manifest = study_manifest("rbac", budget={"maxTrials": 3, "parallelism": 2}, cleanup={"deleteStudyRecords": True})
    manifest["spec"]["promotion"] = {"policy": "topK", "k": 1, "mode": "online", "auditFraction": 0.0}
    apply(plane, ns, manifest)
    apply(plane, ns, study_manifest("no-class", trialTemplate={"priorityClassName": "no-such-class"},
                                    budget={"maxTrials": 1, "parallelism": 1, "maxFailedTrials": 1}))  # fmt: skip

    def conflict() -> bool:
        study = json.loads(plane.kubectl("get", "fts", "rbac", "-n", ns, "-o", "json").stdout)
        return any(c.get("reason") == "JobConflict" for c in (study.get("status") or {}).get("conditions") or [])

    wait_for("the foreign Job refused", conflict, 60, diagnosis(ops, "rbac", nodes))
    plane.kubectl("delete", "job", "rbac-t0-a1", "-n", ns, "--wait=true")
    assert wait_for_phase(ops, "no-class", ("Failed",), 120, nodes)
    study = wait_for_phase(ops, "rbac", ("Succeeded", "Failed"), 420, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert study["status"]["trials"]["cancelled"] >= 1 and study["status"]["trials"]["completed"] >= 1
    plane.kubectl("delete", "fts", "rbac", "-n", ns, "--wait=true", "--timeout=60s")  # through kopf's finalizer
    assert "deleted the Optuna records" in ops.log()
    ops.stop_all()  # a clean stop releases the Lease (update)
    wait_for("no Job left", lambda: not [j for j in jobs(plane, ns) if j["metadata"]["name"].startswith("rbac")], 60)

    undo()
    requests = plane.requests_by(f"system:serviceaccount:{ns}:{SA}")
    asked, refused = used(requests)
    # Jobs and pods are read only with a label selector the API server applies: the operator never streams others
    for resource in ("jobs", "pods"):
        reads = [str(e.get("requestURI")) for e in requests
                 if (e.get("objectRef") or {}).get("resource") == resource and e.get("verb") in ("list", "watch")]  # type: ignore[union-attr]  # fmt: skip
        assert any("watch=true" in uri for uri in reads), (resource, reads)
        assert all("labelSelector=" in uri for uri in reads), [uri for uri in reads if "labelSelector=" not in uri]
    assert not refused, refused
    rules = granted(rbac.rules([SECRET])) | granted(rbac.LEADER_ELECTION_RULES)
    rules |= granted(rbac.report_tls_rules(REPORT_TLS_SECRET)) | granted(rbac.TOKEN_REVIEW_RULES)
    assert asked <= rules, f"asked beyond its rules: {sorted(asked - rules)}"
    unused = rules - asked - NOT_A_REQUEST
    assert not unused, f"granted but never used: {sorted(unused)}; drop them from ftstudy.kube.rbac and the chart"
