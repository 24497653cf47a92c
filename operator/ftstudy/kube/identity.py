"""Which Optuna study, and which trial of it, a Job belongs to; and what a study's early accuracy means.

Job names depend only on the study, the trial number and the attempt, so a name alone cannot tell this study's
trial 3 from the trial 3 of an Optuna study that was deleted and created again, of another database (a changed
``storage.secretRef``), or of a database restored from a backup. Each Job therefore carries two more labels:

- the Optuna study's identity, a random id recorded in the study's system attributes when the operator first opens
  it (a new study, in whatever database, gets a new one);
- the trial's key, a hash of that identity, the trial's number and the moment Optuna created the trial (to the
  microsecond): a trial asked for again after a restore has the same number but not the same creation time.

A Job whose labels do not match the records is not ours to act on (``ftstudy.kube.executor``).

The fields that define what an early accuracy means (model, dataset, attributes, training, searchSpace, promotion)
are recorded beside the identity: the CRD refuses changes to them, and this catches what CEL cannot see (values
that may be strings or numbers) and edits made while no admission rule was installed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from ftstudy.kube import names
from ftstudy.kube.problems import Problem
from ftstudy.retry import RetryPolicy
from ftstudy.spec import Promotion, StudySpec, Training
from ftstudy.study_store import StudyStore

IDENTITY = "ftstudy:identity"
MEANING = "ftstudy:meaning"
OWNER = "ftstudy:owner-uid"  # the UID of the FineTuneStudy that created the records
TRIALS_DIRECTORY = "ftstudy:trials-directory"  # <outputDir>/<namespace>/THIS: where the records' trials write
# What an early accuracy means; a change makes the study's history mislead both the sampler and the promotion.
FROZEN_FIELDS = ("model", "dataset", "attributes", "training", "searchSpace", "promotion")


class SpecChanged(ValueError):
    """A field of ``FROZEN_FIELDS`` differs from the one the study's records were made with."""


def _recorded(store: StudyStore, key: str, value: str | Callable[[], str]) -> str:
    """The study's value of ``key``, recording ``value`` first if it has none (a callable is asked only then). Read
    again after writing, so that two writers (a replica that lost its lease an instant ago) end up agreeing on
    whichever was stored."""
    study_id = store.study_id
    attrs = store.retry.call("read the study", lambda: store.storage.get_study_system_attrs(study_id))
    if key not in attrs:
        first = value() if callable(value) else value
        store.retry.call("record the study", lambda: store.storage.set_study_system_attr(study_id, key, first))
        attrs = store.retry.call("read the study", lambda: store.storage.get_study_system_attrs(study_id))
    return str(attrs[key])


def optuna_name(storage: BaseStorage, retry: RetryPolicy, namespace: str, name: str, uid: str,
                created: datetime | None, continue_from: str | None) -> str:  # fmt: skip
    """Which Optuna study holds this FineTuneStudy's records.

    ``spec.storage.continueFrom`` names one explicitly: an earlier study's of the same namespace (never another
    namespace's, which shares the database but not the tenant). Otherwise the study's own, keyed by its UID: a study
    deleted and created again under the same name starts afresh, and its predecessor's running trials are not
    relaunched as its own. A study begun by an operator before 0.2 has records under the name alone; they stay its
    own if they record this UID, or record none and their first trial started after this object was created
    (``created``, the API server's creationTimestamp): records older than the object are a predecessor's."""

    def find(study: str) -> int | None:
        try:
            return int(retry.call("find the study", lambda: storage.get_study_id_from_name(study)))
        except KeyError:
            return None

    if continue_from:
        if not continue_from.startswith(f"{namespace}."):
            prefix = namespace + "."
            raise Problem("ContinueFromRefused", f"spec.storage.continueFrom {continue_from!r} is not a study of "
                          f"namespace {namespace} (its name starts with {prefix!r})", permanent=True)  # fmt: skip
        if find(continue_from) is None:
            raise Problem("ContinueFromMissing", f"spec.storage.continueFrom names Optuna study {continue_from!r}, "
                          "which the study's database does not hold: copy the earlier study's status.optunaStudy, "
                          "or remove the field to start afresh", permanent=True)  # fmt: skip
        return continue_from
    keyed = names.optuna_study_name(namespace, name, uid)
    legacy = names.legacy_optuna_study_name(namespace, name)
    legacy_id = find(legacy)
    if legacy_id is None or find(keyed) is not None:
        return keyed
    attrs = retry.call("read the study", lambda: storage.get_study_system_attrs(legacy_id))
    if OWNER in attrs:
        return legacy if attrs[OWNER] == uid else keyed
    trials = retry.call("read the trials", lambda: storage.get_all_trials(legacy_id, deepcopy=False))
    starts = [t.datetime_start.astimezone() for t in trials if t.datetime_start is not None]
    if starts and created is not None and min(starts) >= created:
        return legacy
    return keyed


