"""The operator's pure parts: Job manifests, how Jobs and pods read to the core, names, status. The same code runs
against the real control plane in test_operator.py; these pin the rules down case by case."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from ftstudy import audit, core, spec
from ftstudy.core import Process
from ftstudy.executor import Cleanup, Forgetting, TrialProcess
from ftstudy.kube import jobs, names
from ftstudy.kube.api import Kube as ApiKube
from ftstudy.kube.executor import JobConflict, JobExecutor, job_process
from ftstudy.kube.handlers import delete_study_records
from ftstudy.kube.identity import MEANING, SpecChanged, check_unchanged, meaning, study_identity, trial_key
from ftstudy.kube.metrics import OperatorMetrics
from ftstudy.kube.policy import TrialPolicy, check_pod, check_spec
from ftstudy.kube.problems import Problem
from ftstudy.kube.reconciler import StudyReconciler, _Built
from ftstudy.kube.status import merge_conditions, study_status, trial_seconds
from ftstudy.kube.times import api_time
from ftstudy.kube.watch_cache import TrialObjects
from ftstudy.retry import RetryPolicy
from ftstudy.runner import Engine, Event
from ftstudy.study_store import (
    AUDIT,
    AUDIT_FRACTION,
    FORGETTING,
    OUTAGES,
    SPEC,
    StudyConflict,
    StudyStore,
    attempts,
    resumes,
)
from ftstudy.trial_command import trainer_args
from tests.conftest import PrivateDatabase
from tests.test_observability import scrape_registry
from tests.test_observability import value as sample_value

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
    assert jobs.gpus_per_trial(s) == 2


class Recorder:
    """An executor that only records what the engine asks it to launch (and says it runs)."""

    def __init__(self) -> None:
        self.launches: list[tuple[int, int, list[str]]] = []
        self.forgotten: list[int] = []
        self.ended: dict[int, TrialProcess] = {}  # what observe says of these instead of RUNNING

    def launch(self, number: int, attempt: int, args: list[str]) -> None:
        self.launches.append((number, attempt, args))

    def observe(self, trials: object = ()) -> dict[int, TrialProcess]:
        running = {n: TrialProcess(Process.RUNNING, attempt=a) for n, a, _ in self.launches}
        return running | self.ended

    def cancel(self, number: int) -> None:
        pass

    def record_decision(self, number: int, decision: str) -> None:
        pass

    def forget_checkpoint(self, number: int) -> Forgetting:
        self.forgotten.append(number)
        return Forgetting(Cleanup.DONE)


def test_a_study_that_fails_deletes_its_suspended_trials_checkpoints(private_database: PrivateDatabase) -> None:
    """Suspended (screened, waiting for a verdict) when the study fails: failed with it, their checkpoints go too
    (``cleanup.prunedCheckpoints``), as a pruned trial's do; they would never be resumed."""
    s = study(storage={"secretRef": {"name": "ftstudy-db"}}, promotion={"policy": "topK", "k": 1, "mode": "screen"},
              budget={"maxTrials": 4, "parallelism": 2, "maxFailedTrials": 1, "retriesPerTrial": 0})  # fmt: skip
    store = StudyStore(private_database.url, "ml.failing", s.spec, RetryPolicy(deadline_seconds=10))
    recorder = Recorder()
    root = PurePosixPath("/artifacts/ml/failing")
    engine = Engine(s, store, recorder, root / "data", root, study_name="ml.failing", generate_data=True)
    engine.step()
    first = store.storage.get_trial_id_from_study_id_trial_number(store.study_id, 0)
    for key, value in (("outcome", "screened"), ("early_step", 3), ("checkpoint", "/artifacts/x")):
        store.storage.set_trial_user_attr(first, key, value)
    store.storage.set_trial_intermediate_value(first, 3, 0.5)
    recorder.ended = {0: TrialProcess(Process.SUCCEEDED, exit_code=0, attempt=1),
                      1: TrialProcess(Process.FAILED, reason="boom", attempt=1)}  # fmt: skip
    engine.step()
    assert engine.outcome is not None and "maxFailedTrials" in str(engine.outcome)
    assert recorder.forgotten == [0], "the suspended trial's checkpoint, not the crashed one's (it has none)"
    assert store.trial(0).state.name == "FAIL"


class FailingCleanups(Recorder):
    """Each checkpoint deletion answers from a script (``answers``), DONE once it runs out."""

    def __init__(self, answers: list[Forgetting]) -> None:
        super().__init__()
        self.answers = answers

    def forget_checkpoint(self, number: int) -> Forgetting:
        self.forgotten.append(number)
        return self.answers.pop(0) if self.answers else Forgetting(Cleanup.DONE)


def test_a_checkpoint_deletion_that_fails_is_retried_after_a_back_off_then_given_up_with_where_it_stays(
    private_database: PrivateDatabase,
) -> None:
    """cleanup.prunedCheckpoints: a cleanup Job that failed or was refused used to be asked for once and forgotten
    (the checkpoint stayed, a log line said so). Now the checkpoints still to delete are recorded on the study
    (a restarted operator goes on), a failure is an Event and is tried again after 30 s, then 60 s; after the
    third failure an Event says where the checkpoint stays. A full quota waits without spending a try."""
    s = study(storage={"secretRef": {"name": "ftstudy-db"}}, promotion={"policy": "topK", "k": 1, "mode": "screen"},
              budget={"maxTrials": 4, "parallelism": 2, "maxFailedTrials": 1, "retriesPerTrial": 0})  # fmt: skip
    store = StudyStore(private_database.url, "ml.kept", s.spec, RetryPolicy(deadline_seconds=10))
    refused = Forgetting(Cleanup.FAILED, "the API server refused its cleanup Job kept-t0-forget: denied")
    quota = Forgetting(Cleanup.WAITING, "exceeded quota: count/jobs.batch")
    executor = FailingCleanups([quota, quota, refused, refused])
    seen: list[Event] = []
    root = PurePosixPath("/artifacts/ml/kept")
    engine = Engine(s, store, executor, root / "data", root, on_event=seen.append, study_name="ml.kept")
    engine._drop_checkpoint(0)
    assert StudyStore(private_database.url, "ml.kept", s.spec, RetryPolicy(deadline_seconds=10)).forgetting == {0: 0}
    for now in (0.0, 1.0, 2.0, 3.0, 32.0, 33.0):
        engine.tidy(now)
    assert executor.forgotten == [0, 0, 0, 0], "asked each pass until the failure, then not within 30 s"
    assert [e.reason for e in seen] == ["CheckpointCleanupWaiting", "CheckpointCleanupFailed",
                                        "CheckpointCleanupFailed"], "the same wait told once"  # fmt: skip
    assert seen[1].text.endswith("(try 1 of 3): the API server refused its cleanup Job kept-t0-forget: denied; "
                                 "trying again in 30 s")  # fmt: skip
    assert seen[2].text.endswith("trying again in 60 s")

    # restarted: the record says one deletion is pending with two failed tries; the next failure is the last
    reopened = StudyStore(private_database.url, "ml.kept", s.spec, RetryPolicy(deadline_seconds=10))
    restarted = Engine(s, reopened, FailingCleanups([refused]), root / "data", root, on_event=seen.append,
                       study_name="ml.kept")  # fmt: skip
    assert restarted.forgetting == {0: 2}
    restarted.tidy(0.0)
    assert seen[-1].reason == "CheckpointKept"
    assert seen[-1].text == ("its checkpoint stays in /artifacts/ml/kept/trial-0000: 3 tries to delete it failed, "
                             "the last because the API server refused its cleanup Job kept-t0-forget: denied; "
                             "delete it by hand")  # fmt: skip
    restarted.tidy(1000.0)
    assert restarted.forgetting == {} and store.storage.get_study_system_attrs(store.study_id)[FORGETTING] == {}

    engine = Engine(s, StudyStore(private_database.url, "ml.kept", s.spec, RetryPolicy(deadline_seconds=10)),
                    FailingCleanups([]), root / "data", root, study_name="ml.kept")  # fmt: skip
    engine._drop_checkpoint(1)
    engine.tidy(0.0)
    assert engine.forgetting == {} and store.storage.get_study_system_attrs(store.study_id)[FORGETTING] == {}


def engine_on_recorder(url: str, name: str, **budget: int) -> tuple[spec.FineTuneStudy, StudyStore, Recorder,
                                                                    list[Event], Engine]:  # fmt: skip
    """The real engine on a real Optuna study (``ml.NAME``), its trials launched into a ``Recorder``, its Events
    kept."""
    s = study(storage={"secretRef": {"name": "ftstudy-db"}}, budget=budget)
    store = StudyStore(url, f"ml.{name}", s.spec, RetryPolicy(deadline_seconds=10))
    recorder, seen, root = Recorder(), list[Event](), PurePosixPath(f"/artifacts/ml/{name}")
    engine = Engine(s, store, recorder, root / "data", root, on_event=seen.append, study_name=f"ml.{name}")
    return s, store, recorder, seen, engine


def test_an_outage_waits_out_a_back_off_spends_no_retry_and_survives_a_restart(
    private_database: PrivateDatabase,
) -> None:
    """A trainer that exits 4 (its object store out of reach) met an outage: the trial is launched again after a
    back-off, spending no retry, and the condition says why meanwhile. The outages are recorded on the trial, so a
    restarted engine (which forgot the wait) doubles the next back-off, waits out again the back-off it was in
    (never a launch at once into the outage), and the one retry allowed is still there for the first crash."""
    s, store, recorder, seen, engine = engine_on_recorder(private_database.url, "outage", maxTrials=1, parallelism=1,
                                                         maxFailedTrials=1, retriesPerTrial=1)  # fmt: skip
    root = PurePosixPath("/artifacts/ml/outage")
    engine.step()
    down = "the trainer could not use its object store (exit code 4): could not write s3://b/x: 503 Service Unavailable"
    recorder.ended = {0: TrialProcess(Process.FAILED, exit_code=4, reason=down, attempt=1, outage=True)}
    engine.step()
    engine.step()
    assert [(n, a) for n, a, _ in recorder.launches] == [(0, 1)], "it waits out the back-off"
    assert [e.text for e in seen if e.reason == "TrialOutage"] == [
        f"{down}: an outage, not the trial's doing; launched again in 15 s (no retry spent)"
    ]
    waiting = StudyReconciler._outages(engine.outages, private_database.url, 3, NOW)
    assert (waiting["type"], waiting["status"], waiting["reason"]) == ("TrialsReachStorage", "False", "TrialOutage")
    assert waiting["message"].startswith(f"trial(s) 0 wait to launch again after an outage; of trial 0: {down}.")
    metrics = OperatorMetrics()
    metrics.observe_events("ml", "outage", seen, {})
    assert sample_value(scrape_registry(metrics), "ftstudy_trial_outages_total", namespace="ml", study="outage") == 1.0

    def back_off_passes(engine: Engine) -> None:
        launch, _, why = engine.outages[0]
        engine.outages[0] = (launch, 0.0, why)
        engine.step()

    back_off_passes(engine)
    assert [(n, a) for n, a, _ in recorder.launches] == [(0, 1), (0, 2)] and engine.outcome is None
    assert (seen[-1].reason, seen[-1].text) == ("TrialRelaunchedAfterOutage",
                                                "relaunched after an outage (attempt 2, no retry spent)")  # fmt: skip
    assert store.trials()[0].system_attrs[OUTAGES] == [1]
    assert StudyReconciler._outages(engine.outages, private_database.url, 3, NOW)["status"] == "True"

    recorder.ended = {0: TrialProcess(Process.FAILED, exit_code=4, reason=down, attempt=2, outage=True)}

    def restart() -> Engine:
        reopened = StudyStore(private_database.url, "ml.outage", s.spec, RetryPolicy(deadline_seconds=10))
        return Engine(s, reopened, recorder, root / "data", root, on_event=seen.append, study_name="ml.outage")

    restarted = restart()
    restarted.step()
    assert seen[-1].text.endswith("launched again in 30 s (no retry spent)"), "its second outage"
    assert store.trials()[0].system_attrs[OUTAGES] == [1, 2], "recorded as the wait starts"
    # restarted again during that wait: the outage it recorded waits its back-off again (30 s), told once
    restarted = restart()
    restarted.step()
    restarted.step()
    assert [(n, a) for n, a, _ in recorder.launches][-1] == (0, 2), "not launched at once into the outage"
    assert restarted.outages[0][0] == 2 and restarted.outages[0][1] - time.monotonic() > 25, restarted.outages
    assert StudyReconciler._outages(restarted.outages, private_database.url, 3, NOW)["status"] == "False"
    back_off_passes(restarted)
    assert [(n, a) for n, a, _ in recorder.launches][-1] == (0, 3)
    assert [e.reason for e in seen].count("TrialOutage") == 2
    crashed = "the trainer crashed (exit code 1)"
    recorder.ended = {0: TrialProcess(Process.FAILED, exit_code=1, reason=crashed, attempt=3)}
    restarted.step()
    assert (seen[-1].reason, seen[-1].text) == ("TrialRelaunched", "relaunched (attempt 4)"), "its one retry"
    recorder.ended = {0: TrialProcess(Process.FAILED, exit_code=1, reason=crashed, attempt=4)}
    restarted.step()
    assert seen[-2].text == f"failed: {crashed} (after 4 attempts)", seen[-2:]
    assert isinstance(restarted.outcome, core.StudyFailed)


