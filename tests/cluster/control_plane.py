"""A throwaway Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

The components run as subprocesses with their data, certificates and logs in one directory, so that tests see the
real API semantics (admission, RBAC, the Job controller, the garbage collector, the scheduler's resource fit) rather
than a mock's idea of them. Everything listens on 127.0.0.1 only; the service range 10.0.0.0/24 is just a range of
addresses for Service objects and nothing connects to it. There is no kubelet: see ``gpu_nodes`` (simulated nodes,
pods as processes), and ``real_node`` for a real one, whose control plane also serves the node's address.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes import client, config
from kubernetes.client import ApiClient

SERVICE_CIDR = "10.0.0.0/24"
FIRST_SERVICE_IP = "10.0.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

_DURATION = re.compile(r"(\d+)([hms])")
_SECONDS = {"h": 3600, "m": 60, "s": 1}


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call whose message carries kubectl's stderr, which CalledProcessError's does not."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message ends with the components' log tails."""


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the kernel's choice, so collisions are unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_duration(text: str) -> int:
    """Seconds in a Go-style duration such as ``2h``, ``90m`` or ``1h30m``, the format kubectl users know."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 2h, 30m, 1h30m)")
    return sum(int(n) * _SECONDS[u] for n, u in parts)


def stop_process(proc: subprocess.Popen[Any] | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; nothing if it has ended or never started."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail_of(paths: list[Path], lines: int) -> str:
    """The last ``lines`` of each file that exists, each under its path: what a failure message shows of logs."""
    parts = []
    for path in paths:
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} ---\n" + "\n".join(tail))
    return "\n".join(parts)


def _death_signal_prefix() -> list[str]:
    """Ask the kernel to kill a child when its parent dies, so a crashed test run leaves no cluster behind.

    The kernel means the parent *thread*: start the control plane from a thread that outlives it (pytest's main one).
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


class ControlPlane:
    """The running components and what a test needs to talk to them (kubeconfig, kubectl, Python clients).

    ``start()`` takes a few seconds; ``stop()`` is idempotent and also runs at interpreter exit.
    """

    def __init__(
        self, bin_dir: Path, workdir: Path | None = None, node_ip: str | None = None, pod_security: str | None = None
    ) -> None:
        """``node_ip``: serve on this address too (all addresses, advertised as this one) and publish it as the
        ``kubernetes`` Service's endpoint, so that pods of a real node (``real_node``) reach the API server through
        the Service, as in a cluster. Without it everything listens on 127.0.0.1 only. ``pod_security``: a Pod
        Security Standard (``restricted``) enforced in every namespace but kube-system, unless a namespace's label
        says otherwise."""
        self.bin_dir = Path(bin_dir)
        self.node_ip = node_ip
        self.pod_security = pod_security
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ftstudy-k8s-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.audit_log = self.logs / "audit.log"
        self.port = 0
        self.etcd_port = 0
        self.server = ""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: list[IO[bytes]] = []
        self._sa_kubeconfigs = 0

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> ControlPlane:
        for name in (*COMPONENTS, "kubectl"):
            if not os.access(self.bin_dir / name, os.X_OK):
                raise ControlPlaneError(f"{self.bin_dir / name} is missing: run scripts/k8s-build.sh")
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        try:
            etcd_port = self.etcd_port = self._start_etcd()
            self._make_pki()
            self.port = free_port()
            self.server = f"https://127.0.0.1:{self.port}"
            self._write_kubeconfigs()
            self._wait(lambda: self._http_ok(f"http://127.0.0.1:{etcd_port}/health", tls=False), "etcd", deadline)
            self._start_apiserver(etcd_port)
            self._wait(lambda: self._http_ok(f"{self.server}/readyz", tls=True), "kube-apiserver /readyz", deadline)
            self._start_controller_manager()
            self._start_scheduler()
            with contextlib.closing(self.api_client()) as api:
                core = client.CoreV1Api(api)
                # The ServiceAccount controller creates it: controllers run, and pods in `default` are admitted.
                has_default_sa = lambda: core.read_namespaced_service_account("default", "default")  # noqa: E731
                self._wait(has_default_sa, "the default ServiceAccount", deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the components, clients before servers so no log ends in connection errors; SIGKILL after 5 s."""
        for group in (("kube-scheduler", "kube-controller-manager"), ("kube-apiserver",), ("etcd",)):
            procs = [p for name, p in self._procs.items() if name in group and p.poll() is None]
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            deadline = time.monotonic() + 5
            for proc in procs:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for log in self._log_files:
            log.close()
        self._log_files.clear()
        atexit.unregister(self.stop)

    @contextlib.contextmanager
    def frozen(self, component: str = "kube-apiserver") -> Iterator[None]:
        """The component stopped (SIGSTOP) for the duration: it holds its connections and answers nothing, as a
        hung or partitioned server does. Resumed (SIGCONT) on leaving, whatever happened."""
        proc = self._procs[component]
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(proc.pid, signal.SIGCONT)

    def restart_apiserver(self, down_seconds: float = 0.0, timeout: float = 60.0) -> None:
        """Stop kube-apiserver (SIGTERM, as a rolling restart does), wait ``down_seconds``, start it again on the
        same port and etcd, and return once it is ready. Clients see connection errors meanwhile."""
        proc = self._procs["kube-apiserver"]
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        time.sleep(down_seconds)
        self._start_apiserver(self.etcd_port)
        deadline = time.monotonic() + timeout
        self._wait(lambda: self._http_ok(f"{self.server}/readyz", tls=True), "kube-apiserver /readyz", deadline)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs_tail(self, lines: int = 30) -> str:
        """The end of each component's log, for failure messages."""
        return tail_of([self.logs / f"{name}.log" for name in COMPONENTS], lines)

    # --- clients ---------------------------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The built kubectl (not /usr/bin/kubectl, which is another version) against this cluster."""
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}"]
        cmd += [f"--cache-dir={self.dir / 'kubectl-cache'}", *args]  # not ~/.kube: the cluster is temporary
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def api_client(self, kubeconfig: Path | None = None) -> ApiClient:
        """A Python client for the admin, or for the identity in ``kubeconfig``; the caller closes it."""
        api: ApiClient = config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))  # type: ignore[no-untyped-call]
        return api

    def service_account_kubeconfig(self, namespace: str, name: str, duration: str = "2h") -> Path:
        """A kubeconfig holding a bound token for the ServiceAccount: what a pod running as it would see."""
        spec = client.V1TokenRequestSpec(audiences=[], expiration_seconds=parse_duration(duration))
        request = client.AuthenticationV1TokenRequest(spec=spec)
        with contextlib.closing(self.api_client()) as api:
            result = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
        if result.status is None:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
        self._sa_kubeconfigs += 1
        path = self.dir / "kubeconfigs" / f"sa-{namespace}-{name}-{self._sa_kubeconfigs}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        user = f"system:serviceaccount:{namespace}:{name}"
        self._write_kubeconfig(path, user, {"token": str(result.status.token)}, namespace=namespace)
        return path

    def host_path_claim(self, namespace: str, claim: str, host_dir: Path, timeout: float = 60.0) -> str:
        """A PersistentVolumeClaim ``claim`` in ``namespace``, bound to a new PersistentVolume (its name returned, to
        delete afterwards) whose hostPath is ``host_dir``: what a platform team provides, since a pod that meets the
        `restricted` standard may not mount a hostPath itself. The simulated kubelet resolves the claim."""
        volume = f"{claim}-{namespace}"
        pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
              "spec": {"storageClassName": "", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                       "persistentVolumeReclaimPolicy": "Retain",
                       "hostPath": {"path": str(host_dir), "type": "DirectoryOrCreate"},
                       "claimRef": {"namespace": namespace, "name": claim}}}  # fmt: skip
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
               "spec": {"storageClassName": "", "volumeName": volume, "accessModes": ["ReadWriteMany"],
                        "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
        self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in (pv, pvc)))
        deadline = time.monotonic() + timeout
        phase = ("get", "pvc", claim, "-n", namespace, "-o", "jsonpath={.status.phase}")
        while self.kubectl(*phase).stdout != "Bound":
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"the claim {namespace}/{claim} was not bound within {timeout:.0f} s")
            time.sleep(0.2)
        return volume

    # --- components ------------------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        self.logs.mkdir(exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._log_files.append(log)
        self._procs[name] = subprocess.Popen(
            [*_death_signal_prefix(), str(self.bin_dir / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.dir,
        )

    def _start_etcd(self) -> int:
        client_port, peer_port = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                "--name=ftstudy",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=ftstudy={peer_url}",
                "--unsafe-no-fsync",  # a test cluster's data need not survive a power cut
                "--log-level=warn",
            ],
        )
        return client_port

    def _start_apiserver(self, etcd_port: int) -> None:
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={'0.0.0.0' if self.node_ip else '127.0.0.1'}",
                f"--advertise-address={self.node_ip or '127.0.0.1'}",
                f"--secure-port={self.port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The reconciler would publish 127.0.0.1 as the `kubernetes` Service's endpoint, which validation
                # rejects (loopback) every few seconds; only a real node's pods reach the API through that Service.
                f"--endpoint-reconciler-type={'lease' if self.node_ip else 'none'}",
                "--allow-privileged=true",
                "--profiling=false",
                # On in many distributions: setting blockOwnerDeletion needs update on the owner's finalizers.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                *self._kubelet_client_args(),
                *self._admission_args(),
                # Every request a ServiceAccount outside kube-system makes, with its verb and resource: what the
                # operator's RBAC is derived from (tests/test_rbac.py).
                f"--audit-policy-file={self._audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=500",
                "--audit-log-maxbackup=1",
            ],
        )

    def _kubelet_client_args(self) -> list[str]:
        """How the API server reaches a real node's kubelet (logs, exec): by its address, with a certificate."""
        if not self.node_ip:
            return []
        return [
            f"--kubelet-client-certificate={self.pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={self.pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _admission_args(self) -> list[str]:
        if not self.pod_security:
            return []
        level = {f"{mode}{suffix}": value for mode in ("enforce", "audit", "warn")
                 for suffix, value in (("", self.pod_security), ("-version", "latest"))}  # fmt: skip
        config = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AdmissionConfiguration",
            "plugins": [
                {
                    "name": "PodSecurity",
                    "configuration": {
                        "apiVersion": "pod-security.admission.config.k8s.io/v1",
                        "kind": "PodSecurityConfiguration",
                        "defaults": level,
                        "exemptions": {"usernames": [], "runtimeClasses": [], "namespaces": ["kube-system"]},
                    },
                }
            ],
        }
        path = self.dir / "admission.yaml"
        path.write_text(yaml.safe_dump(config))
        return [f"--admission-control-config-file={path}"]

    def _audit_policy(self) -> Path:
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived", "ResponseStarted", "Panic"],
            "rules": [
                {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
                {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
                {"level": "None"},
            ],
        }
        path = self.dir / "audit-policy.yaml"
        path.write_text(yaml.safe_dump(policy))
        return path

    def requests_by(self, user: str) -> list[dict[str, Any]]:
        """The audit log's record of every request ``user`` (a ServiceAccount's full name) made, answered or not."""
        found = []
        for log in sorted(self.logs.glob("audit*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if f'"{user}"' in line:
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError as error:  # seen once, when the disk filled beside the tests
                        raise AssertionError(f"{log}: an audit line the API server did not finish writing (a full "
                                             f"disk?): {error}: {line[:200]}") from None  # fmt: skip
                    if event.get("user", {}).get("username") == user:
                        found.append(event)
        return found

    def _start_controller_manager(self) -> None:
        pki = self.pki
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
                "--leader-elect=false",
                "--secure-port=0",  # no metrics/health endpoint: nothing scrapes it, and it needs no serving cert
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--controllers=*",
                # Each controller starts with its own token (TokenRequest): the default client rate limit of
                # 20 requests/s spreads the controllers' start over seconds.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
        )

    def _start_scheduler(self) -> None:
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={self.dir / 'scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )

    # --- readiness -------------------------------------------------------------------------------------------

    def _wait(self, ready: Any, what: str, deadline: float) -> None:
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise ControlPlaneError(f"{name} exited with {proc.returncode}\n{self.logs_tail()}")
            try:
                if ready():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what}\n{self.logs_tail()}")
            time.sleep(0.1)

    def _http_ok(self, url: str, tls: bool) -> bool:
        context = None
        if tls:
            context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
            context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    # --- certificates and kubeconfigs ------------------------------------------------------------------------

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=self.pki)

    def _issue(self, name: str, subject: str, *extensions: str) -> None:
        """A CA-signed EC certificate (fast to generate, accepted by every component and by Python's ssl)."""
        ext = [arg for e in extensions for arg in ("-addext", e)]
        self._openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "30", "-subj", subject,
            "-CA", "ca.crt", "-CAkey", "ca.key", *ext,
        )  # fmt: skip

    def _make_pki(self) -> None:
        self.pki.mkdir(exist_ok=True)
        self._openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "30", "-subj", "/CN=ftstudy-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        sans = "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default"
        sans += f",IP:{self.node_ip}" if self.node_ip else ""
        sans += f",DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:{FIRST_SERVICE_IP}"
        self._issue("apiserver", "/CN=kube-apiserver", sans, "extendedKeyUsage=serverAuth")
        client_auth = "extendedKeyUsage=clientAuth"
        self._issue("admin", "/O=system:masters/CN=ftstudy-admin", client_auth)
        self._issue("controller-manager", "/CN=system:kube-controller-manager", client_auth)
        self._issue("scheduler", "/CN=system:kube-scheduler", client_auth)
        if self.node_ip:  # how the API server authenticates to a kubelet (logs, exec)
            self._issue("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", client_auth)
        # Service account tokens are signed with RSA: the apiserver's and controller-manager's key files.
        self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key")
        self._openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def _write_kubeconfigs(self) -> None:
        for name, user in (
            ("admin", "ftstudy-admin"),
            ("controller-manager", "system:kube-controller-manager"),
            ("scheduler", "system:kube-scheduler"),
        ):
            self._write_kubeconfig(self.dir / f"{name}.kubeconfig", user, self._client_credentials(name))

    def _client_credentials(self, name: str) -> dict[str, str]:
        """A kubeconfig user's entry for the client certificate ``_issue(name, ...)`` made."""
        return {
            "client-certificate-data": _b64(self.pki / f"{name}.crt"),
            "client-key-data": _b64(self.pki / f"{name}.key"),
        }

    def client_kubeconfig(self, name: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig with a client certificate for ``user`` in ``groups`` (how a kubelet or kube-proxy
        authenticates: ``system:node:NAME`` in ``system:nodes``, ``system:kube-proxy``)."""
        subject = "".join(f"/O={group}" for group in groups) + f"/CN={user}"
        self._issue(name, subject, "extendedKeyUsage=clientAuth")
        path = self.dir / f"{name}.kubeconfig"
        self._write_kubeconfig(path, user, self._client_credentials(name))
        return path

    def _write_kubeconfig(self, path: Path, user: str, credentials: dict[str, str], namespace: str = "default") -> None:
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "ftstudy-test",
                    "cluster": {"server": self.server, "certificate-authority-data": _b64(self.pki / "ca.crt")},
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [
                {"name": "ftstudy-test", "context": {"cluster": "ftstudy-test", "user": user, "namespace": namespace}}
            ],
            "current-context": "ftstudy-test",
        }
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        path.chmod(0o600)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
