"""The operator end to end, on a real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
with simulated GPU nodes, real PostgreSQL and the real trainer on the tiny model.

The operator runs as its own process (`ftstudy operator`), as a namespaced ServiceAccount bound to exactly the
rules of ``ftstudy.kube.rbac``: what it can do here is what it can do in a cluster. Every test namespace enforces the
`restricted` Pod Security Standard, so every trial pod the operator makes is admitted under it; trials write to a
PersistentVolumeClaim (bound to a hostPath PersistentVolume that the platform team, here the test, created).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from ftstudy.kube import names, rbac
from tests.cluster.control_plane import ControlPlane
from tests.cluster.gpu_nodes import GpuNodes

from .conftest import postgres_outage
from .studies import tiny_study

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "finetunestudies.ftstudy.io.yaml"
SECRET = "ftstudy-db"
LATER_SECRET = "ftstudy-db-later"  # allowed by the operators' trial policy, created by a test when it wants
SA = "ftstudy-operator"
REPORT_TLS_SECRET = "ftstudy-report-tls"
ARTIFACTS = "artifacts"  # the PersistentVolumeClaim every test study writes to
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
# What the tests' studies ask for beyond the trial policy's defaults: their claim, a node label key and a
# PriorityClass that does not exist (tests of pods that never start).
TEST_POLICY = ["--trial-claim", ARTIFACTS, "--trial-node-selector-key", "gpu", "--trial-priority-class",
               "no-such-class"]  # fmt: skip


@pytest.fixture(scope="session")
def crd_installed(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "--server-side", "-f", str(CRD))
    # Right after the apply, `kubectl wait` can fail at once (no conditions yet), so poll for Established.
    wait_for(
        "the CRD to be Established",
        lambda: (
            control_plane.kubectl(
                "wait", "--for=condition=Established", "crd/finetunestudies.ftstudy.io", "--timeout=5s", check=False
            ).returncode
            == 0
        ),
        60,
    )
    # ...and the API server serves the new kind once its storage is initialised.
    wait_for(
        "FineTuneStudies to be served",
        lambda: control_plane.kubectl("get", "fts", "-A", check=False).returncode == 0,
        60,
    )


@dataclass
class Operators:
    """Operator processes in one namespace, as its least-privilege ServiceAccount."""

    plane: ControlPlane
    namespace: str
    kubeconfig: Path
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def log_path(self, identity: str = "replica-a") -> Path:
        return self.logs / f"operator-{identity}.log"

    def start(self, identity: str = "replica-a") -> subprocess.Popen[bytes]:
        log = self.log_path(identity).open("ab")
        command = [sys.executable, "-m", "ftstudy.cli", "operator", "--namespace", self.namespace,
                   "--kubeconfig", str(self.kubeconfig), "--identity", identity, "--poll-seconds", "0.5",
                   "--stuck-seconds", "30", "--metrics-port", "0", "--storage-secret", SECRET,
                   "--storage-secret", LATER_SECRET, *TEST_POLICY, *self.extra_args]  # fmt: skip
        env = {**os.environ, **self.env} if self.env else None
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.procs.append(proc)
        return proc

    def enable_reports(self, external: bool = False) -> Callable[[], None]:
        """Trials report over HTTPS (``--report-url``, the chart's default): the endpoint's TLS Secret created empty
        as the chart creates it, and the rules ``ftstudy.kube.rbac`` gives the operator for it and for TokenReviews
        (a ClusterRole). ``external``: as with the chart's reports.certManager, no Secret yet (cert-manager makes
        it), the operator may only read it and runs with --report-tls-external. Returns what removes the
        cluster-wide objects again."""
        ns = self.namespace
        if external:
            self.extra_args += ["--report-tls-external"]
        else:
            self.plane.kubectl("create", "secret", "generic", REPORT_TLS_SECRET, "-n", ns)
        manifests = rbac.report_manifests(ns, SA, REPORT_TLS_SECRET, external)
        self.plane.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in manifests))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.extra_args += ["--report-url", f"https://127.0.0.1:{port}", "--report-address", "127.0.0.1",
                            "--report-port", str(port)]  # fmt: skip
        cluster_name = next(m["metadata"]["name"] for m in manifests if m["kind"] == "ClusterRole")
        return lambda: self.plane.kubectl("delete", "clusterrolebinding,clusterrole", cluster_name, check=False)

    def log(self, identity: str = "replica-a", since: int = 0) -> str:
        """What ``identity`` has logged, from byte ``since`` on (``log_size`` before a life: that life's lines)."""
        path = self.log_path(identity)
        return path.read_bytes()[since:].decode(errors="replace") if path.exists() else ""

    def log_size(self, identity: str = "replica-a") -> int:
        path = self.log_path(identity)
        return path.stat().st_size if path.exists() else 0

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def operators(
    control_plane: ControlPlane, cluster_namespace: str, crd_installed: None, postgres_url: str, tmp_path: Path
) -> Iterator[Operators]:
    kubeconfig, volume = prepare_namespace(control_plane, cluster_namespace, postgres_url, tmp_path)
    harness = Operators(control_plane, cluster_namespace, kubeconfig, tmp_path)
    yield harness
    harness.stop_all()
    control_plane.kubectl("delete", "persistentvolume", volume, "--wait=false", check=False)


def prepare_namespace(plane: ControlPlane, ns: str, postgres_url: str, tmp_path: Path) -> tuple[Path, str]:
    """A namespace as the operator's tests need it: `restricted` enforced, the operator's ServiceAccount bound to
    exactly its rules, the storage Secret and the artifacts claim. The ServiceAccount's kubeconfig and the claim's
    PersistentVolume (to delete afterwards)."""
    plane.kubectl("label", "namespace", ns, RESTRICTED)
    plane.kubectl("create", "serviceaccount", SA, "-n", ns)
    for name, rules in (("ftstudy-operator", rbac.rules([SECRET, LATER_SECRET])),
                        ("ftstudy-operator-leader", rbac.LEADER_ELECTION_RULES)):  # fmt: skip
        manifests = [rbac.role(name, ns, rules), rbac.role_binding(name, ns, SA, ns)]
        plane.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in manifests))
    plane.kubectl("create", "secret", "generic", SECRET, "-n", ns, f"--from-literal=url={postgres_url}")
    volume = provision_artifacts(plane, ns, tmp_path / "artifacts")
    return plane.service_account_kubeconfig(ns, SA), volume


