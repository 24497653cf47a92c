"""The trial policy: what a study's ``trialTemplate`` may ask of the Jobs the operator creates for it.

Why it exists: the operator creates Jobs with its own permissions, so anything a study's author writes into the
template would otherwise be done with the operator's identity, not theirs. A user allowed to create a FineTuneStudy
(and nothing else) could mount a node's file system (hostPath), run as another ServiceAccount (its image pull
Secrets, its workload identity), or read any Secret of the namespace (a ``secret`` volume, an env ``secretKeyRef``,
or a ``storage.secretRef`` naming a Secret that holds no storage URL at all). The platform team decides what is
allowed (Helm values ``trialPolicy``, the operator's ``--trial-*`` and ``--storage-secret`` flags); a study that
asks for more is refused with a condition and an Event, and no Job is created for it.

Two checks, both pure:
- ``check_spec`` reads the study's template and names each offending field, the way a user wrote it;
- ``check_pod`` reads the pod spec of a built Job and refuses anything outside the ``restricted`` Pod Security
  Standard or the policy (privileged, host namespaces, added capabilities, privilege escalation, a writable root
  file system...). The operator builds Jobs that pass it; it runs before every create, so that a future template
  field or a bug cannot carry more into a Job than the policy allows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ftstudy.spec import StudySpec
from ftstudy.trainer.cli import STORAGE_ENV

SCRATCH_VOLUME = "ftstudy-scratch"
# /dev/shm of a trial on several GPUs: NCCL moves data between the pod's processes through shared memory, and a
# container's own /dev/shm is 64 MiB.
SHM_VOLUME = "ftstudy-shm"
SHM_PATH = "/dev/shm"
# The projected token a trial reports with (``ftstudy.kube.jobs``): our audience only, so not an API credential.
REPORT_TOKEN_VOLUME = "ftstudy-report-token"
SCRATCH_PATH = "/tmp"
DEFAULT_STORAGE_SECRET = "ftstudy-db"
# The object store credentials a study's trialTemplate.artifactSecret may name unless the platform team says otherwise.
DEFAULT_ARTIFACT_SECRET = "ftstudy-object-store"

# Volume types that give a pod nothing of the node's or another workload's: the default allow-list.
DEFAULT_VOLUME_TYPES = frozenset({"persistentVolumeClaim", "emptyDir", "ephemeral", "configMap", "downwardAPI"})
# What the `restricted` Pod Security Standard admits at all; the allow-list may only pick among these.
RESTRICTED_VOLUME_TYPES = frozenset(
    {"persistentVolumeClaim", "emptyDir", "ephemeral", "configMap", "downwardAPI", "secret", "projected", "csi"}
)


# Scheduling a study may ask for by default: the GPU taint, the usual GPU and instance labels, the examples'
# PriorityClass and claim. Anything else (a control-plane toleration, a node-role selector, system-node-critical to
# preempt other tenants, the database's own data claim) only if the platform team adds it.
DEFAULT_TOLERATION_KEYS = frozenset({"nvidia.com/gpu"})
DEFAULT_NODE_SELECTOR_KEYS = frozenset({"nvidia.com/gpu.present", "nvidia.com/gpu.product", "nvidia.com/gpu.memory",
                                        "cloud.google.com/gke-accelerator", "node.kubernetes.io/instance-type",
                                        "topology.kubernetes.io/zone", "kubernetes.io/arch"})  # fmt: skip
DEFAULT_PRIORITY_CLASSES = frozenset({"batch-low"})
DEFAULT_CLAIMS = frozenset({"ftstudy-artifacts"})
DEFAULT_EPHEMERAL_MAX = "100Gi"


@dataclass(frozen=True)
class TrialPolicy:
    """Set by the platform team. ``service_accounts``: besides each namespace's ``default``; ``storage_secrets``:
    the Secrets a study's ``storage.secretRef`` may name (the operator reads nothing else); ``artifact_secrets``:
    those a study's ``trialTemplate.artifactSecret`` may name (the object store's credentials, which only the trial
    pods read, through envFrom); the keys of the
    tolerations and node selectors, the PriorityClasses and the PersistentVolumeClaims trials may use; the largest
    ephemeral volume (bytes)."""

    service_accounts: frozenset[str] = frozenset()
    volume_types: frozenset[str] = DEFAULT_VOLUME_TYPES
    storage_secrets: frozenset[str] = frozenset({DEFAULT_STORAGE_SECRET})
    toleration_keys: frozenset[str] = DEFAULT_TOLERATION_KEYS
    node_selector_keys: frozenset[str] = DEFAULT_NODE_SELECTOR_KEYS
    priority_classes: frozenset[str] = DEFAULT_PRIORITY_CLASSES
    claims: frozenset[str] = DEFAULT_CLAIMS
    ephemeral_max_bytes: int = 100 * 2**30
    artifact_secrets: frozenset[str] = frozenset({DEFAULT_ARTIFACT_SECRET})
    # Kueue's WorkloadPriorityClasses trials' Jobs may name: none unless the platform team lists them, since a high
    # one lets a study's trials preempt other teams' work in a shared ClusterQueue
    workload_priority_classes: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        service_accounts: Iterable[str] = (),
        volume_types: Iterable[str] | None = None,
        storage_secrets: Iterable[str] | None = None,
        toleration_keys: Iterable[str] | None = None,
        node_selector_keys: Iterable[str] | None = None,
        priority_classes: Iterable[str] | None = None,
        claims: Iterable[str] | None = None,
        ephemeral_max: str | None = None,
        artifact_secrets: Iterable[str] | None = None,
        workload_priority_classes: Iterable[str] | None = None,
    ) -> TrialPolicy:
        """From flags or values; refuses a volume type the restricted standard does not admit (hostPath above all),
        since no trial pod could ever use it. A list not given keeps its default."""
        types = frozenset(volume_types) if volume_types is not None else DEFAULT_VOLUME_TYPES
        outside = sorted(types - RESTRICTED_VOLUME_TYPES)
        if outside:
            raise ValueError(
                f"volume type(s) {', '.join(outside)} cannot be allowed: trial pods meet the restricted Pod Security "
                f"Standard, which admits only {', '.join(sorted(RESTRICTED_VOLUME_TYPES))}"
            )
        secrets = frozenset(storage_secrets) if storage_secrets else frozenset({DEFAULT_STORAGE_SECRET})

        def listed(given: Iterable[str] | None, default: frozenset[str]) -> frozenset[str]:
            return frozenset(given) if given is not None else default

        maximum = quantity_bytes(ephemeral_max or DEFAULT_EPHEMERAL_MAX)
        if maximum is None:
            raise ValueError(f"the ephemeral volume bound {ephemeral_max!r} is no quantity (e.g. 100Gi)")
        return cls(frozenset(service_accounts), types, secrets, listed(toleration_keys, DEFAULT_TOLERATION_KEYS),
                   listed(node_selector_keys, DEFAULT_NODE_SELECTOR_KEYS),
                   listed(priority_classes, DEFAULT_PRIORITY_CLASSES), listed(claims, DEFAULT_CLAIMS),
                   maximum, listed(artifact_secrets, frozenset({DEFAULT_ARTIFACT_SECRET})),
                   listed(workload_priority_classes, frozenset()))  # fmt: skip


_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}  # fmt: skip


def quantity_bytes(value: Any) -> int | None:
    """A Kubernetes quantity of bytes (``10Gi``, ``500M``, ``1e9``, ``1024``); None if it is not one."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?(?:[eE][0-9]+)?)([kMGTP]i?|Ki)?", str(value).strip())
    if match is None or (match[2] or "") not in _SUFFIXES:
        return None
    return int(float(match[1]) * _SUFFIXES[match[2] or ""])