def test_a_trial_waiting_out_an_outage_when_its_study_fails_is_no_longer_said_to_wait(
    private_database: PrivateDatabase,
) -> None:
    """The study fails while a trial waits out an outage: that trial fails with it, and the condition stops naming
    it. (Its back-off is at its cap however many outages the trial met: 15 s doubled a thousand times is no number.)"""
    _, store, recorder, seen, engine = engine_on_recorder(private_database.url, "waiting", maxTrials=2, parallelism=2,
                                                         maxFailedTrials=1, retriesPerTrial=0)  # fmt: skip
    engine.step()
    first = store.storage.get_trial_id_from_study_id_trial_number(store.study_id, 0)
    store.storage.set_trial_system_attr(first, OUTAGES, list(range(2000, 3100)))
    down = "the trainer could not reach the database (exit code 3)"
    recorder.ended = {0: TrialProcess(Process.FAILED, exit_code=3, reason=down, attempt=1, outage=True)}
    engine.step()
    assert seen[-1].text.endswith("launched again in 600 s (no retry spent)") and set(engine.outages) == {0}
    recorder.ended[1] = TrialProcess(Process.FAILED, exit_code=1, reason="the trainer crashed (exit code 1)",
                                     attempt=1)  # fmt: skip
    engine.step()
    assert isinstance(engine.outcome, core.StudyFailed) and engine.outages == {}
    assert StudyReconciler._outages(engine.outages, private_database.url, 1, NOW)["status"] == "True"
    assert (0, "failed: stopped: the study failed") in [(e.trial, e.text) for e in seen]


def test_the_jobs_the_engine_launches_carry_no_storage_url(private_database: PrivateDatabase) -> None:
    """The Job made from what the real engine launches (through a real Optuna study on PostgreSQL) holds neither
    the storage URL nor its password: the trainer gets it from the Secret, by reference."""
    s = study(storage={"secretRef": {"name": "ftstudy-db"}}, budget={"maxTrials": 2, "parallelism": 2})
    store = StudyStore(private_database.url, "ml.demo", s.spec, RetryPolicy(deadline_seconds=10))
    recorder = Recorder()
    root = PurePosixPath("/artifacts/ml/demo")
    engine = Engine(s, store, recorder, root / "data", root, study_name="ml.demo", generate_data=True)
    engine.step()
    assert [(n, a) for n, a, _ in recorder.launches] == [(0, 1), (1, 1)]
    for number, attempt, args in recorder.launches:
        job = jobs.job_manifest(s.spec, "ml", "demo", "uid-1", number, attempt, args, identity="i", key="k")
        text = json.dumps(job)
        assert private_database.password not in text and "postgresql" not in text, text
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        assert env[0]["valueFrom"]["secretKeyRef"] == {"name": "ftstudy-db", "key": "url"}


def test_the_optuna_study_has_one_identity_and_a_frozen_meaning(private_database: PrivateDatabase) -> None:
    """Recorded the first time the operator opens the study; a frozen field changed where the CRD's rules cannot
    see (a hyperparameter's value) is refused, a budget change is not."""
    first = study(training={"hyperparameters": {"weight_decay": 0.0}})
    retry = RetryPolicy(deadline_seconds=10)
    store = StudyStore(private_database.url, "ml.frozen", first.spec, retry)
    identity = study_identity(store)
    check_unchanged(store, first.spec)
    again = StudyStore(private_database.url, "ml.frozen", first.spec, retry)
    assert study_identity(again) == identity and len(identity) == 32
    check_unchanged(again, study(training={"hyperparameters": {"weight_decay": 0.0}}, budget={"maxTrials": 40}).spec)
    changed = study(training={"hyperparameters": {"weight_decay": 0.1}}, model="smollm2")
    with pytest.raises(SpecChanged, match=r"spec.model, spec.training changed after the study started"):
        check_unchanged(again, changed.spec)


def test_a_field_added_by_an_upgrade_at_its_default_does_not_change_a_studys_meaning(
    private_database: PrivateDatabase,
) -> None:
    """A study recorded by an older operator lacks fields added since (training.groupByLength): at their defaults
    they change nothing, so the upgraded operator goes on with it; set otherwise, they are a change like any."""
    first = study()
    store = StudyStore(private_database.url, "ml.older", first.spec, RetryPolicy(deadline_seconds=10))
    older = meaning(first.spec)
    del older["training"]["groupByLength"]
    store.storage.set_study_system_attr(store.study_id, MEANING, json.dumps(older, sort_keys=True))
    check_unchanged(store, study().spec)
    with pytest.raises(SpecChanged, match=r"spec\.training changed"):
        check_unchanged(store, study(training={"groupByLength": True}).spec)


def test_a_study_keeps_the_promotion_mode_it_started_with(private_database: PrivateDatabase) -> None:
    """The default mode changed (online, then screen): a spec that names none must not switch an older study."""
    retry = RetryPolicy(deadline_seconds=10)
    StudyStore(private_database.url, "ml.moded", study(promotion={"mode": "online"}).spec, retry)
    StudyStore(private_database.url, "ml.moded", study(promotion={"mode": "online"}).spec, retry)
    with pytest.raises(StudyConflict, match=r"started with promotion\.mode online, and this spec asks for screen"):
        StudyStore(private_database.url, "ml.moded", study().spec, retry)


def test_a_study_created_again_under_its_name_writes_beside_its_predecessor(
    private_database: PrivateDatabase,
) -> None:
    """The trials' directory carries the UID, so a re-created study's trial N never meets its predecessor's trial N
    checkpoint (which it would resume from, or refuse, failing the trial); it is recorded with the records, so
    continued records keep theirs, and records whose trials began before it existed keep the study's name."""
    from ftstudy.kube.identity import trials_directory

    retry = RetryPolicy(deadline_seconds=10)
    s = study().spec
    first = StudyStore(private_database.url, "ml.demo.uid-1", s, retry)
    assert trials_directory(first, "demo", "0a1b2c3d-4e5f") == "demo-0a1b2c3d"
    again = StudyStore(private_database.url, "ml.demo.uid-2", s, retry)
    assert trials_directory(again, "demo", "99999999-0000") == "demo-99999999", "beside its predecessor"
    continued = StudyStore(private_database.url, "ml.demo.uid-1", s, retry)  # storage.continueFrom
    assert trials_directory(continued, "demo", "77777777-0000") == "demo-0a1b2c3d", "where its records' trials are"
    older = StudyStore(private_database.url, "ml.older", s, retry)
    older.study.ask()
    assert trials_directory(older, "older", "12345678-0000") == "older", "trials began under the old layout"
    assert jobs.trials_root(s, "ml", "demo-0a1b2c3d") == PurePosixPath("/artifacts/ml/demo-0a1b2c3d")


PVC = {"name": "artifacts", "persistentVolumeClaim": {"claimName": "artifacts"}}


@pytest.mark.parametrize(
    ("template", "promotion", "words"),
    [
        ({}, {}, "no volume is mounted there"),
        ({"volumes": [{"name": "a", "emptyDir": {}}], "volumeMounts": [{"name": "a", "mountPath": "/artifacts"}]},
         {}, "(a) is an emptyDir, which ends with its pod"),
        ({"volumes": [PVC], "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts/other"}]}, {},
         "no volume is mounted there"),
        ({"volumes": [PVC], "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts"}]}, {}, None),
        ({"volumes": [PVC], "volumeMounts": [{"name": "artifacts", "mountPath": "/"}], "outputDir": "/data/out"},
         {}, None),
        ({}, {"mode": "online"}, None),
        ({}, {"policy": "none"}, None),
    ],
)  # fmt: skip
def test_screening_needs_a_volume_that_outlives_the_pod_at_output_dir(
    template: dict[str, Any], promotion: dict[str, Any], words: str | None
) -> None:
    """Refused before any trial starts: each would screen, then fail its resume for want of its checkpoint."""
    missing = jobs.checkpoint_volume_missing(study(trialTemplate=template, promotion=promotion).spec)
    if words is None:
        assert missing is None
    else:
        assert missing is not None and words in missing and "promotion.mode: online" in missing, missing


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ({}, "no volume is mounted there"),
        ({"volumes": [{"name": "a", "ephemeral": {}}], "volumeMounts": [{"name": "a", "mountPath": "/artifacts"}]},
         "(a) is an ephemeral, which ends with its pod"),
        ({"volumes": [PVC], "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts"}]}, None),
        ({"outputDir": "s3://bucket/studies"}, None),
    ],
)  # fmt: skip
def test_an_online_study_whose_checkpoints_end_with_the_pod_says_a_preempted_trial_starts_again(
    template: dict[str, Any], words: str | None, private_database: PrivateDatabase
) -> None:
    """Online trials are not refused without a lasting volume (they need none unless preempted), but a preempted or
    evicted one then starts from step 0: the study says so (condition PreemptionSafe=False, from the reason here)
    and so does its TrialPreempted Event."""
    s = study(trialTemplate=template, promotion={"mode": "online"})
    reason = jobs.restarts_when_preempted(s.spec)
    if words is None:
        assert reason is None
        return
    assert reason is not None and words in reason and "starts again from step 0" in reason, reason
    events: list[Event] = []
    store = StudyStore(private_database.url, "ml.demo", s.spec, RetryPolicy(deadline_seconds=10))
    root = PurePosixPath("/artifacts/ml/demo")
    engine = Engine(s, store, Recorder(), root / "data", root, on_event=events.append, study_name="ml.demo")
    engine.restarts_when_preempted = reason
    number, _ = store.ask(False)
    store.record_attrs(number, {"preempted_at_steps": [7]})
    engine._preempted(store.trials()[0], None)
    assert [e.text for e in events] == [
        "preempted after step 7: its pod was stopped from outside (SIGTERM); it "
        "starts again from step 0: its checkpoint ended with the pod (no retry spent)"
    ]


