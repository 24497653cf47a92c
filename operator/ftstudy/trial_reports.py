"""What trainers reported, checked once where the engine reads it, so that bad data fails one trial, not the study.

A trainer writes its results as Optuna user attributes and its early accuracy as an intermediate value. Those are
whatever the trainer wrote: a buggy or hostile trainer image can write a string where a number belongs, or NaN. Read
unchecked, one such value breaks every later pass (formatting an Event, ranking trials, the status, the report), so
the study wedges. Here each known attribute is checked against its type; a malformed one is removed from what the
rest of the engine sees, and the problem is returned, so that the decision core fails that trial with the reason.
Unknown attributes are left alone (a newer trainer may write more).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial

from ftstudy.trainer.reporting import UserAttr

ACCURACIES = {UserAttr.EARLY_ACCURACY, UserAttr.FINAL_ACCURACY, UserAttr.TEST_ACCURACY,
              UserAttr.INDEPENDENT_TEST_ACCURACY}  # fmt: skip
NUMBERS = {UserAttr.EARLY_REPORTED_AT, UserAttr.BEST_EVAL_LOSS, UserAttr.TRAIN_SECONDS}
COUNTS = {UserAttr.EARLY_STEP, UserAttr.TOTAL_STEPS, UserAttr.STEPS_DONE, UserAttr.BEST_EVAL_LOSS_STEP}
TEXTS = {UserAttr.EARLY_ADAPTER, UserAttr.FINAL_ADAPTER, UserAttr.OUTCOME, UserAttr.FAILURE_REASON}
PER_ATTRIBUTE = {UserAttr.EARLY_PER_ATTRIBUTE, UserAttr.FINAL_PER_ATTRIBUTE, UserAttr.TEST_PER_ATTRIBUTE,
                 UserAttr.INDEPENDENT_TEST_PER_ATTRIBUTE}  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_accuracy(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and 0.0 <= value <= 1.0


def _problem(key: str, value: Any) -> str | None:
    """Why ``value`` is no valid ``key``; None when it is (or the key is not one the engine reads)."""
    if key in ACCURACIES and not _is_accuracy(value):
        return "an accuracy (a number from 0 to 1)"
    if key in NUMBERS and not _is_number(value):
        return "a number"
    if key in COUNTS and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return "a whole number of steps"
    if key in TEXTS and not isinstance(value, str):
        return "a string"
    if key in PER_ATTRIBUTE and not (
        isinstance(value, dict) and all(isinstance(k, str) and _is_number(v) for k, v in value.items())
    ):
        return "a mapping of attribute names to numbers"
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check(trial: FrozenTrial) -> tuple[FrozenTrial, str | None]:
    """The trial with every malformed value removed, and what was wrong (None if nothing was)."""
    problems: list[str] = []
    attrs = dict(trial.user_attrs)
    for key, value in trial.user_attrs.items():
        wanted = _problem(key, value)
        if wanted is not None:
            problems.append(f"{key} = {_shown(value)} ({type(value).__name__}), not {wanted}")
            del attrs[key]
    values = dict(trial.intermediate_values)
    for step, value in trial.intermediate_values.items():
        if not _is_accuracy(value):
            problems.append(f"the early accuracy at step {step} = {_shown(value)}, not an accuracy (0 to 1)")
            del values[step]
    if not problems:
        return trial, None
    clean = copy.copy(trial)
    clean.user_attrs = attrs
    clean.intermediate_values = values
    return clean, "the trainer reported malformed results: " + "; ".join(problems)


def check_all(trials: Sequence[FrozenTrial]) -> tuple[list[FrozenTrial], dict[int, str]]:
    """Every trial checked; the problems by trial number."""
    clean: list[FrozenTrial] = []
    problems: dict[int, str] = {}
    for trial in trials:
        checked, problem = check(trial)
        clean.append(checked)
        if problem is not None:
            problems[trial.number] = problem
    return clean, problems
