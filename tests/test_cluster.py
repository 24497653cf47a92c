"""Smoke tests of the Kubernetes harness: what a test written against it can rely on."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.control_plane import ControlPlane
from tests.cluster.gpu_nodes import GpuNodes

NodesFactory = Callable[[dict[str, int]], GpuNodes]


@pytest.fixture
def core(control_plane: ControlPlane) -> Iterator[Any]:
    with contextlib.closing(control_plane.api_client()) as api:
        yield client.CoreV1Api(api)


def wait_for(condition: Callable[[], Any], what: str, plane: ControlPlane, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{plane.logs_tail(15)}")
        time.sleep(0.2)


def get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def job_conditions(plane: ControlPlane, name: str, namespace: str) -> set[str]:
    job = get(plane, "job", name, namespace) or {}
    return {c["type"] for c in job.get("status", {}).get("conditions", []) if c["status"] == "True"}


def apply_job(plane: ControlPlane, namespace: str, name: str, command: list[str], gpus: int = 1) -> None:
    container = {
        "name": "main",
        "image": "ftstudy-trainer:test",
        "command": command,
        "resources": {"limits": {"nvidia.com/gpu": gpus}},
    }
    pod_spec = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [container]}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": pod_spec}},
    }
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))


def apply_pod(plane: ControlPlane, namespace: str, name: str, container: dict[str, Any], **spec: Any) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1", **container}]} | spec,
    }
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))


def job_pod(plane: ControlPlane, job: str, namespace: str) -> str:
    out = plane.kubectl("get", "pods", "-n", namespace, "-l", f"job-name={job}", "-o", "name").stdout.split()
    assert len(out) == 1, out
    return out[0].removeprefix("pod/")


def container_state(plane: ControlPlane, pod: str, namespace: str) -> dict[str, Any]:
    obj = get(plane, "pod", pod, namespace) or {}
    statuses = obj.get("status", {}).get("containerStatuses") or [{}]
    return dict(statuses[0].get("state", {}))


def node_names() -> dict[str, int]:
    return {f"gpu-{uuid.uuid4().hex[:6]}": 1}


def test_job_completes_and_its_output_is_logged(
    control_plane: ControlPlane, cluster_namespace: str, gpu_nodes_factory: NodesFactory
) -> None:
    nodes = gpu_nodes_factory(node_names())
    apply_job(control_plane, cluster_namespace, "hello", ["python", "-c", "print(1)"])
    wait_for(lambda: "Complete" in job_conditions(control_plane, "hello", cluster_namespace), "Complete", control_plane)
    pod = job_pod(control_plane, "hello", cluster_namespace)
    assert nodes.log_path(cluster_namespace, pod).read_text().strip() == "1"
    terminated = container_state(control_plane, pod, cluster_namespace)["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (0, "Completed", "1")
    assert [(r["pod"], r["exit_code"]) for r in nodes.runs] == [(pod, 0)]
    assert nodes.errors == []


def test_gpu_capacity_limits_concurrency(
    control_plane: ControlPlane, cluster_namespace: str, gpu_nodes_factory: NodesFactory
) -> None:
    nodes = gpu_nodes_factory(node_names())
    for name in ("first", "second"):
        apply_job(control_plane, cluster_namespace, name, ["python", "-c", "import time; time.sleep(3)"])
    for name in ("first", "second"):
        done = lambda name=name: "Complete" in job_conditions(control_plane, name, cluster_namespace)  # noqa: E731
        wait_for(done, f"{name} Complete", control_plane)
    assert nodes.max_running == 1
    first, second = sorted(nodes.runs, key=lambda r: r["started"])
    assert first["ended"] <= second["started"]


def test_deleting_a_job_kills_its_process(
    control_plane: ControlPlane, cluster_namespace: str, gpu_nodes_factory: NodesFactory
) -> None:
    nodes = gpu_nodes_factory(node_names())
    apply_job(control_plane, cluster_namespace, "forever", ["python", "-c", "import time; time.sleep(300)"])
    wait_for(lambda: nodes.running() == 1, "the process to start", control_plane)
    pod = job_pod(control_plane, "forever", cluster_namespace)
    control_plane.kubectl("delete", "job", "forever", "-n", cluster_namespace, "--cascade=background")
    wait_for(lambda: nodes.running() == 0, "the process to be killed", control_plane, timeout=30)
    assert nodes.runs[0]["exit_code"] == 143  # SIGTERM
    wait_for(lambda: get(control_plane, "pod", pod, cluster_namespace) is None, "the pod to go", control_plane)


def test_missing_secret_blocks_start_until_created(
    control_plane: ControlPlane, cluster_namespace: str, gpu_nodes_factory: NodesFactory
) -> None:
    nodes = gpu_nodes_factory(node_names())
    token = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}
    command = ["python", "-c", "import os; print(os.environ['TOKEN'], os.environ['POD'])"]
    pod_ns = {"name": "POD", "value": "$(NAME).$(NS)"}
    field_refs = [
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    container = {"command": command, "env": [token, *field_refs, pod_ns]}
    apply_pod(control_plane, cluster_namespace, "needs-secret", container)

    def waiting() -> dict[str, Any] | None:
        return container_state(control_plane, "needs-secret", cluster_namespace).get("waiting")

    def waiting_with(message: str) -> bool:
        state = waiting() or {}
        return state.get("reason") == "CreateContainerConfigError" and state.get("message") == message

    wait_for(lambda: waiting_with('secret "creds" not found'), "CreateContainerConfigError", control_plane)
    control_plane.kubectl("create", "secret", "generic", "creds", "-n", cluster_namespace, "--from-literal=other=x")
    message = f"couldn't find key token in Secret {cluster_namespace}/creds"
    wait_for(lambda: waiting_with(message), "the missing key's message", control_plane)
    assert nodes.runs == []
    patch = json.dumps({"stringData": {"token": "s3cret"}})
    control_plane.kubectl("patch", "secret", "creds", "-n", cluster_namespace, "-p", patch)
    exited = lambda: "terminated" in container_state(control_plane, "needs-secret", cluster_namespace)  # noqa: E731
    wait_for(exited, "the process to exit", control_plane)
    output = nodes.log_path(cluster_namespace, "needs-secret").read_text()
    assert output.strip() == f"s3cret needs-secret.{cluster_namespace}"


def test_missing_image_never_starts(
    control_plane: ControlPlane, cluster_namespace: str, gpu_nodes_factory: NodesFactory
) -> None:
    nodes = gpu_nodes_factory(node_names())
    apply_pod(control_plane, cluster_namespace, "no-image", {"image": "trainer:missing", "command": ["true"]})

    def reason() -> str | None:
        waiting = container_state(control_plane, "no-image", cluster_namespace).get("waiting", {})
        return str(waiting["reason"]) if "reason" in waiting else None

    wait_for(lambda: reason() == "ErrImagePull", "ErrImagePull", control_plane)
    time.sleep(1)
    assert reason() == "ErrImagePull"
    assert nodes.runs == []


def test_mount_paths_are_rewritten_to_host_directories(
    control_plane: ControlPlane, cluster_namespace: str, gpu_nodes_factory: NodesFactory, tmp_path: Path
) -> None:
    gpu_nodes_factory(node_names())
    write = "import os, sys; open(sys.argv[1], 'w').write(os.environ['SCRATCH'])"
    container = {
        "command": ["python", "-c", write, "/data/out.txt"],
        "env": [{"name": "SCRATCH", "value": "/scratch/x"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "scratch", "mountPath": "/scratch"}],
    }
    volumes = [{"name": "data", "hostPath": {"path": str(tmp_path)}}, {"name": "scratch", "emptyDir": {}}]
    apply_pod(control_plane, cluster_namespace, "mounts", container, volumes=volumes)
    wait_for(lambda: (tmp_path / "out.txt").exists(), "the file on the host path", control_plane)
    written = wait_for(lambda: (tmp_path / "out.txt").read_text(), "the file's content", control_plane)
    assert written.endswith("/volumes/scratch/x") and not written.startswith("/scratch")


def test_service_account_is_confined_to_its_namespace(
    control_plane: ControlPlane, cluster_namespace: str, core: Any
) -> None:
    other = f"other-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", other)
    try:
        control_plane.kubectl("create", "serviceaccount", "runner", "-n", cluster_namespace)
        kubeconfig = control_plane.service_account_kubeconfig(cluster_namespace, "runner")
        username = "jsonpath={.status.userInfo.username}"
        whoami = control_plane.kubectl("auth", "whoami", "-o", username, kubeconfig=kubeconfig)
        assert whoami.stdout == f"system:serviceaccount:{cluster_namespace}:runner"
        denied = control_plane.kubectl("get", "secrets", "-n", other, kubeconfig=kubeconfig, check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr
        with contextlib.closing(control_plane.api_client(kubeconfig)) as api, pytest.raises(ApiException) as error:
            client.CoreV1Api(api).list_namespaced_secret(other)
        assert error.value.status == 403
        assert core.list_namespaced_secret(other).items == []  # the admin may
    finally:
        control_plane.kubectl("delete", "namespace", other, "--wait=false", check=False)
