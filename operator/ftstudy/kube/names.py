"""Names and labels of what the operator creates, so that a restarted operator finds and adopts all of it.

Every Job carries the study's name and uid, the trial's number and attempt, the Optuna study's identity and the
trial's key (``ftstudy.kube.identity``) as labels: the labels are the operator's whole memory of which Jobs it
started (no in-process state has to survive a restart), and what it checks before it adopts one.
"""

from __future__ import annotations

import hashlib
import re

GROUP = "ftstudy.io"
VERSION = "v1alpha1"
PLURAL = "finetunestudies"
KIND = "FineTuneStudy"

MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
STUDY = "ftstudy.io/study"
STUDY_UID = "ftstudy.io/study-uid"
TRIAL = "ftstudy.io/trial"
ATTEMPT = "ftstudy.io/attempt"
RESUME = "ftstudy.io/resume"  # "true" on the Job that resumes a screened trial from its checkpoint
OPTUNA_STUDY = "ftstudy.io/optuna-study"
TRIAL_KEY = "ftstudy.io/trial-key"
DECISION = "ftstudy.io/decision"
OPERATOR = "ftstudy-operator"
TRIAL_COMPONENT = "trial"
CLEANUP = "checkpoint-cleanup"
DATA_CHECK = "data-check"
ARTIFACTS_CLEANUP = "artifacts-cleanup"

MAX_NAME = 63  # a Job's name becomes its pods' job-name label value


def optuna_study_name(namespace: str, name: str, uid: str) -> str:
    """The Optuna study of one FineTuneStudy: keyed by its UID too, so a study deleted and created again under the
    same name starts with records of its own (``spec.storage.continueFrom`` continues an earlier one's on purpose),
    and studies of the same name in two namespaces never share records."""
    return f"{namespace}.{name}.{uid}"


def newest_optuna_study(study_names: list[str], namespace: str, name: str) -> str | None:
    """Of a database's Optuna study names in creation order (``optuna.get_all_study_names``), the newest that holds
    a FineTuneStudy of this namespace and name (for tests and benches, which know no UIDs)."""
    own = re.compile(re.escape(f"{namespace}.{name}") + r"(\.[0-9a-f-]{36})?")
    return next((study for study in reversed(study_names) if own.fullmatch(study)), None)


def legacy_optuna_study_name(namespace: str, name: str) -> str:
    """The name operators before 0.2 gave a study's records (no UID): still used for a study that started then."""
    return f"{namespace}.{name}"


def job_name(study: str, number: int, attempt: int) -> str:
    """Deterministic, so creating the same attempt twice is refused by the API server instead of running twice."""
    return _suffixed(study, f"-t{number}-a{attempt}")


def cleanup_job_name(study: str, number: int) -> str:
    """The Job that deletes a pruned trial's checkpoint (``ftstudy.kube.jobs.checkpoint_cleanup_manifest``)."""
    return _suffixed(study, f"-t{number}-forget")


def _suffixed(study: str, suffix: str) -> str:
    if len(study) + len(suffix) <= MAX_NAME:
        return study + suffix
    digest = hashlib.sha256(study.encode()).hexdigest()[:6]
    keep = MAX_NAME - len(suffix) - len(digest) - 1
    return f"{study[:keep].rstrip('-')}-{digest}{suffix}"


def labels(
    study: str, study_uid: str, number: int, attempt: int, identity: str, key: str, resume: bool = False
) -> dict[str, str]:
    """``resume`` is a label only where true, so a first launch's labels are what they were before screening."""
    return {
        MANAGED_BY: OPERATOR,
        COMPONENT: TRIAL_COMPONENT,
        STUDY: study,
        STUDY_UID: study_uid,
        TRIAL: str(number),
        ATTEMPT: str(attempt),
        OPTUNA_STUDY: identity,
        TRIAL_KEY: key,
        **({RESUME: "true"} if resume else {}),
    }


def data_check_job_name(study: str) -> str:
    """The Job that reads a study's dataset once before any trial (``ftstudy.kube.jobs.data_check_manifest``)."""
    return _suffixed(study, "-data-check")


def artifacts_cleanup_job_name(study: str, study_uid: str) -> str:
    """The Job that deletes a deleted study's artifacts (``ftstudy.kube.jobs.artifacts_cleanup_manifest``); the UID
    in its name, since a study of the same name deleted again within the Job's TTL has artifacts of its own."""
    return _suffixed(study, f"-delete-{study_uid[:8]}")


def artifacts_cleanup_labels(study: str, study_uid: str) -> dict[str, str]:
    return {MANAGED_BY: OPERATOR, COMPONENT: ARTIFACTS_CLEANUP, STUDY: study, STUDY_UID: study_uid}


def data_check_labels(study: str, study_uid: str) -> dict[str, str]:
    return {MANAGED_BY: OPERATOR, COMPONENT: DATA_CHECK, STUDY: study, STUDY_UID: study_uid}


def cleanup_labels(study: str, study_uid: str, number: int) -> dict[str, str]:
    """A checkpoint cleanup Job is the study's but runs no attempt: its component keeps it out of the trials'."""
    return {MANAGED_BY: OPERATOR, COMPONENT: CLEANUP, STUDY: study, STUDY_UID: study_uid, TRIAL: str(number)}


def selector(labels: dict[str, str]) -> str:
    """The equality-based label selector of exactly these labels."""
    return ",".join(f"{key}={value}" for key, value in labels.items())


def study_selector(study_uid: str) -> str:
    """The study's trial Jobs and pods. By uid: a study deleted and created again under the same name never adopts
    its predecessor's Jobs."""
    return f"{MANAGED_BY}={OPERATOR},{COMPONENT}={TRIAL_COMPONENT},{STUDY_UID}={study_uid}"
