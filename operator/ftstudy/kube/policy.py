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

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ftstudy.spec import StudySpec
from ftstudy.trainer.cli import STORAGE_ENV

SCRATCH_VOLUME = "ftstudy-scratch"
# The projected token a trial reports with (``ftstudy.kube.jobs``): our audience only, so not an API credential.
REPORT_TOKEN_VOLUME = "ftstudy-report-token"
SCRATCH_PATH = "/tmp"
DEFAULT_STORAGE_SECRET = "ftstudy-db"

# Volume types that give a pod nothing of the node's or another workload's: the default allow-list.
DEFAULT_VOLUME_TYPES = frozenset({"persistentVolumeClaim", "emptyDir", "ephemeral", "configMap", "downwardAPI"})
# What the `restricted` Pod Security Standard admits at all; the allow-list may only pick among these.
RESTRICTED_VOLUME_TYPES = frozenset(
    {"persistentVolumeClaim", "emptyDir", "ephemeral", "configMap", "downwardAPI", "secret", "projected", "csi"}
)


@dataclass(frozen=True)
class TrialPolicy:
    """Set by the platform team. ``service_accounts``: besides each namespace's ``default``; ``storage_secrets``:
    the Secrets a study's ``storage.secretRef`` may name (the operator reads nothing else)."""

    service_accounts: frozenset[str] = frozenset()
    volume_types: frozenset[str] = DEFAULT_VOLUME_TYPES
    storage_secrets: frozenset[str] = frozenset({DEFAULT_STORAGE_SECRET})

    @classmethod
    def of(
        cls,
        service_accounts: Iterable[str] = (),
        volume_types: Iterable[str] | None = None,
        storage_secrets: Iterable[str] | None = None,
    ) -> TrialPolicy:
        """From flags or values; refuses a volume type the restricted standard does not admit (hostPath above all),
        since no trial pod could ever use it."""
        types = frozenset(volume_types) if volume_types is not None else DEFAULT_VOLUME_TYPES
        outside = sorted(types - RESTRICTED_VOLUME_TYPES)
        if outside:
            raise ValueError(
                f"volume type(s) {', '.join(outside)} cannot be allowed: trial pods meet the restricted Pod Security "
                f"Standard, which admits only {', '.join(sorted(RESTRICTED_VOLUME_TYPES))}"
            )
        secrets = frozenset(storage_secrets) if storage_secrets else frozenset({DEFAULT_STORAGE_SECRET})
        return cls(frozenset(service_accounts), types, secrets)


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
        if volume.get("name") == SCRATCH_VOLUME:
            found.add(f"{where}.name", f"{SCRATCH_VOLUME!r} is the operator's own scratch volume; pick another name")
        if kind == "hostPath":
            found.add(where, "hostPath volumes are never allowed: they expose the node's file system to the trial")
        elif kind not in policy.volume_types:
            allowed = ", ".join(sorted(policy.volume_types))
            hint = f"allowed: {allowed}; Helm value trialPolicy.volumeTypes"
            found.add(where, f"volume type {kind} is not allowed for trials ({hint})")
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


def check_pod(pod: dict[str, Any], policy: TrialPolicy, storage_secret: str | None) -> list[str]:
    """The built pod spec against the restricted Pod Security Standard and the policy; empty if it passes."""
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
    security = pod.get("securityContext") or {}
    if security.get("runAsNonRoot") is not True:
        found.add(f"{where}.securityContext.runAsNonRoot", "must be true")
    if security.get("runAsUser") == 0:
        found.add(f"{where}.securityContext.runAsUser", "must not be 0 (root)")
    if (security.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        found.add(f"{where}.securityContext.seccompProfile", "must be RuntimeDefault or Localhost")
    for i, volume in enumerate(pod.get("volumes") or []):
        kind = volume_type(volume)
        ours = (volume.get("name") == SCRATCH_VOLUME and kind == "emptyDir") or _report_token(volume)
        if not ours and kind not in policy.volume_types:
            found.add(f"{where}.volumes[{i}]", f"volume type {kind} is not allowed")
        if kind == "hostPath":
            found.add(f"{where}.volumes[{i}]", "hostPath volumes are never allowed")
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    for container in containers:
        _check_container(found, container, f"{where}.containers[{container.get('name')}]", storage_secret)
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


def _check_container(found: _Findings, container: dict[str, Any], where: str, storage_secret: str | None) -> None:
    security = container.get("securityContext") or {}
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
        if "secretRef" in source:
            found.add(f"{where}.envFrom", "trials may not read Secrets through envFrom")
