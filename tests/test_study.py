"""The study engine end to end: `ftstudy run` with real trainer processes on the tiny model, against real
PostgreSQL; killed and resumed; through a database outage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from ftstudy.core import Process
from ftstudy.executor import LocalExecutor

from .conftest import PrivateDatabase, command_lines, postgres_outage
from .conftest import encoded as encode
from .studies import tiny_study

FTSTUDY = [sys.executable, "-m", "ftstudy.cli"]


def write_study(path: Path, name: str, **budget: Any) -> Path:
    document = tiny_study(name, **budget)
    path.write_text(yaml.safe_dump(document))
    return path


def run(
    study: Path, url: str, workdir: Path, *extra: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``env``: added to this process's environment (fault points, for one)."""
    command = [*FTSTUDY, "run", str(study), "--storage", url, "--workdir", str(workdir), "--poll-seconds", "0.3"]
    return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env} if env else None)  # fmt: skip


def start_until_launched(study: Path, url: str, workdir: Path, launches: int) -> subprocess.Popen[str]:
    """Start `ftstudy run` in the background and return once it has launched ``launches`` trials."""
    command = [*FTSTUDY, "run", str(study), "--storage", url, "--workdir", str(workdir), "--poll-seconds", "0.3"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        seen += " launched" in line
        if seen >= launches:
            break
    return proc


def trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def assert_finished_without_duplicates(url: str, name: str, max_trials: int) -> list[optuna.trial.FrozenTrial]:
    found = trials(url, name)
    assert sorted(t.number for t in found) == list(range(max_trials)), "one trial per number, none extra"
    assert all(t.state.is_finished() for t in found), [t.state for t in found]
    return found


def test_a_study_cancels_some_trials_at_the_early_step_and_finishes_the_rest(
    postgres_url: str, study_name: str, tmp_path: Path
) -> None:
    result = run(write_study(tmp_path / "s.yaml", study_name), postgres_url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = assert_finished_without_duplicates(postgres_url, study_name, 4)
    states = [t.state for t in found]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    baseline = found[0]
    assert baseline.state == TrialState.COMPLETE and baseline.params == {"learning_rate": 1e-3, "lora_r": 4}
    for trial in found:
        assert list(trial.intermediate_values) == [3], "each trial reported once, at 20% of 15 steps"
        if trial.state == TrialState.COMPLETE:
            assert trial.value == trial.intermediate_values[3], "the objective is the early accuracy"
            assert "final_accuracy" in trial.user_attrs and "test_accuracy" in trial.user_attrs
    assert "-> cancel" in result.stdout and "-> continue" in result.stdout
    assert "best trial" in result.stdout
    # What drew each trial is recorded, so a report can tell a winner TPE chose from a start-up draw's luck: the
    # baseline first, a start-up draw beside it (nothing scored yet), and the last trial asked once two had ended.
    drawn = [t.system_attrs.get("ftstudy:drawn_by") for t in found]
    assert drawn[0] == "baseline" and drawn[1] == "start-up" and drawn[3] == "model", drawn
    assert "its parameters were" in result.stdout

    report = subprocess.run([*FTSTUDY, "report", study_name, "--storage", postgres_url, "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert {p.name for p in (tmp_path / "r").iterdir()} == {
        "summary.json",
        "early_vs_final.png",
        "accuracy_by_trial.png",
        "lr_vs_alpha.png",
    }


@pytest.mark.parametrize("kill_after_launches", [1, 3])
def test_a_killed_runner_resumes_the_same_study_without_duplicates(
    postgres_url: str, study_name: str, tmp_path: Path, kill_after_launches: int
) -> None:
    study = write_study(tmp_path / "s.yaml", study_name)
    proc = start_until_launched(study, postgres_url, tmp_path, kill_after_launches)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = run(study, postgres_url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = assert_finished_without_duplicates(postgres_url, study_name, 4)
    # Trainers that outlived the runner were adopted, not started a second time.
    assert all(t.system_attrs.get("ftstudy:attempts") == 1 for t in found), [t.system_attrs for t in found]


def test_no_storage_password_in_what_a_local_study_prints_writes_or_shows_to_ps(
    awkward_database: PrivateDatabase, study_name: str, tmp_path: Path
) -> None:
    """The URL, password and all, is given the way the help recommends ($FTSTUDY_STORAGE_URL), so that no command
    line has it: not `ftstudy run`'s, and not its trainers' (which once got it as --storage). The password holds
    every character a URL or a redaction could trip on; it is looked for raw and URL-encoded."""
    password, url = awkward_database.password, awkward_database.url
    encoded = encode(password)
    study = write_study(tmp_path / "s.yaml", study_name)
    command = [*FTSTUDY, "run", str(study), "--workdir", str(tmp_path / "runs"), "--poll-seconds", "0.3"]
    env = {**os.environ, "FTSTUDY_STORAGE_URL": url}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    trainers: set[str] = set()
    while proc.poll() is None:
        shown = command_lines()
        assert not [line for line in shown if password in line or encoded in line], "a command line holds it"
        trainers |= {line for line in shown if "ftstudy.trainer.cli" in line}
        time.sleep(0.1)
    output = proc.communicate()[0]
    assert proc.returncode == 0, output
    assert trainers, "trainers were running and looked at"
    assert password not in output and encoded not in output
    assert f"storage postgresql+psycopg2://{awkward_database.name}:***@127.0.0.1" in output
    report = subprocess.run([*FTSTUDY, "report", "no-such-study", "--workdir", str(tmp_path / "runs")],
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert report.returncode == 2 and "no study 'no-such-study' in postgresql" in report.stderr
    assert password not in report.stdout + report.stderr and encoded not in report.stdout + report.stderr
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert any(p.name == "process.json" for p in files) and any(p.suffix == ".log" for p in files)
    assert not [str(p) for p in files if password.encode() in p.read_bytes() or encoded.encode() in p.read_bytes()]
    assert_finished_without_duplicates(url, study_name, 4)


def test_an_unreachable_database_gives_a_clear_error(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://ftstudy:ftstudy@127.0.0.1:9/ftstudy"
    result = run(write_study(tmp_path / "s.yaml", "unreachable"), url, tmp_path, "--storage-retry-seconds", "2",
                 timeout=60)  # fmt: skip
    assert result.returncode == 3
    assert "database unreachable while trying to open the study storage" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_study_continues_once_the_database_is_back(postgres_url: str, study_name: str, tmp_path: Path) -> None:
    study = write_study(tmp_path / "s.yaml", study_name)
    proc = start_until_launched(study, postgres_url, tmp_path, 1)
    postgres_outage(8)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert_finished_without_duplicates(postgres_url, study_name, 4)


def test_an_invalid_spec_is_refused_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "ftstudy.io/v1alpha1", "kind": "FineTuneStudy",
                                    "metadata": {"name": "x"}, "spec": {"dataset": {"path": "d"},
                                    "budget": {"maxTrials": 1, "parallelism": 2}}}))  # fmt: skip
    result = run(path, "sqlite:///" + str(tmp_path / "x.db"), tmp_path, timeout=60)
    assert result.returncode == 2
    assert "spec.budget: parallelism (2) must not exceed maxTrials (1)" in result.stderr


def test_trainers_that_refuse_their_input_fail_the_study_with_the_reason(tmp_path: Path) -> None:
    path = write_study(tmp_path / "s.yaml", "broken-model")
    document = yaml.safe_load(path.read_text())
    document["spec"]["model"] = str(tmp_path / "missing.gguf")
    path.write_text(yaml.safe_dump(document))
    url = "sqlite:///" + str(tmp_path / "study.db")
    result = run(path, url, tmp_path, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "study failed: 2 trials failed; maxFailedTrials is 2" in result.stdout
    found = trials(url, "broken-model")
    # Trials keep starting until the limit is reached (a third may start when the first two fail apart).
    assert 2 <= len(found) <= 4
    assert all(t.state == TrialState.FAIL for t in found)
    assert all(t.system_attrs["ftstudy:attempts"] == 1 for t in found), "bad input is never retried"
    reasons = [t.user_attrs["failure_reason"] for t in found]
    assert sum("missing.gguf' not found" in r for r in reasons) >= 2, reasons
    # The summary says the reason once, with the trials it failed (it was only in each trial's log).
    missing = sum("missing.gguf' not found" in r for r in reasons)
    lines = result.stdout.splitlines()
    said = [line for line in lines if line.startswith(f"{missing} trials (") and "missing.gguf' not found" in line]
    assert len(said) == 1, result.stdout


def test_a_local_trainer_that_could_not_reach_its_storage_reads_as_an_outage_with_its_last_line(
    tmp_path: Path,
) -> None:
    """What the local runner knows of a trainer that died before it could record why (its database out of reach):
    the exit code's meaning and the last line it wrote, as a pod's termination message gives the operator."""
    trainer = tmp_path / "trainer"
    trainer.write_text("#!/bin/sh\necho 'training...'\necho 'could not reach the database: connection refused' >&2\n"
                       "exit 3\n")  # fmt: skip
    trainer.chmod(0o755)
    executor = LocalExecutor(tmp_path / "trials", python=str(trainer))
    executor.launch(0, 1, [])
    executor.children[0].wait(timeout=30)
    seen = executor.observe()[0]
    assert (seen.state, seen.exit_code, seen.outage) == (Process.FAILED, 3, True)
    assert seen.reason == ("the trainer could not reach the database (exit code 3): could not reach the database: "
                           "connection refused")  # fmt: skip


@pytest.mark.parametrize("broken", ["no directory", "a line without its id"])
def test_data_that_cannot_be_read_launches_no_trial_and_says_why(broken: str, tmp_path: Path) -> None:
    """Each trainer would load its model and then fail on the same file: four failed trials and a study failed for
    "4 trials failed", the reason only in their logs. The data is read once before any trial instead."""
    path = write_study(tmp_path / "s.yaml", "bad-data")
    document = yaml.safe_load(path.read_text())
    data = tmp_path / "data"
    if broken == "a line without its id":
        from ftstudy.task.generator import SplitSizes, write_dataset

        write_dataset(data, 0, SplitSizes(train=8, validation=4, test=4, independent_test=4), ["de", "fr", "ch"])
        lines = (data / "validation.jsonl").read_text().splitlines()
        row = json.loads(lines[2])
        del row["id"]
        (data / "validation.jsonl").write_text("\n".join([*lines[:2], json.dumps(row), *lines[3:]]) + "\n")
    document["spec"]["dataset"] = {"path": str(data)}
    path.write_text(yaml.safe_dump(document))
    url = "sqlite:///" + str(tmp_path / "study.db")
    result = run(path, url, tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the study's data cannot be read, so no trial was launched: " in result.stderr
    missing = f"{data}/train.jsonl: dataset file not found"
    expected = missing if broken == "no directory" else f"{data}/validation.jsonl:3"
    assert expected in result.stderr, result.stderr
    assert not trials(url, "bad-data"), "no trial was created"


def test_a_data_efficiency_sweep_runs_as_a_study_and_names_its_saturation_point(
    postgres_url: str, study_name: str, tmp_path: Path
) -> None:
    document = tiny_study(study_name)
    spec = document["spec"]
    spec.pop("baseline")
    spec["training"] = {**spec["training"], "epochs": 1, "minSteps": 4, "extraEvalFractions": [0.5]}
    del spec["training"]["maxSteps"]
    spec["training"]["hyperparameters"] = {"learning_rate": 1e-3, "lora_r": 4}
    spec["searchSpace"] = {"train_samples": {"type": "categorical", "choices": [0, 8, 32]}}
    spec["sampler"] = {"type": "grid", "seed": 0}
    spec["promotion"] = {"policy": "none"}
    spec["budget"] = {"maxTrials": 3, "parallelism": 2, "maxFailedTrials": 1, "retriesPerTrial": 0}
    study = tmp_path / "sweep.yaml"
    study.write_text(yaml.safe_dump(document))

    result = run(study, postgres_url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = assert_finished_without_duplicates(postgres_url, study_name, 3)
    assert sorted(t.params["train_samples"] for t in found) == [0, 8, 32], "the grid, each point once"
    by_size = {t.params["train_samples"]: t for t in found}
    assert by_size[0].user_attrs["total_steps"] == 0 and by_size[0].intermediate_values == {0: by_size[0].value}
    assert by_size[8].user_attrs["total_steps"] == 4, "8 samples repeated up to minSteps"
    assert by_size[32].user_attrs["total_steps"] == 8 and "4" in by_size[32].user_attrs["accuracy_at_step"]
    assert all(t.state == TrialState.COMPLETE for t in found), "policy none: every trial to the end"

    report = subprocess.run([*FTSTUDY, "report", study_name, "--storage", postgres_url, "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "accuracy by training samples: 0: " in report.stdout and "saturation:" in report.stdout
    assert (tmp_path / "r" / "data_efficiency.png").is_file()
    curve = json.loads((tmp_path / "r" / "summary.json").read_text())["data_efficiency"]
    assert [p["samples"] for p in curve["points"]] == [0, 8, 32]
    assert "within 0.01 of the best accuracy" in curve["rule"]
