"""A simulated kubelet: Nodes with ``nvidia.com/gpu`` capacity whose pods run as local processes.

The control plane is real, so scheduling by GPU count, Jobs, owner references and RBAC behave as in a cluster; only
the node agent is stood in for, because this machine has no container runtime. For each node it registers a Node,
keeps it Ready (Lease renewals, Ready heartbeats, removing the not-ready/unreachable taints the controllers may add),
and for each pod bound to it runs the first container's ``command + args`` as a process in its own process group,
reporting status as a kubelet would (Pending, Running, then Succeeded/Failed with the exit code and the output's
tail as the termination message). Deleting a pod SIGTERMs the group, SIGKILLs it after the grace period (at most
``MAX_GRACE_S``) and then removes the pod with grace period 0.

Stand-in for mounts: processes cannot get mount namespaces here, so for each volumeMount whose volume is
``hostPath``, ``persistentVolumeClaim`` (bound to a PersistentVolume with a ``hostPath`` or ``local`` path; an
unbound claim keeps the container waiting), ``emptyDir`` (a fresh per-pod directory under ``workdir``),
``configMap`` or ``secret`` (its keys written as files under ``workdir``), every command/arg and container env value
that is the mountPath or starts with ``mountPath/`` (also after a ``--flag=``) is rewritten to the host directory
instead, except the image's own files (the project and its Python environment, ``IMAGE_ROOTS``). Paths the program
builds itself are not rewritten, nor is the container's image filesystem anything but this machine's
(``readOnlyRootFilesystem``, ``fsGroup`` and users are not simulated: processes run as this user).
A ``projected`` volume of ``serviceAccountToken`` sources gets real tokens (a TokenRequest bound to the pod, as the
kubelet makes them); other projected, service-account and other volumes are ignored.

Also simulated: an image whose tag is ``missing`` never pulls (waiting ``ErrImagePull``); a missing Secret,
ConfigMap or key in ``env``/``envFrom`` keeps the container waiting in ``CreateContainerConfigError`` with the
kubelet's message, retried every poll. Not simulated: init and sidecar containers (only the first container runs),
probes, resource limits, service-link env vars, ``kubectl logs``/``exec`` (read ``log_path()`` instead).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"
POLL_S = 0.25
HEARTBEAT_S = 5.0
LEASE_DURATION_S = 40
MAX_GRACE_S = 10.0
TERMINATION_MESSAGE_LINES = 20
TERMINATION_MESSAGE_BYTES = 4096
REQUEST_TIMEOUT_S = 10.0
HOST_IP = "127.0.0.1"
# Taints the admission plugin and the node lifecycle controller put on nodes that are (or look) not ready.
CONDITION_TAINTS = frozenset(
    {
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.cloudprovider.kubernetes.io/uninitialized",
    }
)
MY_POD_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")

# The harness's image filesystem is this machine's: the project and its Python environment are the image's own
# files, never a volume's, even when a clone lives under a path that pods mount over (/tmp, the trial's scratch).
IMAGE_ROOTS = tuple(dict.fromkeys(str(p) for p in (Path(__file__).resolve().parents[2], Path(sys.prefix))))
_EXPANSION = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")

Json = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ConfigError(Exception):
    """Why a container cannot be created yet; becomes its waiting state and is retried on the next poll."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class _Pod:
    """What this kubelet knows about one pod (by uid), beyond what the API shows."""

    namespace: str
    name: str
    uid: str
    node: str
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    started_at: str = ""
    container_id: str = ""
    run: dict[str, Any] | None = None
    restart_count: int = 0
    last_state: Json = field(default_factory=dict)
    waiting: tuple[str, str] | None = None
    finished: bool = False
    kill_at: float | None = None
    deleted: bool = False
    pending_status: Json | None = None


