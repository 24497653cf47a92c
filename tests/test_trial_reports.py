"""What trainers report is checked where the engine reads it: a malformed value fails one trial, never the study."""

from __future__ import annotations

import math
from typing import Any

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from ftstudy.report import rows, summary
from ftstudy.trial_reports import check, check_all


def trial(number: int, attrs: dict[str, Any], early: float | None = 0.5) -> FrozenTrial:
    made = create_trial(
        state=TrialState.COMPLETE,
        value=0.5,
        params={"learning_rate": 1e-3},
        distributions={"learning_rate": FloatDistribution(1e-5, 1e-1, log=True)},
        intermediate_values={3: early} if early is not None else {},
        user_attrs=attrs,
    )
    made.number = number
    return made


GOOD = {"final_accuracy": 0.7, "test_accuracy": 0.6, "total_steps": 15, "early_step": 3, "outcome": "completed",
        "final_per_attribute": {"brand": 0.5}, "best_eval_loss": math.inf, "final_adapter": "/artifacts/x"}  # fmt: skip


def test_a_well_formed_trial_passes_unchanged() -> None:
    original = trial(0, GOOD)
    checked, problem = check(original)
    assert problem is None and checked is original


@pytest.mark.parametrize(
    ("attrs", "early", "words"),
    [
        ({"final_accuracy": "abc"}, 0.5, "final_accuracy = 'abc' (str), not an accuracy"),
        ({"test_accuracy": 7}, 0.5, "test_accuracy = 7 (int), not an accuracy"),
        ({"final_accuracy": True}, 0.5, "final_accuracy = True (bool), not an accuracy"),
        ({"total_steps": "15"}, 0.5, "total_steps = '15' (str), not a whole number of steps"),
        ({"outcome": 1}, 0.5, "outcome = 1 (int), not a string"),
        ({"final_per_attribute": {"brand": "x"}}, 0.5, "final_per_attribute = {'brand': 'x'} (dict), not a mapping"),
        ({}, math.nan, "the early accuracy at step 3 = nan, not an accuracy"),
    ],
)
def test_a_malformed_value_is_removed_and_named(attrs: dict[str, Any], early: float, words: str) -> None:
    checked, problem = check(trial(0, {**GOOD, **attrs}, early))
    assert problem is not None and words in problem, problem
    assert problem.startswith("the trainer reported malformed results: ")
    for key in attrs:
        assert key not in checked.user_attrs
    if early is not None and math.isnan(early):
        assert checked.intermediate_values == {}


def test_what_the_report_and_status_compute_survives_malformed_trials() -> None:
    """Unchecked, a string accuracy breaks the leaderboard and the status (a str compared with a float) at every
    pass; checked, the other trials are reported as before."""
    trials = [trial(0, GOOD), trial(1, {**GOOD, "final_accuracy": "abc"}), trial(2, {**GOOD, "final_accuracy": 0.9})]
    with pytest.raises(TypeError):
        summary(rows(trials))
    clean, problems = check_all(trials)
    assert set(problems) == {1}
    assert summary(rows(clean))["best"]["number"] == 2
