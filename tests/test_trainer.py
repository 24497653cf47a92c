"""The trainer against real PostgreSQL, on the tiny model, as the study engine will run it: a subprocess."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ftstudy.task.attributes import DEFAULT_ATTRIBUTES
from ftstudy.trainer.reporting import UserAttr

from .conftest import postgres_outage

PARAMS = {"learning_rate": 3e-3, "lora_r": 4, "lora_alpha": 8, "target_modules": "attention"}
DISTRIBUTIONS = {
    "learning_rate": FloatDistribution(1e-5, 1e-1, log=True),
    "lora_r": IntDistribution(1, 64),
    "lora_alpha": IntDistribution(1, 128),
    "target_modules": CategoricalDistribution(["attention", "attention_mlp"]),
}
FAST = [
    "--model",
    "tiny",
    "--max-seq-len",
    "1024",
    "--eval-samples",
    "4",
    "--test-samples",
    "4",
    "--eval-batch-size",
    "4",
    "--check-every",
    "2",
]


def new_trial(url: str, name: str, params: dict[str, Any] | None = None) -> optuna.Study:
    study = optuna.create_study(storage=url, study_name=name, direction="maximize")
    study.enqueue_trial(params or PARAMS)
    study.ask(DISTRIBUTIONS)
    return study


def trainer_args(url: str, name: str, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        *FAST,
        "--storage",
        url,
        "--study",
        name,
        "--trial",
        "0",
        "--data",
        str(data),
        "--output",
        str(out),
        *extra,
    ]


def spawn(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_full_run_reports_once_at_the_early_step_and_records_everything(
    postgres_url: str, study_name: str, dataset_dir: Path, tmp_path: Path, trainer_cmd: list[str]
) -> None:
    study = new_trial(postgres_url, study_name)
    run = subprocess.run(
        [*trainer_cmd, *trainer_args(postgres_url, study_name, dataset_dir, tmp_path, "--max-steps", "20")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    [trial] = study.get_trials(deepcopy=False)
    assert trial.state == TrialState.RUNNING, "the trainer must leave finishing the trial to the engine"
    assert list(trial.intermediate_values) == [4], "exactly one report, at 20% of 20 steps"
    attrs = trial.user_attrs
    assert trial.intermediate_values[4] == attrs[UserAttr.EARLY_ACCURACY]
    expected = {
        UserAttr.EARLY_STEP,
        UserAttr.EARLY_ACCURACY,
        UserAttr.EARLY_PER_ATTRIBUTE,
        UserAttr.EARLY_ADAPTER,
        UserAttr.TOTAL_STEPS,
        UserAttr.FINAL_ACCURACY,
        UserAttr.FINAL_PER_ATTRIBUTE,
        UserAttr.TEST_ACCURACY,
        UserAttr.TEST_PER_ATTRIBUTE,
        UserAttr.INDEPENDENT_TEST_ACCURACY,
        UserAttr.BEST_EVAL_LOSS_STEP,
        UserAttr.FINAL_ADAPTER,
        UserAttr.TRAIN_SECONDS,
        UserAttr.STEPS_DONE,
        UserAttr.OUTCOME,
    }
    assert expected <= set(attrs)
    assert attrs[UserAttr.OUTCOME] == "completed" and attrs[UserAttr.TOTAL_STEPS] == 20
    assert 1 <= attrs[UserAttr.BEST_EVAL_LOSS_STEP] <= 20
    assert set(attrs[UserAttr.FINAL_PER_ATTRIBUTE]) == set(DEFAULT_ATTRIBUTES)
    for key in (UserAttr.EARLY_ADAPTER, UserAttr.FINAL_ADAPTER):
        assert (Path(attrs[key]) / "adapter_config.json").is_file()
        assert (Path(attrs[key]) / "adapter_model.safetensors").is_file()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["final_accuracy"] == attrs[UserAttr.FINAL_ACCURACY]
    # Each page's score, for benches that put intervals on differences between trials over the same pages.
    pages = json.loads((tmp_path / "page_scores.json").read_text())
    assert len(pages["test"]) == 4 and math.isclose(sum(pages["test"]) / 4, attrs[UserAttr.TEST_ACCURACY])
    assert math.isclose(sum(pages["independent_test"]) / 4, attrs[UserAttr.INDEPENDENT_TEST_ACCURACY])


def test_evaluation_does_not_depend_on_the_training_set(
    postgres_url: str, dataset_dir: Path, tmp_path: Path, trainer_cmd: list[str]
) -> None:
    """The answer budget (and so how much of each page the model sees) comes from the attribute schema: the same
    model scores the same on the same pages whether its training set's answers are short or long. (It used to come
    from the longest training answer, and the same untrained model scored 0.298 and 0.302 on the same pages at two
    points of a data-efficiency sweep.)"""
    long_answers = tmp_path / "long-answers"
    shutil.copytree(dataset_dir, long_answers)
    rows = [json.loads(line) for line in (long_answers / "train.jsonl").read_text().splitlines()]
    for row in rows:
        row["attributes"]["title"] = " ".join(["Extra-long product title words"] * 20)
    (long_answers / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    zero_shot = []
    for index, data in enumerate((dataset_dir, long_answers)):
        name = f"budget-{uuid.uuid4().hex[:8]}"
        new_trial(postgres_url, name)
        out = tmp_path / f"run-{index}"
        args = trainer_args(postgres_url, name, data, out, "--model", "mini", "--max-seq-len", "512",
                            "--eval-samples", "8", "--max-steps", "1", "--score-base-model")  # fmt: skip
        run = subprocess.run([*trainer_cmd, *args], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        result = json.loads((out / "result.json").read_text())
        zero_shot.append((result["zero_shot_accuracy"], result["zero_shot_test_accuracy"]))
    assert zero_shot[0] == zero_shot[1]


def test_pruned_trial_stops_within_a_few_steps(
    postgres_url: str, study_name: str, dataset_dir: Path, tmp_path: Path, trainer_cmd: list[str]
) -> None:
    study = new_trial(postgres_url, study_name)
    proc = spawn([*trainer_cmd, *trainer_args(postgres_url, study_name, dataset_dir, tmp_path, "--max-steps", "400")])
    try:
        wait_for(lambda: study.get_trials(deepcopy=False)[0].intermediate_values, 180, "the early report")
        study.tell(0, state=TrialState.PRUNED)
        pruned_at = 80  # the early step of 400
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["outcome"] == "pruned"
    assert pruned_at < result["steps_done"] <= pruned_at + 20, "stopped within a few steps of the decision"
    assert not (tmp_path / "final_adapter").exists()


def test_sigterm_mid_run_stops_fast_and_leaves_consistent_files(
    postgres_url: str, study_name: str, dataset_dir: Path, tmp_path: Path, trainer_cmd: list[str]
) -> None:
    new_trial(postgres_url, study_name)
    proc = spawn([*trainer_cmd, *trainer_args(postgres_url, study_name, dataset_dir, tmp_path, "--max-steps", "400")])
    try:
        wait_for(lambda: (tmp_path / "early_adapter").exists(), 180, "the early checkpoint")
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        elapsed = time.monotonic() - started
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    assert elapsed < 10, f"took {elapsed:.1f}s to stop"
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["outcome"] == "terminated" and result["steps_done"] < 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["early_adapter", "result.json"], "no temporary leftovers"
    assert sorted(p.name for p in (tmp_path / "early_adapter").iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--model", "/nonexistent/model.gguf"], "model '/nonexistent/model.gguf' not found"),
        (["--attributes", "title,price"], "unknown attribute(s)"),
        (["--max-seq-len", "200"], "raise max_seq_len"),
        (["--study", "no-such-study"], "study 'no-such-study' does not exist"),
    ],
)
def test_bad_input_fails_with_a_clear_message(
    postgres_url: str,
    study_name: str,
    dataset_dir: Path,
    tmp_path: Path,
    trainer_cmd: list[str],
    change: list[str],
    message: str,
) -> None:
    new_trial(postgres_url, study_name)
    run = subprocess.run(
        [
            *trainer_cmd,
            *trainer_args(postgres_url, study_name, dataset_dir, tmp_path / "o", "--max-steps", "4"),
            *change,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_malformed_dataset_line_and_unknown_hyperparameter(
    postgres_url: str, study_name: str, dataset_dir: Path, tmp_path: Path, trainer_cmd: list[str]
) -> None:
    broken = tmp_path / "data"
    broken.mkdir()
    for split in ("train", "validation", "test"):
        (broken / f"{split}.jsonl").write_text((dataset_dir / f"{split}.jsonl").read_text())
    with (broken / "validation.jsonl").open("a") as handle:
        handle.write('{"id": "x", "html": "<p>"\n')
    new_trial(postgres_url, study_name)
    run = subprocess.run(
        [*trainer_cmd, *trainer_args(postgres_url, study_name, broken, tmp_path / "o", "--max-steps", "4")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "validation.jsonl:9: not valid JSON" in run.stderr
    trial = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials()[0]
    assert "validation.jsonl:9" in trial.user_attrs["failure_reason"], "the reason is recorded for the engine"

    run = subprocess.run(
        [
            *trainer_cmd,
            *FAST,
            "--data",
            str(dataset_dir),
            "--output",
            str(tmp_path / "p"),
            "--params",
            '{"learning_rate": 0.01, "lora_rank": 8}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "unknown hyperparameter(s) lora_rank" in run.stderr


def test_unreachable_database_is_retried_then_reported(
    dataset_dir: Path, tmp_path: Path, trainer_cmd: list[str]
) -> None:
    url = "postgresql+psycopg2://ftstudy:ftstudy@127.0.0.1:9/ftstudy"  # nothing listens on port 9
    run = subprocess.run(
        [
            *trainer_cmd,
            *FAST,
            "--storage",
            url,
            "--study",
            "s",
            "--trial",
            "0",
            "--data",
            str(dataset_dir),
            "--output",
            str(tmp_path),
            "--storage-retry-seconds",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 3, run.stderr
    assert "database unreachable while trying to open the study storage" in run.stderr
    assert "retrying in" in run.stderr and "Traceback" not in run.stderr


def test_database_outage_mid_run_is_ridden_out(
    postgres_url: str, study_name: str, dataset_dir: Path, tmp_path: Path, trainer_cmd: list[str]
) -> None:
    new_trial(postgres_url, study_name)
    proc = spawn([*trainer_cmd, *trainer_args(postgres_url, study_name, dataset_dir, tmp_path, "--max-steps", "60")])
    try:
        wait_for(lambda: (tmp_path / "result.json").exists(), 120, "training to start")
        postgres_outage(6)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "database unreachable" in stderr, "the outage was seen and retried"
    # A fresh client: the test's own pooled connections died with the server.
    [trial] = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials(deepcopy=False)
    assert list(trial.intermediate_values) == [12]
    assert trial.user_attrs[UserAttr.OUTCOME] == "completed"


def test_total_steps_repeat_a_small_training_set_up_to_min_steps() -> None:
    from ftstudy.trainer.config import Hyperparameters, RunSettings, total_steps

    hp = Hyperparameters(batch_size=8)
    settings = RunSettings(model="tiny", data_dir=Path("d"), output_dir=Path("o"), epochs=2, min_steps=40)
    assert total_steps(settings, hp, 25) == 40, "25 samples are seen 13 times rather than 7 steps' worth"
    assert total_steps(settings, hp, 3200) == 800
    assert total_steps(settings, hp, 0) == 0, "no samples: the base model is scored, nothing trains"


def test_zero_samples_score_the_base_model_and_extra_points_are_recorded(
    dataset_dir: Path, tmp_path: Path, trainer_cmd: list[str]
) -> None:
    def run(out: str, params: dict[str, Any], *extra: str) -> dict[str, Any]:
        done = subprocess.run(
            [*trainer_cmd, *FAST, "--data", str(dataset_dir), "--output", str(tmp_path / out),
             "--params", json.dumps(params), *extra],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        reported: dict[str, Any] = json.loads((tmp_path / out / "reported.json").read_text())
        return reported

    untrained = run("zero", {**PARAMS, "train_samples": 0})
    attrs = untrained["user_attrs"]
    assert untrained["intermediate"] == {"0": attrs[UserAttr.FINAL_ACCURACY]}, "reported at step 0, once"
    assert attrs[UserAttr.TOTAL_STEPS] == 0 and attrs[UserAttr.TRAIN_EXAMPLES] == 0
    assert attrs[UserAttr.ZERO_SHOT_ACCURACY] == attrs[UserAttr.FINAL_ACCURACY]
    assert attrs[UserAttr.OUTCOME] == "completed" and not (tmp_path / "zero" / "final_adapter").exists()

    trained = run("ten", PARAMS, "--max-steps", "10", "--extra-eval-fractions", "0.1,0.5", "--score-base-model")
    attrs = trained["user_attrs"]
    assert attrs[UserAttr.ZERO_SHOT_ACCURACY] == untrained["user_attrs"][UserAttr.ZERO_SHOT_ACCURACY], (
        "the same untrained model scores the same"
    )
    assert list(trained["intermediate"]) == ["2"], "the objective is still the early step alone"
    assert set(attrs[UserAttr.ACCURACY_AT_STEP]) == {"1", "5"}
    assert 0 < attrs[UserAttr.EVAL_SECONDS] < attrs[UserAttr.TRAIN_SECONDS]
    assert attrs[UserAttr.TRAIN_EXAMPLES] == 64


def test_batches_grouped_by_length_cover_the_epoch_with_less_padding() -> None:
    """The same examples once per epoch, in batches of similar lengths (less padding to compute), still in a random
    order fixed by the seed; without grouping, the stream is the plain shuffled one."""
    import random

    import torch

    from ftstudy.trainer.encoding import Encoded
    from ftstudy.trainer.run import batch_stream

    rng = random.Random(0)
    items = [Encoded(prompt=[1] * rng.randint(50, 450), answer=[2] * 10) for _ in range(200)]

    def epoch(grouped: bool, seed: int = 3) -> list[list[Encoded]]:
        stream = batch_stream(items, 8, seed, group_by_length=grouped)
        return [next(stream) for _ in range(len(items) // 8)]

    def padding(batches: list[list[Encoded]]) -> int:
        return sum(max(len(e.prompt) for e in b) * len(b) - sum(len(e.prompt) for e in b) for b in batches)

    grouped, plain = epoch(True), epoch(False)
    assert sorted(id(e) for b in grouped for e in b) == sorted(id(e) for e in items)
    assert padding(grouped) < padding(plain) / 5, (padding(grouped), padding(plain))
    assert [[id(e) for e in b] for b in grouped] == [[id(e) for e in b] for b in epoch(True)], "fixed by the seed"
    lengths = [len(b[0].prompt) for b in grouped]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True), "batches still come shuffled"
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(3)).tolist()
    assert [id(e) for b in plain for e in b] == [id(items[i]) for i in order], "ungrouped: the plain shuffle"
