"""The Optuna side of a study: RDB storage (PostgreSQL through psycopg2, or SQLite), ask/tell, and the trial
records the decision core reads.

The Bayesian objective is the early accuracy (the paper's): a continued trial is told COMPLETE with its early
accuracy once its trainer has finished (its final and test accuracy stay in user attributes), a cancelled one is
told PRUNED (TPE ranks pruned trials by the same early intermediate value), and a failed one FAIL, so the sampler
learns from failures instead of never hearing of them.

What the engine must remember across restarts is kept in the trial's system attributes: the number of launches
(``ftstudy:attempts``), of resumes of a screened trial (``ftstudy:resumes``), the continue decision
(``ftstudy:decision``: to the end), how many rungs it was promoted past (``ftstudy:passed``, screening in
rungs) and whether the trial is audited (``ftstudy:audit``, ``ftstudy.audit``). Every call is
retried through connection failures; the connection pool is small and bounded.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar, cast

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ftstudy import audit, optuna_internals
from ftstudy.core import Decision, Phase
from ftstudy.db import engine_kwargs
from ftstudy.halton import HaltonSampler
from ftstudy.retry import RetryPolicy
from ftstudy.spec import CategoricalParam, FloatParam, IntParam, StudySpec, grid_values
from ftstudy.trainer.reporting import UserAttr

T = TypeVar("T")
log = logging.getLogger(__name__)

ATTEMPTS = "ftstudy:attempts"
RESUMES = "ftstudy:resumes"  # screening: launches of a continued trial from its checkpoint
PREEMPTIONS = "ftstudy:preemptions"  # how many of the trial's preemptions the study has told (Event TrialPreempted)
# the launches (numbered as the Jobs are: attempts, then resumes) that ended in an outage: they spent no retry
OUTAGES = "ftstudy:outages"
DECISION = "ftstudy:decision"
PASSED = "ftstudy:passed"  # promotion.rungs: how many rungs a screened trial was promoted past (each a resume)
SPEC = "ftstudy:search_space"
MODE = "ftstudy:promotion_mode"  # screen or online: fixed at creation, so a changed default cannot switch it
TOP_K = "ftstudy:top_k"  # the K of the report's top-K overlap: the topK policy's K, else the paper's 5
AUDIT = "ftstudy:audit"  # on a trial: drawn for audit when created (trained to the end whatever its early accuracy)
AUDIT_FRACTION = "ftstudy:audit_fraction"  # on the study: the share it audits; null for a study older than audits
FIXED_PARAMS = "fixed_params"  # Optuna's own mark on an enqueued trial: ours is the baseline
DRAWN_BY = "ftstudy:drawn_by"  # on a trial: what chose its parameters (Draw), so a report can say if a winner was luck
ADMITTED = "ftstudy:admitted_at"  # on a trial queued in Kueue: when its first Job started (unix s): GPU-seconds start
# on a trial queued in Kueue: [seconds, since]: how long its Jobs waited in the queue again after the first admission
# (a preemption, a resume Job), and since when (unix s) it waits now, or null; one value, so one write keeps it whole
REQUEUED = "ftstudy:requeued"
# on the study: {trial number: failed tries} of the checkpoints still to delete (cleanup.prunedCheckpoints), so that a
# restarted operator goes on asking instead of leaving them on the volume; one value, written whole
FORGETTING = "ftstudy:forgetting"

_PHASES = {
    TrialState.RUNNING: Phase.RUNNING,
    TrialState.COMPLETE: Phase.COMPLETE,
    TrialState.PRUNED: Phase.PRUNED,
    TrialState.FAIL: Phase.FAILED,
}


@dataclass(frozen=True)
class Standing:
    """What a trial's trainer is told when it checks its state or reports: whether the trial has ended, which launch
    is current (``ftstudy:attempts`` + ``ftstudy:resumes``) and its parameters."""

    state: TrialState
    attempts: int
    resumes: int
    params: dict[str, Any]

    @property
    def launch(self) -> int:
        return self.attempts + self.resumes

    @staticmethod
    def of(trial: FrozenTrial) -> Standing:
        return Standing(trial.state, attempts(trial), resumes(trial), dict(trial.params))


class StudyConflict(ValueError):
    """The storage holds a study of this name with a different search space or promotion mode."""


def distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    result: dict[str, BaseDistribution] = {}
    for name, param in spec.search_space.items():
        if isinstance(param, CategoricalParam):
            result[name] = CategoricalDistribution(list(param.choices))
        elif isinstance(param, IntParam):
            result[name] = IntDistribution(param.low, param.high, log=param.log, step=param.step)
        else:
            assert isinstance(param, FloatParam)
            result[name] = FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    return result


class _EngineEndedGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid, without its ``study.stop()`` once the grid is used up: that call only works inside
    ``study.optimize`` and raises under ask/tell. The engine ends the study itself, at ``maxTrials``, which the spec
    keeps within the grid's size; each of the first trials gets its own grid point by number, parallel or not."""

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        return None