class GpuNodes:
    """Registers ``nodes`` (name -> GPU count) and runs their pods until ``stop()``; see the module docstring.

    ``runs`` records every process (namespace, pod, node, started, ended, exit_code; times from ``time.time()``),
    ``max_running`` the most processes alive at once (by the kernel's account, checked at each start). ``env`` is
    the base environment of every process (the stand-in for an image's environment: PATH, PYTHONPATH...), to which
    the container's ``env``/``envFrom`` are added.
    """

    def __init__(
        self,
        api_client: ApiClient,
        nodes: dict[str, int],
        env: dict[str, str],
        workdir: Path,
        *,
        cpu: str = "16",
        memory: str = "64Gi",
        labels: dict[str, str] | None = None,
        poll_s: float = POLL_S,
        nice: int = 0,
    ) -> None:
        self._api = api_client
        self.poll_s = poll_s  # how often each node lists its pods: hundreds of pods want longer than POLL_S
        self.nodes = dict(nodes)
        self.env = dict(env)
        self.workdir = Path(workdir)
        self.cpu = cpu
        self.memory = memory
        self.labels = dict(labels or {})
        self.runs: list[dict[str, Any]] = []
        self.max_running = 0
        self.errors: list[str] = []
        self._pods: dict[str, _Pod] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._node_uids: dict[str, str] = {}
        self._ready_since = _now()
        self._death_signal = [p, "--pdeathsig", "KILL"] if (p := shutil.which("setpriv")) else []
        # Pods at a lower CPU priority than everything else here (nice 19 at most): on a real cluster trainers run
        # on their own nodes, not beside the control plane, so a thousand of them starting at once on this
        # machine must not stall etcd and the API server (a 7 s Lease update cost the operator its leadership).
        self._nice = ["nice", "-n", str(nice)] if nice else []

    # --- public ----------------------------------------------------------------------------------------------

    def start(self) -> GpuNodes:
        """Register the nodes (Ready, untainted) before returning, so pods created next can be scheduled at once."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in self.nodes:
            self._register(name)
        self._heartbeat()
        # A thread per node, as each node has a kubelet of its own, and one for the heartbeats: a node with a
        # hundred pods to start must neither hold up the others nor miss its heartbeat (the node lifecycle
        # controller marks a node not ready after 40 s without one and evicts its pods).
        self._threads = [threading.Thread(target=self._heartbeats, name="gpu-nodes-heartbeat", daemon=True)]
        for name in self.nodes:
            self._threads.append(
                threading.Thread(target=self._loop, args=(name,), name=f"gpu-node-{name}", daemon=True)
            )
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Kill every process, mark their pods Failed, and remove the Nodes so a later instance starts clean."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        live = [pod for pod in self._pods.values() if pod.proc is not None and pod.proc.poll() is None]
        for pod in live:
            self._signal(pod, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for pod in live:
            assert pod.proc is not None
            try:
                pod.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(pod, signal.SIGKILL)
                pod.proc.wait()
        for pod in live:
            assert pod.proc is not None
            with contextlib.suppress(Exception):
                self._finish(pod, _exit_code(pod.proc.returncode), reason_override="the simulated node was stopped")
        for name in self.nodes:  # best effort: the control plane may be gone already
            with contextlib.suppress(Exception):
                self._call("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}")
            with contextlib.suppress(Exception):
                self._call("DELETE", f"/api/v1/nodes/{name}")

    def __enter__(self) -> GpuNodes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def running(self) -> int:
        """Processes started and not yet seen to exit: once it drops, ``runs`` holds the exit codes too."""
        with self._lock:
            return sum(1 for run in self.runs if run["ended"] is None)

    def log_path(self, namespace: str, pod_name: str) -> Path:
        """Where the pod's stdout and stderr go (what ``kubectl logs`` would show)."""
        return self.workdir / "logs" / namespace / f"{pod_name}.log"

    def log(self, namespace: str, pod_name: str) -> str:
        """The pod's output so far ("" before it starts)."""
        where = self.log_path(namespace, pod_name)
        return where.read_text() if where.exists() else ""

    # --- API access ------------------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        """A plain JSON request through the client's connection and credentials, without its model classes.

        Raw JSON keeps this kubelet independent of how the client's models (de)serialize, and a merge patch with a
        whole list is the simplest way to say what a status is now.
        """
        method, url, headers, body, post = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response: Any = self._api.call_api(method, url, headers, body, post, _request_timeout=REQUEST_TIMEOUT_S)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=data.decode(errors="replace"), data=None)
        return json.loads(data) if data else {}

    def _merge_patch(self, path: str, body: Json) -> Json:
        return self._call("PATCH", path, body, content_type="application/merge-patch+json")

    # --- nodes -----------------------------------------------------------------------------------------------

    def _node_status(self, name: str) -> Json:
        resources = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": "110",
            "ephemeral-storage": "100Gi",
            GPU_RESOURCE: str(self.nodes[name]),
        }
        heartbeat = _now()

        def condition(kind: str, status: str, reason: str, message: str) -> Json:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": self._ready_since,
            }

        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "simulated kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": HOST_IP}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "ftstudy simulated GPU node",
                "kernelVersion": os.uname().release,
                "containerRuntimeVersion": "sim://local-process",
                "kubeletVersion": "v1.34.4",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    def _register(self, name: str) -> None:
        gpus = self.nodes[name]
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "nvidia.com/gpu.present": "true" if gpus else "false",
            "nvidia.com/gpu.count": str(gpus),
            "ftstudy.test/simulated-node": "true",
            **self.labels,
        }
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": {}}
        body["status"] = self._node_status(name)
        try:
            node = self._call("POST", "/api/v1/nodes", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            node = self._merge_patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": labels}})
        self._node_uids[name] = node["metadata"]["uid"]

    def _heartbeat(self) -> None:
        """What keeps the node lifecycle controller from marking the nodes unreachable and evicting their pods."""
        for name in self.nodes:
            try:
                self._heartbeat_node(name)
            except Exception as exc:
                self._error(f"heartbeat of node {name}", exc)

    def _heartbeat_node(self, name: str) -> None:
        try:
            node = self._merge_patch(f"/api/v1/nodes/{name}/status", {"status": self._node_status(name)})
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._register(name)
            node = self._merge_patch(f"/api/v1/nodes/{name}/status", {"status": self._node_status(name)})
        self._node_uids[name] = node["metadata"]["uid"]
        taints = node.get("spec", {}).get("taints") or []
        kept = [t for t in taints if t.get("key") not in CONDITION_TAINTS]
        if len(kept) != len(taints):
            patch = {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]}, "spec": {"taints": kept}}
            with contextlib.suppress(ApiException):  # a conflict: the next heartbeat tries again
                self._merge_patch(f"/api/v1/nodes/{name}", patch)
        self._renew_lease(name)

    def _renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_S, "renewTime": _now_micro()}
        try:
            self._merge_patch(path, {"spec": spec})
        except ApiException as exc:
            if exc.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": self._node_uids[name]}
            meta = {"name": name, "namespace": "kube-node-lease", "ownerReferences": [owner]}
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}
            self._call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body)

    # --- the loop --------------------------------------------------------------------------------------------

    def _heartbeats(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._heartbeat()

    def _loop(self, name: str) -> None:
        """Poll rather than watch: a few list calls a second cost nothing here and cannot miss an event."""
        while not self._stop.is_set():
            try:
                self._sync_node_pods(name)
            except Exception as exc:
                self._error(f"syncing pods of node {name}", exc)
            self._stop.wait(self.poll_s)

    def _sync_node_pods(self, node: str) -> None:
        listing = self._call("GET", "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={node}"})
        seen = set()
        for item in listing.get("items", []):
            uid = item["metadata"]["uid"]
            seen.add(uid)
            with self._lock:
                pod = self._pods.get(uid)
                if pod is None:
                    meta = item["metadata"]
                    pod = self._pods[uid] = _Pod(meta["namespace"], meta["name"], uid, node)
            try:
                self._sync_pod(pod, item)
            except Exception as exc:
                self._error(f"syncing pod {pod.namespace}/{pod.name}", exc)
        for uid, pod in list(self._pods.items()):
            if pod.node == node and uid not in seen:
                self._forget(pod)

    def _forget(self, pod: _Pod) -> None:
        """The pod is gone from the API (force-deleted): stop its process as a kubelet would, then drop it."""
        if pod.proc is not None and pod.proc.poll() is None:
            if pod.kill_at is None:
                self._signal(pod, signal.SIGTERM)
                pod.kill_at = time.monotonic() + MAX_GRACE_S
            elif time.monotonic() >= pod.kill_at:
                self._signal(pod, signal.SIGKILL)
            return
        if pod.proc is not None:
            self._record_end(pod, _exit_code(pod.proc.returncode))
        with self._lock:
            self._pods.pop(pod.uid, None)

    def _sync_pod(self, pod: _Pod, item: Json) -> None:
        if pod.pending_status is not None:
            self._patch_status(pod, pod.pending_status)
        if item["metadata"].get("deletionTimestamp"):
            self._terminate(pod, item)
            return
        if pod.finished:
            return
        if pod.proc is None:
            phase = item.get("status", {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                pod.finished = True
            elif phase == "Running":  # started by an earlier instance of this kubelet, whose process is gone
                self._finish(pod, 137, item, reason_override="the simulated kubelet restarted")
            else:
                self._try_start(pod, item)
            return
        code = pod.proc.poll()
        if code is not None:
            self._on_exit(pod, item, _exit_code(code))

    def _terminate(self, pod: _Pod, item: Json) -> None:
        """Graceful deletion: SIGTERM, SIGKILL after the grace period, final status, then delete with grace 0."""
        if pod.proc is not None and pod.proc.poll() is None:
            if pod.kill_at is None:
                grace = item["spec"].get("terminationGracePeriodSeconds")
                grace = MAX_GRACE_S if grace is None else min(float(grace), MAX_GRACE_S)
                self._signal(pod, signal.SIGTERM)
                pod.kill_at = time.monotonic() + grace
            elif time.monotonic() >= pod.kill_at:
                self._signal(pod, signal.SIGKILL)
            return
        if pod.proc is not None and not pod.finished:
            self._finish(pod, _exit_code(pod.proc.returncode), item)
        pod.finished = True
        if not pod.deleted:
            options = {"gracePeriodSeconds": 0, "preconditions": {"uid": pod.uid}}
            try:
                self._call("DELETE", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}", options)
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise
            pod.deleted = True

    # --- starting --------------------------------------------------------------------------------------------

    def _try_start(self, pod: _Pod, item: Json) -> None:
        spec = item["spec"]
        container = spec["containers"][0]
        image = container.get("image", "")
        if image.rsplit("/", 1)[-1].partition(":")[2] == "missing":
            message = f'Failed to pull image "{image}": {image} not found (simulated by the harness)'
            self._set_waiting(pod, item, "ErrImagePull", message)
            return
        try:
            env = self._container_env(pod, item, container)
            mounts = self._mounts(pod, item, container)
        except ConfigError as exc:
            self._set_waiting(pod, item, exc.reason, exc.message)
            return
        for key, value in list(env.items()):
            if key not in self.env or value != self.env[key]:
                env[key] = _rewrite(value, mounts)
        argv = [_rewrite(_expand(a, env), mounts) for a in (container.get("command") or []) + container.get("args", [])]
        executable = shutil.which(argv[0], path=env.get("PATH", self.env.get("PATH"))) if argv else None
        if executable is None:
            problem = f'exec: "{argv[0]}": executable file not found in $PATH' if argv else "no command"
            message = f"failed to create containerd task: {problem} (the harness runs `command`, not images)"
            if spec.get("restartPolicy", "Always") == "Never":
                self._finish(pod, 128, item, reason_override=message, reason="StartError")
            else:
                self._set_waiting(pod, item, "RunContainerError", message)
            return
        workdir = self._pod_dir(pod)
        cwd = Path(_rewrite(container["workingDir"], mounts)) if container.get("workingDir") else workdir
        if not cwd.is_dir():
            cwd = workdir
        log_path = self.log_path(pod.namespace, pod.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab" if pod.restart_count else "wb") as log_file:
            pod.log_offset = log_file.tell()
            proc = subprocess.Popen(
                [*self._death_signal, *self._nice, executable, *argv[1:]],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pod.started_at = _now()
        pod.container_id = f"sim://{pod.uid}-{pod.restart_count}"
        pod.waiting = None
        run = {"namespace": pod.namespace, "pod": pod.name, "node": pod.node, "started": time.time()}
        run |= {"ended": None, "exit_code": None}
        with self._lock:
            pod.proc = proc
            pod.run = run
            self.runs.append(run)
            alive = sum(1 for p in self._pods.values() if p.proc is not None and p.proc.poll() is None)
            self.max_running = max(self.max_running, alive)
        self._patch_status(pod, self._running_status(pod, item))

    def _pod_dir(self, pod: _Pod) -> Path:
        path = self.workdir / "pods" / pod.namespace / f"{pod.name}-{pod.uid[:8]}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _read(self, kind: str, namespace: str, name: str) -> Json | None:
        plural = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        try:
            return self._call("GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _source_data(self, kind: str, namespace: str, name: str, optional: bool) -> dict[str, str] | None:
        """A Secret's or ConfigMap's data as text; None when it is missing but optional."""
        obj = self._read(kind, namespace, name)
        if obj is None:
            if optional:
                return None
            raise ConfigError("CreateContainerConfigError", f'{kind.lower()} "{name}" not found')
        if kind == "Secret":
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})

    def _container_env(self, pod: _Pod, item: Json, container: Json) -> dict[str, str]:
        """The container's environment resolved like the kubelet does, on top of the base environment."""
        env = dict(self.env)
        env["HOSTNAME"] = pod.name
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    ref = source[key]
                    data = self._source_data(kind, pod.namespace, ref["name"], bool(ref.get("optional")))
                    env.update({prefix + k: v for k, v in (data or {}).items()})
        for var in container.get("env") or []:
            value = self._env_value(pod, item, var, env)
            if value is not None:
                env[var["name"]] = value
        return env

    def _env_value(self, pod: _Pod, item: Json, var: Json, env: dict[str, str]) -> str | None:
        if "valueFrom" not in var:
            return _expand(var.get("value", ""), env)
        source = var["valueFrom"]
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if key in source:
                ref = source[key]
                optional = bool(ref.get("optional"))
                data = self._source_data(kind, pod.namespace, ref["name"], optional)
                if data is None:
                    return None
                if ref["key"] not in data:
                    if optional:
                        return None
                    message = f"couldn't find key {ref['key']} in {kind} {pod.namespace}/{ref['name']}"
                    raise ConfigError("CreateContainerConfigError", message)
                return data[ref["key"]]
        if "fieldRef" in source:
            return _field_value(item, source["fieldRef"]["fieldPath"])
        return None  # resourceFieldRef: not simulated

    def _mounts(self, pod: _Pod, item: Json, container: Json) -> list[tuple[str, str]]:
        """(mountPath, host directory) for the volumes the harness can stand in for, longest mountPath first."""
        volumes = {v["name"]: v for v in item["spec"].get("volumes") or []}
        result = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            host = self._volume_dir(pod, volume, item)
            if host is None:
                continue
            if mount.get("subPath"):
                host = host / mount["subPath"]
                host.mkdir(parents=True, exist_ok=True)
            result.append((mount["mountPath"].rstrip("/") or "/", str(host)))
        return sorted(result, key=lambda m: len(m[0]), reverse=True)

    def _volume_dir(self, pod: _Pod, volume: Json, item: Json | None = None) -> Path | None:
        if "projected" in volume and item is not None:
            return self._projected_tokens(pod, volume, item)
        if "persistentVolumeClaim" in volume:
            return self._claim_dir(pod, volume["persistentVolumeClaim"]["claimName"])
        if "hostPath" in volume:
            host = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type", "") in ("", "DirectoryOrCreate"):
                with contextlib.suppress(OSError):
                    host.mkdir(parents=True, exist_ok=True)
            return host
        if not any(k in volume for k in ("emptyDir", "configMap", "secret")):
            return None
        path = self._pod_dir(pod) / "volumes" / str(volume["name"])
        path.mkdir(parents=True, exist_ok=True)
        for kind, key, name_key in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
            if key in volume:
                source = volume[key]
                data = self._source_data(kind, pod.namespace, source[name_key], bool(source.get("optional")))
                if data is None and not source.get("optional"):
                    raise ConfigError("ContainerCreating", f'{kind.lower()} "{source[name_key]}" not found')
                items = source.get("items") or [{"key": k, "path": k} for k in data or {}]
                for entry in items:
                    if data is not None and entry["key"] in data:
                        target = path / entry["path"]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_text(data[entry["key"]])
        return path

    def _projected_tokens(self, pod: _Pod, volume: Json, item: Json) -> Path | None:
        """A projected volume of service-account tokens, minted as the kubelet mints them: a TokenRequest for the
        pod's service account, bound to the pod (name and UID), with the source's audience and expiry. Not
        renewed (the kubelet renews at 80% of the expiry; tests end sooner). Other projected sources: None."""
        sources = (volume.get("projected") or {}).get("sources") or []
        if not sources or not all("serviceAccountToken" in source for source in sources):
            return None
        path = self._pod_dir(pod) / "volumes" / str(volume["name"])
        path.mkdir(parents=True, exist_ok=True)
        account = item["spec"].get("serviceAccountName") or "default"
        for source in sources:
            token = source["serviceAccountToken"]
            request = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [token["audience"]] if token.get("audience") else [],
                    "expirationSeconds": int(token.get("expirationSeconds", 3600)),
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid},
                },
            }
            answer = self._call("POST", f"/api/v1/namespaces/{pod.namespace}/serviceaccounts/{account}/token", request)
            (path / token["path"]).write_text(answer["status"]["token"])
        return path

    def _claim_dir(self, pod: _Pod, claim: str) -> Path | None:
        """The host directory of the PersistentVolume a claim is bound to (hostPath or local volumes only)."""
        try:
            pvc = self._call("GET", f"/api/v1/namespaces/{pod.namespace}/persistentvolumeclaims/{claim}")
        except ApiException as exc:
            if exc.status == 404:
                raise ConfigError("ContainerCreating", f'persistentvolumeclaim "{claim}" not found') from None
            raise
        volume_name = pvc.get("spec", {}).get("volumeName")
        if not volume_name or pvc.get("status", {}).get("phase") != "Bound":
            raise ConfigError("ContainerCreating", f'persistentvolumeclaim "{claim}" is not bound')
        pv = self._call("GET", f"/api/v1/persistentvolumes/{volume_name}")
        source = pv["spec"].get("hostPath") or pv["spec"].get("local")
        if not source:
            return None
        host = Path(source["path"])
        with contextlib.suppress(OSError):
            host.mkdir(parents=True, exist_ok=True)
        return host

    # --- status ----------------------------------------------------------------------------------------------

    def _conditions(self, item: Json, ready: bool, reason: str = "", message: str = "") -> list[Json]:
        """The pod's conditions with the kubelet's four replaced; others (PodScheduled...) are kept as they are."""
        now = _now()
        old = {c["type"]: c for c in item.get("status", {}).get("conditions") or []}

        def condition(kind: str, status: bool) -> Json:
            value = "True" if status else "False"
            previous = old.get(kind, {})
            since = previous.get("lastTransitionTime", now) if previous.get("status") == value else now
            result = {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": since}
            if not status and reason:
                result |= {"reason": reason, "message": message}
            return result

        mine = [
            condition("PodReadyToStartContainers", reason != "PodCompleted"),
            condition("Initialized", True),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ]
        return [c for c in old.values() if c["type"] not in MY_POD_CONDITIONS] + mine

    def _container_status(self, item: Json, pod: _Pod, state: Json, ready: bool) -> Json:
        container = item["spec"]["containers"][0]
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": f"sim://{container.get('image', '')}" if pod.container_id else "",
            "containerID": pod.container_id or None,
            "ready": ready,
            "started": ready,
            "restartCount": pod.restart_count,
            "state": state,
            "lastState": pod.last_state,
        }

    def _base_status(self, item: Json) -> Json:
        status = item.get("status", {})
        return {
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": HOST_IP,
            "podIPs": [{"ip": HOST_IP}],
            "startTime": status.get("startTime") or _now(),
        }

    def _running_status(self, pod: _Pod, item: Json) -> Json:
        state = {"running": {"startedAt": pod.started_at}}
        return self._base_status(item) | {
            "phase": "Running",
            "conditions": self._conditions(item, ready=True),
            "containerStatuses": [self._container_status(item, pod, state, ready=True)],
        }

    def _set_waiting(self, pod: _Pod, item: Json, reason: str, message: str) -> None:
        if pod.waiting == (reason, message):
            return
        pod.waiting = (reason, message)
        container = item["spec"]["containers"][0]["name"]
        unready = f"containers with unready status: [{container}]"
        state = {"waiting": {"reason": reason, "message": message}}
        status = self._base_status(item) | {
            "phase": "Pending",
            "conditions": self._conditions(item, ready=False, reason="ContainersNotReady", message=unready),
            "containerStatuses": [self._container_status(item, pod, state, ready=False)],
        }
        status.pop("podIP")
        status.pop("podIPs")
        self._patch_status(pod, status)

    def _on_exit(self, pod: _Pod, item: Json, code: int) -> None:
        policy = item["spec"].get("restartPolicy", "Always")
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            self._record_end(pod, code)
            pod.last_state = {"terminated": self._terminated(pod, code)}
            pod.restart_count += 1
            pod.proc = None
            self._try_start(pod, item)
            return
        self._finish(pod, code, item)

    def _terminated(self, pod: _Pod, code: int, reason: str | None = None, message: str | None = None) -> Json:
        return {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "message": message if message is not None else self._output_tail(pod),
            "startedAt": pod.started_at or None,
            "finishedAt": _now(),
            "containerID": pod.container_id or None,
        }

    def _finish(
        self,
        pod: _Pod,
        code: int,
        item: Json | None = None,
        reason_override: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Report the container terminated and the pod Succeeded/Failed; it will never run again."""
        self._record_end(pod, code)
        pod.finished = True
        if item is None:
            item = self._call("GET", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}")
        message = self._output_tail(pod)
        if reason_override:
            message = f"{reason_override}\n{message}".strip()
        state = {"terminated": self._terminated(pod, code, reason, message)}
        status = self._base_status(item) | {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": self._conditions(item, ready=False, reason="PodCompleted"),
            "containerStatuses": [self._container_status(item, pod, state, ready=False)],
        }
        self._patch_status(pod, status)

    def _patch_status(self, pod: _Pod, status: Json) -> None:
        """Send the status; on failure keep it, to be sent again on the next poll (a kubelet's status manager)."""
        path = f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status"
        try:
            self._merge_patch(path, {"metadata": {"uid": pod.uid}, "status": status})
            pod.pending_status = None
        except ApiException as exc:
            pod.pending_status = None if exc.status in (404, 409, 422) else status
            if exc.status not in (404, 409):
                self._error(f"status of pod {pod.namespace}/{pod.name}", exc)

    def _record_end(self, pod: _Pod, code: int) -> None:
        with self._lock:
            if pod.run is not None and pod.run["ended"] is None:
                pod.run["ended"] = time.time()
                pod.run["exit_code"] = code

    def _output_tail(self, pod: _Pod) -> str:
        """The end of this run's output: the termination message, as with FallbackToLogsOnError."""
        path = self.log_path(pod.namespace, pod.name)
        if pod.proc is None or not path.exists():
            return ""
        with open(path, "rb") as f:
            f.seek(pod.log_offset)
            text = f.read().decode(errors="replace")
        tail = "\n".join(text.splitlines()[-TERMINATION_MESSAGE_LINES:])
        return tail[-TERMINATION_MESSAGE_BYTES:]

    # --- helpers ---------------------------------------------------------------------------------------------

    def _signal(self, pod: _Pod, sig: signal.Signals) -> None:
        if pod.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pod.proc.pid, sig)

    def _error(self, what: str, exc: Exception) -> None:
        """Log and keep going: one bad pod or a slow API call must not stop the node agent."""
        text = f"{what}: {type(exc).__name__}: {exc}"
        self.errors.append(text)
        log.warning("%s", text)


def _exit_code(returncode: int) -> int:
    """A container's exit code: 128 + the signal for a killed process, as a runtime reports it."""
    return returncode if returncode >= 0 else 128 - returncode


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined variables are replaced, undefined ones kept, $$ escapes a $."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _EXPANSION.sub(replace, value)


def _rewrite(value: str, mounts: list[tuple[str, str]]) -> str:
    """The mount stand-in: a path under a mountPath, alone or after ``--flag=``, becomes the host path (unless it
    is one of the image's own files, under ``IMAGE_ROOTS``)."""
    if any(value.partition("=")[2 if "=" in value else 0].startswith(root + "/") for root in IMAGE_ROOTS):
        return value
    for mount_path, host in mounts:
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return host + value[len(mount_path) :]
        flag, eq, rest = value.partition("=")
        if eq and (rest == mount_path or rest.startswith(mount_path.rstrip("/") + "/")):
            return f"{flag}={host}{rest[len(mount_path) :]}"
    return value


def _field_value(item: Json, path: str) -> str:
    """The downward API's fieldRef for the paths pods commonly use."""
    meta, spec = item["metadata"], item["spec"]
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": HOST_IP,
        "status.hostIP": HOST_IP,
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    return ""