def check_scheduling(found: _Findings, pod: dict[str, Any], policy: TrialPolicy, where: str) -> None:
    """Tolerations, node selectors, PriorityClass, claims and ephemeral sizes against the allow-lists: a pod spec
    (camelCase keys), the study's template or the built pod alike."""
    for i, toleration in enumerate(pod.get("tolerations") or []):
        key = toleration.get("key") or ""
        if key not in policy.toleration_keys:
            tolerated = f"key {key!r}" if key else "every taint (no key)"
            allowed = ", ".join(sorted(policy.toleration_keys)) or "none"
            found.add(f"{where}.tolerations[{i}]", f"tolerates {tolerated}; trials may tolerate only {allowed} "
                      "(Helm value trialPolicy.tolerationKeys)")  # fmt: skip
    for key in sorted((pod.get("nodeSelector") or {}).keys()):
        if key not in policy.node_selector_keys:
            found.add(f"{where}.nodeSelector.{key}", "this label key is not one trials may select nodes by (Helm "
                      "value trialPolicy.nodeSelectorKeys)")  # fmt: skip
    if (pod.get("affinity") or {}).get("nodeAffinity"):
        found.add(f"{where}.affinity.nodeAffinity", "use nodeSelector (whose keys the policy checks)")
    priority = pod.get("priorityClassName")
    if priority and priority not in policy.priority_classes:
        allowed = ", ".join(sorted(policy.priority_classes)) or "none"
        found.add(f"{where}.priorityClassName", f"{priority!r} is not allowed for trials (allowed: {allowed}; Helm "
                  "value trialPolicy.priorityClasses)")  # fmt: skip
    for i, volume in enumerate(pod.get("volumes") or []):
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim is not None and claim not in policy.claims:
            allowed = ", ".join(sorted(policy.claims)) or "none"
            found.add(f"{where}.volumes[{i}]", f"claim {claim!r} is not one trials may mount (allowed: {allowed}; "
                      "Helm value trialPolicy.claims)")  # fmt: skip
        ephemeral = (volume.get("ephemeral") or {}).get("volumeClaimTemplate") or {}
        if "ephemeral" in volume:
            size = ((ephemeral.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
            bytes_ = quantity_bytes(size) if size is not None else None
            if bytes_ is None or bytes_ > policy.ephemeral_max_bytes:
                found.add(f"{where}.volumes[{i}]", f"an ephemeral volume must request at most "
                          f"{policy.ephemeral_max_bytes / 2**30:g}Gi of storage (it asks for {size}; Helm value "
                          "trialPolicy.ephemeralStorageMax)")  # fmt: skip


@dataclass
class _Findings:
    problems: list[str] = field(default_factory=list)

    def add(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")


def volume_type(volume: dict[str, Any]) -> str:
    """A core/v1 Volume has its name and exactly one source field; the source's key is its type."""
    kinds = [key for key in volume if key != "name"]
    return kinds[0] if len(kinds) == 1 else "+".join(sorted(kinds)) or "(none)"


def check_spec(spec: StudySpec, policy: TrialPolicy) -> list[str]:
    """What the study's template (and storage reference) asks for that the policy does not allow; empty if nothing.
    Each entry names the field as the user wrote it."""
    found = _Findings()
    t = spec.trial_template
    if spec.storage is not None and spec.storage.secret_ref.name not in policy.storage_secrets:
        allowed = ", ".join(sorted(policy.storage_secrets))
        found.add(
            "spec.storage.secretRef.name",
            f"Secret {spec.storage.secret_ref.name!r} is not one the platform team allows studies to use as their "
            f"storage (allowed: {allowed}; Helm value trialPolicy.storageSecrets)",
        )
    if t.artifact_secret is not None and t.artifact_secret not in policy.artifact_secrets:
        allowed = ", ".join(sorted(policy.artifact_secrets)) or "none"
        found.add(
            "spec.trialTemplate.artifactSecret",
            f"Secret {t.artifact_secret!r} is not one the platform team allows trials to read object store "
            f"credentials from (allowed: {allowed}; Helm value trialPolicy.artifactSecrets)",
        )
    account = t.service_account_name
    if account and account != "default" and account not in policy.service_accounts:
        allowed = ", ".join(["default", *sorted(policy.service_accounts)])
        found.add(
            "spec.trialTemplate.serviceAccountName",
            f"{account!r} is not allowed for trials (allowed: {allowed}; Helm value trialPolicy.serviceAccounts)",
        )
    for i, volume in enumerate(t.volumes):
        where = f"spec.trialTemplate.volumes[{i}]"
        kind = volume_type(volume)
        if volume.get("name") in (SCRATCH_VOLUME, SHM_VOLUME):
            found.add(f"{where}.name", f"{volume.get('name')!r} is one of the operator's own volumes; rename it")
        if kind == "hostPath":
            found.add(where, "hostPath volumes are never allowed: they expose the node's file system to the trial")
        elif kind not in policy.volume_types:
            allowed = ", ".join(sorted(policy.volume_types))
            hint = f"allowed: {allowed}; Helm value trialPolicy.volumeTypes"
            found.add(where, f"volume type {kind} is not allowed for trials ({hint})")
    workload = t.workload_priority_class_name
    if workload and workload not in policy.workload_priority_classes:
        allowed = ", ".join(sorted(policy.workload_priority_classes)) or "none"
        found.add("spec.trialTemplate.workloadPriorityClassName", f"{workload!r} is not allowed for trials (allowed: "
                  f"{allowed}; Helm value trialPolicy.workloadPriorityClasses)")  # fmt: skip
    template = {"tolerations": t.tolerations, "nodeSelector": t.node_selector,
                "priorityClassName": t.priority_class_name, "volumes": t.volumes}  # fmt: skip
    check_scheduling(found, template, policy, "spec.trialTemplate")
    for i, mount in enumerate(t.volume_mounts):
        path = str(mount.get("mountPath", "")).rstrip("/")
        if path == SCRATCH_PATH:
            found.add(f"spec.trialTemplate.volumeMounts[{i}].mountPath", f"{SCRATCH_PATH} is the trial's scratch space")
        if mount.get("mountPropagation") == "Bidirectional":
            found.add(f"spec.trialTemplate.volumeMounts[{i}].mountPropagation", "Bidirectional needs a privileged pod")
    for i, var in enumerate(t.env):
        where = f"spec.trialTemplate.env[{i}]"
        if var.get("name") == STORAGE_ENV:
            found.add(f"{where}.name", f"{STORAGE_ENV} is set by the operator from spec.storage.secretRef")
        source = var.get("valueFrom") or {}
        if "secretKeyRef" in source:
            secret = (source["secretKeyRef"] or {}).get("name")
            found.add(
                f"{where}.valueFrom.secretKeyRef",
                f"trials may not read Secrets through env (this one reads Secret {secret!r}); the storage URL "
                "reaches them from spec.storage.secretRef",
            )
    return found.problems


def check_pod(
    pod: dict[str, Any], policy: TrialPolicy, storage_secret: str | None, artifact_secret: str | None = None
) -> list[str]:
    """The built pod spec against the restricted Pod Security Standard and the policy; empty if it passes.
    ``storage_secret`` and ``artifact_secret``: the study's, which its trial container may read (the storage URL
    by one key, the object store's credentials whole), if the policy allows them."""
    if artifact_secret is not None and artifact_secret not in policy.artifact_secrets:
        artifact_secret = None
    found = _Findings()
    where = "the trial pod"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.add(f"{where}.{key}", "host namespaces are not allowed")
    if pod.get("automountServiceAccountToken") is not False:
        found.add(f"{where}.automountServiceAccountToken", "trials get no Kubernetes API token")
    account = pod.get("serviceAccountName")
    if account and account != "default" and account not in policy.service_accounts:
        found.add(f"{where}.serviceAccountName", f"{account!r} is not an allowed service account")
    check_scheduling(found, pod, policy, where)
    security = pod.get("securityContext") or {}
    _check_restricted_context(found, security, f"{where}.securityContext")
    for sysctl in security.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.add(f"{where}.securityContext.sysctls", f"{sysctl.get('name')} is not a safe sysctl")
    if security.get("runAsNonRoot") is not True:
        found.add(f"{where}.securityContext.runAsNonRoot", "must be true")
    if security.get("runAsUser") == 0:
        found.add(f"{where}.securityContext.runAsUser", "must not be 0 (root)")
    if (security.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        found.add(f"{where}.securityContext.seccompProfile", "must be RuntimeDefault or Localhost")
    for i, volume in enumerate(pod.get("volumes") or []):
        kind = volume_type(volume)
        ours = (volume.get("name") in (SCRATCH_VOLUME, SHM_VOLUME) and kind == "emptyDir") or _report_token(volume)
        if not ours and kind not in policy.volume_types:
            found.add(f"{where}.volumes[{i}]", f"volume type {kind} is not allowed")
        if kind == "hostPath":
            found.add(f"{where}.volumes[{i}]", "hostPath volumes are never allowed")
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    for container in containers:
        _check_container(found, container, f"{where}.containers[{container.get('name')}]", storage_secret,
                         artifact_secret)  # fmt: skip
    return found.problems


def _report_token(volume: dict[str, Any]) -> bool:
    """The operator's own report token volume: one projected service-account token, for the report audience."""
    from ftstudy.report_protocol import AUDIENCE

    sources = (volume.get("projected") or {}).get("sources") or []
    return (
        volume.get("name") == REPORT_TOKEN_VOLUME
        and len(sources) == 1
        and (sources[0].get("serviceAccountToken") or {}).get("audience") == AUDIENCE
    )


# The `restricted` (and `baseline`) Pod Security Standard's lists.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})


def _check_restricted_context(found: _Findings, security: dict[str, Any], where: str) -> None:
    """What a pod's and a container's securityContext share under `restricted`: no Unconfined seccomp or AppArmor,
    SELinux only a container type and no user or role, no Windows host process."""
    if (security.get("seccompProfile") or {}).get("type") == "Unconfined":
        found.add(f"{where}.seccompProfile", "Unconfined is not allowed")
    if (security.get("appArmorProfile") or {}).get("type") == "Unconfined":
        found.add(f"{where}.appArmorProfile", "Unconfined is not allowed")
    selinux = security.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        found.add(f"{where}.seLinuxOptions", "only a container type, and no user or role")
    if (security.get("windowsOptions") or {}).get("hostProcess"):
        found.add(f"{where}.windowsOptions.hostProcess", "host processes are not allowed")


def _check_container(
    found: _Findings, container: dict[str, Any], where: str, storage_secret: str | None, artifact_secret: str | None
) -> None:
    security = container.get("securityContext") or {}
    _check_restricted_context(found, security, f"{where}.securityContext")
    if security.get("privileged"):
        found.add(f"{where}.securityContext.privileged", "privileged containers are not allowed")
    if security.get("allowPrivilegeEscalation") is not False:
        found.add(f"{where}.securityContext.allowPrivilegeEscalation", "must be false")
    capabilities = security.get("capabilities") or {}
    if capabilities.get("add"):
        found.add(f"{where}.securityContext.capabilities.add", "no capabilities may be added")
    if "ALL" not in (capabilities.get("drop") or []):
        found.add(f"{where}.securityContext.capabilities.drop", "must drop ALL")
    if security.get("readOnlyRootFilesystem") is not True:
        found.add(f"{where}.securityContext.readOnlyRootFilesystem", "must be true")
    if security.get("runAsUser") == 0 or security.get("runAsNonRoot") is False:
        found.add(f"{where}.securityContext", "must not run as root")
    if security.get("procMount") not in (None, "Default"):
        found.add(f"{where}.securityContext.procMount", "must be Default")
    if any(port.get("hostPort") for port in container.get("ports") or []):
        found.add(f"{where}.ports", "host ports are not allowed")
    for var in container.get("env") or []:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref is not None and not (var.get("name") == STORAGE_ENV and ref.get("name") == storage_secret):
            found.add(f"{where}.env[{var.get('name')}]", f"reads Secret {ref.get('name')!r}")
    for source in container.get("envFrom") or []:
        if "secretRef" in source and (source["secretRef"] or {}).get("name") != artifact_secret:
            found.add(
                f"{where}.envFrom",
                f"reads Secret {(source['secretRef'] or {}).get('name')!r} through envFrom: "
                "trials may read only the object store credentials the policy allows (artifactSecrets)",
            )
