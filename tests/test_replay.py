"""bench/replay.py over a small committed table: the replay is deterministic, schedules trials as the engine does,
and counts GPU-steps as each method spends them.

tests/data/curves-small.jsonl is synthetic (16 configurations of the example's space with curves where fast
learners rise early and plateau lower, made once by a throwaway script): a fixture for the machinery, not evidence.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from tests import bench_modules

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "data" / "curves-small.jsonl"


@pytest.fixture(scope="module")
def replay() -> ModuleType:
    return bench_modules.load("replay")


def test_a_configuration_is_answered_by_the_nearest_in_log_space(replay: ModuleType) -> None:
    table = replay.load_table(TABLE)
    config = table.configs[5]
    near = {**config.params, "learning_rate": config.params["learning_rate"] * 1.02}
    assert table.nearest(near).number == 5
    other = "attention" if config.params["target_modules"] == "attention_mlp" else "attention_mlp"
    assert table.nearest({**config.params, "target_modules": other}).params["target_modules"] == other


def test_screening_pays_its_early_share_for_every_trial_and_the_rest_for_the_promoted(replay: ModuleType) -> None:
    """12 trials screened at 20% of 50 steps, then the promoted trained for the remaining 80%."""
    table = replay.load_table(TABLE)
    methods = replay.methods(trials=12, parallelism=2, k=3)
    trace = methods["ftstudy screen top-3 at 20%"](table, 0)
    promoted = (trace.spent - 12 * 0.2 * 50) / (0.8 * 50)
    assert math.isclose(promoted, round(promoted)) and 3 <= round(promoted) <= 12
    full = methods["random search, to the end"](table, 0)
    assert full.spent == 12 * 50


def test_the_replay_of_the_committed_table_gives_fixed_numbers(replay: ModuleType) -> None:
    """Three seeds of every method, 12 trials on 2 GPUs, top-3, screening with the default audit share (Optuna
    5.0.0's samplers and pruners; in seed 2 an audited trial trains to the end). A change to
    the scheduling, the decision core, the samplers or the table moves these numbers."""
    table = replay.load_table(TABLE)
    results = replay.run(table, trials=12, parallelism=2, k=3, seeds=3, tolerance=0.01)
    expected = {
        "random search, to the end": ([1.0, 1.0, 1.0], [0.325, 0.825, 0.325]),
        "TPE, to the end": ([1.0, 1.0, 1.0], [0.325, 0.6583, 0.325]),
        "ftstudy online top-3 at 20%": ([0.6667, 0.8, 0.7333], [0.325, 0.6583, 0.325]),
        "ftstudy screen top-3 at 20%": ([0.4, 0.5333, 0.5333], [0.225, 0.425, 0.225]),
        "ftstudy screen top-3 at 50%": ([0.7083, 0.6667, 0.6667], [0.325, 0.4917, 0.325]),
        "ftstudy rungs 20/50%, top-3": ([0.425, 0.5833, 0.5833], [0.375, 0.3917, 0.45]),
        "ftstudy rungs 20/40/60%, top-3": ([0.4167, 0.5333, 0.5167], [0.375, 0.4917, 0.475]),
        "Optuna SuccessiveHalving": ([0.325, 0.5, 0.425], [0.175, 0.4917, 0.325]),
        "Optuna Hyperband": ([0.6, 0.6333, 0.7667], [0.175, 0.475, 0.325]),
        "Optuna median": ([0.7333, 0.725, 0.7417], [0.325, 0.6583, 0.325]),
    }
    assert set(results) == set(expected)
    for name, (spent, to_target) in expected.items():
        assert [round(v, 4) for v in results[name]["spent"]] == spent, name
        assert [round(v, 4) for v in results[name]["steps_to_target"]] == to_target, name
    assert all(v == table.zero_shot_independent for v in results["random search, to the end"]["at_0.1"])
    # what screening ends with against what random search had after as many GPU-steps, seed by seed
    assert [round(v, 4) for v in results["ftstudy screen top-3 at 20%"]["over_random"]] == [-0.0001, 0.0296, -0.0001]
    assert results["random search, to the end"]["over_random"] == [0.0, 0.0, 0.0]


def test_intervals_are_seeded_and_cover_the_statistic(replay: ModuleType) -> None:
    values = [0.2, 0.4, 0.3, 0.5, 0.25, math.inf]
    low, high = replay.bootstrap(values, replay.median)
    assert (low, high) == replay.bootstrap(values, replay.median)
    assert low <= replay.median(values) <= high
    value, low, high = replay.ratio_of_medians([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert value == 0.5 and low == high == 0.5


def test_first_keeps_the_first_trials_by_number_as_a_shorter_table_of_the_same_design(replay: ModuleType) -> None:
    """``--first N`` pairs a table with a shorter one that trained the same first configurations (the fourth
    confirmation: main's first 41 against holdout50)."""
    table = replay.load_table(TABLE)
    numbers = sorted(c.number for c in table.configs)
    shuffled = replace(table, configs=list(reversed(table.configs)))
    kept = replay.first_trials(shuffled, 3)
    assert [c.number for c in kept.configs] == numbers[:3]
    assert kept.total_steps == table.total_steps and kept.zero_shot_independent == table.zero_shot_independent
    with pytest.raises(SystemExit, match="fewer than --first"):
        replay.first_trials(table, len(numbers) + 1)