class _ScoredSoFar:
    """A study as TPE should see it here: a RUNNING trial whose early accuracy is in already has its objective value
    (the early accuracy is the objective), so it reads as COMPLETE with that value. Without this, a continued or
    screened trial would teach TPE nothing until its trainer finished (or, with ``constant_liar``, count as a bad
    guess), and screening, where every trial waits, would leave TPE blind for the whole study. (Samplers read a
    study through its private ``_get_trials``: ``ftstudy.optuna_internals``.)"""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[FrozenTrial]:
        shown = []
        for trial in self._study._get_trials(deepcopy=False, states=None, use_cache=use_cache):
            if trial.state == TrialState.RUNNING and trial.intermediate_values:
                trial = copy.copy(trial)
                trial.state = TrialState.COMPLETE
                trial.value = trial.intermediate_values[max(trial.intermediate_values)]
            if states is None or trial.state in states:
                shown.append(copy.deepcopy(trial) if deepcopy else trial)
        return shown


def _seen(study: optuna.Study) -> optuna.Study:
    return cast(optuna.Study, _ScoredSoFar(study))


class Draw(StrEnum):
    """What chose a trial's parameters."""

    BASELINE = "baseline"  # the spec's fixed baseline, enqueued
    STARTUP = "start-up"  # TPE's random start-up draws, before it models anything
    MODEL = "model"  # TPE's model of the scores so far
    RANDOM = "random"
    GRID = "grid"
    DESIGN = "design"  # the Halton design


class EarlyScoreTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE, told every early accuracy as soon as it is reported (``_ScoredSoFar``). It remembers whether
    its last draw was a start-up (random) one, by TPE's own rule (fewer finished or pruned trials than
    ``n_startup_trials``), so the study can record it."""

    last_draw: Draw = Draw.STARTUP

    def infer_relative_search_space(self, study: Any, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return super().infer_relative_search_space(_seen(study), trial)

    def sample_relative(
        self, study: Any, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        seen = _seen(study)
        finished = seen._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED), use_cache=True)
        self.last_draw = Draw.STARTUP if len(finished) < self._n_startup_trials else Draw.MODEL
        return super().sample_relative(seen, trial, search_space)

    def sample_independent(
        self, study: Any, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return super().sample_independent(_seen(study), trial, param_name, param_distribution)


def sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    if spec.sampler.type == "random":
        return optuna.samplers.RandomSampler(seed=spec.sampler.seed)
    if spec.sampler.type == "grid":  # the spec checked that every parameter has a finite list of values
        grid = {name: grid_values(param) or [] for name, param in spec.search_space.items()}
        return _EngineEndedGridSampler(grid, seed=spec.sampler.seed)
    if spec.sampler.type == "halton":
        return HaltonSampler(distributions(spec), seed=spec.sampler.seed)
    # constant_liar: trials still running (and not yet scored) count as bad guesses, so parallel asks do not all
    # pick the same point.
    return EarlyScoreTPESampler(
        n_startup_trials=spec.sampler.n_startup_trials, seed=spec.sampler.seed, constant_liar=True, multivariate=True
    )


def open_storage(url: str, retry: RetryPolicy, pool_size: int = 2, application: str = "ftstudy") -> RDBStorage:
    kwargs = engine_kwargs(url, pool_size, application)
    return retry.call("open the study storage", lambda: RDBStorage(url, engine_kwargs=kwargs))


class StudyStore:
    def __init__(
        self, url: str, name: str, spec: StudySpec, retry: RetryPolicy, storage: RDBStorage | None = None
    ) -> None:
        """``storage``: an open storage to share (the operator keeps one connection pool per database for all its
        studies, so twenty studies do not hold eighty connections)."""
        self.retry = retry
        self.spec = spec
        self.name = name
        self.distributions = distributions(spec)
        self.storage = storage if storage is not None else open_storage(url, retry)
        self.study = self._call(
            "create or load the study",
            lambda: optuna.create_study(
                storage=self.storage, study_name=name, direction="maximize", sampler=sampler(spec), load_if_exists=True
            ),
        )
        self.study_id: int = self._call("find the study", lambda: self.storage.get_study_id_from_name(name))
        self.audit_fraction = 0.0  # the share of new trials audited (``_check_audit``)
        attrs = self._call("read the study", lambda: self.storage.get_study_system_attrs(self.study_id))
        self._check_search_space(attrs)
        # The checkpoints still to delete as recorded when this store opened (a restart's starting point); the
        # engine keeps the live copy and records it (``record_forgetting``).
        self.forgetting: dict[int, int] = {int(n): int(tries) for n, tries in (attrs.get(FORGETTING) or {}).items()}
        self._trial_ids: dict[int, int] = {}
        self._finished: dict[int, FrozenTrial] = {}
        self._unfinished: list[FrozenTrial] = []
        self._max_trial_id = -1
        # Every trial's standing as this process last read or wrote it (``standing``). Only the study's pass writes
        # here (ask, launches, reads of the trials); ending a trial drops its entry until the next read of it.
        self._standing: dict[int, Standing] = {}
        self._standing_lock = threading.Lock()

    def _call(self, what: str, function: Callable[[], T]) -> T:
        return self.retry.call(what, function)

    def _check_search_space(self, attrs: dict[str, Any]) -> None:
        """A resumed study must search the space it started with, or its history would mislead the sampler."""
        wanted = json.dumps(self.spec.model_dump(mode="json", by_alias=True)["searchSpace"], sort_keys=True)
        study_id = self.study_id
        self._check_audit(attrs)  # before SPEC is recorded: SPEC without it marks a study older than audits
        if SPEC not in attrs:
            self._call("record the search space", lambda: self.storage.set_study_system_attr(study_id, SPEC, wanted))
        if TOP_K not in attrs:
            k = self.spec.promotion.k if self.spec.promotion.policy == "topK" else 5
            self._call("record the report's K", lambda: self.storage.set_study_system_attr(study_id, TOP_K, k))
        elif attrs[SPEC] != wanted:
            raise StudyConflict(
                f"study {self.name!r} already exists in the storage with a different searchSpace; "
                "a study's search space cannot change: use a new study name"
            )
        self._check_mode(attrs)

    def _check_mode(self, attrs: dict[str, Any]) -> None:
        """A study keeps the promotion mode it started with: its trials were launched to train on, or to stop at
        the early step, and switching would strand them. The default changed from online to screen, so a spec file
        that never named a mode must not switch an older study silently. (Studies that predate this record adopt
        the spec's mode on their first open.)"""
        mode = self.spec.promotion.mode
        recorded = attrs.get(MODE)
        if recorded is None:
            self._call("record the mode", lambda: self.storage.set_study_system_attr(self.study_id, MODE, mode))
        elif recorded != mode:
            raise StudyConflict(
                f"study {self.name!r} was started with promotion.mode {recorded}, and this spec asks for {mode} "
                "(a spec that names no mode gets screen, the default; it used to be online); a study's mode cannot "
                f"change: set promotion.mode: {recorded} to go on with it, or use a new study name"
            )

    def _check_audit(self, attrs: dict[str, Any]) -> None:
        """The share of new trials to audit (``audit_fraction``). A study that existed before audits did (its search
        space is recorded, its audit fraction is not) keeps its meaning: it never audits, whatever the spec's
        default says now. Otherwise the spec's fraction holds (in a cluster it cannot change, ``promotion`` being
        frozen; on one machine it may, like ``k``), and is recorded for ``ftstudy report``'s expected count."""
        recorded = attrs.get(AUDIT_FRACTION)
        if AUDIT_FRACTION not in attrs and SPEC in attrs:
            self._call(
                "record no audit", lambda: self.storage.set_study_system_attr(self.study_id, AUDIT_FRACTION, None)
            )
            self.audit_fraction = 0.0
            return
        if AUDIT_FRACTION in attrs and recorded is None:
            self.audit_fraction = 0.0
            return
        self.audit_fraction = audit.fraction_of(self.spec)
        if recorded != self.audit_fraction:
            fraction = self.audit_fraction
            self._call("record the audit fraction",
                       lambda: self.storage.set_study_system_attr(self.study_id, AUDIT_FRACTION, fraction))  # fmt: skip

    def trials(self) -> list[FrozenTrial]:
        """Every trial that has been asked for (enqueued-but-never-asked ones are not trials yet).

        Optuna refuses to change a finished trial, so finished ones are kept here and each poll reads only the
        trials that were unfinished last time plus the new ones: the rows read per poll stay proportional to what
        runs, not to the study's history (optuna#3048, #4444).
        """
        unfinished = {optuna_internals.trial_id(t) for t in self._unfinished}
        fresh = self._call(
            "read the trials",
            lambda: optuna_internals.trials_since(self.storage, self.study_id, unfinished, self._max_trial_id),
        )
        self._unfinished = []
        for trial in fresh:
            self._max_trial_id = max(self._max_trial_id, optuna_internals.trial_id(trial))
            if trial.state.is_finished():
                self._finished[trial.number] = trial
            else:
                self._unfinished.append(trial)
        with self._standing_lock:
            self._standing.update((trial.number, Standing.of(trial)) for trial in fresh)
        everything = [*self._finished.values(), *self._unfinished]
        return sorted((t for t in everything if t.state in _PHASES), key=lambda t: t.number)

    def _trial_id(self, number: int) -> int:
        if number not in self._trial_ids:
            self._trial_ids[number] = self._call(
                "find a trial",
                lambda: self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number),
            )
        return self._trial_ids[number]

    def ask(self, baseline: bool) -> tuple[int, dict[str, Any]]:
        """Create the next trial (the enqueued baseline first when asked for): its number and parameters."""
        if baseline and self.spec.baseline is not None:
            params = dict(self.spec.baseline.params)
            self._call("enqueue the baseline", lambda: self.study.enqueue_trial(params, skip_if_exists=True))
        trial = self._call("ask for a trial", lambda: self.study.ask(self.distributions))
        self._trial_ids[trial.number] = optuna_internals.trial_id(trial)
        with self._standing_lock:
            self._standing[trial.number] = Standing(TrialState.RUNNING, 0, 0, dict(trial.params))
        drawn = self._drawn_by(baseline and self.spec.baseline is not None)
        trial_id = optuna_internals.trial_id(trial)
        self._call("record what drew it", lambda: self.storage.set_trial_system_attr(trial_id, DRAWN_BY, drawn))
        return int(trial.number), dict(trial.params)

    def _drawn_by(self, baseline: bool) -> str:
        """What chose the trial just asked for: the enqueued baseline is asked first; else the sampler."""
        if baseline:
            return Draw.BASELINE.value
        chosen = self.study.sampler
        if isinstance(chosen, EarlyScoreTPESampler):
            return chosen.last_draw.value
        kinds = {"random": Draw.RANDOM, "grid": Draw.GRID, "halton": Draw.DESIGN}
        return kinds.get(self.spec.sampler.type, Draw.MODEL).value

    def trial(self, number: int) -> FrozenTrial:
        """One trial as stored now (the operator labels its Jobs with the trial's creation time)."""
        trial_id = self._trial_id(number)
        return self._call("read a trial", lambda: self.storage.get_trial(trial_id))

    def standing(self, number: int) -> Standing:
        """The trial's standing for its trainer's state checks and reports (``ftstudy.kube.report_server``), from
        memory where this process knows it, so the checks of every running trial (each every few steps) cost no
        database read. Memory is right because the operator alone starts, resumes and ends trials, and this store
        writes the entry with each launch and resume and with each read of the trials, and drops it before it ends
        the trial; a trial it has not seen yet, or is ending, is read from the database."""
        with self._standing_lock:
            known = self._standing.get(number)
        return known if known is not None else Standing.of(self.trial(number))

    def _update_standing(self, number: int, attempts: int | None = None, resumes: int | None = None) -> None:
        with self._standing_lock:
            known = self._standing.get(number)
            if known is not None:
                self._standing[number] = replace(
                    known,
                    attempts=known.attempts if attempts is None else attempts,
                    resumes=known.resumes if resumes is None else resumes,
                )

    def _forget_standing(self, number: int) -> None:
        """The trial has ended (or may have: ``tell`` skips a finished one): read it from the database next time."""
        with self._standing_lock:
            self._standing.pop(number, None)

    def record_early(self, number: int, step: int, accuracy: float) -> None:
        """A trainer's early accuracy, as it reports it (through the operator's report endpoint)."""
        trial_id = self._trial_id(number)
        self._call("record the early accuracy",
                   lambda: self.storage.set_trial_intermediate_value(trial_id, step, accuracy))  # fmt: skip

    def record_attrs(self, number: int, attrs: dict[str, Any]) -> None:
        """A trainer's results, each a user attribute (``ftstudy.trainer.reporting.UserAttr``)."""
        trial_id = self._trial_id(number)
        for key, value in attrs.items():
            self._call(f"record {key}", functools.partial(self.storage.set_trial_user_attr, trial_id, key, value))

    def record_attempt(self, number: int, attempt: int) -> None:
        trial_id = self._trial_id(number)
        self._call("record a launch", lambda: self.storage.set_trial_system_attr(trial_id, ATTEMPTS, attempt))
        self._update_standing(number, attempts=attempt)

    def record_resume(self, number: int, resume: int) -> None:
        trial_id = self._trial_id(number)
        self._call("record a resume", lambda: self.storage.set_trial_system_attr(trial_id, RESUMES, resume))
        self._update_standing(number, resumes=resume)

    def record_outage(self, trial: FrozenTrial, launch: int) -> None:
        """Launch ``launch`` of the trial ended in an outage (``OUTAGES``): a set, so recording it twice (a crash
        before the next launch) counts it once."""
        value = sorted({*outage_launches(trial), launch})
        trial_id = self._trial_id(trial.number)
        self._call("record an outage", lambda: self.storage.set_trial_system_attr(trial_id, OUTAGES, value))

    def record_preemptions(self, number: int, told: int) -> None:
        trial_id = self._trial_id(number)
        self._call("record a preemption", lambda: self.storage.set_trial_system_attr(trial_id, PREEMPTIONS, told))

    def record_admitted(self, number: int, at: float) -> None:
        trial_id = self._trial_id(number)
        self._call("record an admission", lambda: self.storage.set_trial_system_attr(trial_id, ADMITTED, at))

    def record_requeued(self, number: int, seconds: float, since: float | None) -> None:
        trial_id = self._trial_id(number)
        self._call("record a wait in the queue",
                   lambda: self.storage.set_trial_system_attr(trial_id, REQUEUED, [seconds, since]))  # fmt: skip

    def record_forgetting(self, pending: dict[int, int]) -> None:
        """The checkpoints still to delete and each one's failed tries (``FORGETTING``)."""
        value = {str(number): tries for number, tries in sorted(pending.items())}
        self._call("record the checkpoints to delete",
                   lambda: self.storage.set_study_system_attr(self.study_id, FORGETTING, value))  # fmt: skip

    def record_audit(self, number: int) -> None:
        trial_id = self._trial_id(number)
        self._call("record an audit", lambda: self.storage.set_trial_system_attr(trial_id, AUDIT, True))

    def record_decision(self, number: int, decision: Decision) -> None:
        trial_id = self._trial_id(number)
        self._call("record a decision", lambda: self.storage.set_trial_system_attr(trial_id, DECISION, decision.value))

    def record_passed(self, number: int, rungs: int) -> None:
        """Promoted past rung ``rungs - 1``: recorded before its resume, so a restart resumes it, never re-decides."""
        trial_id = self._trial_id(number)
        self._call("record a rung promotion", lambda: self.storage.set_trial_system_attr(trial_id, PASSED, rungs))

    def prune(self, number: int) -> None:
        self._forget_standing(number)  # from now on a trainer's check reads the database, whatever the tell does
        self._call("cancel a trial", lambda: self.study.tell(number, state=TrialState.PRUNED, skip_if_finished=True))

    def complete(self, number: int, value: float) -> None:
        self._forget_standing(number)
        self._call("finish a trial", lambda: self.study.tell(number, value, skip_if_finished=True))

    def fail(self, number: int, reason: str) -> None:
        trial_id = self._trial_id(number)
        state = self._call("read a trial", lambda: self.storage.get_trial(trial_id).state)
        if state.is_finished():
            return
        self._call(
            "record a failure",
            lambda: self.storage.set_trial_user_attr(trial_id, UserAttr.FAILURE_REASON.value, reason),
        )
        self._forget_standing(number)
        self._call("fail a trial", lambda: self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True))