def test_a_queued_trials_job_is_created_suspended_with_the_queue_label_and_its_helpers_are_not() -> None:
    """trialTemplate.queueName: Kueue's Job integration reads the label on the Job and admits a suspended Job; the
    pods carry no queue label (Kueue's pod integration would take them), and the CPU helpers (a data check, a
    checkpoint cleanup) go to no queue: suspended without Kueue's label, they would wait forever."""
    s = study(trialTemplate={"queueName": "trials"}).spec
    job = jobs.job_manifest(s, "ml", "demo", "uid-1", 0, 1, ["--trial", "0"])
    assert job["metadata"]["labels"][jobs.QUEUE_LABEL] == "trials" and job["spec"]["suspend"] is True
    assert jobs.QUEUE_LABEL not in job["spec"]["template"]["metadata"]["labels"]
    helper = jobs.data_check_manifest(s, "ml", "demo", "uid-1", PurePosixPath("/artifacts/data"), "/tmp")
    assert jobs.QUEUE_LABEL not in helper["metadata"]["labels"] and "suspend" not in helper["spec"]
    plain = jobs.job_manifest(study().spec, "ml", "demo", "uid-1", 0, 1, [])
    assert jobs.QUEUE_LABEL not in plain["metadata"]["labels"] and "suspend" not in plain["spec"]


def test_a_workload_priority_class_labels_the_queued_jobs_needs_a_queue_and_the_policys_leave() -> None:
    """trialTemplate.workloadPriorityClassName: Kueue's priority label on every trial Job (on the Job, where Kueue
    reads it); without queueName the manifest is refused at the edge, and the trial policy allows none unless the
    platform team lists it (a high one would preempt other teams' work)."""
    template = {"queueName": "trials", "workloadPriorityClassName": "team-high"}
    s = study(trialTemplate=template).spec
    job = jobs.job_manifest(s, "ml", "demo", "uid-1", 0, 1, ["--trial", "0"])
    assert job["metadata"]["labels"][jobs.WORKLOAD_PRIORITY_LABEL] == "team-high"
    assert jobs.WORKLOAD_PRIORITY_LABEL not in job["spec"]["template"]["metadata"]["labels"]
    refused = check_spec(s, TrialPolicy(storage_secrets=frozenset({"db"})))
    assert refused == ["spec.trialTemplate.workloadPriorityClassName: 'team-high' is not allowed for trials (allowed: "
                       "none; Helm value trialPolicy.workloadPriorityClasses)"], refused  # fmt: skip
    assert not check_spec(s, TrialPolicy.of(storage_secrets=["db"], workload_priority_classes=["team-high"]))
    with pytest.raises(ValueError, match="set queueName too"):
        study(trialTemplate={"workloadPriorityClassName": "team-high"})


def test_a_pruned_trials_checkpoint_is_deleted_by_a_small_job_outside_the_trials() -> None:
    """No GPU, no storage URL, the trials' volumes and security; labelled so that the study's trial selector does
    not see it as an attempt, and named by the trial so that asking twice creates it once."""
    s = study(trialTemplate={"volumes": [PVC], "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts"}],
                             "fsGroup": 10001}).spec  # fmt: skip
    job = jobs.checkpoint_cleanup_manifest(s, "ml", "demo", "uid-1", 3, PurePosixPath("/artifacts/ml/demo/trial-0003"))
    assert job["metadata"]["name"] == "demo-t3-forget"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["--stage", "forget", "--output", "/artifacts/ml/demo/trial-0003"]
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert all(e["name"] != "FTSTUDY_STORAGE_URL" for e in container["env"])
    assert PVC in pod["volumes"] and check_pod(pod, TrialPolicy(claims=frozenset({"artifacts"})), None) == []
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    labels = job["spec"]["template"]["metadata"]["labels"]
    selected = dict(term.split("=") for term in names.study_selector("uid-1").split(","))
    assert labels[names.STUDY_UID] == "uid-1" and not selected.items() <= labels.items()
    trial_labels = jobs.job_manifest(s, "ml", "demo", "uid-1", 3, 1, [])["metadata"]["labels"]
    assert selected.items() <= trial_labels.items()


def test_the_cluster_example_passes_the_default_trial_policy() -> None:
    example = spec.load(Path(__file__).resolve().parents[1] / "examples" / "cluster-study.yaml").spec
    assert (
        check_spec(example, TrialPolicy()) == [] and check_pod(pod_spec_of(example), TrialPolicy(), "ftstudy-db") == []
    )
    assert pod_spec_of(example)["securityContext"]["fsGroup"] == 10001


def pod_spec_of(s: spec.StudySpec) -> dict[str, Any]:
    pod: dict[str, Any] = jobs.job_manifest(s, "ml", "demo", "uid", 0, 1, ["--trial", "0"])["spec"]["template"]["spec"]
    return pod