def record_owner(store: StudyStore, uid: str) -> None:
    """The records' owner, recorded once (continued records keep their first owner's)."""
    _recorded(store, OWNER, uid)


def trials_directory(store: StudyStore, name: str, uid: str) -> str:
    """The directory under ``<outputDir>/<namespace>`` where the records' trials write, recorded with the records,
    so that it follows them: a study created again under the same name writes beside its predecessor, never into
    its trial directories (which hold checkpoints a new trial of that number would resume from, or refuse), and a
    study that continues earlier records (``storage.continueFrom``) resumes their screened trials where they are.
    Records whose trials began before it was recorded (an earlier operator) keep the study's name alone."""
    return _recorded(store, TRIALS_DIRECTORY, lambda: name if store.trials() else keyed_trials_directory(name, uid))


def keyed_trials_directory(name: str, uid: str) -> str:
    """The trials directory of a study whose records began under this layout: its name and its UID's first 8."""
    return f"{name}-{uid[:8]}"


def study_identity(store: StudyStore) -> str:
    return _recorded(store, IDENTITY, uuid.uuid4().hex)


def meaning(spec: StudySpec) -> dict[str, Any]:
    document = spec.model_dump(mode="json", by_alias=True)
    return {name: document[name] for name in FROZEN_FIELDS}


# Sections whose fields a newer version may add, with a default that keeps the old behaviour.
_DEFAULTS = {"training": Training, "promotion": Promotion}


def _same(name: str, recorded: Any, wanted: Any) -> bool:
    """Equal, or equal but for fields a newer version added since the record was made, each at its default: an
    upgrade of the operator must not stop every running study."""
    if recorded == wanted or name not in _DEFAULTS or not isinstance(recorded, dict) or not isinstance(wanted, dict):
        return bool(recorded == wanted)
    defaults = _DEFAULTS[name]().model_dump(mode="json", by_alias=True)
    added = {key for key in wanted if key not in recorded}
    return all(wanted[key] == defaults.get(key) for key in added) and all(
        recorded[key] == wanted.get(key) for key in recorded
    )


def check_unchanged(store: StudyStore, spec: StudySpec) -> None:
    """Raise ``SpecChanged`` naming each frozen field that differs from the recorded one."""
    wanted = meaning(spec)
    recorded = json.loads(_recorded(store, MEANING, json.dumps(wanted, sort_keys=True)))
    changed = [name for name in FROZEN_FIELDS if name in recorded and not _same(name, recorded[name], wanted[name])]
    if changed:
        fields = ", ".join(f"spec.{name}" for name in changed)
        raise SpecChanged(
            f"{fields} changed after the study started, so its trials' early accuracies would no longer compare: "
            f"put back the earlier value ({json.dumps({n: recorded[n] for n in changed}, sort_keys=True)[:400]}), "
            "or create a new FineTuneStudy for the new settings; budget and parallelism may change"
        )


def trial_key(identity: str, trial: FrozenTrial) -> str:
    started = trial.datetime_start.isoformat() if trial.datetime_start is not None else ""
    return hashlib.sha256(f"{identity}/{trial.number}/{started}".encode()).hexdigest()[:16]
