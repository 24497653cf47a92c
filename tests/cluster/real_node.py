"""A real Kubernetes node beside the test control plane: kubelet, kube-proxy, containerd with runc, CNI bridge.

Pods on it are containers: images, securityContext, volumes, probes, Pod Security admission and the ``kubernetes``
Service all behave as in a cluster. What makes it fit this machine (each a setting a kind or kubeadm node would
also need on such a host):

- containerd 1.6 from Debian, with its own root, state and socket under the node's directory, runc (crun fails on
  a hybrid cgroup layout), cgroupfs, and ``restrict_oom_score_adj`` (lowering a process's OOM score needs
  CAP_SYS_RESOURCE, which this machine's root lacks);
- the kubelet on cgroup v1 (``failCgroupV1: false``), without QoS cgroups or node-allocatable enforcement (the
  machine's cgroup tree is not ours to divide), with swap tolerated and eviction and image garbage collection held
  back so that a full disk of other work neither evicts a trial nor deletes the trainer image;
- images come from scripts/images.sh (no registry is reachable), imported into containerd's ``k8s.io`` namespace;
  ``ftstudy/operator``, ``ftstudy/trainer`` and ``ftstudy/postgresql`` are also tagged under ``docker.io/``, which
  is where the kubelet looks for the chart's default ``ftstudy/operator:VERSION``; the pause image is ours
  (scripts/images/pause.c);
- ``nvidia.com/gpu`` capacity is patched onto the Node's status, as a device plugin would advertise it; the
  containers get no device (there is none), so trials run on the CPU.

Nothing is installed outside the node's directory except containerd's and the CNI plugins' Debian packages, the
bridge interface, and kube-proxy's iptables rules (removed by ``stop``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shlex
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO

import yaml
from kubernetes import client

from tests.cluster.control_plane import (
    ControlPlane,
    ControlPlaneError,
    _death_signal_prefix,
    free_port,
    stop_process,
    tail_of,
)
from tests.images import Images

GPU_RESOURCE = "nvidia.com/gpu"
IMAGE_ID_LABEL = "io.ftstudy.image-id"
POD_SUBNET = "10.244.0.0/24"
BRIDGE = "ftstudy0"
CNI_BIN = Path("/usr/lib/cni")
# Where containerd keeps the imported images between test sessions (the trainer image is 6 GB: minutes to import).
IMAGE_STORE = Path.home() / ".cache" / "ftstudy" / "node-images"
DEBIAN_PACKAGES = {
    "containerd": "containerd",
    "ctr": "containerd",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
}


def node_ip() -> str:
    """The address this machine's default route leaves from: the node's InternalIP, as a kubelet would pick it."""
    route = subprocess.run(["ip", "-4", "route", "get", "192.0.2.255"], capture_output=True, text=True, check=True)
    words = route.stdout.split()
    return words[words.index("src") + 1]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def install_packages() -> None:
    missing = sorted({pkg for tool, pkg in DEBIAN_PACKAGES.items() if not (shutil.which(tool) or Path(tool).exists())})
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, capture_output=True)


def remove_iptables_leftovers() -> None:
    """The node's rules that outlive it: the bridge plugin's masquerade chains of sandboxes the kubelet had no time
    to tear down (ours: the network is named ``ftstudy``) and the kubelet's and kube-proxy's KUBE-* chains (this
    machine runs no other Kubernetes)."""
    ours = 'name: "ftstudy"'  # the bridge plugin's comment on its rules
    for table in ("nat", "filter", "mangle"):
        listed = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, check=False)
        rules = [shlex.split(line) for line in listed.stdout.splitlines()]
        chains = {r[1] for r in rules if r[0] == "-N" and r[1].startswith("KUBE-")}
        chains |= {r[r.index("-j") + 1] for r in rules if r[:2] == ["-A", "POSTROUTING"] and "-j" in r
                   and any(ours in word for word in r)}  # fmt: skip
        for rule in rules:  # the jumps into those chains from the machine's own chains
            if rule[0] == "-A" and rule[1] not in chains and "-j" in rule and rule[rule.index("-j") + 1] in chains:
                subprocess.run(["iptables", "-t", table, "-D", *rule[1:]], capture_output=True, check=False)
        for verb in ("-F", "-X"):
            for chain in chains:
                subprocess.run(["iptables", "-t", table, verb, chain], capture_output=True, check=False)


class RealNode:
    """One node named ``name`` with ``gpus`` advertised GPUs, registered with ``plane`` (which must have been
    started with ``node_ip``). ``start()`` takes a minute or two, most of it importing the trainer image."""

    def __init__(
        self,
        plane: ControlPlane | None,
        images: Images,
        workdir: Path,
        name: str = "real-node",
        gpus: int = 2,
        image_store: Path | None = None,
    ):
        """``image_store``: where containerd keeps its images between test sessions (importing the trainer image
        takes minutes); used by one node at a time, a second node meanwhile keeps its own under ``workdir``.
        ``plane`` None: no node, only ``import_images`` (containerd alone)."""
        if plane is not None and not plane.node_ip:
            raise ValueError("the control plane must serve the node's address (ControlPlane(..., node_ip=...))")
        self.plane, self.images, self.name, self.gpus = plane, images, name, gpus
        self.dir = Path(workdir)
        self.root = self.dir / "containerd" / "root"
        self._store_lock: IO[bytes] | None = None
        if image_store is not None:
            image_store.mkdir(parents=True, exist_ok=True)
            lock = open(image_store / ".lock", "wb")  # noqa: SIM115  (held until stop())
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.root, self._store_lock = image_store / "root", lock
            except BlockingIOError:
                lock.close()
        self.socket = self.dir / "containerd.sock"
        self.logs = self.dir / "logs"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: list[IO[bytes]] = []

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self, timeout: float = 600.0) -> RealNode:
        if self.plane is None:
            raise ValueError("a RealNode without a control plane only imports images")
        install_packages()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            self._start_containerd(deadline)
            self._import_images()
            self._start_dns(deadline)
            self._start_kubelet()
            self._start_kube_proxy()
            self._wait_ready(deadline)
            self._advertise_gpus()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Pods first (the kubelet tears their sandboxes and networks down), then the node's programs; whatever
        is still running in containerd is killed, and kube-proxy's rules are removed."""
        if self._procs.get("kubelet") and self._procs["kubelet"].poll() is None:
            self._delete_pods(timeout=60)
        for name in ("kube-proxy", "kubelet", "coredns"):
            self._terminate(name)
        if self._procs.get("containerd") and self._procs["containerd"].poll() is None:
            self._kill_tasks()
        self._terminate("containerd")
        if self._store_lock is not None:
            self._store_lock.close()
            self._store_lock = None
        self._unmount()
        if self.plane is not None:
            kube_proxy = self.plane.bin_dir / "kube-proxy"
            subprocess.run([str(kube_proxy), "--cleanup"], capture_output=True, check=False)
            remove_iptables_leftovers()
            subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
        for log in self._log_files:
            log.close()
        self._log_files.clear()

    def import_images(self, timeout: float = 1800.0) -> None:
        """What ``start`` imports, into the image store, with containerd alone (no node, no control plane):
        scripts/test.sh runs it as a build (``python -m tests.cluster.real_node``) once the images are built, so that
        on a fresh machine the first node starts in seconds. Importing is mostly disk (6 GB through ``podman save``,
        containerd's content store and its snapshots: about three minutes), which goes on beside the Go builds'
        CPU instead of after them while the tests wait."""
        if self._store_lock is None:
            raise ControlPlaneError("the image store is in use by another node: nothing to import into")
        install_packages()
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._start_containerd(time.monotonic() + timeout)
            self._import_images()
        finally:
            self.stop()

    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs_tail(self, lines: int = 40) -> str:
        return tail_of(sorted(self.logs.glob("*.log")), lines)

    def ctr(self, *args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        """``ctr`` against this node's containerd, in the kubelet's namespace."""
        command = ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args]
        run: subprocess.CompletedProcess[bytes] = subprocess.run(command, capture_output=True, **kwargs)  # type: ignore[call-overload]
        if check and run.returncode != 0:
            raise ControlPlaneError(f"ctr {' '.join(args[:3])} failed: {run.stderr.decode(errors='replace')[-2000:]}")
        return run

    # --- containerd ------------------------------------------------------------------------------------------

    def _start_containerd(self, deadline: float) -> None:
        config = self.dir / "containerd.toml"
        cni = self.dir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        config.write_text(
            f"""version = 2
root = "{self.root}"
state = "{self.dir / "containerd" / "state"}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.dir / "containerd" / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.images.pause}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni / "net.d"}"
"""
        )
        network = {
            "cniVersion": "0.4.0",
            "name": "ftstudy",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni / "net.d" / "10-ftstudy.conflist").write_text(json.dumps(network, indent=2))
        # A node's programs get sessions of their own; containerd alone (an import, run as a build of
        # scripts/test.sh) stays in its caller's, whose autogroup is niced: one of its own would be weighed as an
        # equal against the tests' while it unpacks gigabytes.
        self._spawn("containerd", ["containerd", "--config", str(config)], own_session=self.plane is not None)
        while self.ctr("version", check=False).returncode != 0:
            self._check_alive("containerd", deadline)
            time.sleep(0.2)

    def _import_images(self) -> None:
        """Each image through ``podman save`` into containerd; the operator's and the trainer's also under the name
        the kubelet resolves their short names to. An image already there with podman's image ID is kept."""
        for ref in (self.images.pause, self.images.operator, self.images.trainer, self.images.postgresql):
            image_id = subprocess.run(
                ["podman", "image", "inspect", "--format", "{{.Id}}", ref],
                capture_output=True, text=True, check=True, env=self.images.env,
            ).stdout.strip()  # fmt: skip
            listed = self.ctr("images", "list", "--quiet", f'name=={ref},labels."{IMAGE_ID_LABEL}"=={image_id}')
            if listed.stdout.strip():
                continue
            self._remove_image(ref)
            save = subprocess.Popen(
                ["podman", "save", "--format", "oci-archive", ref], stdout=subprocess.PIPE, env=self.images.env
            )
            assert save.stdout is not None
            # Named by the archive's own org.opencontainers.image.ref.name, which podman sets to ref. Not
            # --index-name: ctr 1.6 then unpacks an index it never stored once an older build of ref is in the store
            # ("content digest ...: not found").
            self.ctr("images", "import", "--all-platforms", "-", stdin=save.stdout)
            save.stdout.close()
            if save.wait() != 0:
                raise ControlPlaneError(f"podman save {ref} failed")
            if not self.ctr("images", "list", "--quiet", f"name=={ref}").stdout.strip():
                raise ControlPlaneError(f"podman save {ref} gave an archive that containerd did not name {ref}")
            if ref != self.images.pause:
                short = ref.removeprefix("localhost/")
                self.ctr("images", "tag", "--force", ref, f"docker.io/{short}")
            self.ctr("images", "label", ref, f"{IMAGE_ID_LABEL}={image_id}")
            self._discard_layers(ref)

    def _remove_image(self, ref: str) -> None:
        """An earlier build of ``ref`` goes, under every name it has, before the new one comes: importing over a name
        leaves the old image's unpacked snapshots in the kept store, held by its docker.io/ alias and by the name the
        CRI plugin gives each image it sees (``sha256:`` and its config's digest), and a trainer image is 6 GB of
        them (an old trainer and an old operator were found there, filling the disk the tests share). ``--sync``
        waits for containerd's garbage collection, which the deletion sets off."""
        rows = [line.split() for line in self.ctr("images", "list").stdout.decode().splitlines()[1:]]
        old = {row[2] for row in rows if row[0] == ref}  # REF TYPE DIGEST ...
        names = [row[0] for row in rows if row[2] in old]
        if names:
            self.ctr("images", "rm", "--sync", *names)

    def _discard_layers(self, ref: str) -> None:
        """Once unpacked, an image's layer archives are never read again (containers start from the unpacked
        snapshots), so they are deleted, as containerd's own ``discard_unpacked_layers`` does for pulled images:
        3.3 GB of the trainer image's 9.5 GB on the node."""
        listed = self.ctr("images", "list", f"name=={ref}").stdout.decode().splitlines()
        digest = listed[1].split()[2]  # REF TYPE DIGEST ...
        document = json.loads(self.ctr("content", "get", digest).stdout)
        manifests = [document] if "layers" in document else [
            json.loads(self.ctr("content", "get", m["digest"]).stdout) for m in document.get("manifests", [])
        ]  # fmt: skip
        for manifest in manifests:
            for layer in manifest["layers"]:
                self.ctr("content", "rm", layer["digest"], check=False)

    def _kill_tasks(self) -> None:
        listed = self.ctr("tasks", "list", "--quiet", check=False).stdout.decode().split()
        for task in listed:
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
        for task in listed:
            self.ctr("tasks", "delete", "--force", task, check=False)
        # The containers' records too, so that a kept image store starts the next node with none.
        for container in self.ctr("containers", "list", "--quiet", check=False).stdout.decode().split():
            self.ctr("containers", "delete", container, check=False)

    # --- cluster DNS, kubelet and kube-proxy ----------------------------------------------------------------

    def _start_dns(self, deadline: float) -> None:
        """CoreDNS on the node's address, as the cluster DNS (a cluster runs it as pods; here it runs beside the
        kubelet, which points pods at it): Service names resolve, e.g. the chart's ``helm test`` pod's."""
        ready = free_port()
        corefile = self.dir / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {self.plane.node_ip}
    errors
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {self.plane.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""
        )
        self._spawn("coredns", [str(self.plane.bin_dir / "coredns"), "-conf", str(corefile)])
        while not _http_ok(f"http://127.0.0.1:{ready}/ready"):
            self._check_alive("coredns", deadline)
            time.sleep(0.2)

    def _start_kubelet(self) -> None:
        kubeconfig = self.plane.client_kubeconfig(
            f"kubelet-{self.name}", f"system:node:{self.name}", groups=("system:nodes",)
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "oomScoreAdj": 0,  # lowering it needs CAP_SYS_RESOURCE
            "address": self.plane.node_ip,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzPort": 0,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.plane.pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "clusterDNS": [self.plane.node_ip],
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "localStorageCapacityIsolation": False,
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False,
        }  # fmt: skip
        path = self.dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                str(self.plane.bin_dir / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--cert-dir={self.dir / 'kubelet' / 'pki'}",
                f"--hostname-override={self.name}",
                # What NVIDIA's GPU feature discovery labels a GPU node with: trial templates select on it.
                "--node-labels=nvidia.com/gpu.present=true",
                f"--node-ip={self.plane.node_ip}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        kubeconfig = self.plane.client_kubeconfig("kube-proxy", "system:kube-proxy")
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": POD_SUBNET,
            # Leave the machine's conntrack table size alone (setting it needs a writable /sys).
            "conntrack": {"maxPerCore": 0},
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "oomScoreAdj": 0,  # lowering it needs CAP_SYS_RESOURCE
        }
        path = self.dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(self.plane.bin_dir / "kube-proxy"), f"--config={path}", "--v=1"])

    def _wait_ready(self, deadline: float) -> None:
        api = self.plane.api_client()
        try:
            core = client.CoreV1Api(api)
            while True:
                self._check_alive("kubelet", deadline)
                with contextlib.suppress(client.ApiException):
                    node = core.read_node(self.name)
                    ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
                    if ready and ready[0].status == "True":
                        return
                time.sleep(0.5)
        finally:
            api.close()

    def _advertise_gpus(self) -> None:
        """What the NVIDIA device plugin does: the extended resource in the Node's capacity."""
        api = self.plane.api_client()
        try:
            body = [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(self.gpus)}]
            client.CoreV1Api(api).patch_node_status(self.name, body)
            core = client.CoreV1Api(api)
            deadline = time.monotonic() + 30
            while (core.read_node(self.name).status.allocatable or {}).get(GPU_RESOURCE) != str(self.gpus):
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"{GPU_RESOURCE} never became allocatable on {self.name}")
                time.sleep(0.2)
        finally:
            api.close()

    def _delete_pods(self, timeout: float) -> None:
        api = self.plane.api_client()
        try:
            core = client.CoreV1Api(api)
            # Cordoned first, as a drain does: the controllers of what the tests left installed (the chart's
            # Deployment and StatefulSet) replace each deleted pod, and the scheduler would bind the replacement to
            # this node again, so that the wait below never saw the node empty.
            with contextlib.suppress(client.ApiException):
                core.patch_node(self.name, {"spec": {"unschedulable": True}})
            selector = f"spec.nodeName={self.name}"
            for pod in core.list_pod_for_all_namespaces(field_selector=selector).items:
                with contextlib.suppress(client.ApiException):
                    core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
            deadline = time.monotonic() + timeout
            while self.ctr("tasks", "list", "--quiet", check=False).stdout.strip():
                if time.monotonic() > deadline:
                    return
                time.sleep(0.5)
        finally:
            api.close()

    def _unmount(self) -> None:
        """What the kubelet mounted (its root directory, bind-mounted onto itself, and the pods' volumes), deepest
        first, so that the node's directory can be deleted."""
        prefix = f"{self.dir}/"
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)

    # --- processes -------------------------------------------------------------------------------------------

    def _spawn(self, name: str, command: list[str], own_session: bool = True) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115  (closed in stop())
        self._log_files.append(log)
        self._procs[name] = subprocess.Popen(
            [*_death_signal_prefix(), *command], stdout=log, stderr=subprocess.STDOUT, start_new_session=own_session
        )

    def _check_alive(self, name: str, deadline: float) -> None:
        proc = self._procs[name]
        if proc.poll() is not None:
            raise ControlPlaneError(f"{name} exited with {proc.returncode}\n{self.logs_tail()}")
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"the node did not come up in time\n{self.logs_tail()}")

    def _terminate(self, name: str) -> None:
        stop_process(self._procs.get(name), grace=10)


if __name__ == "__main__":
    # scripts/test.sh's node-images build: the images into IMAGE_STORE, which it prints, as every build prints its
    # result.
    import tempfile

    from tests.images import build_images

    with tempfile.TemporaryDirectory(prefix="ftstudy-node-images.") as scratch:
        RealNode(None, build_images(), Path(scratch), image_store=IMAGE_STORE).import_images()
    print(IMAGE_STORE)
