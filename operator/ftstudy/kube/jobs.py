"""The Job of one trial attempt, built from the study's ``trialTemplate``: pure data, no API calls.

Choices a platform team would ask about:
- ``backoffLimit: 0``: the study engine retries a crashed trial itself (``retriesPerTrial``), as a new attempt with
  its own Job, so a retry is visible and counted in the study's storage instead of hidden inside the Job. A pod
  disrupted from outside (evicted by a drain, preempted) is no crash: ``podFailurePolicy`` ignores it and the Job
  replaces the pod, so a shared cluster's disruptions spend no retry.
- With the report endpoint (``Reports``, the chart's default) the trainer gets no storage URL: it reports to the
  operator over HTTPS with a projected token for the report audience, bound to its pod (docs/protocol.md).
  Without it, the storage URL reaches the trainer as ``FTSTUDY_STORAGE_URL`` from the study's Secret: never in the
  manifest, the pod's command line or the operator's logs.
- The trainer needs no Kubernetes API access, so no API token is mounted (the report token's audience is not the
  API server's), and it runs as non-root without privilege escalation, with no capabilities and a read-only root
  file system (the ``restricted`` Pod Security Standard, and more): an emptyDir at /tmp is its scratch space
  (``HOME`` points there too, for the caches of Python libraries), and ``trialTemplate.fsGroup`` makes a fresh
  volume at ``outputDir`` writable.
  ``ftstudy.kube.policy`` checks every Job built here before it is created.
- Owner reference to the study: deleting the study deletes its Jobs (and their pods) through the garbage
  collector, even while the operator is down.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ftstudy.kube import names
from ftstudy.kube.policy import REPORT_TOKEN_VOLUME, SCRATCH_PATH, SCRATCH_VOLUME, SHM_PATH, SHM_VOLUME, volume_type
from ftstudy.object_store import join
from ftstudy.report_protocol import AUDIENCE
from ftstudy.spec import GPU_RESOURCE, StudySpec, is_store_url
from ftstudy.trainer.cli import EXIT_PREEMPTED, STORAGE_ENV
from ftstudy.trainer.reporting import REPORT_CA_ENV, REPORT_TOKEN_ENV, REPORT_TRIAL_ENV, REPORT_URL_ENV

CONTAINER = "trainer"
REPORT_TOKEN_DIR = "/var/run/secrets/ftstudy.io/report"
REPORT_TOKEN_SECONDS = 3600  # the kubelet renews the token at 80% of this; the trainer reads it at every report


@dataclass(frozen=True)
class Reports:
    """Where trials report when the operator serves the report endpoint (``--report-url``): its URL as trials
    reach it, and the CA its certificate chains to (public; ``ftstudy.kube.certs``)."""

    url: str
    ca_pem: str


def trials_root(spec: StudySpec, namespace: str, directory: str) -> PurePosixPath | str:
    """Where a study's trials write: ``<outputDir>/<namespace>/<directory>``, a directory inside their containers or
    an object store URL; ``directory`` is the study's (``identity.trials_directory``: its name and UID)."""
    output = spec.trial_template.output_dir
    if is_store_url(output):
        return join(output, namespace, directory)
    return PurePosixPath(output) / namespace / directory


# Where a trial whose outputDir is an object store keeps what needs a file system (a generated dataset, its working
# copy of the files it uploads): the pod's scratch emptyDir.
LOCAL_DATA = PurePosixPath(SCRATCH_PATH) / "data"


# Volumes that end with their pod: a checkpoint written there is gone before its resume Job starts.
_POD_LIFETIME = ("emptyDir", "ephemeral")


def output_ends_with_pod(spec: StudySpec) -> str | None:
    """Why what a trial writes under ``outputDir`` (its checkpoints) is gone with its pod, or None when it outlives
    it (a volume that is no emptyDir or ephemeral, or an object store)."""
    t = spec.trial_template
    if is_store_url(t.output_dir):
        return None  # checkpoints go to the object store: any node's pod reads them back
    output = PurePosixPath(t.output_dir)
    volumes = {str(v.get("name")): v for v in t.volumes}
    mounts = [m for m in t.volume_mounts if output.is_relative_to(PurePosixPath(str(m.get("mountPath", ""))))]
    if mounts:
        deepest = max(mounts, key=lambda m: len(PurePosixPath(str(m["mountPath"])).parts))
        kind = volume_type(volumes.get(str(deepest.get("name")), {}))
        if kind not in _POD_LIFETIME:
            return None
        return f"the volume mounted there ({deepest.get('name')}) is an {kind}, which ends with its pod"
    return "no volume is mounted there (trialTemplate.volumeMounts)"


