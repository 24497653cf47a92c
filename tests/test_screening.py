"""Screening (promotion.mode screen): a trial stopped at its early step and resumed from its checkpoint ends exactly
where the uninterrupted run of the same seed ends; a checkpoint that cannot be used fails the trial by name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from ftstudy import audit
from ftstudy.study_store import EarlyScoreTPESampler
from ftstudy.trainer.cli import main as trainer_main

from .studies import tiny_study
from .test_study import run
from .trainer_runs import RUN, adapter, trainer


def test_a_screened_then_resumed_trial_ends_as_the_uninterrupted_one(
    trainer_cmd: list[str], dataset_dir: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    whole, paused = uninterrupted, tmp_path / "paused"
    screened = trainer(trainer_cmd, dataset_dir, paused, "screen")
    assert screened.returncode == 0, screened.stderr
    result = json.loads((paused / "result.json").read_text())
    assert result["outcome"] == "screened" and result["steps_done"] == 3, "early step: 20% of 15"
    assert not (paused / "final_adapter").exists()
    meta = json.loads((paused / "checkpoint" / "checkpoint.json").read_text())
    assert meta["step"] == 3 and meta["micro_batches"] == 6
    early = json.loads((paused / "reported.json").read_text())["intermediate"]
    assert early == json.loads((whole / "reported.json").read_text())["intermediate"]

    resumed = trainer(trainer_cmd, dataset_dir, paused, "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after step 3" in resumed.stderr
    curve = json.loads((paused / "loss_curve.json").read_text())["train_loss"]
    reference = json.loads((whole / "loss_curve.json").read_text())["train_loss"]
    assert len(curve) == len(reference) == 15
    assert curve == pytest.approx(reference, abs=1e-6), "the same loss at every step"
    final, expected = adapter(paused), adapter(whole)
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        assert (final[name] - tensor).abs().max().item() <= 1e-6, name  # type: ignore[operator]
    done = json.loads((paused / "result.json").read_text())
    assert (
        done["outcome"] == "completed"
        and done["final_accuracy"] == json.loads((whole / "result.json").read_text())["final_accuracy"]
    )
    assert done["early_accuracy"] == early["3"], "the screening run's record is kept"


@pytest.mark.timeout(1800)  # five trainer runs
def test_a_trial_screened_and_resumed_at_every_rung_ends_as_the_uninterrupted_one(
    trainer_cmd: list[str], dataset_dir: Path, tmp_path: Path
) -> None:
    """promotion.rungs [0.2, 0.4, 0.6] over 15 steps: stops at steps 3, 6 and 9, each scored and checkpointed; a
    run killed after a rung's checkpoint and before its score leaves the next run to score it."""
    whole, paused = tmp_path / "whole", tmp_path / "paused"
    rungs = ("--rungs", "0.4,0.6")
    assert trainer(trainer_cmd, dataset_dir, whole, "full", *rungs).returncode == 0
    assert trainer(trainer_cmd, dataset_dir, paused, "screen", *rungs).returncode == 0
    # Killed between the rung's checkpoint and its score (as when an object store took the checkpoint after its
    # client gave up): the next run scores that rung instead of training past it unscored.
    command = [*trainer_cmd, *RUN, "--data", str(dataset_dir), "--output", str(paused), "--stage", "resume", *rungs]
    killed = subprocess.run(command, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "FTSTUDY_FAULTS": "trainer.rung-checkpointed=1"})  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert json.loads((paused / "checkpoint" / "checkpoint.json").read_text())["step"] == 6
    assert "rung_accuracy" not in json.loads((paused / "result.json").read_text())
    for step in (6, 9):
        resumed = trainer(trainer_cmd, dataset_dir, paused, "resume", *rungs)
        assert resumed.returncode == 0, resumed.stderr
        assert ("checkpointed but not scored" in resumed.stderr) == (step == 6)
        result = json.loads((paused / "result.json").read_text())
        assert result["outcome"] == "screened" and result["steps_done"] == step
        assert json.loads((paused / "checkpoint" / "checkpoint.json").read_text())["step"] == step
        assert str(step) in result["rung_accuracy"], "the rung's accuracy is recorded"
        reported = json.loads((paused / "reported.json").read_text())["user_attrs"]
        assert str(step) in reported["rung_accuracy"], "and reported to the study"
        assert not (paused / "final_adapter").exists()
    last = trainer(trainer_cmd, dataset_dir, paused, "resume", *rungs)
    assert last.returncode == 0, last.stderr
    assert "resumed after step 9" in last.stderr
    curve = json.loads((paused / "loss_curve.json").read_text())["train_loss"]
    reference = json.loads((whole / "loss_curve.json").read_text())["train_loss"]
    assert curve == reference, "bit-identical losses at every step"
    final, expected = adapter(paused), adapter(whole)
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        assert bool((final[name] == tensor).all()), name  # type: ignore[operator]
    done = json.loads((paused / "result.json").read_text())
    assert done["outcome"] == "completed"
    assert done["final_accuracy"] == json.loads((whole / "result.json").read_text())["final_accuracy"]
    assert set(done["rung_accuracy"]) == {"6", "9"}, "the rungs' record is kept"


