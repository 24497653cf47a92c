"""A trial's files in a real S3-compatible object store (SeaweedFS): a screened trial resumes from the checkpoint in
the bucket on a fresh disk and ends exactly as the uninterrupted run; the store stopped mid-checkpoint fails the
run cleanly and leaves the previous checkpoint whole; a missing bucket or wrong credentials say so at once, without
the secret."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from safetensors.torch import load

from ftstudy import core
from ftstudy.executor import LocalExecutor
from ftstudy.object_store import Missing, ObjectStore
from ftstudy.retry import RetryPolicy
from ftstudy.runner import Engine, Event, prepare_data
from ftstudy.spec import FineTuneStudy
from ftstudy.study_store import ATTEMPTS, OUTAGES, StudyStore
from ftstudy.trainer.cli import EXIT_ARTIFACTS

from .cluster.seaweedfs import BUCKET, SeaweedFS
from .studies import tiny_study
from .test_preemption import HOLD
from .test_study import run
from .trainer_runs import RUN, adapter

pytestmark = pytest.mark.timeout(1800)


def prefix() -> str:
    """The test bucket, under a prefix of this test's own."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"


def run_into(trainer_cmd: list[str], store: SeaweedFS, data: Path, url: str, scratch: Path, stage: str,
             *more: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    command = [*trainer_cmd, *RUN, "--data", str(data), "--output", url, "--scratch", str(scratch), "--stage", stage,
               *more]  # fmt: skip
    environment = {**os.environ, **store.env(), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment)


def objects(store: SeaweedFS, url: str) -> ObjectStore:
    os.environ.update(store.env())  # the client reads its credentials from the environment, as the trainer does
    return ObjectStore(url)


def read_json(store: ObjectStore, key: str) -> dict[str, object]:
    data = store.get(key)
    assert not isinstance(data, Missing), key
    loaded: dict[str, object] = json.loads(data)
    return loaded


def test_a_trial_screened_into_a_bucket_resumes_from_it_on_a_fresh_disk_and_ends_as_the_uninterrupted_one(
    trainer_cmd: list[str], dataset_dir: Path, uninterrupted: Path, tmp_path: Path, object_store: SeaweedFS
) -> None:
    whole = uninterrupted
    url = f"{prefix()}/team-a/study/trial-0000"

    screened = run_into(trainer_cmd, object_store, dataset_dir, url, tmp_path / "pod-1", "screen")
    assert screened.returncode == 0, screened.stderr
    store = objects(object_store, url)
    keys = store.keys()
    states = [k for k in keys if k.startswith("checkpoint/state-")]
    assert "checkpoint/checkpoint.json" in keys and len(states) == 1, keys
    assert "early_adapter/adapter_model.safetensors" in keys and "result.json" in keys
    manifest = read_json(store, "checkpoint/checkpoint.json")
    assert (manifest["step"], manifest["state_key"]) == (3, states[0])
    result = read_json(store, "result.json")
    assert result["outcome"] == "screened"
    assert result["checkpoint"] == f"{url}/checkpoint" and result["early_adapter"] == f"{url}/early_adapter"

    # The resume is another pod: a scratch directory that never saw the screening run.
    resumed = run_into(trainer_cmd, object_store, dataset_dir, url, tmp_path / "pod-2", "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "fetched the checkpoint of step 3" in resumed.stderr and "resumed after step 3" in resumed.stderr
    done = read_json(store, "result.json")
    assert done["outcome"] == "completed" and done["final_adapter"] == f"{url}/final_adapter"
    assert done["early_accuracy"] == result["early_accuracy"], "the screening run's record came back from the store"
    reference = json.loads((whole / "result.json").read_text())
    assert done["final_accuracy"] == reference["final_accuracy"]
    curve = read_json(store, "loss_curve.json")["train_loss"]
    assert curve == json.loads((whole / "loss_curve.json").read_text())["train_loss"], "the same loss each step"
    tensors = store.get("final_adapter/adapter_model.safetensors")
    assert not isinstance(tensors, Missing)
    final, expected = load(tensors), adapter(whole)
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        assert bool((final[name] == tensor).all()), name  # type: ignore[operator]

    forget = subprocess.run([*trainer_cmd, "--stage", "forget", "--output", url, "--scratch", str(tmp_path / "pod-3")],
                            capture_output=True, text=True, env={**os.environ, **object_store.env()})  # fmt: skip
    assert forget.returncode == 0, forget.stderr
    left = store.keys()
    assert not [k for k in left if k.startswith("checkpoint/")] and "final_adapter/adapter_model.safetensors" in left


def test_a_checkpoint_in_the_bucket_that_does_not_match_its_manifest_is_never_resumed_from(
    trainer_cmd: list[str], dataset_dir: Path, tmp_path: Path, object_store: SeaweedFS
) -> None:
    """The manifest names the state object with its size and SHA-256; a resume checks both before it trains: a
    state object changed, gone, or a manifest that is not ftstudy's each fail the run (exit 2) naming the object,
    and no step is trained."""
    url = f"{prefix()}/team-a/study/trial-0000"
    screened = run_into(trainer_cmd, object_store, dataset_dir, url, tmp_path / "pod-0", "screen")
    assert screened.returncode == 0, screened.stderr
    store = objects(object_store, url)
    manifest = store.get("checkpoint/checkpoint.json")
    assert not isinstance(manifest, Missing)
    key = str(json.loads(manifest)["state_key"])
    state = store.get(key)
    assert not isinstance(state, Missing)
    flipped = bytearray(state)
    flipped[len(flipped) // 2] ^= 0xFF
    where = f"{url}/checkpoint/checkpoint.json"
    damages = {  # refused by the fetch itself, before anything reaches the pod's disk
        f"checkpoint object {url}/{key} is corrupt": lambda: store.put(key, bytes(flipped)),
        f"checkpoint object {url}/{key}, named by {where}, is missing": lambda: store.delete([key]),
        f"checkpoint manifest {where} is unreadable or not ftstudy's": lambda: store.put(
            "checkpoint/checkpoint.json", b'{"step": 3}'
        ),
    }
    for pod, (says, damage) in enumerate(damages.items(), start=1):
        damage()
        resumed = run_into(trainer_cmd, object_store, dataset_dir, url, tmp_path / f"pod-{pod}", "resume")
        assert resumed.returncode == 2, (says, resumed.stderr)
        assert says in resumed.stderr, (says, resumed.stderr)
        assert "resumed after step" not in resumed.stderr and not (tmp_path / f"pod-{pod}" / "checkpoint").exists()
        store.put(key, state)  # whole again for the next damage
        store.put("checkpoint/checkpoint.json", manifest)
    again = run_into(trainer_cmd, object_store, dataset_dir, url, tmp_path / "pod-4", "resume")
    assert again.returncode == 0 and "resumed after step 3" in again.stderr, again.stderr


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[SeaweedFS]:
    """A server of this test's own, since it crashes it (SeaweedFS restarted on its data stops enforcing the keys'
    bucket scopes, which the session's store must keep)."""
    store = SeaweedFS(tmp_path / "seaweedfs", host="127.0.0.1")
    try:
        yield store.start()
    finally:
        store.stop()


def test_the_store_stopped_mid_checkpoint_fails_the_run_cleanly_and_the_old_checkpoint_resumes(
    trainer_cmd: list[str], dataset_dir: Path, tmp_path: Path, own_store: SeaweedFS
) -> None:
    """A screened trial (checkpoint at step 3) resumed to a rung at step 9: the store freezes after the new state
    object is written and before the manifest that would name it, and crashes. The run fails with exit 4 naming the
    store; the manifest still names step 3's state, intact; the next attempt resumes from step 3, checkpoints and
    scores the rung, and leaves one state object. (A PUT the client gave up on may also land late, naming the new
    state: complete too, and the trainer then scores the rung it names: tests/test_screening.py.) The store comes back
    with the trainers' key rotated, as credentials expire mid-study: an attempt with the old key fails at once with
    exit 4 and the store's refusal, without the secret and without touching the checkpoint; the next, with the
    renewed key (a renewed Secret, read by the next pod), resumes."""
    url = f"{prefix()}/team-a/study/trial-0001"
    assert run_into(trainer_cmd, own_store, dataset_dir, url, tmp_path / "pod-1", "screen").returncode == 0
    store = objects(own_store, url)
    before = read_json(store, "checkpoint/checkpoint.json")

    command = [*trainer_cmd, *RUN, "--data", str(dataset_dir), "--output", url, "--scratch", str(tmp_path / "pod-2"),
               "--stage", "resume", "--rungs", "0.6", "--store-retry-seconds", "3"]  # fmt: skip
    env = {**os.environ, **own_store.env(), "FTSTUDY_FAULTS": "artifacts.before-manifest=1:hold=2"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if HOLD in line:
            own_store.pause()
            break
    try:
        lines.extend(process.stderr)
        code = process.wait(timeout=300)
    finally:
        expired = own_store.env()
        # the manifest PUT it held dies with it (resumed, it would land late); the key is rotated meanwhile
        own_store.crash_and_restart(credentials=("ftstudy-test-2", "ftstudy-test-secret-key-2"))
    log = "".join(lines)
    assert code == EXIT_ARTIFACTS, log
    assert f"could not write {url}/checkpoint/checkpoint.json" in log
    assert expired["AWS_SECRET_ACCESS_KEY"] not in log

    refused = run_into(trainer_cmd, own_store, dataset_dir, url, tmp_path / "pod-expired", "resume", "--rungs", "0.6",
                       "--store-retry-seconds", "3", env=expired)  # fmt: skip
    assert refused.returncode == EXIT_ARTIFACTS, refused.stderr
    assert "403 Forbidden, InvalidAccessKeyId" in refused.stderr, refused.stderr
    assert expired["AWS_SECRET_ACCESS_KEY"] not in refused.stderr and "step 4" not in refused.stderr
    store = objects(own_store, url)  # the renewed key
    after = read_json(store, "checkpoint/checkpoint.json")
    assert after == before, "the manifest still names step 3's checkpoint"
    assert len([k for k in store.keys("checkpoint/") if k.startswith("checkpoint/state-")]) == 2, "an orphan state"
    again = run_into(trainer_cmd, own_store, dataset_dir, url, tmp_path / "pod-3", "resume", "--rungs", "0.6")
    assert again.returncode == 0, again.stderr
    assert "fetched the checkpoint of step 3" in again.stderr
    manifest = read_json(store, "checkpoint/checkpoint.json")
    assert manifest["step"] == 9
    assert [k for k in store.keys("checkpoint/") if k.startswith("checkpoint/state-")] == [manifest["state_key"]]


def test_a_bucket_out_of_reach_or_wrong_credentials_fail_at_once_naming_the_cause_not_the_secret(
    trainer_cmd: list[str], dataset_dir: Path, tmp_path: Path, object_store: SeaweedFS
) -> None:
    started = time.monotonic()
    missing = run_into(trainer_cmd, object_store, dataset_dir, "s3://no-such-bucket-ftstudy/x", tmp_path / "a",
                       "screen", "--store-retry-seconds", "15")  # fmt: skip
    assert missing.returncode == EXIT_ARTIFACTS, missing.stderr
    assert "could not write s3://no-such-bucket-ftstudy/x/.ftstudy-probe" in missing.stderr
    # The key is scoped to the tests' bucket, so another one is refused whether or not it exists (AWS answers the
    # same to a bucket-scoped key; to an unscoped one, NoSuchBucket).
    assert "403 Forbidden, AccessDenied" in missing.stderr, missing.stderr
    assert "step 1" not in missing.stderr, "failed before training"

    wrong = "not-the-secret-0123456789"
    refused = run_into(trainer_cmd, object_store, dataset_dir, f"{prefix()}/x", tmp_path / "b",
                       "screen", "--store-retry-seconds", "15", env={"AWS_SECRET_ACCESS_KEY": wrong})  # fmt: skip
    assert refused.returncode == EXIT_ARTIFACTS, refused.stderr
    assert "403 Forbidden, SignatureDoesNotMatch" in refused.stderr, refused.stderr
    assert wrong not in refused.stderr
    assert time.monotonic() - started < 300


def test_ftstudy_run_screens_into_a_bucket_and_a_bucket_out_of_reach_stops_it_before_any_trial(
    tmp_path: Path, object_store: SeaweedFS
) -> None:
    """The local runner, as the operator: trials write to <outputDir>/<study>/trial-NNNN (their directory in the
    work directory is their scratch), the resumed ones read their checkpoints from the bucket, the pruned ones'
    checkpoints are deleted there; a bucket the key may not write stops the study before its first trial."""
    output = prefix()
    document = tiny_study("local-s3", k=2, mode="screen", maxTrials=3)
    document["spec"]["trialTemplate"] = {"outputDir": output}
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(document))
    env = object_store.env()
    done = run(study, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "work", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"their files in {output}/local-s3" in done.stdout
    # the report reads the trials' page scores beside their adapters in the bucket, for its intervals
    assert "(95% paired bootstrap over pages)" in done.stdout, done.stdout
    os.environ.update(env)
    keys = ObjectStore(f"{output}/local-s3").keys()
    finals = {k.split("/")[0] for k in keys if k.endswith("final_adapter/adapter_model.safetensors")}
    early = {k.split("/")[0] for k in keys if k.endswith("early_adapter/adapter_model.safetensors")}
    checkpoints = {k.split("/")[0] for k in keys if k.endswith("checkpoint/checkpoint.json")}
    assert len(finals) == 2 and early - finals and not (early - finals) & checkpoints, keys

    # The same study with its files in a directory (a volume): the same trials, to the last digit. Trials 0 (the
    # baseline) and 1 (a seeded start-up draw) are the same whatever the timing; a later TPE draw depends on which
    # trials had ended when it was asked, which two processes on two cores do not fix.
    document["spec"]["trialTemplate"] = {"outputDir": str(tmp_path / "volume")}
    study.write_text(yaml.safe_dump(document))
    on_volume = run(study, f"sqlite:///{tmp_path / 'volume.sqlite'}", tmp_path / "work-volume", env=env)
    assert on_volume.returncode == 0, on_volume.stdout + on_volume.stderr

    def trials(database: str) -> dict[int, tuple[object, ...]]:
        found = optuna.load_study(study_name="local-s3", storage=f"sqlite:///{tmp_path / database}").trials
        keep = (
            "outcome",
            "steps_done",
            "early_accuracy",
            "final_accuracy",
            "test_accuracy",
            "independent_test_accuracy",
        )
        return {t.number: (t.params, t.state, dict(t.intermediate_values),
                           {k: t.user_attrs.get(k) for k in keep}) for t in found if t.number < 2}  # fmt: skip

    in_bucket = trials("db.sqlite")
    assert set(in_bucket) == {0, 1} and in_bucket == trials("volume.sqlite"), (in_bucket, trials("volume.sqlite"))

    document["spec"]["trialTemplate"] = {"outputDir": "s3://another-bucket-ftstudy/x"}
    study.write_text(yaml.safe_dump(document | {"metadata": {"name": "local-s3-refused"}}))
    refused = run(study, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "work", env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "cannot be used, so no trial was launched" in refused.stderr and "AccessDenied" in refused.stderr
    assert not (tmp_path / "work" / "local-s3-refused" / "trials").exists() or not any(
        (tmp_path / "work" / "local-s3-refused" / "trials").iterdir()
    )


def test_trials_that_meet_expired_credentials_wait_and_go_on_once_renewed_spending_no_retry(
    tmp_path: Path, object_store: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local engine, as the operator's, screening into the bucket: the trainers' key expires mid-study, twice
    (from the start, after the runner's own check; and again as trial 1 is promoted, before its resume). Each
    launch exits 4 with the store's refusal; with no retry allowed and one failure ending the study, the study waits
    instead (an Event per outage, a back-off) and, once the key is renewed (what a renewed Secret gives the next
    pod), goes on: the baseline from the start, trial 1 from its checkpoint in the bucket. (The trainer checks the
    store before it loads the model, so each refused launch takes seconds.)"""
    document = tiny_study("expiring", k=2, mode="screen", maxTrials=2, parallelism=1, maxFailedTrials=1,
                          retriesPerTrial=0)  # fmt: skip
    document["spec"]["trialTemplate"] = {"outputDir": prefix()}
    study = FineTuneStudy.model_validate(document)
    for key, value in object_store.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "expired-0123456789")
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = StudyStore(url, "expiring", study.spec, RetryPolicy(deadline_seconds=10))
    data = prepare_data(study.spec, tmp_path, tmp_path)
    root = f"{document['spec']['trialTemplate']['outputDir']}/expiring"
    executor = LocalExecutor(tmp_path / "trials", 1, storage_url=url, artifacts=root)
    events: list[Event] = []

    def meanwhile(event: Event) -> None:
        events.append(event)
        if event.reason == "TrialPromoted":  # its resume is launched at the next pass
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "expired-0123456789")
        if event.reason == "TrialOutage" and [e.reason for e in events].count("TrialOutage") in (2, 3):
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", object_store.secret_key)

    engine = Engine(study, store, executor, data, root, on_event=meanwhile)
    engine.outage_backoff = (1.0, 2.0)
    assert isinstance(engine.run(0.2), core.StudyDone), events
    outages = [e for e in events if e.reason == "TrialOutage"]
    assert [e.trial for e in outages] == [0, 0, 1], outages
    assert "could not write s3://" in outages[0].text and "403 Forbidden" in outages[0].text, outages[0].text
    assert all("no retry spent" in e.text and "expired-0123456789" not in e.text for e in outages)
    assert [e.text for e in events if e.reason == "TrialRelaunchedAfterOutage"] == [
        "relaunched after an outage (attempt 2, no retry spent)",
        "relaunched after an outage (attempt 3, no retry spent)",
    ]
    assert [e.text for e in events if e.reason == "TrialResumed"] == [
        "resumed from its checkpoint",
        "resumed from its checkpoint (resume 2) after an outage (no retry spent)",
    ]
    trials = store.trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2, [t.state for t in trials]
    assert trials[0].system_attrs[OUTAGES] == [1, 2] and trials[0].system_attrs[ATTEMPTS] == 3
    assert trials[1].system_attrs[OUTAGES] == [2], "launch 2: its first resume"
    log = (tmp_path / "trials" / "trial-0001" / "attempt-3.log").read_text()
    assert "fetched the checkpoint of step" in log, log[-2000:]