def test_the_trial_pod_meets_the_restricted_standard_and_more() -> None:
    s = study(trialTemplate={"fsGroup": 10001}).spec
    pod = pod_spec_of(s)
    policy = TrialPolicy.of(storage_secrets=["db"])
    assert check_spec(s, policy) == [] and check_pod(pod, policy, "db") == []
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "ftstudy-scratch", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    assert pod["securityContext"]["fsGroup"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
    assert "fsGroup" not in pod_spec_of(study().spec)["securityContext"]


def test_a_deleted_studys_artifacts_are_deleted_by_a_job_that_outlives_it() -> None:
    s = study(trialTemplate={"outputDir": "s3://models/ft", "artifactSecret": "ftstudy-object-store"},
              cleanup={"deleteArtifacts": True}).spec  # fmt: skip
    job = jobs.artifacts_cleanup_manifest(s, "ml", "demo", "0a1b2c3d-4e5f", "s3://models/ft/ml/demo-0a1b2c3d")
    assert job["metadata"]["name"] == "demo-delete-0a1b2c3d" and "ownerReferences" not in job["metadata"]
    labels = job["metadata"]["labels"]
    assert labels["ftstudy.io/study-uid"] == "0a1b2c3d-4e5f" and job["spec"]["ttlSecondsAfterFinished"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["--stage", "forget-all", "--output", "s3://models/ft/ml/demo-0a1b2c3d"]
    assert container["envFrom"] == [{"secretRef": {"name": "ftstudy-object-store"}}]
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert check_pod(pod, TrialPolicy.of(), None, "ftstudy-object-store") == []


def test_a_trial_on_several_gpus_asks_for_them_and_runs_one_process_each_with_shared_memory() -> None:
    s = study(trialTemplate={"gpus": 4, "resources": {"requests": {"nvidia.com/gpu": 1, "memory": "64Gi"},
                                                      "limits": {"nvidia.com/gpu": 1}}}).spec  # fmt: skip
    args = trainer_args(s, "demo", 3, "/data", "/out")
    assert args[args.index("--processes") + 1] == "4"
    pod = jobs.job_manifest(s, "ml", "demo", "uid", 3, 1, args)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"] == {"requests": {"nvidia.com/gpu": 4, "memory": "64Gi"},
                                      "limits": {"nvidia.com/gpu": 4}}  # fmt: skip
    assert {"name": "ftstudy-shm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert {"name": "ftstudy-shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    policy = TrialPolicy.of(storage_secrets=["db"])
    assert check_spec(s, policy) == [] and check_pod(pod, policy, "db") == []
    assert jobs.gpus_per_trial(s) == 4
    # without gpus: what resources says (one GPU by default), one process, no shared memory volume
    one = study().spec
    assert "--processes" not in trainer_args(one, "demo", 3, "/data", "/out") and jobs.gpus_per_trial(one) == 1
    assert all(v["name"] != "ftstudy-shm" for v in pod_spec_of(one)["volumes"])
    with pytest.raises(spec.SpecError, match="gpus"):
        study(trialTemplate={"gpus": 0})


@pytest.mark.parametrize(
    ("template", "storage", "field", "words"),
    [
        ({"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}, "ftstudy-db",
         "spec.trialTemplate.volumes[0]", "hostPath volumes are never allowed"),
        ({"volumes": [{"name": "s", "secret": {"secretName": "cloud-keys"}}]}, "ftstudy-db",
         "spec.trialTemplate.volumes[0]", "volume type secret is not allowed"),
        ({"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]},
         "ftstudy-db", "spec.trialTemplate.volumes[0]", "volume type projected is not allowed"),
        ({"serviceAccountName": "deployer"}, "ftstudy-db", "spec.trialTemplate.serviceAccountName",
         "'deployer' is not allowed for trials"),
        ({"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "cloud-keys", "key": "k"}}}]},
         "ftstudy-db", "spec.trialTemplate.env[0].valueFrom.secretKeyRef", "Secret 'cloud-keys'"),
        ({"env": [{"name": "FTSTUDY_STORAGE_URL", "value": "sqlite:///x"}]}, "ftstudy-db",
         "spec.trialTemplate.env[0].name", "set by the operator"),
        ({"volumes": [{"name": "ftstudy-scratch", "emptyDir": {}}]}, "ftstudy-db",
         "spec.trialTemplate.volumes[0].name", "one of the operator's own volumes"),
        ({"volumes": [{"name": "ftstudy-shm", "emptyDir": {}}]}, "ftstudy-db",
         "spec.trialTemplate.volumes[0].name", "one of the operator's own volumes"),
        ({"volumeMounts": [{"name": "x", "mountPath": "/tmp/"}]}, "ftstudy-db",
         "spec.trialTemplate.volumeMounts[0].mountPath", "scratch space"),
        ({}, "cloud-keys", "spec.storage.secretRef.name", "Secret 'cloud-keys' is not one the platform team allows"),
    ],
)  # fmt: skip
def test_the_trial_policy_refuses_what_would_reach_beyond_the_study(
    template: dict[str, Any], storage: str, field: str, words: str
) -> None:
    s = study(trialTemplate=template, storage={"secretRef": {"name": storage}}).spec
    refused = check_spec(s, TrialPolicy())
    assert len(refused) == 1 and refused[0].startswith(f"{field}: ") and words in refused[0], refused


def test_the_platform_team_widens_the_policy_but_never_to_host_paths() -> None:
    s = study(
        trialTemplate={"serviceAccountName": "trainer", "volumes": [{"name": "s", "secret": {"secretName": "k"}}]},
        storage={"secretRef": {"name": "team-db"}},
    ).spec
    policy = TrialPolicy.of(["trainer"], ["persistentVolumeClaim", "secret"], ["team-db"])
    assert check_spec(s, policy) == [] and check_pod(pod_spec_of(s), policy, "team-db") == []
    with pytest.raises(ValueError, match=r"volume type\(s\) hostPath cannot be allowed"):
        TrialPolicy.of(volume_types=["hostPath", "emptyDir"])


# Pods built to break one rule each (of `restricted`, and of the trial policy beyond it): check_pod must refuse every
# one; those marked PSA are ones the API server's Pod Security admission refuses too (tests/test_hardening.py).
def _container(p: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = p["containers"][0]["securityContext"]
    return container


BREAKING: list[tuple[Any, str, bool]] = [
    (lambda p: _container(p).update(privileged=True, allowPrivilegeEscalation=True), "privileged", True),
    (lambda p: p.update(hostNetwork=True), "hostNetwork", True),
    (lambda p: p.update(hostPID=True), "hostPID", True),
    (lambda p: p.update(hostIPC=True), "hostIPC", True),
    (lambda p: p["containers"][0].setdefault("ports", []).append({"containerPort": 80, "hostPort": 80}),
     "host ports are not allowed", True),
    (lambda p: _container(p).update(capabilities={"drop": ["NET_RAW"]}), "must drop ALL", True),
    (lambda p: _container(p).update(procMount="Unmasked"), "procMount: must be Default", False),
    (lambda p: _container(p).update(windowsOptions={"hostProcess": True}), "host processes are not allowed", False),
    (lambda p: _container(p).update(runAsNonRoot=False), "must not run as root", True),
    (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot: must be true", False),
    (lambda p: p["securityContext"].pop("seccompProfile"), "must be RuntimeDefault or Localhost", False),
    (lambda p: p["volumes"].append({"name": "n", "nfs": {"server": "10.0.0.1", "path": "/"}}),
     "volume type nfs is not allowed", True),
    (lambda p: _container(p).update(capabilities={"add": ["SYS_ADMIN"], "drop": ["ALL"]}),
     "no capabilities may be added", True),
    (lambda p: _container(p).update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation", True),
    (lambda p: _container(p).update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem", False),
    (lambda p: p["securityContext"].update(runAsUser=0), "must not be 0", True),
    (lambda p: p.update(automountServiceAccountToken=True), "no Kubernetes API token", False),
    (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath", True),
    (lambda p: p["containers"][0]["env"].append({"name": "X", "valueFrom": {"secretKeyRef": {"name": "other"}}}),
     "reads Secret 'other'", False),
    (lambda p: _container(p).update(seccompProfile={"type": "Unconfined"}), "Unconfined is not allowed", True),
    (lambda p: _container(p).update(appArmorProfile={"type": "Unconfined"}), "Unconfined is not allowed", True),
    (lambda p: _container(p).update(seLinuxOptions={"user": "system_u"}), "only a container type", True),
    (lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
     "not a safe sysctl", True),
    (lambda p: p.update(tolerations=[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]),
     "tolerates key 'node-role.kubernetes.io/control-plane'", False),
    (lambda p: p.update(tolerations=[{"operator": "Exists"}]), "tolerates every taint", False),
    (lambda p: p.update(nodeSelector={"node-role.kubernetes.io/control-plane": ""}), "not one trials may select",
     False),
    (lambda p: p.update(priorityClassName="system-node-critical"), "'system-node-critical' is not allowed", False),
    (lambda p: p["volumes"].append({"name": "d", "persistentVolumeClaim": {"claimName": "data-postgresql-0"}}),
     "claim 'data-postgresql-0' is not one trials may mount", False),
    (lambda p: p["volumes"].append({"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Ti"}}}}}}),
     "must request at most 100Gi", False),
]  # fmt: skip


@pytest.mark.parametrize(("change", "words"), [(change, words) for change, words, _ in BREAKING])
def test_a_built_job_outside_the_policy_is_never_created(change: Any, words: str) -> None:
    """The last check before a create: whatever a future template field or a bug put into the pod."""
    pod = pod_spec_of(study().spec)
    change(pod)
    refused = check_pod(pod, TrialPolicy(), "db")
    assert any(words in problem for problem in refused), refused


def test_the_executor_checks_every_job_it_builds_before_creating_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the spec check cannot see (a future template field, a bug in the Job builder) still meets the policy at
    the last step: a Job that mounts the node's disk is never sent to the API server. Removing the executor's call
    of check_pod fails this test (the spec-level checks pass this study)."""
    built = jobs.job_manifest

    def with_host_disk(*args: Any, **kwargs: Any) -> dict[str, Any]:
        manifest = built(*args, **kwargs)
        manifest["spec"]["template"]["spec"].setdefault("volumes", []).append(
            {"name": "node", "hostPath": {"path": "/"}}
        )
        return manifest

    class Refuses:
        def create(self, path: str, body: dict[str, Any]) -> None:
            raise AssertionError(f"created {body['metadata']['name']}")

    monkeypatch.setattr(jobs, "job_manifest", with_host_disk)
    s = study().spec
    assert not check_spec(s, TrialPolicy(storage_secrets=["db"])), "the spec itself is allowed"
    executor = JobExecutor(Refuses(), "ml", "demo", "uid-1", s, identity="a" * 32)  # type: ignore[arg-type]
    with pytest.raises(Problem) as refused:
        executor.launch(0, 1, ["--trial", "0"])
    assert refused.value.reason == "TrialPolicyViolation"
    assert "hostPath" in refused.value.message


def job(conditions: list[dict[str, str]] | None = None, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "demo-t0-a1"}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-25T12:00:00Z"
    return {"metadata": metadata, "status": {"conditions": conditions or []}}


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(state: dict[str, Any], age_seconds: float = 0, scheduled_seconds: float | None = None, **status: Any
        ) -> dict[str, Any]:  # fmt: skip
    """``scheduled_seconds``: how long ago the pod was scheduled (its newest condition), else at its creation."""
    conditions = []
    if scheduled_seconds is not None:
        conditions = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": ago(scheduled_seconds)}]
    return {
        "metadata": {"name": "p", "creationTimestamp": ago(age_seconds)},
        "status": {"containerStatuses": [{"state": state}], "conditions": conditions, **status},
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
        # waited ten minutes for a GPU, scheduled a moment ago, now failing to pull: not stuck yet
        (job(), [pod({"waiting": {"reason": "ErrImagePull", "message": "x"}}, age_seconds=600, scheduled_seconds=10)],
         Process.RUNNING, True, None),
        (job(), [pod({"waiting": {"reason": "ErrImagePull", "message": "x"}}, age_seconds=900, scheduled_seconds=300)],
         Process.FAILED, False, "its pod cannot start: ErrImagePull: x"),
    ],
)  # fmt: skip
def test_how_a_job_reads_to_the_core(
    the_job: dict[str, Any], pods: list[dict[str, Any]], state: Process, retryable: bool, reason: str | None
) -> None:
    seen = job_process(the_job, pods, NOW, stuck_seconds=120)
    assert (seen.state, seen.retryable, seen.reason) == (state, retryable, reason)
    assert not seen.outage


@pytest.mark.parametrize(("code", "meaning"), [(3, "could not reach the database"),
                                               (4, "could not use its object store")])  # fmt: skip
def test_a_trainer_that_could_not_reach_its_storage_met_an_outage(code: int, meaning: str) -> None:
    died = pod({"terminated": {"exitCode": code, "message": "could not write s3://b/x: 503 Service Unavailable"}})
    seen = job_process(job(FAILED), [died], NOW, stuck_seconds=120)
    assert (seen.state, seen.outage) == (Process.FAILED, True)
    assert seen.reason == f"the trainer {meaning} (exit code {code}): could not write s3://b/x: 503 Service Unavailable"


def test_pods_stopped_from_outside_read_as_preemptions_not_as_the_jobs_failure() -> None:
    """A failed pod the Job's podFailurePolicy ignores (exit 75, or marked DisruptionTarget) is a preemption, told
    with its cause and the trainer's last words; it never explains why the Job failed; and while the Job is being
    deleted (the operator stopping the trial) nothing is a preemption."""
    deleted = pod({"terminated": {"exitCode": 75, "message": "x\noutcome: preempted after 7 of 15 steps"}},
                  age_seconds=300, phase="Failed")  # fmt: skip
    deleted["metadata"]["name"] = "demo-t0-a1-aaaaa"
    drained = pod({"terminated": {"exitCode": 137}}, age_seconds=200, phase="Failed")
    disruption = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    drained["status"]["conditions"] = [{**disruption, "message": "Eviction API: evicting"}]
    drained["metadata"]["name"] = "demo-t0-a1-bbbbb"
    crashed = pod({"terminated": {"exitCode": 1, "message": "boom"}}, age_seconds=100, phase="Failed")
    running = pod({"running": {}}, age_seconds=100)
    seen = job_process(job(), [running, drained, deleted], NOW, stuck_seconds=120)
    assert seen.state is Process.RUNNING
    assert seen.preempted == (
        "pod demo-t0-a1-aaaaa: it was stopped from outside (SIGTERM); "
        "the trainer said: outcome: preempted after 7 of 15 steps",
        "pod demo-t0-a1-bbbbb: EvictionByEvictionAPI: Eviction API: evicting",
    )
    failed = job_process(job(FAILED), [deleted, crashed], NOW, stuck_seconds=120)
    assert (failed.state, failed.reason) == (Process.FAILED, "the trainer crashed (exit code 1): boom")
    assert job_process(job(deleting=True), [deleted], NOW, stuck_seconds=120).preempted == ()
    plain_stop = pod({"terminated": {"exitCode": 143}}, phase="Failed")
    assert job_process(job(), [plain_stop], NOW, stuck_seconds=120).preempted == ()


def test_how_long_a_pod_waited_is_measured_on_the_api_servers_clock() -> None:
    """The pod's timestamps are the API server's; the operator's machine may be off by more than stuck_seconds.
    Here the server says the pod has waited 60 s (its clock reads NOW, days behind this machine's): not stuck."""
    labels = {names.TRIAL: "0", names.ATTEMPT: "1"}
    the_job = {"metadata": {"name": "demo-t0-a1", "labels": labels, "creationTimestamp": ago(60)}, "status": {}}
    waiting = pod({"waiting": {"reason": "ImagePullBackOff", "message": "x"}}, age_seconds=60)
    waiting["metadata"]["labels"] = {**labels, "job-name": "demo-t0-a1"}

    class Skewed:
        def list(self, resource_path: str, selector: str | None = None) -> list[dict[str, Any]]:
            return [the_job] if "/jobs" in resource_path else [waiting]

        def server_now(self) -> datetime:
            return NOW

    executor = JobExecutor(Skewed(), "ml", "demo", "uid-1", study().spec)  # type: ignore[arg-type]
    seen = executor.observe([frozen(0, TrialState.RUNNING, None, None, 0)])
    assert seen[0].state is Process.RUNNING, seen[0]
    assert datetime.now(UTC) - NOW > timedelta(seconds=120), "on this machine's clock it would be stuck"


def test_the_api_servers_clock_is_its_last_date_header_plus_the_time_since() -> None:
    kube = ApiKube.__new__(ApiKube)  # no client: only the clock
    kube._server_clock = None
    assert abs((kube.server_now() - datetime.now(UTC)).total_seconds()) < 5, "before any answer: this machine's"
    kube._heard("Wed, 25 Nov 2026 12:00:00 GMT")
    assert timedelta(0) <= kube.server_now() - datetime(2026, 11, 25, 12, 0, tzinfo=UTC) < timedelta(seconds=5)
    kube._heard("not a date")
    assert kube.server_now() - datetime(2026, 11, 25, 12, 0, tzinfo=UTC) < timedelta(seconds=5), "kept"


def test_a_job_whose_pod_is_never_created_fails_with_the_job_controllers_reason() -> None:
    refused = 'pods "demo-t0-a1-x" is forbidden: no PriorityClass with name gold was found'
    young = {"metadata": {"name": "demo-t0-a1", "creationTimestamp": ago(10), "labels": {names.ATTEMPT: "2"}}}
    old = {"metadata": {**young["metadata"], "creationTimestamp": ago(600)}}
    assert job_process(young, [], NOW, 120, refused) == TrialProcess(Process.RUNNING, attempt=2)
    assert job_process(old, [], NOW, 120, None) == TrialProcess(Process.RUNNING, attempt=2), "no reason: keep waiting"
    failed = job_process(old, [], NOW, 120, refused)
    assert (failed.state, failed.retryable, failed.attempt) == (Process.FAILED, False, 2)
    assert failed.reason == f"its pod could not be created: {refused}"


def test_a_pod_that_never_starts_fails_its_trial_after_budget_pending_seconds_with_the_schedulers_reason() -> None:
    """No node for it (a selector nobody matches, no free GPU for hours), or a volume that never mounts: the status
    said "running" for ever. Now a trial fails once its pod waited budget.pendingSeconds, with the reason."""
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}  # fmt: skip

    def waiting(age: float, **status: Any) -> dict[str, Any]:
        return {"metadata": {"name": "p", "creationTimestamp": ago(age)}, "status": {"phase": "Pending", **status}}

    unplaced_young = waiting(3000, conditions=[unschedulable])
    unplaced_old = waiting(3700, conditions=[unschedulable])
    assert job_process(job(), [unplaced_young], NOW, 120, None, 3600).state is Process.RUNNING
    assert job_process(job(), [unplaced_old], NOW, 120, None).state is Process.RUNNING, "no bound given"
    failed = job_process(job(), [unplaced_old], NOW, 120, None, 3600)
    assert (failed.state, failed.retryable) == (Process.FAILED, False)
    assert failed.reason == ("its pod did not start within budget.pendingSeconds (3600 s): the scheduler could not "
                             "place it: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")  # fmt: skip
    placed = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": ago(3690)}]
    creating = waiting(3700, containerStatuses=[{"state": {"waiting": {"reason": "ContainerCreating"}}}],
                       conditions=placed)  # fmt: skip
    stuck = job_process(job(), [creating], NOW, 120, None, 3600)
    assert stuck.state is Process.FAILED and "its container was still being created" in str(stuck.reason)

    class Events:  # the kubelet's Event about the pod, as the API server lists it
        def list(self, _path: str, field_selector: str = "", **_: Any) -> list[dict[str, Any]]:
            mount = 'MountVolume.SetUp failed for volume "settings" : configmap "trainer-settings" not found'
            wanted = "involvedObject.uid=pod-1,reason=FailedMount"
            return [{"message": mount, "lastTimestamp": ago(10)}] if field_selector == wanted else []

    executor = JobExecutor(Events(), "ml", "demo", "uid-1", study().spec)  # type: ignore[arg-type]
    named = executor._mount_reason(stuck, [{**creating, "metadata": {**creating["metadata"], "uid": "pod-1"}}])
    assert named.reason == ("its pod did not start within budget.pendingSeconds (3600 s): its container was never "
                            'created: MountVolume.SetUp failed for volume "settings" : configmap "trainer-settings" '
                            "not found")  # fmt: skip
    running = {**creating, "status": {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}}
    assert job_process(job(), [running], NOW, 120, None, 3600).state is Process.RUNNING, "it started: long ago"


def test_a_job_kueue_never_admits_fails_its_trial_after_budget_pending_seconds_naming_its_queue() -> None:
    """Created suspended for Kueue (trialTemplate.queueName), never admitted: the study said "queued" for ever. The
    wait counts from the Job's last suspension, so a trial preempted (suspended again) after an hour waits afresh."""

    def suspended(since: float, created: float = 4000) -> dict[str, Any]:
        return {"metadata": {"name": "demo-t0-a1", "namespace": "ml", "creationTimestamp": ago(created),
                             "labels": {names.ATTEMPT: "1", jobs.QUEUE_LABEL: "trials"}},
                "spec": {"suspend": True},
                "status": {"conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended",
                                           "lastTransitionTime": ago(since)}]}}  # fmt: skip

    assert job_process(suspended(3000), [], NOW, 120, None, 3600).state is Process.RUNNING
    assert job_process(suspended(3700), [], NOW, 120, None).state is Process.RUNNING, "no bound given"
    failed = job_process(suspended(3700), [], NOW, 120, None, 3600)
    assert (failed.state, failed.retryable) == (Process.FAILED, False)
    assert failed.reason == ("its Job did not start within budget.pendingSeconds (3600 s): Kueue did not admit its "
                             "Job: LocalQueue trials's ClusterQueue had no room for it (kubectl get workloads -n ml "
                             "says why)")  # fmt: skip
    preempted_lately = suspended(60, created=7200)
    assert job_process(preempted_lately, [], NOW, 120, None, 3600).state is Process.RUNNING, "waits afresh"
    admitted = {**suspended(3700), "spec": {"suspend": False}}
    assert job_process(admitted, [], NOW, 120, None, 3600).state is Process.RUNNING


def test_jobs_that_a_restored_database_no_longer_knows_are_a_conflict() -> None:
    """The Jobs of trials 0-3 against the records of a backup taken when trials 0-1 existed, after which trial 2 was
    asked for again: trial 2's Job is an earlier trial 2's (another creation time), trial 3's has no trial at all."""

    def asked(number: int, second: int) -> optuna.trial.FrozenTrial:
        trial = frozen(number, TrialState.RUNNING, None, None, 0)
        trial.datetime_start = datetime(2026, 11, 25, 11, 0, second, 123456)
        return trial

    before = [asked(0, 1), asked(1, 2), asked(2, 3), asked(3, 4)]
    restored = [asked(0, 1), asked(1, 2), asked(2, 9)]
    executor = JobExecutor(None, "ml", "demo", "uid-1", study().spec, identity="a" * 32)  # type: ignore[arg-type]
    listed = [
        jobs.job_manifest(study().spec, "ml", "demo", "uid-1", t.number, 1, [], "a" * 32, trial_key("a" * 32, t))
        for t in before
    ]
    executor._check(listed[:2], restored)  # the Jobs of the trials the backup has: ours
    with pytest.raises(JobConflict) as conflict:
        executor._check(listed, restored)
    message = conflict.value.message
    assert "Job demo-t2-a1 was made for an earlier trial 2" in message
    assert "Job demo-t3-a1 runs trial 3, which the study's records do not have" in message
    assert "Nothing is launched or changed until these Jobs are gone" in message
    other = JobExecutor(None, "ml", "demo", "uid-1", study().spec, identity="b" * 32)  # type: ignore[arg-type]
    with pytest.raises(JobConflict, match="Job demo-t0-a1 was made for another Optuna study"):
        other._check(listed[:1], restored)
    # A trial label edited away by hand: a condition that names the Job, not a KeyError every pass.
    edited = {**listed[0], "metadata": {**listed[0]["metadata"], "labels": {
        k: v for k, v in listed[0]["metadata"]["labels"].items() if k != names.TRIAL}}}  # fmt: skip
    with pytest.raises(JobConflict, match="Job demo-t0-a1 carries the study's labels but no trial number"):
        executor._check([edited], restored)


def test_a_job_of_the_same_name_is_adopted_only_if_it_is_this_studys_trial_and_attempt() -> None:
    """A 409 on create: the Job may be an earlier operator's launch of this very attempt (adopted), or another
    study's of the same name, one deleted and created again (left alone, a conflict that names the label)."""

    class Existing:
        def __init__(self, job: dict[str, Any]) -> None:
            self.job = job

        def get(self, _path: str) -> dict[str, Any]:
            return self.job

    trial = frozen(2, TrialState.RUNNING, None, None, 0)
    ours = jobs.job_manifest(study().spec, "ml", "demo", "uid-1", 2, 1, [], "a" * 32, trial_key("a" * 32, trial))
    executor = JobExecutor(Existing(ours), "ml", "demo", "uid-1", study().spec, identity="a" * 32)  # type: ignore[arg-type]
    executor._adopt(ours)  # an earlier operator's launch of this attempt: adopted
    labels = {**ours["metadata"]["labels"], names.STUDY_UID: "uid-0"}
    theirs = {**ours, "metadata": {**ours["metadata"], "labels": labels}}
    executor.kube = Existing(theirs)  # type: ignore[assignment]
    with pytest.raises(JobConflict, match=f"Job demo-t2-a1 already exists but is not this trial's: {names.STUDY_UID}="
                                          "'uid-0' \\(expected 'uid-1'\\)"):  # fmt: skip
        executor._adopt(ours)


def test_a_retry_waits_until_no_pod_of_the_trial_runs() -> None:
    running_pod = {"status": {"phase": "Running"}}
    ended_pod = {"status": {"phase": "Failed"}}
    crashed = TrialProcess(Process.FAILED, reason="its Job was deleted while the trial was running", attempt=1)
    assert JobExecutor._drained(crashed, [running_pod]).state is Process.RUNNING
    assert JobExecutor._drained(crashed, [ended_pod]) == crashed
    final = TrialProcess(Process.FAILED, retryable=False, reason="its pod cannot start", attempt=1)
    assert JobExecutor._drained(final, [running_pod]) == final, "no retry follows: its Job is deleted at once"


def frozen(number: int, state: TrialState, early: float | None, final: float | None, seconds: float,
           baseline: bool = False, test: float | None = None,
           audited: bool = False) -> optuna.trial.FrozenTrial:  # fmt: skip
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
        system_attrs={"fixed_params": {"learning_rate": 1e-3}} if baseline else {AUDIT: True} if audited else {},
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
    assert status["trials"] == {"created": 4, "running": 0, "completed": 2, "cancelled": 1, "failed": 1,
                                "screened": 0, "suspended": 0, "promoted": 0, "audited": 0}  # fmt: skip
    assert "earlyFinalSpearman" not in status and "top5Overlap" not in status, "biased: over promoted trials"
    assert status["best"]["trial"] == 1 and status["best"]["finalAccuracy"] == 0.8
    assert status["best"]["adapter"] == "/artifacts/t1"
    assert status["baseline"]["trial"] == 0
    assert status["testGainOverBaseline"] == pytest.approx(0.2)
    # spent: (100 + 120 + 20 + 5) s x 2 GPUs; saved: median full run (110 s) - 20 s, x 2 GPUs
    assert status["gpuSeconds"] == {"spent": 490.0, "saved": 180.0}
    assert status["lastFailure"] == {"trial": 3, "reason": "unknown"}
    failed_later = frozen(4, TrialState.FAIL, None, None, 50)
    failed_later.user_attrs = {"failure_reason": "the API server refused its Job demo-t4-a1: invalid"}
    later = study_status([*trials, failed_later], max_trials=5, gpus=2, early_fraction=0.2, now=NOW)
    assert later["lastFailure"] == {"trial": 4, "reason": "the API server refused its Job demo-t4-a1: invalid"}


def test_status_counts_screened_trials_and_their_gpu_time_without_the_wait() -> None:
    """promotion.mode screen: a suspended trial holds no GPU, so it is neither running nor charged for its wait."""

    def screened(number: int, state: TrialState, **system: Any) -> optuna.trial.FrozenTrial:
        trial = frozen(number, state, 0.5, None, 1000)
        if state == TrialState.RUNNING:
            trial.datetime_complete = None
        trial.user_attrs = {**trial.user_attrs, "checkpoint": f"/artifacts/t{number}/checkpoint", "outcome": "screened",
                            "train_seconds": 30.0}  # fmt: skip
        trial.system_attrs = system
        return trial

    waiting = screened(1, TrialState.RUNNING)
    promoted_waiting = screened(2, TrialState.RUNNING, **{"ftstudy:decision": "continue"})
    resumed = screened(3, TrialState.RUNNING, **{"ftstudy:decision": "continue", "ftstudy:resumes": 1})
    pruned = screened(4, TrialState.PRUNED)
    training = frozen(5, TrialState.RUNNING, None, None, 10)
    training.datetime_complete = None
    status = study_status([waiting, promoted_waiting, resumed, pruned, training], max_trials=6, gpus=1,
                          early_fraction=0.2, now=NOW)  # fmt: skip
    counts = status["trials"]
    assert (counts["screened"], counts["suspended"], counts["promoted"]) == (4, 2, 2)
    assert counts["running"] == 2, "the resumed trial and the one still screening"
    assert counts["cancelled"] == 1
    assert trial_seconds(pruned, NOW.timestamp()) == 30.0, "its trainer's time, not the 1000 s it existed"
    queued = frozen(6, TrialState.RUNNING, None, None, 1000)
    queued.datetime_complete = None
    queued.system_attrs = {"ftstudy:admitted_at": NOW.timestamp() - 400}
    assert trial_seconds(queued, NOW.timestamp()) == 400.0, "from Kueue's admission, not its time in the queue"
    queued.system_attrs["ftstudy:requeued"] = [50.0, NOW.timestamp() - 100]  # preempted twice: 50 s, and now 100 s
    assert trial_seconds(queued, NOW.timestamp()) == 250.0, "nor its time back in the queue after a preemption"


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    old = [{"type": "Complete", "status": "False", "lastTransitionTime": "t0", "reason": "TrialsRunning"}]
    same = merge_conditions(old, [{"type": "Complete", "status": "False", "lastTransitionTime": "t1", "reason": "x"}])
    changed = merge_conditions(old, [{"type": "Complete", "status": "True", "lastTransitionTime": "t1", "reason": "y"}])
    assert same[0]["lastTransitionTime"] == "t0" and same[0]["reason"] == "x"
    assert changed[0]["lastTransitionTime"] == "t1"


# --- audited trials (promotion.auditFraction) ------------------------------------------------------------------


def test_audited_trials_are_marked_and_launched_to_train_to_the_end_when_screening(
    private_database: PrivateDatabase,
) -> None:
    """The engine draws each new trial (never the baseline), records the draw before the launch, and launches an
    audited trial as a full run, as it does the baseline; the others stop at the early step."""
    s = study(promotion={"mode": "screen", "auditFraction": 0.5}, baseline={"params": {"learning_rate": 1e-3}},
              searchSpace={"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
              budget={"maxTrials": 8, "parallelism": 8})  # fmt: skip
    store = StudyStore(private_database.url, "ml.demo", s.spec, RetryPolicy(deadline_seconds=10))
    assert store.audit_fraction == 0.5
    recorder = Recorder()
    root = PurePosixPath("/artifacts/ml/demo")
    Engine(s, store, recorder, root / "data", root, study_name="ml.demo", generate_data=True).step()
    drawn = {n for n in range(1, 8) if audit.audited("demo", n, 0.5)}
    assert drawn and drawn != set(range(1, 8)), "this study's name draws some trials and not others"
    stages = {number: "screen" if "screen" in args else "full" for number, _, args in recorder.launches}
    assert stages == {n: "full" if n == 0 or n in drawn else "screen" for n in range(8)}
    marked = {t.number for t in store.trials() if t.system_attrs.get(AUDIT)}
    assert marked == drawn, "the baseline (trial 0) is never audited"


def test_a_study_older_than_audits_never_audits(private_database: PrivateDatabase) -> None:
    """Its search space was recorded, its audit fraction was not: it keeps the meaning it was created with, whatever
    the spec's default (0.1) says now. A new study takes the spec's fraction; with policy none every trial trains to
    the end anyway, so every one counts as audited."""
    s = study(budget={"maxTrials": 8, "parallelism": 8})
    retry = RetryPolicy(deadline_seconds=10)
    old = optuna.create_study(storage=private_database.url, study_name="ml.old", direction="maximize")
    space = json.dumps(s.spec.model_dump(mode="json", by_alias=True)["searchSpace"], sort_keys=True)
    old._storage.set_study_system_attr(old._study_id, SPEC, space)  # as an older ftstudy recorded it
    store = StudyStore(private_database.url, "ml.old", s.spec, retry)
    assert store.audit_fraction == 0.0
    assert StudyStore(private_database.url, "ml.old", s.spec, retry).audit_fraction == 0.0, "and on every open"
    new = StudyStore(private_database.url, "ml.new", s.spec, retry)
    assert new.audit_fraction == 0.1
    assert new.storage.get_study_system_attrs(new.study_id)[AUDIT_FRACTION] == 0.1
    every = StudyStore(private_database.url, "ml.every", study(promotion={"policy": "none"}).spec, retry)
    assert every.audit_fraction == 1.0


def audited_field(finals: list[float]) -> list[optuna.trial.FrozenTrial]:
    """A baseline, two promoted trials with perfectly ordered scores, one pruned, and audited ones with ``finals``."""
    early = [0.31, 0.42, 0.28, 0.55, 0.47, 0.36, 0.60, 0.25]
    audited = zip(early, finals, strict=True)
    return [
        frozen(0, TrialState.COMPLETE, 0.5, 0.6, 100, baseline=True),
        frozen(1, TrialState.COMPLETE, 0.9, 0.9, 100),
        frozen(2, TrialState.COMPLETE, 0.8, 0.8, 100),
        frozen(3, TrialState.PRUNED, 0.1, None, 20),
        *(frozen(4 + i, TrialState.COMPLETE, e, f, 100, audited=True) for i, (e, f) in enumerate(audited)),
    ]


PREDICTIVE = [0.50, 0.58, 0.41, 0.66, 0.52, 0.57, 0.71, 0.45]
UNRELATED = [0.5, 0.7, 0.6, 0.4, 0.45, 0.66, 0.52, 0.58]


def test_status_gives_the_early_score_trust_of_the_audited_trials_only() -> None:
    status = study_status(audited_field(PREDICTIVE), max_trials=20, gpus=1, early_fraction=0.2, now=NOW, k=3,
                          audit_fraction=0.3)  # fmt: skip
    assert status["trials"]["audited"] == 8
    assert status["earlyScoreTrust"] == {
        "auditFraction": 0.3, "trials": 8, "expected": 5.7, "spearman": pytest.approx(0.9048, abs=1e-4),
        "low": pytest.approx(0.4074), "high": 1.0, "topK": 3, "overlap": 2, "overlapLow": 1, "overlapHigh": 3,
    }  # fmt: skip
    few = study_status(audited_field(PREDICTIVE)[:6], max_trials=20, gpus=1, early_fraction=0.2, now=NOW,
                       audit_fraction=0.3)  # fmt: skip
    assert few["earlyScoreTrust"] == {"auditFraction": 0.3, "trials": 2, "expected": 5.7}


class Kube:
    """What the reconciler writes: status patches and Events."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def merge_patch(self, path: str, body: dict[str, Any]) -> None:
        self.patches.append(body)

    def create(self, path: str, body: dict[str, Any]) -> None:
        self.events.append(body)


class Store:
    def __init__(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        self._trials, self.audit_fraction, self.name = trials, 0.3, "ml.demo.uid-1"

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self._trials


class Outcome:
    def __init__(self, spec: spec.StudySpec) -> None:
        self.spec, self.outcome, self.executor = spec, None, None
        self.forgetting: dict[int, int] = {}
        self.outages: dict[int, tuple[int, float, str]] = {}


def test_untrusted_early_scores_are_a_warning_condition_and_one_event() -> None:
    """The interval includes zero: a Warning condition that says so, and a Warning Event once, not on every pass
    (nor after a restart, which reads the condition back from the stored status)."""
    s = study(promotion={"policy": "topK", "k": 3})
    kube = Kube()
    reconciler = StudyReconciler(kube, "ml", "demo", "uid-1", metrics=OperatorMetrics())  # type: ignore[arg-type]
    built = _Built(1, "postgresql://x", Outcome(s.spec), Store(audited_field(UNRELATED)))  # type: ignore[arg-type]
    body: dict[str, Any] = {"metadata": {"name": "demo", "namespace": "ml", "uid": "uid-1", "generation": 1}}
    reconciler._write(built, 1, body)
    conditions = {c["type"]: c for c in kube.patches[-1]["status"]["conditions"]}
    warning = conditions["EarlyScoresUntrusted"]
    assert (warning["status"], warning["reason"]) == ("True", "IntervalIncludesZero")
    assert warning["message"].startswith("early scores at 20% do not predict the final ones in this study (Spearman ")
    assert warning["message"].endswith("over 8 audited trials); consider a later early point (training.earlyFraction)")
    reconciler._post_events(body)
    assert [(e["reason"], e["type"]) for e in kube.events] == [("EarlyScoresUntrusted", "Warning")]

    stored = {**body, "status": kube.patches[-1]["status"]}
    reconciler._write(built, 1, body)  # the watch has not delivered the status yet
    reconciler._write(built, 1, stored)
    StudyReconciler(kube, "ml", "demo", "uid-1", metrics=OperatorMetrics())._write(built, 1, stored)  # type: ignore[arg-type]
    reconciler._post_events(stored)
    assert len(kube.events) == 1, "one Event, not one per pass"

    trusted = _Built(1, "postgresql://x", Outcome(s.spec), Store(audited_field(PREDICTIVE)))  # type: ignore[arg-type]
    fresh = StudyReconciler(kube, "ml", "other", "uid-2", metrics=OperatorMetrics())  # type: ignore[arg-type]
    fresh._write(trusted, 1, {"metadata": {**body["metadata"], "name": "other"}})
    condition = {c["type"]: c for c in kube.patches[-1]["status"]["conditions"]}["EarlyScoresUntrusted"]
    assert (condition["status"], condition["reason"]) == ("False", "EarlyScoresPredictFinal")
    assert kube.patches[-1]["status"]["earlyScoreTrust"]["low"] > 0
    assert not fresh.events


def test_the_last_failure_in_the_status_hides_the_storage_password() -> None:
    """A trainer's last log line is the failure reason, and it may quote the storage URL or its password alone."""
    s = study(promotion={"policy": "topK", "k": 3})
    url = "postgresql+psycopg2://ftstudy:Ab3/x+Yz9==@db:5432/ftstudy"
    failed = frozen(1, TrialState.FAIL, None, None, 5)
    failed.user_attrs = {"failure_reason": f"could not connect to {url}: password Ab3/x+Yz9== refused"}
    kube = Kube()
    reconciler = StudyReconciler(kube, "ml", "demo", "uid-1", metrics=OperatorMetrics())  # type: ignore[arg-type]
    built = _Built(1, url, Outcome(s.spec), Store([failed]))  # type: ignore[arg-type]
    reconciler._write(built, 1, {"metadata": {"name": "demo", "namespace": "ml", "uid": "uid-1", "generation": 1}})
    reason = kube.patches[-1]["status"]["lastFailure"]["reason"]
    assert "Ab3" not in reason and reason.startswith("could not connect to postgresql+psycopg2://ftstudy:"), reason


def test_deleting_a_study_reads_no_secret_the_trial_policy_does_not_allow() -> None:
    """cleanup.deleteStudyRecords with a Secret outside trialPolicy.storageSecrets: the Secret is never read (the
    operator would otherwise read any Secret by name for whoever may create and delete a study); one Event says why
    the records stay."""

    class Reads(Kube):
        def get(self, path: str) -> dict[str, Any]:
            raise AssertionError(f"read {path}")

    kube = Reads()
    storage = {"secretRef": {"name": "someone-elses"}}
    data = {"metadata": {"name": "demo", "namespace": "ml", "uid": "uid-1"},
            "spec": {"storage": storage, "cleanup": {"deleteStudyRecords": True}}}  # fmt: skip
    delete_study_records(kube, TrialPolicy(storage_secrets=["ftstudy-db"]), "ml", data)  # type: ignore[arg-type]
    assert [e["reason"] for e in kube.events] == ["CleanupFailed"]
    assert kube.events[0]["message"] == (
        "could not delete the study's records: the trial policy does not allow Secret 'someone-elses' as storage "
        "(allowed: ftstudy-db; Helm value trialPolicy.storageSecrets), so it was not read; they stay in the database"
    )


def test_deleting_a_studys_records_is_fenced_and_connects_as_the_operator(private_database: PrivateDatabase) -> None:
    """cleanup.deleteStudyRecords on real PostgreSQL: a replica that may no longer lead deletes nothing (its guard
    refuses the first statement: one CleanupFailed Event, the records stay), and the leader deletes them over a
    connection named ftstudy-operator: the operator's shared pool for that database, as its studies use it
    (before, Optuna's own engine: no name, no fence)."""
    import base64

    import sqlalchemy

    from ftstudy.kube import fencing

    mine = f"{private_database.url}?application_name=the-test"  # this test's own connections, told apart
    optuna.create_study(study_name="ml.demo.uid-1", storage=mine)
    url = base64.b64encode(private_database.url.encode()).decode()
    seen: list[str] = []

    class Secrets(Kube):
        def get(self, path: str) -> dict[str, Any]:
            return {"data": {"url": url}}

    def names_connected(*_: Any) -> None:
        engine = sqlalchemy.create_engine(mine, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as connection:
            query = "SELECT application_name FROM pg_stat_activity WHERE usename = current_user"
            seen.extend(str(r[0]) for r in connection.execute(sqlalchemy.text(query)) if r[0] != "the-test")
        engine.dispose()

    data = {"metadata": {"name": "demo", "namespace": "ml", "uid": "uid-1"},
            "spec": {"storage": {"secretRef": {"name": "ftstudy-db"}}, "cleanup": {"deleteStudyRecords": True}},
            "status": {"optunaStudy": "ml.demo.uid-1"}}  # fmt: skip

    def lost() -> None:
        raise fencing.LeadershipLost("no longer leading")

    kube = Secrets()
    try:
        fencing.install(lost)
        delete_study_records(kube, TrialPolicy(storage_secrets=["ftstudy-db"]), "ml", data)  # type: ignore[arg-type]
        assert [e["reason"] for e in kube.events] == ["CleanupFailed"], kube.events
        assert optuna.study.get_all_study_names(mine) == ["ml.demo.uid-1"], "nothing deleted"
        fencing.install(names_connected)  # the leader's guard lets every statement through; here it looks first
        delete_study_records(kube, TrialPolicy(storage_secrets=["ftstudy-db"]), "ml", data)  # type: ignore[arg-type]
    finally:
        fencing.install(None)
    assert optuna.study.get_all_study_names(mine) == []
    assert seen and set(seen) == {"ftstudy-operator"}, seen


def test_an_unexpected_error_in_a_pass_is_a_condition_and_one_event_and_retries_back_off() -> None:
    """A value the operator cannot read (here a malformed system attribute, ``ftstudy:attempts="x"``) raised past
    ``reconcile``: a traceback every 10 s in the log, and nothing on the study. Now the study says it, once."""

    class Broken:
        spec, outcome = study().spec, None

        def step(self) -> None:
            int("x")

    kube = Kube()
    reconciler = StudyReconciler(kube, "ml", "demo", "uid-1", metrics=OperatorMetrics())  # type: ignore[arg-type]
    reconciler._build = lambda *_: _Built(1, "postgresql://x", Broken(), Store([]))  # type: ignore[arg-type,method-assign,assignment]
    document = study().model_dump(mode="json", by_alias=True, exclude_none=True)
    body: dict[str, Any] = {
        **document,
        "metadata": {"name": "demo", "namespace": "ml", "uid": "uid-1", "generation": 1},
    }
    delays = [reconciler.reconcile(body) for _ in range(7)]
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    ready = {c["type"]: c for c in kube.patches[-1]["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ReconcileError")
    assert ready["message"].startswith(
        "the operator failed on this study (ValueError: invalid literal for int() with base 10: 'x') and retries"
    )
    assert [e["reason"] for e in kube.events] == ["ReconcileError"], "one Event, not one per pass"
    assert kube.events[0]["type"] == "Warning"


def test_the_status_and_the_metrics_count_each_rungs_trials() -> None:
    """promotion.rungs [0.2, 0.5]: four screened trials scored at rung 0, two promoted past it and scored at rung 1,
    one of those trained to the end; the baseline and an audited trial bypass rungs and are not counted."""

    def screened(number: int, state: TrialState, rung1: float | None = None, **system: Any) -> Any:
        trial = frozen(number, state, 0.5 - number / 100, None, 100)
        trial.user_attrs = {**trial.user_attrs, "checkpoint": f"/artifacts/t{number}/checkpoint", "outcome": "screened"}
        if rung1 is not None:
            trial.user_attrs["rung_accuracy"] = {"5": rung1}
        trial.system_attrs = system
        return trial

    trials = [
        frozen(0, TrialState.COMPLETE, 0.6, 0.7, 100, baseline=True),
        screened(1, TrialState.COMPLETE, 0.55, **{"ftstudy:passed": 1, "ftstudy:decision": "continue"}),
        screened(2, TrialState.PRUNED, 0.50, **{"ftstudy:passed": 1}),
        screened(3, TrialState.PRUNED),
        screened(4, TrialState.PRUNED),
        frozen(5, TrialState.COMPLETE, 0.1, 0.2, 100, audited=True),
    ]
    status = study_status(trials, max_trials=6, gpus=1, early_fraction=0.2, now=NOW, k=1, rungs=[0.2, 0.5])
    assert status["rungs"] == [
        {"fraction": 0.2, "scored": 4, "promoted": 2, "pruned": 2},
        {"fraction": 0.5, "scored": 2, "promoted": 1, "pruned": 1},
    ]
    assert "rungs" not in study_status(trials, max_trials=6, gpus=1, early_fraction=0.2, now=NOW)
    metrics = OperatorMetrics()
    metrics.observe_status("ml", "demo", status)
    scraped = scrape_registry(metrics)
    found = {(x.labels["rung"], x.labels["state"]): x.value for x in scraped if x.name == "ftstudy_rung_trials"}
    assert found == {("0.2", "scored"): 4, ("0.2", "promoted"): 2, ("0.2", "pruned"): 2,
                     ("0.5", "scored"): 2, ("0.5", "promoted"): 1, ("0.5", "pruned"): 1}  # fmt: skip


def test_a_study_created_again_under_the_same_name_gets_records_of_its_own() -> None:
    """The Optuna study is keyed by the FineTuneStudy's UID (issue: a re-created study inherited its predecessor's
    running trials); records a pre-0.2 operator kept under the name alone stay with the study that made them, and
    ``spec.storage.continueFrom`` continues an earlier study's records on purpose, within its namespace only."""
    from ftstudy.kube.identity import OWNER, optuna_name

    storage = optuna.storages.InMemoryStorage()
    retry = RetryPolicy(deadline_seconds=1)
    created = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)

    def resolve(uid: str, when: datetime | None = created, continue_from: str | None = None) -> str:
        return optuna_name(storage, retry, "ml", "demo", uid, when, continue_from)

    assert resolve("uid-1") == "ml.demo.uid-1"
    legacy = optuna.create_study(storage=storage, study_name="ml.demo", direction="maximize")
    legacy.ask()
    started = legacy.trials[0].datetime_start.astimezone()  # type: ignore[union-attr]
    assert resolve("uid-2", when=started - timedelta(seconds=5)) == "ml.demo", "made after the object: its own"
    assert resolve("uid-2", when=started + timedelta(seconds=5)) == "ml.demo.uid-2", "older: a predecessor's"
    storage.set_study_system_attr(legacy._study_id, OWNER, "uid-2")
    assert resolve("uid-2", when=None) == "ml.demo", "recorded as its own"
    assert resolve("uid-3", when=None) == "ml.demo.uid-3", "recorded as another's"
    assert resolve("uid-3", continue_from="ml.demo") == "ml.demo"
    for other, reason in (("research.demo", "ContinueFromRefused"), ("ml.gone", "ContinueFromMissing")):
        with pytest.raises(Problem) as refused:
            resolve("uid-3", continue_from=other)
        assert refused.value.reason == reason and refused.value.permanent
    names_in_order = ["ml.demo", "ml.demo.x" + "0" * 35, "ml.demo.bar." + "0" * 36, "ml.demo." + "a" * 36]
    assert names.newest_optuna_study(names_in_order, "ml", "demo") == "ml.demo." + "a" * 36
    assert names.newest_optuna_study(names_in_order[:3], "ml", "demo") == "ml.demo"


def test_scheduling_and_claims_outside_the_allow_lists_are_refused_in_the_spec() -> None:
    """The trial policy sees scheduling and claims: a control-plane toleration, a node-role selector, node affinity,
    a PriorityClass that preempts other tenants, another workload's claim, an unbounded ephemeral volume. What the
    platform team lists is allowed."""
    template = {
        "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}],
        "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
        "priorityClassName": "system-node-critical",
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data-postgresql-0"}},
                    {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}}],
    }  # fmt: skip
    s = study(trialTemplate=template).spec
    refused = check_spec(s, TrialPolicy(storage_secrets=frozenset({"db"})))
    fields = sorted(problem.split(":")[0] for problem in refused)
    assert fields == ["spec.trialTemplate.nodeSelector.node-role.kubernetes.io/control-plane",
                      "spec.trialTemplate.priorityClassName", "spec.trialTemplate.tolerations[0]",
                      "spec.trialTemplate.volumes[0]", "spec.trialTemplate.volumes[1]"], refused  # fmt: skip
    widened = TrialPolicy.of(toleration_keys=["node-role.kubernetes.io/control-plane"],
                             node_selector_keys=["node-role.kubernetes.io/control-plane"],
                             priority_classes=["system-node-critical"], claims=["data-postgresql-0"],
                             storage_secrets=["db"])  # fmt: skip
    assert [p.split(":")[0] for p in check_spec(s, widened)] == ["spec.trialTemplate.volumes[1]"], "no size asked"
    assert jobs_quantity_examples() == [10 * 2**30, 500 * 10**6, 1024, None]


def jobs_quantity_examples() -> list[int | None]:
    from ftstudy.kube.policy import quantity_bytes

    return [quantity_bytes(q) for q in ("10Gi", "500M", "1024", "ten")]


def test_trials_with_an_object_store_get_its_url_and_credentials_and_need_no_shared_volume() -> None:
    """outputDir s3://...: each trial (and its checkpoint cleanup, and the preflight check) gets its own prefix on
    the command line and the store's credentials from the allowed Secret through envFrom, never inline; screening
    asks for no volume; a generated dataset goes to the pod's scratch space."""
    s = study(trialTemplate={"outputDir": "s3://models/ftstudy", "artifactSecret": "ftstudy-object-store"},
              promotion={"mode": "screen"}).spec  # fmt: skip
    assert jobs.trials_root(s, "ml", "demo") == "s3://models/ftstudy/ml/demo"
    assert jobs.checkpoint_volume_missing(s) is None
    pod = pod_spec_of(s)
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "ftstudy-object-store"}}]
    policy = TrialPolicy.of(storage_secrets=["db"])
    assert check_spec(s, policy) == [] and check_pod(pod, policy, "db", "ftstudy-object-store") == []
    assert any("envFrom" in p for p in check_pod(pod, policy, "db")), "only the study's own Secret"
    cleanup = jobs.checkpoint_cleanup_manifest(s, "ml", "demo", "uid-1", 3, "s3://models/ftstudy/ml/demo/trial-0003")
    container = cleanup["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--stage", "forget", "--output", "s3://models/ftstudy/ml/demo/trial-0003"]
    assert container["envFrom"] == [{"secretRef": {"name": "ftstudy-object-store"}}]
    check = jobs.data_check_manifest(s, "ml", "demo", "uid-1", None, "s3://models/ftstudy/ml/demo")
    assert check["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == [
        "--output",
        "s3://models/ftstudy/ml/demo",
    ]

    other = study(trialTemplate={"outputDir": "s3://models/x", "artifactSecret": "cloud-admin-keys"}).spec
    refused = check_spec(other, policy)
    assert len(refused) == 1 and refused[0].startswith("spec.trialTemplate.artifactSecret: "), refused
    assert check_spec(other, TrialPolicy.of(storage_secrets=["db"], artifact_secrets=["cloud-admin-keys"])) == []


