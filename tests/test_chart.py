"""The Helm chart (charts/ftstudy): linted and rendered by a real `helm` (built from Go modules by
scripts/helm-build.sh), its values refused by values.schema.json with readable messages, and installed into the real
control plane, where the operator, run as a process with the token of the chart's ServiceAccount, completes a study
and is refused what it must not do.

There is no container runtime here, so the chart's Deployment never runs: its pod is created (and so admitted by
the API server's PodSecurity admission under the `restricted` standard) and stays Pending. The test runs the same
`ftstudy operator` command as a local process instead, with the chart's RBAC as its only permissions.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftstudy.kube import db_password, rbac
from ftstudy.kube.api import Kube, load_config
from tests.cluster.builds import require_builds
from tests.cluster.control_plane import ControlPlane
from tests.cluster.gpu_nodes import GpuNodes
from tests.test_operator import (
    SECRET,
    TEST_POLICY,
    Operators,
    apply,
    provision_artifacts,
    study_manifest,
    wait_for,
    wait_for_phase,
)

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "ftstudy"
BUILD_SCRIPT = ROOT / "scripts" / "helm-build.sh"
RELEASE = "ops"
RELEASE_NS = "ftstudy-system"
FULLNAME = f"{RELEASE}-ftstudy"
# No Node has this label: with it, the chart's own pods stay Pending, so that the simulated GPU nodes of a test
# never pick them up and run them as processes beside the operator the test starts itself.
NO_NODE = {"ftstudy.io/test-no-such-node": "true"}
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
MONITORING_API = ["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
                  "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]  # fmt: skip

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Helm:
    """The pinned helm, with its config, cache and data under a session directory (never ~/.config/helm)."""

    binary: Path
    home: Path

    def __call__(
        self, *args: str, check: bool = True, kubeconfig: Path | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        env.pop("KUBECONFIG", None)
        cmd = [str(self.binary), *args]
        if kubeconfig is not None:
            cmd += ["--kubeconfig", str(kubeconfig)]
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr}")
        return result

    def template(self, *values: str, namespace: str = RELEASE_NS) -> list[Manifest]:
        documents = yaml.safe_load_all(self("template", RELEASE, str(CHART), "--namespace", namespace, *values).stdout)
        return [d for d in documents if d]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The pinned helm: $FTSTUDY_HELM_BIN (its bin directory) if set, else built on first use (minutes) and cached."""
    require_builds("helm", "helm")
    override = os.environ.get("FTSTUDY_HELM_BIN")
    if override:
        bin_dir = Path(override)
    else:
        result = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"{BUILD_SCRIPT} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        bin_dir = Path(result.stdout.strip().splitlines()[-1])
    return Helm(bin_dir / "helm", tmp_path_factory.mktemp("helm-home"))


