"""The operator's pure parts: Job manifests, how Jobs and pods read to the core, names, status. The same code runs
against the real control plane in test_operator.py; these pin the rules down case by case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from ftstudy import spec
from ftstudy.core import Process
from ftstudy.kube import jobs, names
from ftstudy.kube.executor import job_process
from ftstudy.kube.status import merge_conditions, study_status

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def study(**overrides: Any) -> spec.FineTuneStudy:
    document: dict[str, Any] = {
        "apiVersion": "ftstudy.io/v1alpha1",
        "kind": "FineTuneStudy",
        "metadata": {"name": "demo", "namespace": "ml"},
        "spec": {"dataset": {"generate": {"train": 8}}, "storage": {"secretRef": {"name": "db"}}, **overrides},
    }
    return spec.parse(document)


def test_job_names_are_deterministic_and_fit_a_label() -> None:
    assert names.job_name("demo", 3, 1) == "demo-t3-a1"
    long = names.job_name("x" * 63, 123, 2)
    assert len(long) <= 63 and long.endswith("-t123-a2")
    assert long == names.job_name("x" * 63, 123, 2)
    assert names.job_name("x" * 63, 1, 1) != names.job_name("x" * 62 + "y", 1, 1)


def test_the_job_runs_the_trainer_with_the_secret_and_the_template() -> None:
    s = study(
        trialTemplate={
            "image": "registry.example/trainer:1",
            "resources": {"limits": {"nvidia.com/gpu": 2, "memory": "16Gi"}},
            "nodeSelector": {"gpu": "a100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "batch-low",
            "serviceAccountName": "trainer",
            "activeDeadlineSeconds": 3600,
        }
    ).spec
    job = jobs.job_manifest(s, "ml", "demo", "uid-1", 4, 2, ["--trial", "4"])
    assert job["metadata"]["name"] == "demo-t4-a2"
    assert job["metadata"]["labels"][names.STUDY_UID] == "uid-1"
    assert job["metadata"]["labels"][names.TRIAL] == "4" and job["metadata"]["labels"][names.ATTEMPT] == "2"
    assert (
        job["metadata"]["ownerReferences"][0] | {"uid": "uid-1", "kind": "FineTuneStudy", "controller": True}
        == (job["metadata"]["ownerReferences"][0])
    )
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"gpu": "a100"} and pod["priorityClassName"] == "batch-low"
    assert pod["serviceAccountName"] == "trainer" and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    container = pod["containers"][0]
    assert container["image"] == "registry.example/trainer:1" and container["args"] == ["--trial", "4"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    storage = container["env"][0]
    assert storage["name"] == "FTSTUDY_STORAGE_URL"
    assert storage["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "url"}
    assert not any("postgresql" in str(v) for v in container["args"]), "the URL never travels in the manifest"
    assert jobs.gpus_per_trial(s) == 2


def job(conditions: list[dict[str, str]] | None = None, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "demo-t0-a1"}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    return {"metadata": metadata, "status": {"conditions": conditions or []}}


def pod(state: dict[str, Any], age_seconds: float = 0, **status: Any) -> dict[str, Any]:
    created = (NOW - timedelta(seconds=age_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": "p", "creationTimestamp": created},
        "status": {"containerStatuses": [{"state": state}], **status},
    }


FAILED = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]


@pytest.mark.parametrize(
    ("the_job", "pods", "state", "retryable", "reason"),
    [
        (job(), [pod({"running": {}})], Process.RUNNING, True, None),
        (job([{"type": "Complete", "status": "True"}]), [], Process.SUCCEEDED, True, None),
        (job(FAILED), [pod({"terminated": {"exitCode": 1, "message": "a\nboom"}})], Process.FAILED, True,
         "the trainer crashed (exit code 1): boom"),
        (job(FAILED), [pod({"terminated": {"exitCode": 2, "message": "bad input: no model"}})], Process.FAILED,
         False, "the trainer refused its input (exit code 2): bad input: no model"),
        (job(FAILED), [pod({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})], Process.FAILED, True,
         "the trainer ran out of memory (OOMKilled); lower the batch size or raise the memory limit"),
        (job(FAILED), [pod({}, reason="Evicted", message="node low on memory")], Process.FAILED, True,
         "its pod was evicted: node low on memory"),
        (job([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]), [], Process.FAILED, True,
         "the trial ran past trialTemplate.activeDeadlineSeconds"),
        (job(), [pod({"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}, age_seconds=10)],
         Process.RUNNING, True, None),
        (job(), [pod({"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}, age_seconds=600)],
         Process.FAILED, False, "its pod cannot start: ImagePullBackOff: no such image"),
        (job(), [pod({"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "db" not found'}},
                     age_seconds=600)], Process.FAILED, False,
         'its pod cannot start: CreateContainerConfigError: secret "db" not found'),
        (job(deleting=True), [], Process.FAILED, True, "its Job was deleted while the trial was running"),
    ],
)  # fmt: skip
def test_how_a_job_reads_to_the_core(
    the_job: dict[str, Any], pods: list[dict[str, Any]], state: Process, retryable: bool, reason: str | None
) -> None:
    seen = job_process(the_job, pods, NOW, stuck_seconds=120)
    assert (seen.state, seen.retryable, seen.reason) == (state, retryable, reason)


def frozen(number: int, state: TrialState, early: float | None, final: float | None, seconds: float,
           baseline: bool = False, test: float | None = None) -> optuna.trial.FrozenTrial:  # fmt: skip
    start = datetime(2026, 11, 25, 11, 0)
    attrs: dict[str, Any] = {"total_steps": 10, "early_step": 2}
    if final is not None:
        attrs |= {"final_accuracy": final, "test_accuracy": test if test is not None else final,
                  "final_adapter": f"/artifacts/t{number}"}  # fmt: skip
    trial = create_trial(
        state=state,
        value=early if state == TrialState.COMPLETE else None,
        params={"learning_rate": 1e-3},
        distributions={"learning_rate": FloatDistribution(1e-5, 1e-1, log=True)},
        intermediate_values={2: early} if early is not None else {},
        user_attrs=attrs,
        system_attrs={"fixed_params": {"learning_rate": 1e-3}} if baseline else {},
    )
    trial.number = number
    trial.datetime_start = start
    trial.datetime_complete = start + timedelta(seconds=seconds)
    return trial


def test_status_names_the_best_trial_the_baseline_gain_and_gpu_time() -> None:
    trials = [
        frozen(0, TrialState.COMPLETE, 0.5, 0.6, 100, baseline=True, test=0.55),
        frozen(1, TrialState.COMPLETE, 0.7, 0.8, 120, test=0.75),
        frozen(2, TrialState.PRUNED, 0.2, None, 20),
        frozen(3, TrialState.FAIL, None, None, 5),
    ]
    status = study_status(trials, max_trials=5, gpus=2, early_fraction=0.2, now=NOW)
    assert status["progress"] == "4/5"
    assert status["trials"] == {"created": 4, "running": 0, "completed": 2, "cancelled": 1, "failed": 1}
    assert status["best"]["trial"] == 1 and status["best"]["finalAccuracy"] == 0.8
    assert status["best"]["adapter"] == "/artifacts/t1"
    assert status["baseline"]["trial"] == 0
    assert status["testGainOverBaseline"] == pytest.approx(0.2)
    # spent: (100 + 120 + 20 + 5) s x 2 GPUs; saved: median full run (110 s) - 20 s, x 2 GPUs
    assert status["gpuSeconds"] == {"spent": 490.0, "saved": 180.0}


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    old = [{"type": "Complete", "status": "False", "lastTransitionTime": "t0", "reason": "TrialsRunning"}]
    same = merge_conditions(old, [{"type": "Complete", "status": "False", "lastTransitionTime": "t1", "reason": "x"}])
    changed = merge_conditions(old, [{"type": "Complete", "status": "True", "lastTransitionTime": "t1", "reason": "y"}])
    assert same[0]["lastTransitionTime"] == "t0" and same[0]["reason"] == "x"
    assert changed[0]["lastTransitionTime"] == "t1"