@pytest.mark.parametrize(
    ("template", "dataset", "words"),
    [
        ({"outputDir": "ftp://host/x"}, None, "neither a directory nor an object store URL"),
        ({"outputDir": "s3://"}, None, "names no bucket"),
        ({"artifactSecret": "keys"}, None, "outputDir (/artifacts) is a directory"),
        ({"outputDir": "s3://b/p"}, {"path": "data/eu"}, "dataset.path 'data/eu' is relative"),
        # free-form core/v1 objects the API server keeps as written: refused when applied, naming the field
        ({"env": [{"name": "A", "valueFrom": {"secretKeyRef": "s"}}]}, None, "env[0].valueFrom must name one source"),
        ({"env": [{"value": "x"}]}, None, "env[0] needs a name"),
        ({"volumes": [{"name": "v", "emptyDir": "yes"}]}, None, "volumes[0].emptyDir must be an object"),
        ({"volumeMounts": [{"name": "v"}]}, None, "volumeMounts[0] needs a mountPath"),
        ({"tolerations": [{"key": 1}]}, None, "tolerations[0].key must be a string"),
    ],
)  # fmt: skip
def test_a_template_the_trials_cannot_use_is_refused_when_applied(
    template: dict[str, Any], dataset: dict[str, Any] | None, words: str
) -> None:
    with pytest.raises(spec.SpecError, match=re.escape(words)):
        study(trialTemplate=template, **({"dataset": dataset} if dataset else {}))