def provision_artifacts(plane: ControlPlane, namespace: str, host_dir: Path) -> str:
    """The claim ``artifacts`` in ``namespace`` on a hostPath PersistentVolume (returned) at ``host_dir``."""
    return plane.host_path_claim(namespace, ARTIFACTS, host_dir)


def study_manifest(name: str, artifacts: Path | None = None, **spec: Any) -> dict[str, Any]:
    """The tiny study (K=2), with the storage Secret and a trial template that writes to the claim ``artifacts``
    (``provision_artifacts``; the ``artifacts`` argument is that volume's host directory, kept for readability)."""
    template = {
        "image": "ftstudy/trainer:test",
        "resources": {"limits": {"nvidia.com/gpu": 1}},
        "volumes": [{"name": "artifacts", "persistentVolumeClaim": {"claimName": ARTIFACTS}}],
        "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts"}],
        "outputDir": "/artifacts",
        "fsGroup": 10001,
        # The simulated nodes share this machine's cores: one thread per trainer, as a CPU request would give it.
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}, {"name": "MKL_NUM_THREADS", "value": "1"}],
        **spec.pop("trialTemplate", {}),
    }
    document = tiny_study(name, k=2, **spec.pop("budget", {}))
    document["spec"] |= {"storage": {"secretRef": {"name": SECRET}}, "trialTemplate": template, **spec}
    return document