def phase(trial: FrozenTrial) -> Phase:
    return _PHASES[trial.state]


def early_accuracy(trial: FrozenTrial) -> float | None:
    """The early accuracy is the trial's one intermediate value (at the early step)."""
    if not trial.intermediate_values:
        return None
    return float(trial.intermediate_values[max(trial.intermediate_values)])


def decision(trial: FrozenTrial) -> Decision | None:
    value = trial.system_attrs.get(DECISION)
    return Decision(value) if value else None


def passed(trial: FrozenTrial) -> int:
    return int(trial.system_attrs.get(PASSED, 0))


def later_scores(trial: FrozenTrial) -> tuple[float, ...]:
    """The validation accuracy at each rung after the early one where the trainer stopped it, in rung order."""
    recorded = trial.user_attrs.get(UserAttr.RUNG_ACCURACY.value) or {}
    return tuple(float(recorded[step]) for step in sorted(recorded, key=int))


def attempts(trial: FrozenTrial) -> int:
    return int(trial.system_attrs.get(ATTEMPTS, 0))


def resumes(trial: FrozenTrial) -> int:
    return int(trial.system_attrs.get(RESUMES, 0))


def requeued(trial: FrozenTrial) -> tuple[float, float | None]:
    """``ftstudy:requeued``: the seconds the trial's Jobs waited in the queue again after its first admission, and
    since when (unix s) it waits now, or None."""
    recorded = trial.system_attrs.get(REQUEUED)
    if not (isinstance(recorded, list) and len(recorded) == 2):
        return 0.0, None
    seconds, since = recorded
    return float(seconds), float(since) if isinstance(since, int | float) else None