def test_a_trials_standing_is_answered_from_memory_until_the_study_ends_it(private_database: PrivateDatabase) -> None:
    """The report endpoint answers every trainer's state check (each every few steps) with ``StudyStore.standing``:
    from what the store wrote and last read, with no database statement, and from the database once the store
    has begun to end the trial, so a pruned trial's trainer is never told "running" from memory."""
    import sqlalchemy

    s = study(budget={"maxTrials": 2, "parallelism": 2})
    store = StudyStore(private_database.url, "ml.standing", s.spec, RetryPolicy(deadline_seconds=10))
    statements: list[str] = []
    sqlalchemy.event.listen(store.storage.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    number, params = store.ask(baseline=False)
    store.record_attempt(number, 1)
    other, _ = store.ask(baseline=False)
    store.trials()
    store.record_attempt(other, 2)
    store.record_resume(other, 1)
    statements.clear()
    first, second = store.standing(number), store.standing(other)
    assert (first.state, first.launch, first.params) == (TrialState.RUNNING, 1, params)
    assert (second.state, second.launch) == (TrialState.RUNNING, 3)
    assert statements == []  # memory alone
    for n in (number, other):  # and what the database says
        stored = store.trial(n)
        assert (stored.state, store.standing(n).launch) == (TrialState.RUNNING, attempts(stored) + resumes(stored))
    store.prune(number)
    statements.clear()
    assert store.standing(number).state == TrialState.PRUNED
    assert statements, "an ended trial's standing is read from the database"
    store.trials()  # the next pass reads it as ended: memory again
    statements.clear()
    assert store.standing(number).state == TrialState.PRUNED and statements == []


def test_a_report_of_a_trial_ended_between_its_check_and_its_write_is_refused_as_ended(
    private_database: PrivateDatabase,
) -> None:
    """The study prunes a trial while the endpoint is taking one of its reports: the standing checked said running,
    the write finds the trial finished. The trainer is told 409 trial-ended (it stops, as a pruned trial does), not
    503 "retry", which had it retry into the same refusal (docs/benchmarks.md, 100 studies over HTTPS)."""
    from ftstudy import report_protocol as rp
    from ftstudy.kube.report_server import ReportHandler, Target

    s = study(budget={"maxTrials": 1, "parallelism": 1})
    store = StudyStore(private_database.url, "ml.race", s.spec, RetryPolicy(deadline_seconds=10))
    number, _ = store.ask(baseline=False)
    store.record_attempt(number, 1)
    assert store.standing(number).state == TrialState.RUNNING  # remembered: the endpoint checks against this
    store.study.tell(number, state=TrialState.PRUNED)  # the study's pass, between the endpoint's check and write
    handler = ReportHandler(ApiKube.__new__(ApiKube), lambda uid: None)
    ref = rp.TrialRef("ml", "race", "uid", number, 1)
    with pytest.raises(rp.Refused) as refused:
        handler._apply(
            rp.Request(ref, rp.Kind.ATTRS, attrs={"outcome": "completed"}), Target("ml", "race", store, lambda: None)
        )
    assert (refused.value.status, refused.value.reason) == (409, "trial-ended")


def test_a_pass_that_reads_the_watches_copy_sees_the_job_it_has_just_launched() -> None:
    """Passes read the operator's Jobs from its watch (ftstudy.kube.watch_cache), which may lag the operator's own
    writes: a launch puts its Job into the copy from the API server's answer, so the pass right after it (before any
    watch event) finds the trial running and launches nothing again. Removing ``put`` in ``launch`` fails this; so
    does reading the data check Job from the API server instead of the copy (the fake answers no get)."""

    class Answers:
        def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
            return {**body, "metadata": {**body["metadata"], "namespace": "ml", "uid": body["metadata"]["name"],
                                         "resourceVersion": "7", "creationTimestamp": api_time(NOW)}}  # fmt: skip

        def list(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("listed: the watch's copy is current")

        def server_now(self) -> datetime:
            return NOW

    objects = TrialObjects(Answers(), ["ml"], lambda obj: None)  # type: ignore[arg-type]
    objects.jobs._replace("ml", [])  # listed, and nothing since: current, and empty (no watch event yet)
    objects.pods._replace("ml", [])
    executor = JobExecutor(Answers(), "ml", "demo", "uid-1", study().spec, identity="a" * 32,  # type: ignore[arg-type]
                           objects=objects)  # fmt: skip
    # the data check Job too (created once, then read from the copy: Answers has no get)
    assert executor.check_data(PurePosixPath("/data"), "/scratch")[0] is Process.RUNNING
    assert executor.check_data(PurePosixPath("/data"), "/scratch")[0] is Process.RUNNING
    checked = objects.jobs.items("ml", f"{names.COMPONENT}={names.DATA_CHECK}")
    assert checked is not None and len(checked) == 1
    objects.jobs.put({**checked[0], "metadata": {**checked[0]["metadata"], "resourceVersion": "8"},
                      "status": {"conditions": [{"type": "Complete", "status": "True"}]}})  # fmt: skip
    assert executor.check_data(PurePosixPath("/data"), "/scratch")[0] is Process.SUCCEEDED
    executor.launch(0, 1, ["--trial", "0"])
    seen = executor.observe([frozen(0, TrialState.RUNNING, None, None, 0)])
    assert seen[0].state is Process.RUNNING and seen[0].attempt == 1, seen
    objects.jobs._synced.clear()  # the watch broke: the copy is not trusted, the API server is asked
    with pytest.raises(AssertionError, match="listed"):
        executor.observe([frozen(0, TrialState.RUNNING, None, None, 0)])


def test_each_kueue_preemption_of_one_job_is_told_with_its_own_reason() -> None:
    """Kueue may preempt a trial's Job, admit it again and preempt it once more after its pods are gone: the second
    TrialPreempted must carry the second Stopped Event's reason, not the first one's again (the lookup was keyed by
    the count of stopped pods, which is 0 both times)."""
    reasons = iter(
        ["Preempted to accommodate a workload (UID: first)", "Preempted to accommodate a workload (UID: second)"]
    )

    class Events:
        def list(self, resource_path: str, label_selector: str | None = None,
                 field_selector: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
            assert "events" in resource_path and field_selector == "involvedObject.uid=job-1,reason=Stopped"
            return [{"message": next(reasons), "lastTimestamp": api_time(NOW)}]

    s = study(trialTemplate={"queueName": "trials"}).spec
    executor = JobExecutor(Events(), "ml", "demo", "uid-1", s, identity="a" * 32)  # type: ignore[arg-type]
    job = jobs.job_manifest(s, "ml", "demo", "uid-1", 0, 1, ["--trial", "0"])
    job["metadata"]["uid"] = "job-1"

    def suspended(since: str) -> dict[str, Any]:
        condition = {"type": "Suspended", "status": "True", "lastTransitionTime": since}
        return {**job, "spec": {**job["spec"], "suspend": True}, "status": {"conditions": [condition]}}

    running = TrialProcess(Process.RUNNING, attempt=1)
    first = executor._with_kueue_reason(suspended("2026-11-25T12:00:00Z"), running, admitted=True)
    assert first.preempted == ("Kueue: Preempted to accommodate a workload (UID: first)",), first
    again = executor._with_kueue_reason(suspended("2026-11-25T12:00:00Z"), running, admitted=True)
    assert again == first, "the same suspension: no second lookup"
    second = executor._with_kueue_reason(suspended("2026-11-25T12:05:00Z"), running, admitted=True)
    assert second.preempted == ("Kueue: Preempted to accommodate a workload (UID: second)",), second