def apply(plane: ControlPlane, namespace: str, manifest: dict[str, Any]) -> None:
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def get_study(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    study: dict[str, Any] = json.loads(plane.kubectl("get", "fts", name, "-n", namespace, "-o", "json").stdout)
    return study


def wait_for(
    what: str, check: Callable[[], Any], timeout: float, diagnose: Callable[[], str] = lambda: "", every: float = 0.5
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnose()}")


def diagnosis(ops: Operators, name: str, nodes: GpuNodes | None = None) -> Callable[[], str]:
    def text() -> str:
        parts = [ops.plane.kubectl("get", "fts,jobs,pods", "-n", ops.namespace, "-o", "wide", check=False).stdout]
        result = ops.plane.kubectl("get", "fts", name, "-n", ops.namespace, "-o", "yaml", check=False)
        parts.append(result.stdout[-3000:])
        for log in sorted(ops.logs.glob("operator-*.log")):
            parts.append(f"--- {log.name} ---\n" + log.read_text(errors="replace")[-4000:])
        if nodes is not None:
            parts.append(f"simulated nodes: runs={nodes.runs[-6:]} errors={nodes.errors[-5:]}")
        return "\n".join(parts)

    return text


def wait_for_phase(ops: Operators, name: str, phases: tuple[str, ...], timeout: float, nodes: GpuNodes | None = None
                   ) -> dict[str, Any]:  # fmt: skip
    def done() -> dict[str, Any] | None:
        study = get_study(ops.plane, ops.namespace, name)
        return study if (study.get("status") or {}).get("phase") in phases else None

    result: dict[str, Any] = wait_for(f"{name} to reach {phases}", done, timeout, diagnosis(ops, name, nodes))
    return result


def optuna_trials(url: str, namespace: str, name: str) -> list[optuna.trial.FrozenTrial]:
    found = names.newest_optuna_study(optuna.get_all_study_names(url), namespace, name)
    if found is None:
        raise KeyError(f"no Optuna study of {namespace}/{name}")
    return optuna.load_study(study_name=found, storage=url).get_trials(deepcopy=False)


def jobs(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(plane.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)[
        "items"
    ]
    return items


def events(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)[
        "items"
    ]
    return items


def runs_per_attempt(nodes: GpuNodes, namespace: str) -> dict[str, int]:
    """How many processes each Job (one trial attempt) ran: more than one would be a duplicate."""
    counts: dict[str, int] = {}
    for run in nodes.runs:
        if run["namespace"] == namespace:
            job = run["pod"].rsplit("-", 1)[0]
            counts[job] = counts.get(job, 0) + 1
    return counts


def test_a_study_runs_to_success_cancelling_at_the_early_step_within_gpu_capacity(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    plane, ns = operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 1, "gpu-b": 1})  # two GPUs for three parallel trials
    operators.start()
    name = "lora-search"
    apply(plane, ns, study_manifest(name, tmp_path / "artifacts", budget={"maxTrials": 5, "parallelism": 3}))
    study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 420, nodes)
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "5/5" and status["observedGeneration"] == study["metadata"]["generation"]
    assert status["trials"]["cancelled"] >= 1 and status["trials"]["completed"] >= 2, status["trials"]
    assert status["trials"]["failed"] == 0
    best = status["best"]
    # In a cluster the path is /artifacts/...; the simulated kubelet runs the trainer with the volume's host path.
    adapter = Path(best["adapter"])
    root = tmp_path / "artifacts" / ns / f"{name}-{study['metadata']['uid'][:8]}"  # a re-created study's differs
    assert adapter.is_relative_to(root) and adapter.parent.name.startswith("trial-"), (adapter, root)
    assert status["trialsRoot"] == f"/artifacts/{ns}/{root.name}"
    assert adapter.exists(), "the adapter the status names was written on the trials' volume"
    assert {"finalAccuracy", "testAccuracy", "earlyAccuracy", "params"} <= set(best)
    assert status["baseline"]["trial"] == 0 and status["testGainOverBaseline"] is not None
    assert status["gpuSeconds"]["spent"] > 0
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in status["conditions"])

    assert nodes.max_running <= 2, "the scheduler never placed more trials than there are GPUs"
    assert all(count == 1 for count in runs_per_attempt(nodes, ns).values())
    trials = optuna_trials(postgres_url, ns, name)
    assert sorted(t.number for t in trials) == list(range(5)) and all(t.state.is_finished() for t in trials)
    states = {t.number: t.state for t in trials}
    assert TrialState.PRUNED in states.values() and states[0] == TrialState.COMPLETE

    remaining = {int(j["metadata"]["labels"]["ftstudy.io/trial"]): j for j in jobs(plane, ns)}
    decided = {t.number for t in trials if t.system_attrs.get("ftstudy:decision") == "continue"}
    assert decided, "at least the baseline was continued"
    for number, state in states.items():
        annotations = remaining[number]["metadata"].get("annotations") or {} if number in remaining else {}
        if state == TrialState.PRUNED:
            assert number not in remaining, "a cancelled trial's Job is deleted"
        elif number in decided:
            assert annotations["ftstudy.io/decision"] == "continue"
        else:  # finished while its verdict waited for K+1 early accuracies (promotion.minScored): never decided
            assert "ftstudy.io/decision" not in annotations
    reasons = {e["reason"] for e in events(plane, ns)}
    assert {"TrialLaunched", "TrialCancelled", "TrialContinued", "TrialFinished", "StudySucceeded"} <= reasons

    table = plane.kubectl("get", "fts", "-n", ns).stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "DONE", "RUNNING", "BEST-EARLY", "BEST-FINAL", "AGE"]
    assert table.splitlines()[1].split()[:3] == [name, "Succeeded", "5/5"]


