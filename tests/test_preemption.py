"""Preemption costs a trial nothing: a trainer run with ``--checkpoint-on-stop`` that gets SIGTERM from outside (a
drain, a higher-priority pod, Kueue suspending its Job) checkpoints where it is and exits 75; the same command,
started again (the Job's next pod), resumes there and ends exactly as the uninterrupted run of the same seed.

The SIGTERM lands where the test wants it: a fault point holds the trainer (``$FTSTUDY_FAULTS``, ``hold``) after a
training step or at the start of a scoring, the test waits for the trainer to say so, then signals it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ftstudy.trainer.cli import EXIT_PREEMPTED

from .conftest import PG_SCRIPT
from .trainer_runs import RUN, adapter, trainer

HOLD = "holding for"


def preempted_run(trainer_cmd: list[str], data: Path, out: Path, stage: str, fault: str, *more: str) -> str:
    """Run the trainer until it holds at ``fault``, SIGTERM it there, and return its log; it must exit 75."""
    command = [*trainer_cmd, *RUN, "--data", str(data), "--output", str(out), "--stage", stage,
               "--checkpoint-on-stop", *more]  # fmt: skip
    env = {**os.environ, "FTSTUDY_FAULTS": f"{fault}=1:hold=600"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    lines = []
    deadline = time.monotonic() + 900
    for line in process.stderr:
        lines.append(line)
        if HOLD in line:
            process.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "".join(lines)
    lines.extend(process.stderr)
    log = "".join(lines)
    assert process.wait(timeout=120) == EXIT_PREEMPTED, log
    return log


def same_training(run: Path, reference: Path) -> None:
    curve = json.loads((run / "loss_curve.json").read_text())["train_loss"]
    assert curve == json.loads((reference / "loss_curve.json").read_text())["train_loss"], "the same loss each step"
    final, expected = adapter(run), adapter(reference)
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        assert bool((final[name] == tensor).all()), name  # type: ignore[operator]
    done, whole = (json.loads((d / "result.json").read_text()) for d in (run, reference))
    assert done["outcome"] == "completed"
    for key in ("final_accuracy", "early_accuracy", "best_eval_loss", "best_eval_loss_step", "accuracy_at_step"):
        assert done.get(key) == whole.get(key), key


@pytest.mark.timeout(1800)
def test_a_trial_preempted_mid_training_resumes_there_and_ends_as_the_uninterrupted_one(
    trainer_cmd: list[str], dataset_dir: Path, tmp_path: Path
) -> None:
    """Preempted after step 7 of 15 (past the early step at 3, before the extra scoring at 9): the second run
    resumes after step 7, neither reports the early accuracy again nor repeats a step."""
    whole, preempted = tmp_path / "whole", tmp_path / "preempted"
    extra = ("--extra-eval-fractions", "0.6")
    assert trainer(trainer_cmd, dataset_dir, whole, "full", *extra).returncode == 0
    log = preempted_run(trainer_cmd, dataset_dir, preempted, "full", "trainer.after-step.7", *extra)
    assert "preempted after step 7: checkpointed" in log
    meta = json.loads((preempted / "checkpoint" / "checkpoint.json").read_text())
    assert (meta["reason"], meta["step"]) == ("preempted", 7)
    assert json.loads((preempted / "result.json").read_text())["outcome"] == "preempted"

    again = trainer(trainer_cmd, dataset_dir, preempted, "full", "--checkpoint-on-stop", *extra)
    assert again.returncode == 0, again.stderr
    assert "resumed from the checkpoint written when this trial was preempted at step 7" in again.stderr
    assert "(reported)" not in again.stderr, "the early step was before the checkpoint: not scored again"
    same_training(preempted, whole)


@pytest.mark.timeout(1800)
def test_a_trial_preempted_inside_its_early_scoring_scores_again_and_screens_as_the_uninterrupted_one(
    trainer_cmd: list[str], dataset_dir: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    """Stage screen, SIGTERM while the early step's validation is being scored: the trainer does not finish the
    scoring (it could outlast the grace period), it checkpoints the state from before it; the next run scores that
    step again, screens, and the resumed trial ends as the uninterrupted one."""
    whole, preempted = uninterrupted, tmp_path / "preempted"
    log = preempted_run(trainer_cmd, dataset_dir, preempted, "screen", "trainer.scoring")
    assert "preempted after step 3 (its scoring there is done again)" in log
    assert "(reported)" not in log, "nothing was reported"
    assert not (preempted / "reported.json").exists() or "3" not in json.loads(
        (preempted / "reported.json").read_text()
    ).get("intermediate", {})

    screened = trainer(trainer_cmd, dataset_dir, preempted, "screen", "--checkpoint-on-stop")
    assert screened.returncode == 0, screened.stderr
    assert "preempted at step 3" in screened.stderr
    result = json.loads((preempted / "result.json").read_text())
    assert (result["outcome"], result["steps_done"]) == ("screened", 3)
    meta = json.loads((preempted / "checkpoint" / "checkpoint.json").read_text())
    assert (meta["reason"], meta["step"]) == ("screened", 3), "a screening checkpoint again: no auto-resume"
    early = json.loads((preempted / "reported.json").read_text())["intermediate"]
    assert early == json.loads((whole / "reported.json").read_text())["intermediate"]

    resumed = trainer(trainer_cmd, dataset_dir, preempted, "resume", "--checkpoint-on-stop")
    assert resumed.returncode == 0, resumed.stderr
    same_training(preempted, whole)


@pytest.mark.timeout(1800)
def test_a_trial_evicted_while_its_early_report_waits_out_an_outage_leaves_in_its_grace_period_and_screens_again(
    postgres_url: str, study_name: str, trainer_cmd: list[str], dataset_dir: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    """Stage screen against the study's real PostgreSQL, stopped just before the early step's report: the trainer
    retries the report (it would for minutes: ``--storage-retry-seconds``) until the SIGTERM of an eviction, then
    checkpoints at once and exits 75 within seconds, inside a pod's grace period (it went on retrying, and a pod is
    killed at the end of its grace: a failure). The next run, the database back, scores that step again, reports
    it once and screens; the resumed trial ends as the uninterrupted one."""
    import optuna

    whole, preempted = uninterrupted, tmp_path / "preempted"
    optuna.create_study(storage=postgres_url, study_name=study_name, direction="maximize").ask()  # trial 0: RUN's
    study = ["--storage", postgres_url, "--study", study_name, "--trial", "0", "--storage-retry-seconds", "300"]
    command = [*trainer_cmd, *RUN, "--data", str(dataset_dir), "--output", str(preempted), "--stage", "screen",
               "--checkpoint-on-stop", *study]  # fmt: skip
    env = {**os.environ, "FTSTUDY_FAULTS": "trainer.reporting=1:hold=15"}  # after scoring and checkpointing step 3
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    lines, signalled = [], None
    try:
        for line in process.stderr:
            lines.append(line)
            if HOLD in line:
                subprocess.run([str(PG_SCRIPT), "stop"], check=True, capture_output=True, text=True)
            elif "database unreachable while trying to" in line and signalled is None:
                process.send_signal(signal.SIGTERM)  # an eviction, while the report is being retried
                signalled = time.monotonic()
        code = process.wait(timeout=60)
        left = time.monotonic() - (signalled or 0)
    finally:
        process.kill()
        subprocess.run([str(PG_SCRIPT), "start"], check=True, capture_output=True, text=True)
    log = "".join(lines)
    assert signalled is not None, log
    assert (code, left < 10) == (EXIT_PREEMPTED, True), (code, left, log[-3000:])
    assert re.search(r"stopped while (trying|waiting) to record early_accuracy", log), log[-3000:]
    assert "preempted after step 3 (its scoring there is done again)" in log, log[-3000:]
    assert "Traceback" not in log, log

    screened = trainer(trainer_cmd, dataset_dir, preempted, "screen", "--checkpoint-on-stop", *study)
    assert screened.returncode == 0, screened.stderr
    assert "preempted at step 3" in screened.stderr
    assert json.loads((preempted / "result.json").read_text())["outcome"] == "screened"
    (trial,) = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials(deepcopy=False)
    early = json.loads((whole / "reported.json").read_text())["intermediate"]
    assert {str(k): v for k, v in trial.intermediate_values.items()} == early, "reported once, the same value"
    assert trial.user_attrs["preempted_at_steps"] == [3], "the preemption told by the run after it"

    resumed = trainer(trainer_cmd, dataset_dir, preempted, "resume", "--checkpoint-on-stop", *study)
    assert resumed.returncode == 0, resumed.stderr
    same_training(preempted, whole)


def test_without_checkpoint_on_stop_a_sigterm_still_just_stops(
    trainer_cmd: list[str], dataset_dir: Path, tmp_path: Path
) -> None:
    """``ftstudy run`` SIGTERMs a trial it cancels: that is an end, not a preemption (exit 143, no checkpoint)."""
    command = [*trainer_cmd, *RUN, "--data", str(dataset_dir), "--output", str(tmp_path), "--stage", "full"]
    env = {**os.environ, "FTSTUDY_FAULTS": "trainer.after-step.5=1:hold=600"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    for line in process.stderr:
        if HOLD in line:
            process.send_signal(signal.SIGTERM)
            break
    process.stderr.read()
    assert process.wait(timeout=120) == 143
    assert not (tmp_path / "checkpoint").exists()
    assert json.loads((tmp_path / "result.json").read_text())["outcome"] == "terminated"