def restarts_when_preempted(spec: StudySpec) -> str | None:
    """Why a preempted or evicted trial of this study starts again from step 0, or None when it resumes from its
    checkpoint: the new pod finds no checkpoint where the old one left it."""
    found = output_ends_with_pod(spec)
    if found is None:
        return None
    return (f"trialTemplate.outputDir ({spec.trial_template.output_dir}) holds each trial's checkpoint, but {found}: "
            "a trial preempted or evicted starts again from step 0; mount a PersistentVolumeClaim there or give an "
            "object store URL to resume where it stopped")  # fmt: skip


def checkpoint_volume_missing(spec: StudySpec) -> str | None:
    """Why screening cannot work with this trialTemplate, or None. A screened trial's resume is another Job,
    possibly on another node, that reads the checkpoint its screening Job left under ``outputDir``: that path must
    be on a volume that outlives the pod (which one the scheduler may share across nodes is the cluster's business:
    a ReadWriteMany claim, docs/operator.md)."""
    if spec.promotion.mode != "screen" or spec.promotion.policy == "none":
        return None
    found = output_ends_with_pod(spec)
    if found is None:
        return None
    output = PurePosixPath(spec.trial_template.output_dir)
    return (
        f"promotion.mode screen keeps each screened trial's checkpoint under trialTemplate.outputDir ({output}) "
        f"for its resume Job, but {found}: mount a PersistentVolumeClaim that every trial pod can reach there "
        "(ReadWriteMany across nodes), or create the study with promotion.mode: online"
    )


def trial_resources(spec: StudySpec) -> dict[str, dict[str, str | int]]:
    """The trial container's resources: ``trialTemplate.resources``, with ``trialTemplate.gpus`` (when set) as its
    GPU limit and, if it has one, request (Kubernetes wants the two equal for an extended resource)."""
    t = spec.trial_template
    resources = {kind: dict(values) for kind, values in t.resources.items()}
    if t.gpus is not None:
        resources.setdefault("limits", {})[GPU_RESOURCE] = t.gpus
        if GPU_RESOURCE in resources.get("requests", {}):
            resources["requests"][GPU_RESOURCE] = t.gpus
    return resources