def test_an_operator_killed_again_and_again_loses_no_trial_and_duplicates_none(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    plane, ns = operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    name = "restarts"
    apply(plane, ns, study_manifest(name, tmp_path / "artifacts", budget={"maxTrials": 5, "parallelism": 2}))

    def kill_when(what: str, moment: Callable[[], bool]) -> None:
        proc = operators.start()
        wait_for(what, moment, 300, diagnosis(operators, name, nodes), every=0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def reported() -> list[optuna.trial.FrozenTrial]:
        try:
            return [t for t in optuna_trials(postgres_url, ns, name) if t.intermediate_values]
        except KeyError:
            return []

    kill_when("the first Job", lambda: bool(jobs(plane, ns)))
    kill_when("an early accuracy", lambda: bool(reported()))
    kill_when("a finished trial", lambda: any(t.state.is_finished() for t in reported()))
    kill_when("a fourth trial", lambda: len(optuna_trials(postgres_url, ns, name)) >= 4)
    operators.start()
    study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 420, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]

    trials = optuna_trials(postgres_url, ns, name)
    assert sorted(t.number for t in trials) == list(range(5)), "one trial per number, none lost, none extra"
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    assert all(count == 1 for count in runs_per_attempt(nodes, ns).values()), runs_per_attempt(nodes, ns)
    attempts = [int(t.system_attrs["ftstudy:attempts"]) for t in trials]
    ran = runs_per_attempt(nodes, ns)
    assert len(ran) == sum(attempts), "every launch counted ran exactly once"


def test_the_study_completes_through_a_postgresql_restart(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    plane, ns = operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    operators.start()
    name = "db-restart"
    apply(plane, ns, study_manifest(name, tmp_path / "artifacts"))
    wait_for("a running trial", lambda: nodes.running() > 0, 120, diagnosis(operators, name, nodes), every=0.2)
    postgres_outage(8)
    study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 420, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert sorted(t.number for t in optuna_trials(postgres_url, ns, name)) == list(range(4))


def test_a_crashing_trainer_fails_its_trials_and_past_the_limit_the_study(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    plane, ns = operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 1})
    operators.start()
    name = "crashing"
    # The study's very first launch meets an outage of its object store (exit 4): it spends no retry.
    script = ("if [ ! -e \"$MARK\" ]; then : > \"$MARK\"; echo 'could not write s3://b/x: 503 Service Unavailable' >&2;"
              " exit 4; fi; echo 'CUDA error: an illegal memory access' >&2; exit 1")  # fmt: skip
    env = [*study_manifest(name)["spec"]["trialTemplate"]["env"], {"name": "MARK", "value": "/artifacts/outage-met"}]
    crash = {"command": ["sh", "-c", script], "env": env}
    manifest = study_manifest(name, tmp_path / "artifacts", trialTemplate=crash,
                              budget={"parallelism": 1, "maxFailedTrials": 2, "retriesPerTrial": 1})  # fmt: skip
    apply(plane, ns, manifest)
    study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 300, nodes)
    status = study["status"]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "TooManyFailedTrials"
    assert "2 trials failed; maxFailedTrials is 2" in failed["message"]
    trials = optuna_trials(postgres_url, ns, name)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert [t.system_attrs["ftstudy:attempts"] for t in trials] == [3, 2], "a crash is retried once, an outage freely"
    assert trials[0].system_attrs["ftstudy:outages"] == [1]
    for trial in trials:
        reason = trial.user_attrs["failure_reason"]
        assert "the trainer crashed (exit code 1): CUDA error: an illegal memory access" in reason, reason
    warnings = [e for e in events(plane, ns) if e["type"] == "Warning"]
    assert any(e["reason"] == "StudyFailed" for e in warnings)
    [outage] = [e["message"] for e in warnings if e["reason"] == "TrialOutage"]
    assert outage == ("trial 0: the trainer could not use its object store (exit code 4): could not write s3://b/x: "
                      "503 Service Unavailable: an outage, not the trial's doing; launched again in 15 s (no retry "
                      "spent)")  # fmt: skip
    assert any(e["reason"] == "TrialRelaunchedAfterOutage" for e in warnings)


