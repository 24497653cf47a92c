"""A real Kueue for the test control plane: v0.17.0's manager, built from Go modules by scripts/kueue-build.sh and
cached, run as a process against the API server (out of cluster, as Kueue's own integration tests run it), with its
CRDs installed server-side (the Workload CRD is too large for a client-side apply's annotation).

Its admission webhooks for batch Jobs and for its own kinds are served to the API server as in a cluster, from the
manager's local address with a self-signed certificate (its manifests point at a Service, replaced here by that URL):
every trial Job the operator creates and every change it makes to one passes Kueue's mutating and validating
webhooks, failure policy Fail, as on a cluster with Kueue installed. They are registered once the manager is ready
and removed before it stops (with Fail, a stopped Kueue would refuse every Job of the tests after these).

What is left out, and why (docs/plans/kueue.md has the sources): internal certificate management (its certificate
names a Service), the webhooks of integrations other than batch/Job, the metrics endpoint and leader election.
v0.17.0 reads its metrics certificate from a fixed path even with metrics off, so a self-signed pair is written
there. The manager runs with the admin kubeconfig: its RBAC is not what the tests are about."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.builds import cached_build
from tests.cluster.control_plane import ControlPlane, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "kueue-build.sh"
METRICS_CERTS = Path("/etc/kueue/metrics/certs")  # v0.17.0's cmd/kueue/main.go reads these whatever the config
API = "kueue.x-k8s.io/v1beta2"
WEBHOOK_GROUPS = {"batch", "kueue.x-k8s.io"}  # the Job integration's webhooks and those of Kueue's own kinds
WEBHOOK_CONFIGS = ("ftstudy-test-kueue-mutating", "ftstudy-test-kueue-validating")


class KueueError(RuntimeError):
    pass


def build() -> Path:
    """The cached build (minutes the first time)."""
    return cached_build(BUILD_SCRIPT)


def _self_signed(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "tls.crt").exists() and (directory / "tls.key").exists():
        return
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(directory / "tls.key"),
                    "-out", str(directory / "tls.crt")], check=True, capture_output=True)  # fmt: skip


class Kueue:
    """Kueue's manager against ``plane``; ``start`` installs the CRDs and waits until it is ready."""

    def __init__(self, plane: ControlPlane, directory: Path) -> None:
        self.plane = plane
        self.dir = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "kueue.log"

    def start(self) -> Kueue:
        built = build()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(built / "config" / "crd"))
        self.plane.kubectl("wait", "--for=condition=Established", "--timeout=120s", "-f",
                           str(built / "config" / "crd"))  # fmt: skip
        if self.plane.kubectl("get", "namespace", "kueue-system", check=False).returncode != 0:
            self.plane.kubectl("create", "namespace", "kueue-system")
        _self_signed(METRICS_CERTS)
        _self_signed(self.dir / "webhook-certs")
        health, self.webhook_port = free_port(), free_port()
        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": "kueue-system",
            "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
            "metrics": {"bindAddress": "0"},
            "webhook": {"host": "127.0.0.1", "port": self.webhook_port, "certDir": str(self.dir / "webhook-certs")},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "clientConnection": {"qps": 50, "burst": 100},
            "integrations": {"frameworks": ["batch/job"]},
        }
        (self.dir / "config.yaml").write_text(yaml.safe_dump(config))
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(built / "bin" / "kueue"), f"--config={self.dir / 'config.yaml'}",
                 f"--kubeconfig={self.plane.kubeconfig}", "--feature-gates=VisibilityOnDemand=false"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise KueueError(f"kueue exited ({self.process.returncode}):\n{self.log.read_text()[-4000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz",
                                                                       timeout=2) as response:  # fmt: skip
                if response.status == 200:
                    self._register_webhooks(built / "config" / "webhook.yaml")
                    return self
            time.sleep(0.5)
        raise KueueError(f"kueue not ready after 120 s:\n{self.log.read_text()[-4000:]}")

    def _register_webhooks(self, manifests: Path) -> None:
        """Kueue's webhook configurations for Jobs and its own kinds, pointed at the manager's address."""
        ca = base64.b64encode((self.dir / "webhook-certs" / "tls.crt").read_bytes()).decode()
        configs = []
        documents = sorted((d for d in yaml.safe_load_all(manifests.read_text()) if d),
                           key=lambda d: d["kind"] != "MutatingWebhookConfiguration")  # fmt: skip
        for document, name in zip(documents, WEBHOOK_CONFIGS, strict=True):
            hooks = [h for h in document["webhooks"]
                     if any(set(rule["apiGroups"]) & WEBHOOK_GROUPS for rule in h["rules"])]  # fmt: skip
            for hook in hooks:
                url = f"https://127.0.0.1:{self.webhook_port}{hook['clientConfig']['service']['path']}"
                hook["clientConfig"] = {"url": url, "caBundle": ca}
            configs.append({**document, "metadata": {"name": name}, "webhooks": hooks})
        self.apply(*configs)

    def apply(self, *objects: dict[str, Any]) -> None:
        self.plane.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objects))

    def workloads(self, namespace: str) -> list[dict[str, Any]]:
        listed = self.plane.kubectl("get", "workloads.kueue.x-k8s.io", "-n", namespace, "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(listed)["items"]
        return items

    def stop(self) -> None:
        self.plane.kubectl("delete", "mutatingwebhookconfiguration", WEBHOOK_CONFIGS[0], "--ignore-not-found")
        self.plane.kubectl("delete", "validatingwebhookconfiguration", WEBHOOK_CONFIGS[1], "--ignore-not-found")
        stop_process(self.process, 30)


def cluster_queue(name: str, gpus: int | None) -> dict[str, Any]:
    """GPUs for every namespace, with CPU and memory covered generously (a pod's every requested resource must be
    covered by its ClusterQueue, or Kueue finds the Workload inadmissible); ``gpus`` None: no GPU flavor at all."""
    quotas = [{"name": "cpu", "nominalQuota": "64"}, {"name": "memory", "nominalQuota": "256Gi"}]
    covered = ["cpu", "memory"]
    if gpus is not None:
        quotas.append({"name": "nvidia.com/gpu", "nominalQuota": gpus})
        covered.append("nvidia.com/gpu")
    return {"apiVersion": API, "kind": "ClusterQueue", "metadata": {"name": name},
            "spec": {"namespaceSelector": {}, "preemption": {"withinClusterQueue": "LowerPriority"},
                     "resourceGroups": [{"coveredResources": covered,
                                         "flavors": [{"name": "default-flavor", "resources": quotas}]}]}}  # fmt: skip


def resource_flavor() -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": "default-flavor"}}


def local_queue(namespace: str, name: str, cluster_queue_name: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "LocalQueue", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue_name}}  # fmt: skip


def priority_class(name: str, value: int) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "WorkloadPriorityClass", "metadata": {"name": name}, "value": value}