def gpus_per_trial(spec: StudySpec) -> int:
    resources = trial_resources(spec)
    value = resources.get("limits", {}).get(GPU_RESOURCE, resources.get("requests", {}).get(GPU_RESOURCE, 0))
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def owner_reference(study: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{names.GROUP}/{names.VERSION}",
        "kind": names.KIND,
        "name": study,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
WORKLOAD_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"  # a WorkloadPriorityClass's name, on the Job
# The trainer's exit code for a SIGTERM it took as a preemption (``--checkpoint-on-stop``): the Job ignores it.
PREEMPTED_EXIT = {"containerName": CONTAINER, "operator": "In", "values": [EXIT_PREEMPTED]}


def job_manifest(
    spec: StudySpec,
    namespace: str,
    study: str,
    uid: str,
    number: int,
    attempt: int,
    args: list[str],
    identity: str = "",
    key: str = "",
    resume: bool = False,
    reports: Reports | None = None,
) -> dict[str, Any]:
    """``identity`` and ``key``: the Optuna study's and the trial's (``ftstudy.kube.identity``), as labels.
    ``resume``: the Job resumes a screened trial (labelled so; launches are numbered through the trial's life, so
    its name is new). ``reports``: the trial reports to the operator over HTTPS with a projected token and gets no
    storage URL; None: it gets the URL from the study's Secret and writes to the database itself."""
    t = spec.trial_template
    assert spec.storage is not None, "the operator refuses studies without spec.storage before launching"
    labels = names.labels(study, uid, number, attempt, identity, key, resume)
    if reports is None:
        ref = spec.storage.secret_ref
        channel = [{"name": STORAGE_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]
    else:
        trial = {"namespace": namespace, "study": study, "studyUID": uid, "trial": number, "attempt": attempt}
        channel = [
            {"name": REPORT_URL_ENV, "value": reports.url},
            {"name": REPORT_CA_ENV, "value": reports.ca_pem},
            {"name": REPORT_TOKEN_ENV, "value": f"{REPORT_TOKEN_DIR}/token"},
            {"name": REPORT_TRIAL_ENV, "value": json.dumps(trial, sort_keys=True)},
        ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": t.image,
        "command": list(t.command),
        "args": list(args),
        "env": [
            *channel,
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": SCRATCH_PATH},
            *t.env,
        ],
        "resources": trial_resources(spec),
        # The object store's credentials, from the Secret the trial policy allows: into the environment, where the
        # client reads them, never into the manifest or the command line.
        **({"envFrom": [{"secretRef": {"name": t.artifact_secret}}]} if t.artifact_secret else {}),
        "volumeMounts": [*t.volume_mounts, {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if t.image_pull_policy is not None:
        container["imagePullPolicy"] = t.image_pull_policy
    token_volumes: list[dict[str, Any]] = []
    if reports is not None:  # a token for our audience only, bound to the pod: no API access (no automount)
        source = {"audience": AUDIENCE, "expirationSeconds": REPORT_TOKEN_SECONDS, "path": "token"}
        token_volumes = [{"name": REPORT_TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": source}]}}]
        container["volumeMounts"].append({"name": REPORT_TOKEN_VOLUME, "mountPath": REPORT_TOKEN_DIR,
                                          "readOnly": True})  # fmt: skip
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [*t.volumes, {"name": SCRATCH_VOLUME, "emptyDir": {}}, *token_volumes],
    }
    if (t.gpus or 1) > 1:  # NCCL between the pod's processes goes through /dev/shm, 64 MiB in a container
        pod_spec["volumes"].append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}})
        container["volumeMounts"].append({"name": SHM_VOLUME, "mountPath": SHM_PATH})
    if t.fs_group is not None:
        # OnRootMismatch: a volume already owned by the group is not walked again at every trial's start
        pod_spec["securityContext"] |= {"fsGroup": t.fs_group, "fsGroupChangePolicy": "OnRootMismatch"}
    if t.node_selector:
        pod_spec["nodeSelector"] = dict(t.node_selector)
    if t.tolerations:
        pod_spec["tolerations"] = list(t.tolerations)
    if t.service_account_name:
        pod_spec["serviceAccountName"] = t.service_account_name
    if t.priority_class_name:
        pod_spec["priorityClassName"] = t.priority_class_name
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        # A pod disrupted from outside (a drain's eviction, preemption by a higher priority, a node shutting down:
        # the API server marks it DisruptionTarget), or stopped by any other SIGTERM not the operator's (a pod
        # deleted by hand, Kueue suspending the Job: the trainer checkpoints and exits "preempted"), is replaced by
        # the Job itself and counts as no failure: the trial did nothing wrong, so it spends no retry, and the
        # replacement resumes from the checkpoint (``--checkpoint-on-stop``; from the start if the trials' volume
        # does not outlive a pod).
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {"action": "Ignore", "onExitCodes": PREEMPTED_EXIT},
            ]
        },
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if t.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = t.active_deadline_seconds
    job_labels = dict(labels)
    if t.queue_name:
        # Kueue: created suspended, as Kueue expects; it unsuspends the Job once its ClusterQueue admits it. The
        # label is on the Job only (Kueue's Job integration reads it there).
        job_labels[QUEUE_LABEL] = t.queue_name
        job_spec["suspend"] = True
        if t.workload_priority_class_name:
            job_labels[WORKLOAD_PRIORITY_LABEL] = t.workload_priority_class_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": names.job_name(study, number, attempt),
            "namespace": namespace,
            "labels": job_labels,
            "ownerReferences": [owner_reference(study, uid)],
        },
        "spec": job_spec,
    }