def test_a_missing_secret_is_reported_and_deleting_the_study_removes_its_jobs(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    plane, ns = operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    operators.start()
    name = "needs-secret"
    secret = LATER_SECRET
    manifest = study_manifest(name, tmp_path / "artifacts")
    manifest["spec"]["storage"] = {"secretRef": {"name": secret}}
    apply(plane, ns, manifest)

    def storage_condition() -> dict[str, Any] | None:
        conditions = (get_study(plane, ns, name).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "StorageReady" and c["status"] == "False"), None)

    problem = wait_for("the missing Secret reported", storage_condition, 60, diagnosis(operators, name, nodes))
    assert problem["reason"] == "SecretNotFound"
    assert f"Secret {ns}/{secret} (spec.storage.secretRef) does not exist" in problem["message"]
    assert not jobs(plane, ns), "nothing runs without its storage"

    plane.kubectl("create", "secret", "generic", secret, "-n", ns, f"--from-literal=url={postgres_url}")
    wait_for("trials running", lambda: nodes.running() >= 2, 120, diagnosis(operators, name, nodes), every=0.2)
    plane.kubectl("delete", "fts", name, "-n", ns, "--wait=true", "--timeout=60s")
    wait_for("the Jobs garbage-collected", lambda: not jobs(plane, ns), 60, diagnosis(operators, name, nodes))
    wait_for("the trainers stopped", lambda: nodes.running() == 0, 60, diagnosis(operators, name, nodes))
    assert optuna_trials(postgres_url, ns, name), "the study's records stay in the database"


def leader_and_standby(operators: Operators, faults: str = "") -> subprocess.Popen[bytes]:
    """replica-a leading (with ``$FTSTUDY_FAULTS`` set to ``faults``, if any) and replica-b standing by (with none);
    replica-a's process."""
    operators.env = {"FTSTUDY_FAULTS": faults} if faults else {}
    leader = operators.start("replica-a")
    wait_for("replica-a to lead", lambda: "leading as replica-a" in operators.log("replica-a"), 60)
    operators.env = {}
    operators.start("replica-b")
    wait_for("replica-b to stand by", lambda: "standing by" in operators.log("replica-b"), 60)
    return leader


def writes_by_replica(plane: ControlPlane, ns: str) -> dict[str, list[datetime]]:
    """When the API server received each write of replica-a and replica-b (every one but the Lease's: Jobs, the
    status, Events), from its audit log: each replica names itself in its requests' user agent."""
    writes = [e for e in plane.requests_by(f"system:serviceaccount:{ns}:{SA}")
              if e["verb"] in ("create", "patch", "update", "delete")
              and (e.get("objectRef") or {}).get("resource") != "leases"]  # fmt: skip
    return {r: [datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00"))
                for e in writes if f"({r})" in e.get("userAgent", "")] for r in ("replica-a", "replica-b")}  # fmt: skip