def outage_launches(trial: FrozenTrial) -> tuple[int, ...]:
    """The trial's launches that ended in an outage (``OUTAGES``)."""
    recorded = trial.system_attrs.get(OUTAGES)
    return tuple(int(n) for n in recorded) if isinstance(recorded, list) else ()


def preemptions(trial: FrozenTrial) -> int:
    """How many of the trial's preemptions the study has told so far."""
    told = trial.system_attrs.get(PREEMPTIONS)
    return told if isinstance(told, int) else 0


def is_screened(trial: FrozenTrial) -> bool:
    """The trainer checkpointed at the early step and exited (``promotion.mode: screen``); until a resumed run
    records its result, the trial stays so."""
    return trial.user_attrs.get(UserAttr.OUTCOME.value) == "screened"


def screening_counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """``screened``: trials that paused at the early step with a checkpoint, whatever came next; ``suspended``: paused
    now, holding no GPU (waiting for a verdict, or promoted and waiting for a slot); ``promoted``: continued after
    screening. The status, the metrics and ``ftstudy run``'s status line all count them so."""
    screened = [t for t in trials if UserAttr.CHECKPOINT.value in t.user_attrs]
    promoted = [t for t in screened if decision(t) is not None]
    # Each resume ends at a rung (one more later score) or at the end: one running has more resumes than those.
    suspended = [t for t in screened if t.state == TrialState.RUNNING and is_screened(t)
                 and resumes(t) <= len(later_scores(t))]  # fmt: skip
    return {"screened": len(screened), "suspended": len(suspended), "promoted": len(promoted)}