def _helper_job(
    spec: StudySpec,
    namespace: str,
    study: str,
    uid: str,
    args: list[str],
    name: str,
    labels: dict[str, str],
    requests: dict[str, str],
) -> dict[str, Any]:
    """A small Job in the trainer image beside the trials (a checkpoint cleanup, a data check): the trials' volumes
    and security settings, its own name and labels (so the study's trial selector never takes it for an attempt), no
    GPU, no storage URL (it reports nothing), an hour's TTL after it ends (its log kept until then), ten minutes
    at most."""
    job = job_manifest(spec, namespace, study, uid, 0, 0, args)
    job["metadata"] |= {"name": name, "labels": labels}
    template = job["spec"]["template"]
    template["metadata"]["labels"] = labels
    container = template["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != STORAGE_ENV]
    container["resources"] = {"requests": dict(requests)}
    job["spec"] |= {"ttlSecondsAfterFinished": 3600, "activeDeadlineSeconds": 600}
    job["spec"].pop("suspend", None)  # a CPU helper is not submitted to the trials' (GPU) queue
    return job


def checkpoint_cleanup_manifest(
    spec: StudySpec, namespace: str, study: str, uid: str, number: int, run_dir: PurePosixPath | str
) -> dict[str, Any]:
    """``cleanup.prunedCheckpoints`` in a cluster: a pruned trial's checkpoint lies on the trials' volume, which the
    operator does not mount, or in their object store, whose credentials it does not hold, so a helper Job with the
    trials' volumes and credentials deletes it (``ftstudy-trainer --stage forget``)."""
    return _helper_job(spec, namespace, study, uid, ["--stage", "forget", "--output", str(run_dir)],
                       names.cleanup_job_name(study, number), names.cleanup_labels(study, uid, number),
                       {"cpu": "50m", "memory": "128Mi"})  # fmt: skip


# Pods a deleted study's artifacts cleanup may take: 10+20+40+80 s of back-off between them, and the deletions.
ARTIFACTS_CLEANUP_TRIES = 5


def artifacts_cleanup_manifest(
    spec: StudySpec, namespace: str, study: str, uid: str, root: PurePosixPath | str
) -> dict[str, Any]:
    """``cleanup.deleteArtifacts``: once the study is deleted, a helper Job with the trials' volumes and credentials
    deletes its trials' ``root`` whole (``ftstudy-trainer --stage forget-all``). It has no owner: it must outlive
    the study it cleans up after; its name and labels carry that study's UID, and its TTL removes it. With no study
    left to follow it, the Job retries a failed deletion itself (an object store away, a file that would not go):
    ``ARTIFACTS_CLEANUP_TRIES`` pods, the Job controller's back-off between them (10 s, doubling), all within the
    helper's ten minutes."""
    job = _helper_job(spec, namespace, study, uid, ["--stage", "forget-all", "--output", str(root)],
                      names.artifacts_cleanup_job_name(study, uid), names.artifacts_cleanup_labels(study, uid),
                      {"cpu": "50m", "memory": "128Mi"})  # fmt: skip
    del job["metadata"]["ownerReferences"]
    job["spec"]["backoffLimit"] = ARTIFACTS_CLEANUP_TRIES - 1
    return job


def data_check_manifest(
    spec: StudySpec, namespace: str, study: str, uid: str, data_dir: PurePosixPath | None, output: str
) -> dict[str, Any]:
    """Before any trial takes a GPU, a helper Job reads every split of ``dataset.path`` once and, with an object
    store at ``outputDir``, writes, reads back and deletes a small object under the study's prefix
    (``ftstudy-trainer --stage check-data``). A missing file, a malformed line, a bucket that does not exist or
    refuses writes then fails the study once, with the reason, instead of failing every trial after it loaded its
    model on a GPU."""
    args = ["--stage", "check-data", "--attributes", ",".join(spec.attributes), "--output", output]
    if data_dir is not None:
        args += ["--data", str(data_dir)]
    return _helper_job(spec, namespace, study, uid, args, names.data_check_job_name(study),
                       names.data_check_labels(study, uid), {"cpu": "100m", "memory": "256Mi"})  # fmt: skip
