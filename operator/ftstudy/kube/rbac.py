"""What the operator may do, and nothing more: the rules of its Role in each watched namespace.

One list, used by the tests (the operator runs under a ServiceAccount bound to exactly these rules) and checked
against the Helm chart's Role, so the chart cannot drift into granting more, or less, than the code needs.
"""

from __future__ import annotations

from typing import Any

RULES: list[dict[str, Any]] = [
    # the studies: watched by kopf, status written by the reconcile loop, the cleanup finalizer patched by kopf
    {"apiGroups": ["ftstudy.io"], "resources": ["finetunestudies"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["ftstudy.io"], "resources": ["finetunestudies/status"], "verbs": ["get", "patch"]},
    # owner references with blockOwnerDeletion need update on the owner's finalizers subresource
    {"apiGroups": ["ftstudy.io"], "resources": ["finetunestudies/finalizers"], "verbs": ["update"]},
    # one Job per trial attempt: created, observed, annotated with the decision, deleted on cancel
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    # pods are only read, for exit codes and for why a pod cannot start
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    # the study's storage URL; read-only, and only in the namespaces the operator watches
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    # Events on the studies; and the Job controller's FailedCreate Events, read when a trial's pod never appears
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch", "list"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]

# In the operator's own namespace: leader election.
LEADER_ELECTION_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
]


def role(name: str, namespace: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": rules,
    }


def role_binding(name: str, namespace: str, service_account: str, service_account_namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": service_account_namespace}],
    }