def rung_counts(trials: Sequence[FrozenTrial], fractions: Sequence[float]) -> list[dict[str, Any]]:
    """For each rung of ``promotion.rungs``: the trials scored there, promoted past it (at the last rung: to the end)
    and pruned there. The baseline and audited trials bypass rungs, so they are not counted (as in the core's
    ``rung_standings``). What the status, the metrics and ``ftstudy run`` show of screening in rungs."""
    out = []
    last = len(fractions) - 1
    for rung, fraction in enumerate(fractions):
        scored = [t for t in trials if not (is_baseline(t) or is_audit(t)) and _score_at(t, rung) is not None]
        if rung < last:
            promoted = [t for t in scored if passed(t) > rung]
        else:
            promoted = [t for t in scored if decision(t) is Decision.CONTINUE]
        went_on = {t.number for t in promoted}
        pruned = [t for t in scored if t.state == TrialState.PRUNED and t.number not in went_on]
        out.append({"fraction": fraction, "scored": len(scored), "promoted": len(promoted), "pruned": len(pruned)})
    return out


def _score_at(trial: FrozenTrial, rung: int) -> float | None:
    if rung == 0:
        return early_accuracy(trial)
    later = later_scores(trial)
    return later[rung - 1] if len(later) >= rung else None


def drawn_by(trial: FrozenTrial) -> str | None:
    """What chose the trial's parameters (``Draw``); None for a trial recorded before this was kept."""
    value = trial.system_attrs.get(DRAWN_BY)
    return str(value) if value is not None else None


def is_baseline(trial: FrozenTrial) -> bool:
    return FIXED_PARAMS in trial.system_attrs


def is_audit(trial: FrozenTrial) -> bool:
    """Drawn for audit when created: trained to the end whatever its early accuracy (``ftstudy.audit``)."""
    return bool(trial.system_attrs.get(AUDIT))


def has_result(trial: FrozenTrial) -> bool:
    return trial.user_attrs.get(UserAttr.OUTCOME.value) in {"completed", "diverged"}