def only(manifests: list[Manifest], kind: str, name: str | None = None, namespace: str | None = None) -> list[Manifest]:
    return [
        m
        for m in manifests
        if m["kind"] == kind
        and (name is None or m["metadata"]["name"] == name)
        and (namespace is None or m["metadata"].get("namespace") == namespace)
    ]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = only(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


def operator_container(manifests: list[Manifest]) -> Manifest:
    container: Manifest = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


# --- lint -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "clusterWide=true", "--set", "replicaCount=2"],
        ["--set", "postgresql.enabled=true", "--set", "watchNamespaces={ml}"],
    ],
    ids=["defaults", "cluster-wide-2-replicas", "bundled-postgresql"],
)
def test_the_chart_lints_strictly_in_each_mode(helm: Helm, values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


# --- rendering ------------------------------------------------------------------------------------------------


def test_watching_named_namespaces_binds_exactly_the_operators_rules_in_each_and_nothing_cluster_wide(
    helm: Helm,
) -> None:
    manifests = helm.template("--set", "watchNamespaces={ml,research}")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in only(manifests, "Role")}
    assert set(roles) == {("ml", FULLNAME), ("research", FULLNAME), (RELEASE_NS, f"{FULLNAME}-leader-election"),
                          (RELEASE_NS, f"{FULLNAME}-report-tls")}  # fmt: skip
    for namespace in ("ml", "research"):
        assert roles[(namespace, FULLNAME)]["rules"] == rbac.rules(["ftstudy-db"]), "exactly ftstudy.kube.rbac's"
    assert roles[(RELEASE_NS, f"{FULLNAME}-leader-election")]["rules"] == rbac.LEADER_ELECTION_RULES
    assert roles[(RELEASE_NS, f"{FULLNAME}-report-tls")]["rules"] == rbac.report_tls_rules(f"{FULLNAME}-report-tls")
    # cluster-wide, only TokenReviews (reports.enabled): not namespaced, so no Role can grant them
    (cluster_role,) = only(manifests, "ClusterRole")
    assert cluster_role["rules"] == rbac.TOKEN_REVIEW_RULES
    (cluster_binding,) = only(manifests, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    queued = helm.template("--set", "watchNamespaces={ml}", "--set", "kueue.enabled=true")
    (role,) = [r for r in only(queued, "Role") if r["metadata"]["name"] == FULLNAME]
    assert role["rules"] == rbac.rules(["ftstudy-db"]) + rbac.KUEUE_RULES, "kueue.enabled: LocalQueues, read only"
    without = helm.template("--set", "watchNamespaces={ml,research}", "--set", "reports.enabled=false")
    assert not only(without, "ClusterRole") and not only(without, "ClusterRoleBinding")

    service_account = one(manifests, "ServiceAccount")["metadata"]
    assert service_account == {**service_account, "name": FULLNAME, "namespace": RELEASE_NS}
    bindings = only(manifests, "RoleBinding")
    assert len(bindings) == 4
    for binding in bindings:
        role = binding["roleRef"]["name"]
        assert (binding["metadata"]["namespace"], role) in roles and binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NS}]

    args = operator_container(manifests)["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=ml", "--namespace=research"]
    assert "--all-namespaces" not in args
    expected = {"--lease-namespace=$(POD_NAMESPACE)", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090"}
    assert expected <= set(args)


def test_by_default_the_operator_watches_only_the_release_namespace(helm: Helm) -> None:
    manifests = helm.template()
    assert {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in only(manifests, "Role")} == {
        (RELEASE_NS, FULLNAME),
        (RELEASE_NS, f"{FULLNAME}-leader-election"),
        (RELEASE_NS, f"{FULLNAME}-report-tls"),
    }
    assert [a for a in operator_container(manifests)["args"] if a.startswith("--namespace")] == [
        f"--namespace={RELEASE_NS}"
    ]


def test_cluster_wide_mode_binds_the_same_rules_in_a_cluster_role(helm: Helm) -> None:
    manifests = helm.template("--set", "clusterWide=true", "--set", "reports.enabled=false")
    cluster_role = one(manifests, "ClusterRole")
    assert cluster_role["rules"] == rbac.rules(["ftstudy-db"])
    assert "namespace" not in cluster_role["metadata"]
    binding = one(manifests, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": cluster_role["metadata"]["name"]}  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NS}]
    # Only leader election stays namespaced, in the release namespace.
    (role,) = only(manifests, "Role")
    assert role["metadata"]["namespace"] == RELEASE_NS and role["rules"] == rbac.LEADER_ELECTION_RULES
    args = operator_container(manifests)["args"]
    assert "--all-namespaces" in args and not [a for a in args if a.startswith("--namespace")]


def test_the_trial_policy_reaches_the_operator_as_flags_it_accepts(helm: Helm) -> None:
    from ftstudy.cli import parser
    from ftstudy.kube.policy import DEFAULT_VOLUME_TYPES, TrialPolicy

    def policy(*values: str) -> TrialPolicy:
        args = parser().parse_args(["operator", *operator_container(helm.template(*values))["args"]])
        return TrialPolicy.of(args.trial_service_account, args.trial_volume_type, args.storage_secret,
                              args.trial_toleration_key, args.trial_node_selector_key, args.trial_priority_class,
                              args.trial_claim, args.trial_ephemeral_max, args.artifact_secret,
                              args.trial_workload_priority_class)  # fmt: skip

    assert policy() == TrialPolicy(frozenset(), DEFAULT_VOLUME_TYPES, frozenset({"ftstudy-db"})), "the code's defaults"
    assert policy("--set", "trialPolicy.claims={team-a-data}", "--set", "trialPolicy.ephemeralStorageMax=1Gi",
                  "--set-json", "trialPolicy.priorityClasses=[]") == TrialPolicy(
        frozenset(), DEFAULT_VOLUME_TYPES, frozenset({"ftstudy-db"}), claims=frozenset({"team-a-data"}),
        ephemeral_max_bytes=2**30)  # fmt: skip
    assert policy("--set", "database.secretName=optuna").storage_secrets == {"optuna"}
    widened = policy("--set", "trialPolicy.serviceAccounts={trainer}", "--set", "trialPolicy.volumeTypes={csi}",
                     "--set", "trialPolicy.storageSecrets={team-a-db,team-b-db}")  # fmt: skip
    assert widened == TrialPolicy(frozenset({"trainer"}), frozenset({"csi"}), frozenset({"team-a-db", "team-b-db"}))
    kueue = policy("--set", "trialPolicy.workloadPriorityClasses={team-high}")
    assert kueue.workload_priority_classes == {"team-high"}, "Kueue's priority, none unless listed"


def test_the_operator_may_read_only_the_secrets_the_trial_policy_allows(helm: Helm) -> None:
    """In every mode: a Secret rule without resourceNames would let the operator read any Secret by name."""
    for mode in ([], ["--set", "clusterWide=true"]):
        for values, names in (([], ["ftstudy-db"]), (["--set", "database.secretName=optuna"], ["optuna"]),
                              (["--set", "trialPolicy.storageSecrets={team-b-db,team-a-db}"],
                               ["team-a-db", "team-b-db"])):  # fmt: skip
            manifests = helm.template(*mode, *values)
            others = ("leader-election", "report-tls", "token-review")
            (role,) = [r for r in only(manifests, "ClusterRole") + only(manifests, "Role")
                       if not r["metadata"]["name"].endswith(others)]  # fmt: skip
            (secrets,) = [rule for rule in role["rules"] if "secrets" in rule["resources"]]
            assert secrets == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": names}
            assert role["rules"] == rbac.rules(names)


def test_a_pod_disruption_budget_only_with_several_replicas(helm: Helm) -> None:
    single = helm.template()
    assert not only(single, "PodDisruptionBudget")
    assert operator_container(single)["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}

    several = helm.template("--set", "replicaCount=3")
    pdb = one(several, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    deployment = one(several, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    # Standbys start kopf (and its /healthz) only once they lead; they are probed on the metrics they always serve.
    assert operator_container(several)["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}


def assert_restricted(pod_spec: Manifest, what: str) -> None:
    """The `restricted` Pod Security Standard (v1.30+), field by field, for every container."""
    pod = pod_spec.get("securityContext") or {}
    assert not any(pod_spec.get(f) for f in ("hostNetwork", "hostPID", "hostIPC")), what
    assert not any("hostPath" in v for v in pod_spec.get("volumes") or []), what
    for container in pod_spec["containers"] + pod_spec.get("initContainers", []):
        context = container.get("securityContext") or {}
        where = f"{what}: container {container['name']}"
        assert context.get("allowPrivilegeEscalation") is False, where
        assert not context.get("privileged"), where
        assert "ALL" in context["capabilities"]["drop"], where
        assert set(context["capabilities"].get("add") or []) <= {"NET_BIND_SERVICE"}, where
        assert context.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
        assert context.get("runAsUser", pod.get("runAsUser", 1)) != 0, where
        seccomp = context.get("seccompProfile") or pod.get("seccompProfile") or {}
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), where
        assert not container.get("ports") or all("hostPort" not in p for p in container["ports"]), where


def test_every_pod_satisfies_the_restricted_pod_security_standard(helm: Helm) -> None:
    manifests = helm.template("--set", "postgresql.enabled=true", "--set", "replicaCount=2")
    deployment = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert_restricted(deployment, "the operator")
    assert_restricted(one(manifests, "StatefulSet")["spec"]["template"]["spec"], "the bundled PostgreSQL")
    assert_restricted(one(manifests, "Pod")["spec"], "the helm test pod")

    container = deployment["containers"][0]
    assert deployment["securityContext"]["runAsUser"] == 10001 and container["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(v for v in deployment["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in tmp and {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert container["command"] == ["ftstudy", "operator"] and container["image"] == "ftstudy/operator:0.1.0"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9090, "health": 8080,
                                                                          "reports": 8443}  # fmt: skip


def test_the_charts_crd_is_the_generated_one_byte_for_byte(helm: Helm) -> None:
    chart_crds = sorted(p.name for p in (CHART / "crds").iterdir())
    assert chart_crds == ["finetunestudies.ftstudy.io.yaml"]
    top_level = (ROOT / "crds" / "finetunestudies.ftstudy.io.yaml").read_bytes()
    assert (CHART / "crds" / "finetunestudies.ftstudy.io.yaml").read_bytes() == top_level, (
        "charts/ftstudy/crds/ differs from crds/: cp crds/finetunestudies.ftstudy.io.yaml charts/ftstudy/crds/"
    )
    shown = helm("show", "crds", str(CHART)).stdout
    assert yaml.safe_load(shown) == yaml.safe_load(top_level)


def test_metrics_service_monitor_alerts_dashboard_and_network_policy(helm: Helm) -> None:
    default = helm.template()
    assert not only(default, "ServiceMonitor") and not only(default, "PrometheusRule")
    service = one(default, "Service", f"{FULLNAME}-metrics")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == one(default, "Deployment")["spec"]["selector"]["matchLabels"]
    policy = one(default, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"], "egress is open unless networkPolicy.egress is given"
    ingress, reports = policy["spec"]["ingress"]
    assert {p["port"] for p in ingress["ports"]} == {"metrics", "health"} and "from" not in ingress
    assert reports["ports"] == [{"port": "reports", "protocol": "TCP"}], "trials' reports, from watched namespaces"
    assert reports["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == [RELEASE_NS]

    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    egress = [{"ports": [{"port": 443, "protocol": "TCP"}]}]
    manifests = helm.template(
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
        "--set-json", f"networkPolicy.metricsFrom={json.dumps(peers)}",
        "--set-json", f"networkPolicy.egress={json.dumps(egress)}", *MONITORING_API,
    )  # fmt: skip
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    rule = one(manifests, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.rules.yaml").read_text())
    dashboard = one(manifests, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert json.loads(dashboard["data"]["ftstudy.json"]) == shipped
    policy = one(manifests, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["egress"] == egress
    sources = policy["spec"]["ingress"][0]["from"]
    assert sources[0] == peers[0]
    test_pod_labels = one(manifests, "Pod")["metadata"]["labels"]
    assert sources[1]["podSelector"]["matchLabels"].items() <= test_pod_labels.items(), "helm test may connect"


def test_the_bundled_postgresql_is_off_by_default_and_writes_the_url_secret_of_its_one_namespace(
    helm: Helm,
) -> None:
    assert not only(helm.template(), "StatefulSet")
    assert [s["metadata"]["name"] for s in only(helm.template(), "Secret")] == [f"{FULLNAME}-report-tls"]
    from ftstudy.cli import parser

    values = ("--set", "postgresql.enabled=true", "--set", "watchNamespaces={ml}")
    manifests = helm.template(*values)
    assert manifests == helm.template(*values), "the same on every render: helm template and GitOps change nothing"
    statefulset = one(manifests, "StatefulSet")
    assert statefulset["spec"]["template"]["spec"]["containers"][0]["image"] == "postgres:17"
    secrets = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in only(manifests, "Secret")
               if not s["metadata"]["name"].endswith("report-tls")}  # fmt: skip
    assert set(secrets) == {(RELEASE_NS, f"{FULLNAME}-postgresql"), ("ml", "ftstudy-db")}
    assert "password" not in secrets[(RELEASE_NS, f"{FULLNAME}-postgresql")]["data"], "the operator generates it"
    args = parser().parse_args(["operator", *operator_container(manifests)["args"]])
    assert args.database_password_secret == f"{FULLNAME}-postgresql"
    roles = {r["metadata"]["name"]: r for r in only(manifests, "Role")}
    password_rules = roles[f"{FULLNAME}-database-password"]["rules"]
    assert password_rules == rbac.database_password_rules(f"{FULLNAME}-postgresql"), "get and update it, by name"
    url = base64.b64decode(secrets[("ml", "ftstudy-db")]["data"]["url"]).decode()
    host = f"{FULLNAME}-postgresql.{RELEASE_NS}.svc"
    assert url == f"postgresql+psycopg2://ftstudy@{host}:5432/ftstudy", "no password: the operator's own"
    server = secrets[(RELEASE_NS, f"{FULLNAME}-postgresql")]["data"]
    assert base64.b64decode(server["host"]).decode() == host, "the one server the operator gives the password to"
    assert base64.b64decode(server["port"]).decode() == "5432"
    service = one(manifests, "Service", f"{FULLNAME}-postgresql")
    assert service["spec"]["ports"][0]["port"] == 5432
    # the URL's user is made on first start by the server's superuser, postgres, which then gives up its password
    env = {e["name"]: e for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_USER"]["value"] == "postgres"
    assert env["FTSTUDY_DB_USER"]["valueFrom"]["secretKeyRef"]["key"] == "username"
    init = one(manifests, "ConfigMap", f"{FULLNAME}-postgresql-init")["data"]["ftstudy-role.sql"]
    assert "NOSUPERUSER" in init and "OWNER TO" in init and "PASSWORD NULL" in init
    # the server reads the chart's pg_hba.conf: the studies' role to its database; everything else refused by rule
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["-c", "hba_file=/etc/ftstudy/hba/pg_hba.conf"]
    hba = one(manifests, "ConfigMap", f"{FULLNAME}-postgresql-hba")["data"]["pg_hba.conf"]
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    assert rules == [["local", "all", "all", "trust"],
                     ["host", "ftstudy", "ftstudy", "0.0.0.0/0", "scram-sha-256"],
                     ["host", "ftstudy", "ftstudy", "::/0", "scram-sha-256"],
                     ["host", "all", "all", "0.0.0.0/0", "reject"],
                     ["host", "all", "all", "::/0", "reject"]]  # fmt: skip

    # a password whose checksum is all digits (sha256 of "pw154" starts 1500920599789903): still a string annotation,
    # or the API server refuses the StatefulSet (seen once in a real install with a random password)
    numeric = helm.template("--set", "postgresql.enabled=true", "--set", "postgresql.auth.password=pw154")
    annotations = one(numeric, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/password"] == "1500920599789903"
    # A given password: with reports (the default) the studies' URL still carries none, and the operator reads it
    # from its own Secret; only trials that write themselves (reports.enabled=false) get it in their URL.
    given = helm.template("--set", "postgresql.enabled=true", "--set", "postgresql.auth.password=s3cret")
    (url_secret,) = only(given, "Secret", "ftstudy-db")
    assert "s3cret" not in base64.b64decode(url_secret["data"]["url"]).decode()
    assert url_secret["metadata"]["namespace"] == RELEASE_NS
    (server_secret,) = only(given, "Secret", f"{FULLNAME}-postgresql")
    assert base64.b64decode(server_secret["data"]["password"]).decode() == "s3cret"
    args = parser().parse_args(["operator", *operator_container(given)["args"]])
    assert args.database_password_secret == f"{FULLNAME}-postgresql"
    assert only(given, "Role", f"{FULLNAME}-database-password")
    writing = helm.template(*("--set", "postgresql.enabled=true", "--set", "postgresql.auth.password=s3cret"),
                            "--set", "reports.enabled=false")  # fmt: skip
    (url_secret,) = only(writing, "Secret", "ftstudy-db")
    assert ":s3cret@" in base64.b64decode(url_secret["data"]["url"]).decode()
    assert not [a for a in operator_container(writing)["args"] if a.startswith("--database-password")]
    assert not only(writing, "Role", f"{FULLNAME}-database-password")


def test_trials_report_to_a_service_of_the_leader_and_the_bundled_postgresql_admits_only_the_operator(
    helm: Helm,
) -> None:
    """reports.enabled (the default): the operator gets --report-url at its Service's name, the TLS Secret is
    rendered empty (nothing secret, the same on every render: GitOps-stable), and the bundled PostgreSQL's
    NetworkPolicy admits the operator alone, since trial pods no longer write to it."""
    from ftstudy.cli import parser

    manifests = helm.template("--set", "postgresql.enabled=true", "--set", "watchNamespaces={ml}")
    args = parser().parse_args(["operator", *operator_container(manifests)["args"]])
    service = one(manifests, "Service", f"{FULLNAME}-reports")
    assert args.report_url == f"https://{FULLNAME}-reports.{RELEASE_NS}.svc:8443"
    assert args.report_tls_secret == f"{FULLNAME}-report-tls" and args.report_port == 8443
    assert service["spec"]["ports"] == [{"name": "reports", "port": 8443, "targetPort": "reports", "protocol": "TCP"}]
    secret = one(manifests, "Secret", f"{FULLNAME}-report-tls")
    assert "data" not in secret and secret == one(helm.template(), "Secret", f"{FULLNAME}-report-tls")
    postgres_policy = one(manifests, "NetworkPolicy", f"{FULLNAME}-postgresql")
    (peer,) = postgres_policy["spec"]["ingress"][0]["from"]
    assert set(peer) == {"podSelector"}, "the operator only"

    legacy = helm.template("--set", "postgresql.enabled=true", "--set", "watchNamespaces={ml}",
                           "--set", "reports.enabled=false", "--set", "postgresql.auth.password=given")  # fmt: skip
    assert not [a for a in operator_container(legacy)["args"] if a.startswith("--report")]
    assert not only(legacy, "Service", f"{FULLNAME}-reports") and not only(legacy, "Secret", f"{FULLNAME}-report-tls")
    peers = one(legacy, "NetworkPolicy", f"{FULLNAME}-postgresql")["spec"]["ingress"][0]["from"]
    assert peers[1]["namespaceSelector"]["matchExpressions"][0]["values"] == ["ml"], "trials write to it then"

    # reports.certManager: a Certificate for the names the operator serves, into the same Secret, which the chart no
    # longer renders and the operator may only read (cert-manager writes it)
    managed = helm.template("--set", "reports.certManager.enabled=true",
                            "--set", "reports.certManager.issuerRef.name=team-ca")  # fmt: skip
    args = parser().parse_args(["operator", *operator_container(managed)["args"]])
    certificate = one(managed, "Certificate", f"{FULLNAME}-reports")
    host = f"{FULLNAME}-reports.{RELEASE_NS}.svc"
    assert certificate["spec"]["secretName"] == args.report_tls_secret == f"{FULLNAME}-report-tls"
    assert certificate["spec"]["dnsNames"] == [host, *args.report_dns_name] == [host, f"{host}.cluster.local"]
    assert certificate["spec"]["issuerRef"] == {"name": "team-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert args.report_tls_external and not only(managed, "Secret", f"{FULLNAME}-report-tls")
    tls_role = one(managed, "Role", f"{FULLNAME}-report-tls")
    assert tls_role["rules"] == rbac.report_tls_rules(f"{FULLNAME}-report-tls", external=True)
    assert tls_role["rules"][0]["verbs"] == ["get"]


# --- values that are refused ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "replicaCount=-1"], "- at '/replicaCount': minimum: got -1, want 0"),
        (["--set", "watchNamespaces=ml"], "- at '/watchNamespaces': got string, want array"),
        (["--set", "replicas=2"], "- at '': additional properties 'replicas' not allowed"),
        (["--set", "operator.logLevel=verbose"],
         "- at '/operator/logLevel': value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"),
        (["--set", "watchNamespaces={ML_Team}"],
         "- at '/watchNamespaces/0': 'ML_Team' does not match pattern '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'"),
        (["--set", "postgresql.enabled=yes"], "- at '/postgresql/enabled': got string, want boolean"),
        (["--set", "metrics.serviceMonitor.interval=30"],
         "- at '/metrics/serviceMonitor/interval': got number, want string"),
        (["--set", "clusterWide=true", "--set", "watchNamespaces={ml}"],
         'clusterWide: true watches every namespace, so watchNamespaces must be empty (it is ["ml"])'),
        (["--set", "replicaCount=2", "--set", "podDisruptionBudget.minAvailable=2"],
         "podDisruptionBudget.minAvailable (2) must be below replicaCount (2), or no node could ever be drained"),
        (["--set", "metrics.serviceMonitor.enabled=true"],
         "the cluster has no ServiceMonitor kind (monitoring.coreos.com/v1): install the Prometheus Operator's CRDs"),
        (["--set", "trialPolicy.volumeTypes={persistentVolumeClaim,hostPath}"],
         "- at '/trialPolicy/volumeTypes/1': value must be one of 'persistentVolumeClaim'"),
        (["--set", "postgresql.enabled=true", "--set", "watchNamespaces={a,b}"],
         "- at '/watchNamespaces': maxItems: got 2, want 1"),
        (["--set", "postgresql.enabled=true", "--set", "clusterWide=true"], "- at '/clusterWide': value must be false"),
        (["--set", "postgresql.enabled=true", "--set", "reports.enabled=false"],
         "postgresql.enabled with reports.enabled=false needs postgresql.auth.password"),
        (["--set", "postgresql.enabled=true", "--set", "postgresql.auth.username=postgres"],
         "postgresql.auth.username must not be postgres: that is the bundled server's own superuser"),
        (["--set", "reports.certManager.enabled=true"],
         "reports.certManager.enabled needs reports.certManager.issuerRef.name"),
    ],
    ids=["negative-replicas", "namespaces-string", "unknown-key", "log-level", "namespace-name", "not-a-boolean",
         "interval-number", "both-modes", "pdb-blocks-drains", "no-prometheus-operator", "host-path-for-trials",
         "one-database-for-two-namespaces", "one-database-for-every-namespace",
         "generated-password-with-trials-writing",
         "studies-user-is-the-superuser", "cert-manager-without-issuer"],
)  # fmt: skip
def test_bad_values_are_refused_with_a_message_that_names_the_field(
    helm: Helm, values: list[str], message: str
) -> None:
    result = helm("template", RELEASE, str(CHART), "--namespace", RELEASE_NS, *values, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    if message.startswith("- at '"):  # the schema's verdicts; helm lint reports the chart's own `fail`s as INFO only
        lint = helm("lint", str(CHART), *values, check=False)
        assert lint.returncode != 0 and message in lint.stdout + lint.stderr, "helm lint refuses them too"


# --- the real control plane -----------------------------------------------------------------------------------


def can_i(plane: ControlPlane, kubeconfig: Path, *args: str) -> bool:
    result = plane.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {' '.join(args)}: {result.stdout}{result.stderr}"
    return answer == "yes"


def refused(plane: ControlPlane, kubeconfig: Path, *args: str) -> str:
    """A real request as the ServiceAccount; it must be refused by RBAC (403 Forbidden). Returns kubectl's error."""
    result = plane.kubectl(*args, kubeconfig=kubeconfig, check=False)
    assert result.returncode != 0 and "forbidden" in result.stderr.lower(), f"kubectl {' '.join(args)}: {result}"
    return result.stderr


def pods_of(plane: ControlPlane, namespace: str, component: str) -> list[Manifest]:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
    result = plane.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    pods: list[Manifest] = json.loads(result.stdout)["items"]
    return pods


def wait_for_pod_admitted(plane: ControlPlane, namespace: str, component: str) -> Manifest:
    """The controller creates the pod; PodSecurity (`restricted` on the namespace) would refuse it (FailedCreate)."""

    def events() -> str:
        return plane.kubectl("get", "events", "-n", namespace, check=False).stdout

    pods: list[Manifest] = wait_for(f"the {component} pod", lambda: pods_of(plane, namespace, component), 60, events)
    return pods[0]


def crd_served(plane: ControlPlane) -> None:
    """The CRD (installed by the chart, or by an earlier test) Established and its kind served."""

    def established() -> bool:
        crd = "crd/finetunestudies.ftstudy.io"
        return plane.kubectl("wait", "--for=condition=Established", crd, "--timeout=5s", check=False).returncode == 0

    wait_for("the CRD to be Established", established, 60)
    wait_for("FineTuneStudies to be served", lambda: plane.kubectl("get", "fts", "-A", check=False).returncode == 0, 60)


@pytest.fixture
def watched_namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"w-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_installed_chart_runs_a_study_as_its_service_account_and_is_refused_the_rest(
    helm: Helm,
    control_plane: ControlPlane,
    cluster_namespace: str,
    watched_namespace: str,
    gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes],
    postgres_url: str,
    tmp_path: Path,
) -> None:
    plane, release_ns, watched = control_plane, cluster_namespace, watched_namespace
    plane.kubectl("label", "namespace", release_ns, RESTRICTED)
    # The chart installs the CRD from its crds/ (or skips it, with a notice, when an earlier test applied it).
    installed = helm(
        "install", RELEASE, str(CHART), "--namespace", release_ns, "--set", f"watchNamespaces={{{watched}}}",
        "--set-json", f"nodeSelector={json.dumps(NO_NODE)}", kubeconfig=plane.kubeconfig,
    )  # fmt: skip
    try:
        assert "STATUS: deployed" in installed.stdout
        assert f"It watches FineTuneStudies in: {watched} (a Role in each; nothing cluster-wide)" in installed.stdout
        assert f"kubectl get fts -n {watched} -w" in installed.stdout
        crd_served(plane)
        # The study NOTES.txt tells the user to apply is one the API server accepts.
        example = textwrap.dedent(installed.stdout.split("<<'YAML'", 1)[1].split("\n", 1)[1].split("YAML\n", 1)[0])
        plane.kubectl("apply", "--dry-run=server", "-n", watched, "-f", "-", input=example)
        # What the API server stored is what the code needs.
        stored = json.loads(plane.kubectl("get", "role", FULLNAME, "-n", watched, "-o", "json").stdout)
        assert stored["rules"] == rbac.rules(["ftstudy-db"])
        pod = wait_for_pod_admitted(plane, release_ns, "operator")
        assert pod["status"].get("phase") == "Pending" and not pod["spec"].get("nodeName"), "never runs here"
        test_pod = helm("template", RELEASE, str(CHART), "--namespace", release_ns,
                        "--show-only", "templates/tests/test-connection.yaml").stdout  # fmt: skip
        plane.kubectl("apply", "--dry-run=server", "-n", release_ns, "-f", "-", input=test_pod)  # admitted too

        kubeconfig = plane.service_account_kubeconfig(release_ns, FULLNAME)
        run_a_study(plane, release_ns, watched, kubeconfig, gpu_nodes_factory, postgres_url, tmp_path)
        assert_refused_the_rest(plane, release_ns, watched, kubeconfig)
    finally:
        uninstalled = helm("uninstall", RELEASE, "--namespace", release_ns, kubeconfig=plane.kubeconfig, check=False)
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert plane.kubectl("get", "role", FULLNAME, "-n", watched, check=False).returncode != 0, "uninstall removes it"
    assert plane.kubectl("get", "serviceaccount", FULLNAME, "-n", release_ns, check=False).returncode != 0


def start_operator(
    plane: ControlPlane, kubeconfig: Path, release_ns: str, study_ns: str, scope: list[str], logs: Path
) -> Operators:
    """`ftstudy operator` as a process, with the arguments of the chart's Deployment (the Lease in the release
    namespace) less its ports; ``study_ns`` is where the returned harness looks for studies."""
    operators = Operators(plane, study_ns, kubeconfig, logs)
    command = [sys.executable, "-m", "ftstudy.cli", "operator", *scope, "--kubeconfig", str(kubeconfig),
               "--lease-namespace", release_ns, "--identity", "chart-sa", "--poll-seconds", "0.5",
               "--stuck-seconds", "30", "--metrics-port", "0", *TEST_POLICY]  # fmt: skip
    with (logs / "operator-chart-sa.log").open("ab") as log:
        operators.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
    return operators


def run_a_study(
    plane: ControlPlane,
    release_ns: str,
    watched: str,
    kubeconfig: Path,
    gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes],
    postgres_url: str,
    tmp_path: Path,
) -> None:
    """The operator as the chart's ServiceAccount, exactly as the chart's Deployment runs it (less the ports)."""
    plane.kubectl("create", "secret", "generic", SECRET, "-n", watched, f"--from-literal=url={postgres_url}")
    volume = provision_artifacts(plane, watched, tmp_path / "artifacts")
    nodes = gpu_nodes_factory({"gpu-a": 2})
    operators = start_operator(plane, kubeconfig, release_ns, watched, ["--namespace", watched], tmp_path)
    try:
        name = "chart-study"
        apply(plane, watched, study_manifest(name, tmp_path / "artifacts", budget={"maxTrials": 3, "parallelism": 2}))
        study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 420, nodes)
        assert study["status"]["phase"] == "Succeeded", study["status"]
        assert study["status"]["progress"] == "3/3"
        lease = json.loads(plane.kubectl("get", "lease", "ftstudy-operator", "-n", release_ns, "-o", "json").stdout)
        assert lease["spec"]["holderIdentity"] == "chart-sa", "it led through the chart's leader-election Role"
        log_text = operators.log("chart-sa")
        assert "Forbidden" not in log_text, log_text[-3000:]
    finally:
        operators.stop_all()
        plane.kubectl("delete", "persistentvolume", volume, "--wait=false", check=False)


def assert_refused_the_rest(plane: ControlPlane, release_ns: str, watched: str, kubeconfig: Path) -> None:
    allowed = [
        ("get", f"secrets/{SECRET}", "-n", watched),  # the storage Secret the trial policy names, and no other
        ("create", "jobs.batch", "-n", watched),
        ("watch", "finetunestudies.ftstudy.io", "-n", watched),
        ("patch", "finetunestudies.ftstudy.io", "--subresource=status", "-n", watched),
        ("update", "leases.coordination.k8s.io", "-n", release_ns),
    ]
    for request in allowed:
        assert can_i(plane, kubeconfig, *request), f"the operator needs: {request}"
    denied = [
        ("get", f"secrets/{SECRET}", "-n", release_ns),  # secrets of a namespace it does not watch
        ("get", f"secrets/{SECRET}", "-n", "default"),
        ("get", "secrets/someone-elses", "-n", watched),  # even where it watches: only the policy's Secrets
        ("list", "secrets", "-n", watched),  # even where it watches: one named Secret at a time
        ("list", "secrets", "--all-namespaces"),
        ("get", "finetunestudies.ftstudy.io", "-n", release_ns),  # studies of an unwatched namespace
        ("list", "finetunestudies.ftstudy.io", "--all-namespaces"),
        ("update", "finetunestudies.ftstudy.io", "-n", watched),  # the spec is the user's
        ("create", "deployments.apps", "-n", watched),  # other kinds
        ("create", "pods", "-n", watched),
        ("get", "configmaps", "-n", watched),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", watched),
        ("delete", f"namespaces/{watched}"),
        ("list", "nodes"),
        ("create", "jobs.batch", "-n", release_ns),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    for request in denied:
        assert not can_i(plane, kubeconfig, *request), f"the operator must not: {request}"

    # And real requests, refused by the API server.
    plane.kubectl("create", "secret", "generic", "not-yours", "-n", release_ns, "--from-literal=k=v")
    refused(plane, kubeconfig, "get", "secret", "not-yours", "-n", release_ns)
    plane.kubectl("create", "secret", "generic", "someone-elses", "-n", watched, "--from-literal=k=v")
    refused(plane, kubeconfig, "get", "secret", "someone-elses", "-n", watched)
    refused(plane, kubeconfig, "get", "secrets", "--all-namespaces")
    refused(plane, kubeconfig, "get", "fts", "-n", release_ns)
    refused(plane, kubeconfig, "create", "deployment", "intruder", "--image=busybox", "-n", watched)
    refused(plane, kubeconfig, "delete", "namespace", watched, "--dry-run=server")
    assert plane.kubectl("get", "secret", SECRET, "-n", watched, kubeconfig=kubeconfig).returncode == 0


def test_a_cluster_wide_install_and_then_the_bundled_postgresql_are_admitted_as_restricted(
    helm: Helm, control_plane: ControlPlane, cluster_namespace: str, watched_namespace: str, tmp_path: Path
) -> None:
    """Cluster-wide first; then the same release upgraded to watch its own namespace with the bundled PostgreSQL
    (which serves one namespace: the schema refuses it cluster-wide)."""
    plane, release_ns, elsewhere = control_plane, cluster_namespace, watched_namespace
    plane.kubectl("label", "namespace", release_ns, RESTRICTED)
    no_node = json.dumps(NO_NODE)
    values = ["--set", "clusterWide=true", "--set", "replicaCount=2", "--set-json", f"nodeSelector={no_node}"]
    installed = helm("install", RELEASE, str(CHART), "--namespace", release_ns, *values, kubeconfig=plane.kubeconfig)
    cluster_role = f"{release_ns}-{FULLNAME}"
    try:
        assert "It watches FineTuneStudies in every namespace" in installed.stdout
        stored = json.loads(plane.kubectl("get", "clusterrole", cluster_role, "-o", "json").stdout)
        assert stored["rules"] == rbac.rules(["ftstudy-db"])
        wait_for_pod_admitted(plane, release_ns, "operator")
        assert plane.kubectl("get", "pdb", FULLNAME, "-n", release_ns).returncode == 0

        kubeconfig = plane.service_account_kubeconfig(release_ns, FULLNAME)
        assert can_i(plane, kubeconfig, "watch", "finetunestudies.ftstudy.io", "--all-namespaces")
        assert can_i(plane, kubeconfig, "create", "jobs.batch", "-n", "default")
        assert can_i(plane, kubeconfig, "get", "secrets/ftstudy-db", "-n", "default")
        denied = [
            ("list", "secrets", "--all-namespaces"),
            ("get", "secrets/someone-elses", "-n", "default"),
            ("create", "deployments.apps", "-n", "default"),
            ("delete", "namespaces/default"),
            ("update", "leases.coordination.k8s.io", "-n", "default"),
        ]
        for request in denied:
            assert not can_i(plane, kubeconfig, *request), request
        assert_acts_cluster_wide(plane, kubeconfig, release_ns, elsewhere, tmp_path)

        values = ["--set", f"watchNamespaces={{{release_ns}}}", "--set", "postgresql.enabled=true",
                  "--set", "replicaCount=2", "--set-json", f"nodeSelector={no_node}",
                  "--set-json", f"postgresql.nodeSelector={no_node}"]  # fmt: skip
        helm("upgrade", RELEASE, str(CHART), "--namespace", release_ns, *values, kubeconfig=plane.kubeconfig)
        deadline = time.monotonic() + 30
        while plane.kubectl("get", "clusterrole", cluster_role, check=False).returncode == 0:
            assert time.monotonic() < deadline, "watching one namespace removes the ClusterRole"
            time.sleep(0.5)
        wait_for_pod_admitted(plane, release_ns, "postgresql")

        def password() -> str | None:
            secret = plane.kubectl("get", "secret", f"{FULLNAME}-postgresql", "-n", release_ns, "-o", "json").stdout
            data = json.loads(secret).get("data") or {}
            return base64.b64decode(data["password"]).decode() if "password" in data else None

        # The operator generates the password (no operator runs here: no node): the same call, with its identity.
        assert password() is None
        operator = Kube(load_config(str(plane.service_account_kubeconfig(release_ns, FULLNAME))))
        before = db_password.login(operator, release_ns, f"{FULLNAME}-postgresql").password
        assert password() == before and len(before) >= 32
        assert db_password.login(operator, release_ns, f"{FULLNAME}-postgresql").password == before, "generated once"
        url = plane.kubectl("get", "secret", "ftstudy-db", "-n", release_ns, "-o", "jsonpath={.data.url}").stdout
        assert (
            base64.b64decode(url).decode()
            == f"postgresql+psycopg2://ftstudy@{FULLNAME}-postgresql.{release_ns}.svc:5432/ftstudy"
        )
        helm("upgrade", RELEASE, str(CHART), "--namespace", release_ns, *values, kubeconfig=plane.kubeconfig)
        assert password() == before, "the generated password survives an upgrade"
    finally:
        helm("uninstall", RELEASE, "--namespace", release_ns, kubeconfig=plane.kubeconfig, check=False)


def assert_acts_cluster_wide(
    plane: ControlPlane, kubeconfig: Path, release_ns: str, elsewhere: str, logs: Path
) -> None:
    """With the ClusterRole alone, the operator sees a study in a namespace nobody named and writes its status.

    The study names a Secret that does not exist, so it stops at StorageReady=False (SecretNotFound): no trials.
    """
    crd_served(plane)
    operators = start_operator(plane, kubeconfig, release_ns, elsewhere, ["--all-namespaces"], logs)
    try:
        name = "anywhere"
        apply(plane, elsewhere, study_manifest(name, logs / "artifacts"))

        def secret_reported() -> bool:
            study = json.loads(plane.kubectl("get", "fts", name, "-n", elsewhere, "-o", "json").stdout)
            conditions = (study.get("status") or {}).get("conditions") or []
            return any(c["type"] == "StorageReady" and c.get("reason") == "SecretNotFound" for c in conditions)

        wait_for("the cluster-wide operator to report the missing Secret", secret_reported, 90,
                 lambda: operators.log("chart-sa")[-4000:])  # fmt: skip
        # Nothing it needs is refused. kopf, cluster-wide, also tries to watch CRDs (to notice new ones) unless its
        # scanning is off; that is no part of the operator's rules, and kopf carries on without it.
        refusals = [line for line in operators.log("chart-sa").splitlines() if "Forbidden" in line]
        assert all("customresourcedefinitions" in line for line in refusals), refusals
    finally:
        operators.stop_all()