def test_a_missing_or_corrupt_checkpoint_fails_naming_the_file(
    trainer_cmd: list[str], dataset_dir: Path, tmp_path: Path
) -> None:
    missing = trainer(trainer_cmd, dataset_dir, tmp_path / "never-screened", "resume")
    assert missing.returncode == 2
    assert f"checkpoint file {tmp_path / 'never-screened' / 'checkpoint' / 'checkpoint.json'} is missing" in (
        missing.stderr
    )

    run_dir = tmp_path / "screened"
    assert trainer(trainer_cmd, dataset_dir, run_dir, "screen").returncode == 0
    state = run_dir / "checkpoint" / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    corrupt = trainer(trainer_cmd, dataset_dir, run_dir, "resume")
    assert corrupt.returncode == 2
    assert f"checkpoint file {state} is corrupt" in corrupt.stderr
    assert json.loads((run_dir / "reported.json").read_text())["user_attrs"]["failure_reason"].startswith(
        f"checkpoint file {state} is corrupt"
    )


def test_a_checkpoint_whose_replace_was_killed_between_its_renames_is_resumed_from_the_old_one(
    trainer_cmd: list[str], dataset_dir: Path, tmp_path: Path
) -> None:
    """A checkpoint is swapped in through a sibling ``.checkpoint.old``; a trainer killed between the two renames
    (an eviction mid-checkpoint, past the grace period) leaves only that sibling, the last whole checkpoint. The
    next run puts it back and resumes from it, rather than failing for a missing checkpoint."""
    run_dir = tmp_path / "screened"
    assert trainer(trainer_cmd, dataset_dir, run_dir, "screen").returncode == 0
    (run_dir / "checkpoint").rename(run_dir / ".checkpoint.old")  # the state between the two renames
    resumed = trainer(trainer_cmd, dataset_dir, run_dir, "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after step 3" in resumed.stderr and not (run_dir / ".checkpoint.old").exists()


def test_the_forget_stage_deletes_the_checkpoint_and_nothing_else(tmp_path: Path) -> None:
    """What a pruned trial's cleanup Job runs in a cluster; a second run (an operator that asked again) is fine."""
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.pt").write_bytes(b"x")
    (tmp_path / "early_adapter").mkdir()
    for _ in range(2):
        assert trainer_main(["--stage", "forget", "--output", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["early_adapter"]


# --- the study engine in screening mode: `ftstudy run`, real trainer processes, real PostgreSQL -------------------


def screening_study(path: Path, name: str) -> Path:
    """Four tiny trials, two at a time, K 2: the baseline trains through, trials 1-3 are screened. The tiny model
    scores every trial the same, so the ranking is by trial number: trial 1 is promoted, 2 and 3 pruned."""
    path.write_text(yaml.safe_dump(tiny_study(name, k=2, mode="screen")))
    return path


def check_screened_study(url: str, name: str, workdir: Path) -> list[optuna.trial.FrozenTrial]:
    found = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    assert [t.number for t in found] == [0, 1, 2, 3]
    assert [t.state for t in found] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                                        TrialState.PRUNED]  # fmt: skip
    trials_dir = workdir / name / "trials"
    assert "ftstudy:resumes" not in found[0].system_attrs, "the baseline is never screened"
    assert found[1].system_attrs["ftstudy:resumes"] == 1, "resumed once: no duplicate resume"
    assert found[1].user_attrs["outcome"] == "completed" and found[1].user_attrs["steps_done"] == 15
    assert (trials_dir / "trial-0001" / "final_adapter").is_dir()
    for number in (2, 3):
        assert found[number].user_attrs["outcome"] == "screened" and found[number].user_attrs["steps_done"] == 3
        assert not (trials_dir / f"trial-{number:04d}" / "checkpoint").exists(), "a pruned trial's checkpoint goes"
        assert (trials_dir / f"trial-{number:04d}" / "early_adapter").is_dir(), "its early adapter stays"
    for trial in found:
        assert trial.system_attrs["ftstudy:attempts"] == 1
    return found


def test_a_screening_study_stops_trials_at_the_early_step_and_resumes_only_the_promoted(
    postgres_url: str, study_name: str, tmp_path: Path
) -> None:
    result = run(screening_study(tmp_path / "s.yaml", study_name), postgres_url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    check_screened_study(postgres_url, study_name, tmp_path)
    assert "trial   1  early accuracy" in result.stdout and "-> promote" in result.stdout
    assert "resumed from its checkpoint" in result.stdout and "-> pruned" in result.stdout


def test_an_audited_trial_is_launched_whole_and_trained_to_the_end_whatever_its_early_score(
    postgres_url: str, tmp_path: Path
) -> None:
    """The screening study above, with half its trials drawn for audit and a name that draws trial 3 alone: trial 3,
    last in the ranking and pruned there, is launched as a full run instead (never screened, no checkpoint, no
    resume) and trained to the end."""
    name = next(n for n in (f"audit-{uuid.uuid4().hex[:10]}" for _ in range(1000))
                if [audit.audited(n, t, 0.5) for t in (1, 2, 3)] == [False, False, True])  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_study(name, k=2, mode="screen", audit=0.5)))
    result = run(path, postgres_url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = optuna.load_study(study_name=name, storage=postgres_url).get_trials(deepcopy=False)
    assert [t.state for t in found] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                                        TrialState.COMPLETE]  # fmt: skip
    audited = found[3]
    assert [t.system_attrs.get("ftstudy:audit") for t in found] == [None, None, None, True]
    assert audited.user_attrs["outcome"] == "completed" and audited.user_attrs["steps_done"] == 15
    assert "checkpoint" not in audited.user_attrs and "ftstudy:resumes" not in audited.system_attrs, "never screened"
    assert audited.system_attrs["ftstudy:decision"] == "continue"
    assert not (tmp_path / name / "trials" / "trial-0003" / "checkpoint").exists()
    assert "trial   3  launched (audit)" in result.stdout, result.stdout
    assert "-> continue (audit: trained to the end whatever its early accuracy)" in result.stdout
    assert ", audited 1;" in result.stdout, "the status line counts audited trials"
    assert "early scores against final ones: not enough audited trials yet: 1 of the ~1.5 expected" in result.stdout


@pytest.mark.parametrize("fault", ["resume.before=1", "resume.between=1", "continue.between=1", "cancel.between=1"])
def test_a_runner_killed_around_a_promotion_neither_loses_nor_doubles_a_trial(
    postgres_url: str, study_name: str, tmp_path: Path, fault: str
) -> None:
    study = screening_study(tmp_path / "s.yaml", study_name)
    killed = run(study, postgres_url, tmp_path, env={"FTSTUDY_FAULTS": fault})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    result = run(study, postgres_url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    check_screened_study(postgres_url, study_name, tmp_path)


def test_tpe_learns_from_early_accuracies_of_trials_still_running() -> None:
    """Screened trials stay RUNNING until the end of screening; TPE must still learn from their early accuracy."""

    def mean_distance(sampler: optuna.samplers.BaseSampler) -> float:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        distance = []
        for _ in range(40):
            trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
            trial.report(1 - abs(trial.params["x"] - 0.9), 1)  # reported, never told: it stays RUNNING
            distance.append(abs(trial.params["x"] - 0.9))
        return sum(distance[10:]) / 30

    plain = mean_distance(optuna.samplers.TPESampler(n_startup_trials=5, seed=0, constant_liar=True))
    ours = mean_distance(EarlyScoreTPESampler(n_startup_trials=5, seed=0, constant_liar=True))
    assert ours < 0.15 < plain, (ours, plain)


@pytest.mark.timeout(1800)  # seven trainer runs
def test_a_study_screening_in_two_rungs_decides_at_each_and_ends(
    postgres_url: str, study_name: str, tmp_path: Path
) -> None:
    """promotion.rungs [0.2, 0.5], reduction 2, K 1, four trials, no baseline. The tiny model scores every trial the
    same, so ranks go by trial number: at rung 0 (step 3) the top half of the four are trials 0 and 1, resumed to
    rung 1 (step 8), where K 1 keeps trial 0 alone, which trains to the end."""
    document = tiny_study(study_name, k=1, mode="screen")
    document["spec"]["promotion"].update({"rungs": [0.2, 0.5], "reduction": 2})
    del document["spec"]["baseline"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(document))
    result = run(path, postgres_url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials(deepcopy=False)
    assert [t.state for t in found] == [TrialState.COMPLETE, *[TrialState.PRUNED] * 3]
    assert [t.system_attrs.get("ftstudy:passed", 0) for t in found] == [1, 1, 0, 0]
    assert found[0].user_attrs["outcome"] == "completed" and found[0].system_attrs["ftstudy:resumes"] == 2
    assert found[0].user_attrs["steps_done"] == 15 and set(found[0].user_attrs["rung_accuracy"]) == {"8"}
    assert found[1].user_attrs["steps_done"] == 8, "pruned at rung 1"
    assert [found[n].user_attrs["steps_done"] for n in (2, 3)] == [3, 3], "pruned at rung 0"
    assert "trial   0  promoted past rung 0 (20%)" in result.stdout
    assert "trial   1  promoted past rung 0 (20%)" in result.stdout
    assert "at rung 1 -> promote" in result.stdout and "at rung 1 -> pruned" in result.stdout
    assert "study done" in result.stdout
