"""What the operator may do, and nothing more: the rules of its Role in each watched namespace.

One list, used by the tests (the operator runs under a ServiceAccount bound to exactly these rules) and checked
against the Helm chart's Role, so the chart cannot drift into granting more, or less, than the code needs. Each rule
is one the operator was seen to use: tests/test_rbac.py compares them with the API server's audit log of every
request the operator makes on all its paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

RULES: list[dict[str, Any]] = [  # the Secret rule's resourceNames are the trial policy's: ``rules`` adds them
    # the studies: listed and watched by kopf, which patches the cleanup finalizer in and out
    {"apiGroups": ["ftstudy.io"], "resources": ["finetunestudies"], "verbs": ["list", "watch", "patch"]},
    # the status, written by the reconcile loop
    {"apiGroups": ["ftstudy.io"], "resources": ["finetunestudies/status"], "verbs": ["patch"]},
    # owner references with blockOwnerDeletion need update on the owner's finalizers subresource (an authorization
    # check of the OwnerReferencesPermissionEnforcement admission plugin, not a request)
    {"apiGroups": ["ftstudy.io"], "resources": ["finetunestudies/finalizers"], "verbs": ["update"]},
    # one Job per trial attempt: created, listed, read before adopting one that exists, annotated with the decision,
    # deleted on cancel; watched (ftstudy.kube.watch_cache), so that a Job that ends wakes its study's loop and
    # passes read them without a list each
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    # pods are listed and watched (ftstudy.kube.watch_cache), for exit codes, why a pod cannot start, and which pod
    # a trainer's token is bound to; never read one by one
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    # the study's storage URL; read-only, and only the Secrets the trial policy allows (storageSecrets): the
    # operator passes the policy before it reads one, and the API server refuses it any other
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": []},
    # Events on the studies (ours and kopf's); the Job controller's FailedCreate Events, when a pod never appears
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list"]},
]


def rules(storage_secrets: Iterable[str]) -> list[dict[str, Any]]:
    """The operator's rules in a watched namespace, its Secret rule limited to ``storage_secrets`` (the trial
    policy's ``--storage-secret``, Helm's ``trialPolicy.storageSecrets``), sorted and once each as the chart writes
    them."""
    names = sorted(set(storage_secrets))
    return [{**rule, "resourceNames": names} if "resourceNames" in rule else dict(rule) for rule in RULES]


# In the operator's own namespace: leader election.
LEADER_ELECTION_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
]


# Cluster-wide, with --report-url: each trial's report is authenticated by a TokenReview (its token's pod).
TOKEN_REVIEW_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
]


# In each watched namespace, with the chart's kueue.enabled: a study's trialTemplate.queueName is looked up before
# any Job is submitted to it, so that a missing LocalQueue is a condition that names it, not Jobs suspended forever;
# and a trial Kueue never admitted fails with Kueue's own reason, read off its Job's Workload.
KUEUE_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["localqueues"], "verbs": ["get"]},
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["list"]},
]


def database_password_rules(secret: str) -> list[dict[str, Any]]:
    """In the operator's own namespace, with --database-password-secret (the chart's bundled PostgreSQL without a
    given password): the Secret whose password the operator generates once (``ftstudy.kube.db_password``)."""
    return [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "update"], "resourceNames": [secret]}]


def report_tls_rules(secret: str, external: bool = False) -> list[dict[str, Any]]:
    """In the operator's own namespace, with --report-url: the report endpoint's CA and certificate, kept in one
    Secret the chart creates empty (the operator fills and renews it, and creates no Secret); ``external``
    (--report-tls-external: cert-manager writes it), read only."""
    verbs = ["get"] if external else ["get", "update"]
    return [{"apiGroups": [""], "resources": ["secrets"], "verbs": verbs, "resourceNames": [secret]}]


def report_manifests(namespace: str, service_account: str, tls_secret: str, external: bool = False
                     ) -> list[dict[str, Any]]:  # fmt: skip
    """What ``--report-url`` needs granted, as manifests for an operator run outside the chart (the tests' and the
    benches'; the chart's templates grant the same): its TLS Secret by name, and TokenReviews (cluster-wide, so the
    ClusterRole and its binding are named after the namespace)."""
    cluster_name = f"ftstudy-reports-{namespace}"
    return [
        role("ftstudy-operator-report-tls", namespace, report_tls_rules(tls_secret, external)),
        role_binding("ftstudy-operator-report-tls", namespace, service_account, namespace),
        cluster_role(cluster_name, TOKEN_REVIEW_RULES),
        cluster_role_binding(cluster_name, service_account, namespace),
    ]


def cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
            "rules": rules}  # fmt: skip


def cluster_role_binding(name: str, service_account: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }


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
