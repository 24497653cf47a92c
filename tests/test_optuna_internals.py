"""The private Optuna API that ftstudy uses (``ftstudy.optuna_internals``), checked against the installed Optuna: an
upgrade that renames, reorders or changes one of them fails here, by name, instead of inside a running study."""

from __future__ import annotations

import inspect
import re

import optuna
import optuna.samplers._tpe.sampler as tpe_module
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from ftstudy import optuna_internals
from tests.conftest import PrivateDatabase


def parameters(function: object) -> tuple[str, ...]:
    return tuple(name for name in inspect.signature(function).parameters if name != "self")  # type: ignore[arg-type]


def test_the_private_signatures_are_the_ones_ftstudy_calls() -> None:
    assert parameters(RDBStorage._get_trials) == optuna_internals.STORAGE_GET_TRIALS, "RDBStorage._get_trials changed"
    assert parameters(optuna.Study._get_trials) == optuna_internals.STUDY_GET_TRIALS, "Study._get_trials changed"


def test_tpe_still_sees_the_study_through_get_trials() -> None:
    """EarlyScoreTPESampler shows TPE the study through ``_get_trials``: if TPE stopped calling it, early accuracies
    of running trials would silently stop reaching it (tests/test_screening.py measures the effect)."""
    assert re.search(r"study\._get_trials\(", inspect.getsource(tpe_module)), "TPESampler no longer calls _get_trials"


def test_trials_since_reads_only_the_unfinished_and_the_new(private_database: PrivateDatabase) -> None:
    storage = RDBStorage(private_database.url)
    study = optuna.create_study(storage=storage, study_name="internals")
    first, second = study.ask(), study.ask()
    study.tell(first, 1.0)
    study_id = storage.get_study_id_from_name("internals")
    seen = optuna_internals.trials_since(storage, study_id, set(), -1)
    assert [t.number for t in seen] == [0, 1]
    last = max(optuna_internals.trial_id(t) for t in seen)
    assert optuna_internals.trial_id(second) == last and optuna_internals.trial_id(seen[1]) == last
    third = study.ask()
    again = optuna_internals.trials_since(storage, study_id, {optuna_internals.trial_id(second)}, last)
    assert [(t.number, t.state) for t in again] == [(1, TrialState.RUNNING), (2, TrialState.RUNNING)]
    assert optuna_internals.trial_id(third) == optuna_internals.trial_id(again[1])
    storage.remove_session()
