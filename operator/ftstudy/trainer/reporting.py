"""How a trial's trainer talks to its study: the reporting protocol shared with the study engine.

The trainer is given an Optuna storage URL, a study name and a trial number. It reads its hyperparameters from that
trial, writes the early accuracy as the trial's intermediate value at the early step, and everything else as trial
user attributes (names in ``UserAttr``). It never finishes the trial: the study engine does, after it has decided.
Every few steps it reads the trial's state; PRUNED means the study cancelled it and it must stop.

Writes go straight to the study's database, not through logs: the operator reads them there (see
docs/protocol.md). Every call is retried through transient outages (``ftstudy.retry``).
"""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ftstudy.db import engine_kwargs
from ftstudy.notify import notify
from ftstudy.retry import RetryPolicy

log = logging.getLogger(__name__)


# A screened trial's checkpoint, inside its run directory (ftstudy.trainer.checkpoint writes it; the engine deletes a
# pruned trial's).
CHECKPOINT_DIRECTORY = "checkpoint"
# Each scored page's accuracy at the end of a full run, by split (a file in the trial's output directory, not a
# storage attribute): what the report and the benches resample for intervals on differences over the same pages.
PAGE_SCORES = "page_scores.json"


class UserAttr(StrEnum):
    """Names of the trial user attributes the trainer writes; the engine reads the same names."""

    EARLY_STEP = "early_step"
    EARLY_ACCURACY = "early_accuracy"
    EARLY_PER_ATTRIBUTE = "early_per_attribute"
    EARLY_ADAPTER = "early_adapter"
    CHECKPOINT = "checkpoint"  # a screened trial's checkpoint directory (promotion.mode screen)
    EARLY_REPORTED_AT = "early_reported_at"  # unix seconds, written just before the early accuracy is reported
    TOTAL_STEPS = "total_steps"
    STEPS_DONE = "steps_done"
    FINAL_ACCURACY = "final_accuracy"
    FINAL_PER_ATTRIBUTE = "final_per_attribute"
    TEST_ACCURACY = "test_accuracy"
    TEST_PER_ATTRIBUTE = "test_per_attribute"
    INDEPENDENT_TEST_ACCURACY = "independent_test_accuracy"
    INDEPENDENT_TEST_PER_ATTRIBUTE = "independent_test_per_attribute"
    BEST_EVAL_LOSS = "best_eval_loss"
    BEST_EVAL_LOSS_STEP = "best_eval_loss_step"
    FINAL_ADAPTER = "final_adapter"
    TRAIN_SECONDS = "train_seconds"  # wall time from the first evaluation or step to the end, scoring included
    EVAL_SECONDS = "eval_seconds"  # of which spent scoring (generation and validation loss)
    TRAIN_EXAMPLES = "train_examples"
    RUNG_ACCURACY = "rung_accuracy"  # {step: validation accuracy} at the rungs after the early one (promotion.rungs)
    ACCURACY_AT_STEP = "accuracy_at_step"  # {step: validation accuracy} at training.extraEvalFractions
    ZERO_SHOT_ACCURACY = "zero_shot_accuracy"  # the base model before training (trial 0 scores it)
    ZERO_SHOT_TEST_ACCURACY = "zero_shot_test_accuracy"
    ZERO_SHOT_INDEPENDENT_TEST_ACCURACY = "zero_shot_independent_test_accuracy"
    OUTCOME = "outcome"
    FAILURE_REASON = "failure_reason"


class TrialStatus(StrEnum):
    """What the trainer needs to know about its trial: keep going, or stop because the study decided."""

    RUNNING = "running"
    PRUNED = "pruned"
    FINISHED = "finished"


class Reporter(Protocol):
    def params(self) -> dict[str, Any]: ...

    def report_early(self, step: int, accuracy: float) -> None: ...

    def set_attrs(self, attrs: dict[str, Any]) -> None: ...

    def status(self) -> TrialStatus: ...


class OptunaReporter:
    """Reports into a trial of an Optuna RDB study (PostgreSQL through psycopg2, or SQLite)."""

    def __init__(
        self,
        url: str,
        study_name: str,
        trial_number: int,
        retry: RetryPolicy,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        import optuna
        from optuna.storages import RDBStorage

        self.retry = retry
        self.study_name = study_name
        self.defaults = dict(defaults or {})
        self._trial_state = optuna.trial.TrialState
        # A trainer needs one connection; pre-ping replaces connections a database restart has broken.
        kwargs = engine_kwargs(url, pool_size=1, application="ftstudy-trainer")
        self.storage = retry.call(
            "open the study storage", lambda: RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=True)
        )
        try:
            study_id = retry.call("find the study", lambda: self.storage.get_study_id_from_name(study_name))
        except KeyError:
            raise LookupError(f"study {study_name!r} does not exist in the storage") from None
        try:
            self.trial_id = retry.call(
                "find the trial",
                lambda: self.storage.get_trial_id_from_study_id_trial_number(study_id, trial_number),
            )
        except KeyError:
            raise LookupError(f"study {study_name!r} has no trial number {trial_number}") from None

    def params(self) -> dict[str, Any]:
        """The study's fixed hyperparameters, overridden by the ones this trial searched."""
        params: dict[str, Any] = self.retry.call(
            "read the trial's parameters", lambda: self.storage.get_trial_params(self.trial_id)
        )
        return {**self.defaults, **params}

    def report_early(self, step: int, accuracy: float) -> None:
        self.retry.call(
            "report the early accuracy",
            lambda: self.storage.set_trial_intermediate_value(self.trial_id, step, accuracy),
        )
        notify(self.storage.engine, self.study_name)  # committed: the operator decides now, not at its next poll

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self._set_attr(str(key), value)
        if UserAttr.OUTCOME.value in attrs:  # the trial's result is in (or its failure reason)
            notify(self.storage.engine, self.study_name)

    def _set_attr(self, key: str, value: Any) -> None:
        self.retry.call(f"record {key}", lambda: self.storage.set_trial_user_attr(self.trial_id, key, value))

    def status(self) -> TrialStatus:
        state = self.retry.call("read the trial's state", lambda: self.storage.get_trial(self.trial_id).state)
        if state == self._trial_state.PRUNED:
            return TrialStatus.PRUNED
        if state.is_finished():
            return TrialStatus.FINISHED
        return TrialStatus.RUNNING


class LocalReporter:
    """No study: parameters come from the command line and results go only to the run directory.

    Used for a single trainer run (and the benchmarks); never pruned.
    """

    def __init__(self, params: dict[str, Any], directory: Path) -> None:
        self._params = params
        self.path = directory / "reported.json"
        self.reported: dict[str, Any] = {"intermediate": {}, "user_attrs": {}}

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def report_early(self, step: int, accuracy: float) -> None:
        self.reported["intermediate"][str(step)] = accuracy
        self._save()

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        self.reported["user_attrs"].update(attrs)
        self._save()

    def status(self) -> TrialStatus:
        return TrialStatus.RUNNING

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.reported, indent=2, sort_keys=True))
        tmp.replace(self.path)