def test_two_replicas_never_both_act_and_the_standby_takes_over(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    plane, ns = operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    leader = leader_and_standby(operators)
    name = "failover"
    apply(plane, ns, study_manifest(name, tmp_path / "artifacts", budget={"maxTrials": 3}))
    wait_for("a running trial", lambda: nodes.running() > 0, 120, diagnosis(operators, name, nodes), every=0.2)
    assert "leading" not in operators.log("replica-b")
    leader.send_signal(signal.SIGKILL)
    leader.wait()
    killed = datetime.now(UTC)
    study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 420, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert "leading as replica-b" in operators.log("replica-b")
    # Never both act, from the API server's audit log: each replica names itself in its requests' user agent; every
    # write but the Lease's (Jobs, the status, Events) came from replica-a before its death or replica-b after it.
    at = writes_by_replica(plane, ns)
    assert at["replica-a"] and at["replica-b"], "each acted while it led"
    assert max(at["replica-a"]) < killed < min(at["replica-b"]), (max(at["replica-a"]), killed, min(at["replica-b"]))
    assert sorted(t.number for t in optuna_trials(postgres_url, ns, name)) == list(range(3))
    assert all(count == 1 for count in runs_per_attempt(nodes, ns).values())
    holder = json.loads(plane.kubectl("get", "lease", "ftstudy-operator", "-n", ns, "-o", "json").stdout)
    assert holder["spec"]["holderIdentity"] == "replica-b"


def test_a_leader_stopped_while_a_pass_is_stuck_keeps_its_lease_until_it_is_gone(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    """Fencing on a clean stop: a reconcile thread held inside a launch (the Job created, the launch not yet
    counted) when the leader gets SIGTERM. The leader keeps renewing its Lease while it waits for that thread, and,
    the thread still stuck, exits without handing the Lease over: the standby leads only after the old leader's
    process is gone, never while a thread of it may still act. It then adopts the half-made launch; no attempt runs
    twice."""
    plane, ns = operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    operators.extra_args = ["--lease-seconds", "3"]  # shorter than the leader's wait for its threads (2 x 10 s)
    leader = leader_and_standby(operators, faults="launch.between=1:hold=60")
    name = "fenced"
    apply(plane, ns, study_manifest(name, tmp_path / "artifacts", budget={"maxTrials": 2}))
    wait_for("the held launch's Job", lambda: jobs(plane, ns), 60, diagnosis(operators, name, nodes))
    leader.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 90
    while leader.poll() is None:
        assert "leading as replica-b" not in operators.log("replica-b"), "the standby led while replica-a could act"
        assert time.monotonic() < deadline, "replica-a did not exit"
        time.sleep(0.2)
    assert "leaving the Lease to expire" in operators.log("replica-a")
    study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 300, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert "leading as replica-b" in operators.log("replica-b")
    assert all(count == 1 for count in runs_per_attempt(nodes, ns).values()), runs_per_attempt(nodes, ns)
    assert [t.system_attrs["ftstudy:attempts"] for t in optuna_trials(postgres_url, ns, name)] == [1, 1]


def test_a_worker_held_across_a_hand_over_writes_nothing_after_it(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    """Fencing while leading: replica-a's renewal thread stalls (what a paused process or a thread starved of the
    CPU does; fault point lease.renew) while one of its reconcile threads is held inside a launch (launch.between:
    the Job created, the launch not yet counted). The Lease passes to replica-b, which adopts the half-made launch.
    replica-a's next write, whichever thread makes it, is refused and replica-a exits: the API server's audit log
    has no write of replica-a after replica-b's first, and no attempt runs twice."""
    from ftstudy.kube.main import EXIT_LOST_LEADERSHIP

    plane, ns = operators.plane, operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    operators.extra_args = ["--lease-seconds", "3"]  # a renewal every 0.4 s: the 40th is 16 s after leading
    leader = leader_and_standby(operators, faults="launch.between=1:hold=30,lease.renew=40:hold=120")
    name = "held"
    apply(plane, ns, study_manifest(name, tmp_path / "artifacts", budget={"maxTrials": 2}))
    wait_for("replica-b to lead", lambda: "leading as replica-b" in operators.log("replica-b"), 90,
             diagnosis(operators, name, nodes))  # fmt: skip
    log_a = operators.log("replica-a")
    assert log_a.index("fault point launch.between: holding") < log_a.index("fault point lease.renew: holding"), (
        "the launch was held before the renewals stalled, so that it is held across the hand-over"
    )
    assert leader.wait(60) == EXIT_LOST_LEADERSHIP
    assert "fenced: a write" in operators.log("replica-a")
    study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 300, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    at = writes_by_replica(plane, ns)
    assert at["replica-a"] and at["replica-b"], "each acted while it led"
    assert max(at["replica-a"]) < min(at["replica-b"]), (max(at["replica-a"]), min(at["replica-b"]))
    assert all(count == 1 for count in runs_per_attempt(nodes, ns).values()), runs_per_attempt(nodes, ns)
    assert [t.system_attrs["ftstudy:attempts"] for t in optuna_trials(postgres_url, ns, name)] == [1, 1]
