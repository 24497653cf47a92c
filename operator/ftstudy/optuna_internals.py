"""The private parts of Optuna that ftstudy relies on, all here, each with why no public one does.

Optuna is pinned (pyproject.toml), and tests/test_optuna_internals.py checks every name below against the installed
Optuna, by signature and by behaviour on a real database, so an upgrade that changes one fails there, by name,
rather than somewhere in a study.

- ``RDBStorage._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)``: the trials that were
  unfinished at the last read plus the ones created since. The public ``get_all_trials`` reads a study's whole
  history, params and attributes included, on every poll; a poll of a study with hundreds of finished trials would
  grow with them (optuna#3048, #4444), and the operator polls many studies.
- ``FrozenTrial._trial_id`` / ``Trial._trial_id``: the storage's id of a trial, which every per-trial write takes.
  Public: ``get_trial_id_from_study_id_trial_number``, one more query per trial, which the reads above already
  answered.
- ``Study._get_trials(deepcopy, states, use_cache)``: what Optuna's samplers call to see the study's trials, which
  ``ftstudy.study_store.EarlyScoreTPESampler`` intercepts to show a RUNNING trial with an early accuracy as
  COMPLETE (there is no public hook for what a sampler sees).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

# What tests/test_optuna_internals.py checks: the names and parameters this module and the sampler use.
STORAGE_GET_TRIALS = ("study_id", "states", "included_trial_ids", "trial_id_greater_than")
STUDY_GET_TRIALS = ("deepcopy", "states", "use_cache")


def trials_since(storage: RDBStorage, study_id: int, unfinished: Iterable[int], greater_than: int) -> list[FrozenTrial]:
    """The trials whose ids are in ``unfinished`` and every trial with an id above ``greater_than``."""
    found: list[FrozenTrial] = storage._get_trials(study_id, None, set(unfinished), greater_than)
    return found


def trial_id(trial: Any) -> int:
    """The storage's id of a ``FrozenTrial`` or a ``Trial``."""
    return int(trial._trial_id)
