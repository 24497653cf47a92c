"""The study loop: observe the storage and the executor, ask the core what to do, do it, repeat.

This is the engine's one shell loop; the local command (``ftstudy run``) drives it with the local executor and the
operator will drive the same ``Engine.step`` from its handlers. A trial is asked for (written to the database)
before its process starts; a launch is counted right after its process (or Job) exists, and that process carries its
attempt number (process.json, the Job's labels), so a count lost in a crash is recovered from what runs, and a crash
before the launch launches the same attempt again. A loop killed at any point and started again therefore finds
every trial either running, finished, or visibly orphaned; the core relaunches orphans instead of creating
duplicates, and no retry is spent on a launch that never happened.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from optuna.trial import FrozenTrial

from ftstudy import audit, core, faults
from ftstudy.core import Decision, Phase, Plan, Process, TrialView
from ftstudy.executor import CAUSE_PENDING, Cleanup, Executor, TrialProcess, trial_output
from ftstudy.promotion import policy_for
from ftstudy.spec import FineTuneStudy, StudySpec
from ftstudy.study_store import (
    StudyStore,
    attempts,
    decision,
    early_accuracy,
    has_result,
    is_audit,
    is_baseline,
    is_screened,
    later_scores,
    outage_launches,
    passed,
    phase,
    preemptions,
    resumes,
    screening_counts,
)
from ftstudy.trainer.reporting import UserAttr
from ftstudy.trial_command import trainer_args
from ftstudy.trial_reports import check_all

log = logging.getLogger(__name__)
CLEANUP_TRIES = 3  # failed tries to delete a checkpoint before the engine gives up and says where it stays
CLEANUP_BACKOFF_SECONDS = 30.0  # before the second try; doubled before each later one
# A launch that ended in an outage is launched again after this long, doubled for each earlier outage of the trial
# up to the cap: a store back in seconds costs seconds, one down for an hour costs a launch every ten minutes.
OUTAGE_BACKOFF_SECONDS = (15.0, 600.0)


def screening(spec: StudySpec) -> bool:
    """Do the study's trials stop at the early step? (Not with policy ``none``: every trial trains to the end.)"""
    return spec.promotion.mode == "screen" and spec.promotion.policy != "none"


def plan_for(spec: StudySpec) -> Plan:
    p = spec.promotion
    return Plan(
        max_trials=spec.budget.max_trials,
        parallelism=spec.budget.parallelism,
        max_failed_trials=spec.budget.max_failed_trials,
        retries_per_trial=spec.budget.retries_per_trial,
        promotion=policy_for(p.policy, p.k, p.percentile, p.min_scored),
        screening=screening(spec),
        has_baseline=spec.baseline is not None,
        rungs=max(1, len(p.rungs)) if screening(spec) else 1,
        reduction=p.reduction,
    )


def view(trial: FrozenTrial, process: TrialProcess | None, report_error: str | None = None) -> TrialView:
    """``report_error``: what ``ftstudy.trial_reports`` found malformed in the trial's results.

    Launches are numbered through a trial's life: screening attempts first, then resumes (a resume launched as
    launch ``attempts + r`` is resume ``r``), so a count that a crash lost is recovered from what runs."""
    process = process or TrialProcess(Process.ABSENT)
    launched = attempts(trial)
    resumed = resumes(trial)
    if process.resume:
        resumed = max(resumed, (process.attempt or 0) - launched)
    else:
        launched = max(launched, process.attempt or 0)
    current = process if process.resume or resumed == 0 else TrialProcess(Process.ABSENT)
    outages = outage_launches(trial)
    return TrialView(
        number=trial.number,
        phase=phase(trial),
        process=current.state,
        early_accuracy=early_accuracy(trial),
        decision=decision(trial),
        has_result=has_result(trial),
        attempts=launched,
        is_baseline=is_baseline(trial),
        is_audit=is_audit(trial),
        retryable=current.retryable,
        failure_reason=trial.user_attrs.get(UserAttr.FAILURE_REASON.value) or current.reason,
        report_error=report_error,
        screened=is_screened(trial),
        resumes=resumed,
        later_scores=later_scores(trial),
        passed=passed(trial),
        outage=current.state is Process.FAILED and current.outage,
        outages=sum(1 for n in outages if n <= launched),
        resume_outages=sum(1 for n in outages if n > launched),
    )


def generated_data_name(spec: StudySpec) -> str:
    """The directory name of a ``dataset.generate`` study's data: keyed by the settings, so a resumed study reuses
    it and a changed one never reads stale pages."""
    assert spec.dataset.generate is not None
    generate = spec.dataset.generate
    # validation_holdout is left out when off, so that a study from before it existed keeps its directory
    settings = generate.model_dump_json(exclude=None if generate.validation_holdout else {"validation_holdout"})
    return f"data-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def prepare_data(spec: StudySpec, workdir: Path, base: Path) -> Path:
    """The dataset directory: the user's, or the generated one (written once, reused on resume)."""
    if spec.dataset.path is not None:
        path = Path(spec.dataset.path)
        return path if path.is_absolute() else (base / path).resolve()
    from ftstudy.task.generator import SplitSizes, write_dataset

    settings = spec.dataset.generate
    assert settings is not None
    directory = workdir / generated_data_name(spec)
    if not (directory / ".complete").exists():
        sizes = SplitSizes(settings.train, settings.validation, settings.test, settings.independent_test)
        write_dataset(directory, settings.seed, sizes, settings.locales, settings.independent_locales,
                      settings.validation_holdout)  # fmt: skip
        (directory / ".complete").write_text(settings.model_dump_json())
    return directory


SPLIT_FILES = ("train", "validation", "test")  # needed; independent_test.jsonl is optional


def check_data(spec: StudySpec, data_dir: Path) -> None:
    """Read every split once, as each trainer will, before any trial starts: a missing file or a malformed line
    would otherwise fail every trial for the same reason after each loaded its model (on a GPU, in a cluster).
    Raises ``DatasetError`` naming the file and line."""
    check_data_dir(data_dir, spec.attributes)


def check_data_dir(data_dir: Path, attributes: Sequence[str]) -> None:
    """``check_data`` by attribute names: what the trainer's ``--stage check-data`` runs in a cluster."""
    from ftstudy.task.dataset import load_jsonl

    for split in SPLIT_FILES:
        load_jsonl(data_dir / f"{split}.jsonl", attributes, limit=0)
    independent = data_dir / "independent_test.jsonl"
    if independent.exists():
        load_jsonl(independent, attributes, limit=0)


@dataclass
class Event:
    """Something a person watching the study wants to see."""

    trial: int | None
    text: str
    reason: str = ""  # a CamelCase word for machines (a Kubernetes Event's reason): TrialLaunched, TrialCancelled...
    at: float = field(default_factory=time.time)  # when it was applied (unix seconds): decision latency ends here


class Engine:
    def __init__(
        self,
        study: FineTuneStudy,
        store: StudyStore,
        executor: Executor,
        data_dir: PurePath,
        trials_root: PurePath | str,
        on_event: Callable[[Event], None] = lambda e: None,
        study_name: str | None = None,
        generate_data: bool = False,
    ) -> None:
        """Trials read the storage URL from their environment, which the executor sets (never their command line).
        ``study_name`` is the Optuna study's name when it differs from the manifest's (a cluster namespaces it).
        ``generate_data``: trials write a generated dataset themselves, into ``data_dir``."""
        self.study = study
        self.spec = study.spec
        self.plan = plan_for(study.spec)
        self.store = store
        self.executor = executor
        self.data_dir = data_dir
        self.trials_root = trials_root
        self.on_event = on_event
        self.study_name = study_name or study.metadata.name
        self.generate_data = generate_data
        self.outcome: core.StudyDone | core.StudyFailed | None = None
        # Why a preempted trial starts again from step 0 (its checkpoints end with its pod), or None: it resumes
        self.restarts_when_preempted: str | None = None
        self.forgetting: dict[int, int] = dict(store.forgetting)  # checkpoints to delete: failed tries (``tidy``)
        self._forget_after: dict[int, float] = {}  # monotonic time before which a failed one is not tried again
        self._waiting: dict[int, str] = {}  # why a deletion waits, as last told (an Event each time it changes)
        self.outage_backoff = OUTAGE_BACKOFF_SECONDS
        # Trials waiting out an outage: the launch that met it, the monotonic time the next may start, and why
        self.outages: dict[int, tuple[int, float, str]] = {}

    def observe(self) -> tuple[list[FrozenTrial], list[TrialView]]:
        """The trials (malformed results removed, see ``ftstudy.trial_reports``) and how they read to the core. A
        launch whose count a crash lost is counted now, from the attempt its process carries."""
        trials, malformed = check_all(self.store.trials())
        processes = self.executor.observe(trials)
        views = [view(t, processes.get(t.number), malformed.get(t.number)) for t in trials]
        for trial, seen in zip(trials, views, strict=True):
            if seen.phase is Phase.RUNNING and seen.attempts > attempts(trial):
                self.store.record_attempt(trial.number, seen.attempts)
            if seen.phase is Phase.RUNNING and seen.resumes > resumes(trial):
                self.store.record_resume(trial.number, seen.resumes)
            if seen.phase is Phase.RUNNING:
                self._preempted(trial, processes.get(trial.number))
        return trials, views

    def _preempted(self, trial: FrozenTrial, process: TrialProcess | None) -> None:
        """Tell each preemption once: the trainer reports the step it checkpointed at before it exits (whatever
        stopped it: a drain, Kueue suspending its Job, a pod deleted by hand); an Event, then the count recorded (a
        crash in between tells it again, never loses it). The cause, when the stopped pod is still to be seen, is
        its DisruptionTarget condition or its last words. The trial goes on from that checkpoint; no retry spent."""
        steps = trial.user_attrs.get(UserAttr.PREEMPTED_AT_STEPS.value)
        told = preemptions(trial)
        if not isinstance(steps, list) or len(steps) <= told:
            return
        seen = process.preempted[-1] if process is not None and process.preempted else None
        if seen == CAUSE_PENDING:  # the executor is still finding out why: told at a later pass, with it
            return
        cause = seen or "its pod was stopped from outside (SIGTERM)"
        goes_on = "it resumes from that checkpoint"
        if self.restarts_when_preempted:
            goes_on = "it starts again from step 0: its checkpoint ended with the pod"
        for step in steps[told:]:
            text = f"preempted after step {step}: {cause}; {goes_on} (no retry spent)"
            self.on_event(Event(trial.number, text, "TrialPreempted"))
        self.store.record_preemptions(trial.number, len(steps))

    def step(self) -> list[core.Action]:
        trials, views = self.observe()
        actions = core.decide(self.plan, views)
        by_number = {t.number: t for t in trials}
        for action in actions:
            self.apply(action, by_number)
        # A trial no longer waiting out an outage (it failed with the study, or its process reads otherwise now) is
        # not said to wait: the TrialsReachStorage condition is made from what is left.
        waiting = {a.number for a in actions if isinstance(a, core.Relaunch | core.Resume) and a.outage is not None}
        self.outages = {n: held for n, held in self.outages.items() if n in waiting}
        self.tidy()
        return actions

    def tidy(self, now: float | None = None) -> None:
        """Ask how the deletion of each pruned trial's checkpoint stands (``cleanup.prunedCheckpoints``), start it
        where it has not, and try a failed one again after a back-off, ``CLEANUP_TRIES`` tries in all; then an Event
        says where the checkpoint stays. Every pass does this, and the operator does it for a study that has ended
        while a deletion its last pass started is still pending."""
        now = time.monotonic() if now is None else now
        for number in sorted(self.forgetting):
            if self._forget_after.get(number, 0.0) <= now:
                self._forget(number, now)

    def _forget(self, number: int, now: float) -> None:
        result = self.executor.forget_checkpoint(number)
        if result.state is Cleanup.DONE:
            self._settled(number)
            self.store.record_forgetting(self.forgetting)
        elif result.state is Cleanup.WAITING:
            if self._waiting.get(number) != result.reason:
                self._waiting[number] = result.reason
                text = f"the deletion of its checkpoint waits: {result.reason}"
                self.on_event(Event(number, text, "CheckpointCleanupWaiting"))
        elif result.state is Cleanup.FAILED:
            tries = self.forgetting[number] + 1
            if tries >= CLEANUP_TRIES:
                self._settled(number)
                where = trial_output(self.trials_root, number)
                text = (f"its checkpoint stays in {where}: {tries} tries to delete it failed, the last because "
                        f"{result.reason}; delete it by hand")  # fmt: skip
                reason = "CheckpointKept"
            else:
                self.forgetting[number] = tries
                delay = CLEANUP_BACKOFF_SECONDS * 2.0 ** (tries - 1)
                self._forget_after[number] = now + delay
                text = (f"could not delete its checkpoint (try {tries} of {CLEANUP_TRIES}): {result.reason}; "
                        f"trying again in {delay:.0f} s")  # fmt: skip
                reason = "CheckpointCleanupFailed"
            self.store.record_forgetting(self.forgetting)
            self.on_event(Event(number, text, reason))

    def _settled(self, number: int) -> None:
        """No more asking about this checkpoint (deleted, or given up on)."""
        del self.forgetting[number]
        self._forget_after.pop(number, None)
        self._waiting.pop(number, None)

    def _args(self, number: int, stage: str) -> list[str]:
        output = trial_output(self.trials_root, number)
        return trainer_args(self.spec, self.study_name, number, str(self.data_dir), output,
                            generate_data=self.generate_data, stage=stage)  # fmt: skip

    def _audited(self, number: int, baseline: bool, trial: FrozenTrial | None = None) -> bool:
        """Is the trial audited? Drawn (``ftstudy.audit``) and recorded before its first launch, so that the trial
        runs and reads as audited from the start; drawn again, to the same answer, if a crash lost the record."""
        if trial is not None and is_audit(trial):
            return True
        if not audit.audited(self.study.metadata.name, number, self.store.audit_fraction, baseline):
            return False
        self.store.record_audit(number)
        return True

    def _launch(self, number: int, attempt: int, full: bool) -> None:
        """``full``: train to the end (the baseline, an audited trial, or any trial when nothing is screened)."""
        args = self._args(number, "screen" if self.plan.screening and not full else "full")
        faults.point("launch.before")
        self.executor.launch(number, attempt, args)
        faults.point("launch.between")
        # Counted once it runs: a crash before the launch launches this same attempt again (no retry spent), and a
        # crash after it finds the attempt on the process or Job (``observe``).
        self.store.record_attempt(number, attempt)

    def _resume(self, trial: FrozenTrial, resume: int) -> None:
        """Launch ``attempts + resume``, marked as a resume: restart-safe like a first launch."""
        number = trial.number
        faults.point("resume.before")
        self.executor.launch(number, attempts(trial) + resume, self._args(number, "resume"), resume=True)
        faults.point("resume.between")
        self.store.record_resume(number, resume)

    def apply(self, action: core.Action, trials: dict[int, FrozenTrial]) -> None:
        match action:
            case core.LaunchNew(baseline=baseline):
                number, params = self.store.ask(baseline)
                audited = self._audited(number, baseline)
                self._launch(number, 1, baseline or audited)
                label = "launched (baseline)" if baseline else "launched (audit)" if audited else "launched"
                queue = self.spec.trial_template.queue_name
                where = f", queued in LocalQueue {queue}" if queue else ""
                self.on_event(Event(number, f"{label} {format_params(params)}{where}", "TrialLaunched"))
            case core.Relaunch(number=number, attempt=attempt, outage=outage):
                if outage is not None and not self._waited_out(trials[number], attempt - 1, outage):
                    return
                baseline = is_baseline(trials[number])
                self._launch(number, attempt, baseline or self._audited(number, baseline, trials[number]))
                if attempt == 1:  # its first launch was interrupted (the launcher died): not a retry
                    self.on_event(Event(number, "launched (its first launch had been interrupted)", "TrialLaunched"))
                elif outage is not None:
                    text = f"relaunched after an outage (attempt {attempt}, no retry spent)"
                    self.on_event(Event(number, text, "TrialRelaunchedAfterOutage"))
                else:
                    self.on_event(Event(number, f"relaunched (attempt {attempt})", "TrialRelaunched"))
            case core.Continue(number=number):
                self.store.record_decision(number, Decision.CONTINUE)
                faults.point("continue.between")
                self.executor.record_decision(number, Decision.CONTINUE.value)
                screened = is_screened(trials[number])
                text = f"{scored(trials[number])} -> " + ("promote" if screened else "continue")
                if is_audit(trials[number]):
                    text += " (audit: trained to the end whatever its early accuracy)"
                self.on_event(Event(number, text, "TrialPromoted" if screened else "TrialContinued"))
            case core.PassRung(number=number, rung=rung, score=score, place=place, of=of):
                self.store.record_passed(number, rung + 1)
                fraction = self.spec.promotion.rungs[rung]
                text = f"promoted past rung {rung} ({fraction:.0%}): {score:.3f}, {ordinal(place + 1)} of {of}"
                self.on_event(Event(number, text, "TrialPromotedPastRung"))
            case core.Resume(number=number, attempt=resume, outage=outage):
                met = attempts(trials[number]) + resume - 1  # the resume launch that met the outage
                if outage is not None and not self._waited_out(trials[number], met, outage):
                    return
                self._resume(trials[number], resume)
                text = "resumed from its checkpoint" + (f" (resume {resume})" if resume > 1 else "")
                if outage is not None:
                    text += " after an outage (no retry spent)"
                self.on_event(Event(number, text, "TrialResumed"))
            case core.Cancel(number=number):
                screened = is_screened(trials[number])
                if screened:
                    # Nothing runs for it. Its checkpoint goes first: a crash before the prune is followed by the
                    # same verdict (a screened trial is pruned only once every trial is scored): nothing leaks.
                    self._drop_checkpoint(number)
                self.store.prune(number)  # before the stop: a trainer that sees PRUNED stops by itself, Job or no Job
                faults.point("cancel.between")
                self.executor.cancel(number)  # a screened trial's ended Job too, in a cluster
                outcome = "pruned (screened, not promoted)" if screened else "cancel"
                text = f"{scored(trials[number])} -> {outcome}"
                self.on_event(Event(number, text, "TrialPruned" if screened else "TrialCancelled"))
            case core.Finish(number=number):
                trial = trials[number]
                self.store.complete(number, early_accuracy(trial) or 0.0)
                final = trial.user_attrs.get(UserAttr.FINAL_ACCURACY.value)
                text = f"finished: final {final:.3f}" if final is not None else "finished: diverged (accuracy 0)"
                self.on_event(Event(number, text, "TrialFinished"))
            case core.Fail(number=number, reason=reason):
                if is_screened(trials[number]):  # a failure is final: its checkpoint will never be resumed
                    self._drop_checkpoint(number)  # first, as for a prune: a crash after it meets the same verdict
                # Recorded first: stopped first, a crash in between would leave a RUNNING trial with no process,
                # which the next pass would retry, spending a retry the failure did not allow.
                self.store.fail(number, reason)
                faults.point("fail.between")
                self.executor.cancel(number)
                self.on_event(Event(number, f"failed: {reason}", "TrialFailed"))
            case core.StudyDone() | core.StudyFailed():
                self.outcome = action
                text = "study done" if isinstance(action, core.StudyDone) else f"study failed: {action.reason}"
                self.on_event(
                    Event(None, text, "StudySucceeded" if isinstance(action, core.StudyDone) else "StudyFailed")
                )

    def _waited_out(self, trial: FrozenTrial, launch: int, why: str, now: float | None = None) -> bool:
        """Has the back-off after the outage that ended ``launch`` passed? The first pass that meets it records the
        outage (so that it spends no retry, whatever happens next: a local runner restarted meanwhile sees only a
        dead trainer), tells an Event and starts the wait (``OUTAGE_BACKOFF_SECONDS``, doubled for each earlier
        outage of the trial). An outage recorded before this engine started (a restart, a crash) waits its whole
        back-off again, told already: how much of it had passed is not known, and going at once would relaunch every
        waiting trial into what may still be an outage at each start of an operator that crash-loops through it."""
        now = time.monotonic() if now is None else now
        number = trial.number
        held = self.outages.get(number)
        if held is None or held[0] != launch:
            earlier = sorted(outage_launches(trial))
            recorded = launch in earlier
            # the outage's place among the trial's outages: the count of earlier ones, doubling the wait each
            index = earlier.index(launch) if recorded else len(earlier)
            if not recorded:  # first, so that a database that fails this write leaves no wait held
                self.store.record_outage(trial, launch)
            base, cap = self.outage_backoff
            delay = min(cap, base * 2.0 ** min(index, 10))
            self.outages[number] = (launch, now + delay, why)
            if not recorded:  # told once: a restarted engine waits again without a new Event
                text = f"{why}: an outage, not the trial's doing; launched again in {delay:.0f} s (no retry spent)"
                self.on_event(Event(number, text, "TrialOutage"))
            return False
        if now < held[1]:
            return False
        del self.outages[number]
        return True

    def _drop_checkpoint(self, number: int) -> None:
        """``cleanup.prunedCheckpoints``: a pruned (or failed) trial's checkpoint is never resumed; free its disk
        (the local runner deletes it, the operator has a Job do it on the trials' volume). Recorded as to delete
        first, then deleted by ``tidy`` at the end of this pass: a crash in between leaves it recorded."""
        if self.spec.cleanup.pruned_checkpoints and number not in self.forgetting:
            self.forgetting[number] = 0
            self.store.record_forgetting(self.forgetting)

    def run(
        self,
        poll_seconds: float = 1.0,
        after_step: Callable[[], None] = lambda: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> core.StudyDone | core.StudyFailed:
        """Step until the study is done or failed; ``after_step`` lets a display look at the study in between."""
        while self.outcome is None:
            self.step()
            after_step()
            if self.outcome is None:
                sleep(poll_seconds)
        return self.outcome


def scored(trial: FrozenTrial) -> str:
    """What a decision was taken on: the early accuracy, or the accuracy at the latest rung (promotion.rungs)."""
    later = later_scores(trial)
    if later:
        return f"accuracy {later[-1]:.3f} at rung {len(later)}"
    return f"early accuracy {early_accuracy(trial) or 0.0:.3f}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def trial_phase_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = {p.value: 0 for p in Phase}
    for trial in trials:
        counts[phase(trial).value] += 1
    return counts


def summary_line(trials: list[FrozenTrial], max_trials: int) -> str:
    counts = trial_phase_counts(trials)
    early = [e for e in (early_accuracy(t) for t in trials) if e is not None]
    best = f"{max(early):.3f}" if early else "-"
    paused = screening_counts(trials)
    suspended = paused["suspended"]
    screening = (
        f", screened {paused['screened']} (suspended {suspended}, promoted {paused['promoted']})"
        if paused["screened"]
        else ""
    )
    audited = sum(1 for t in trials if is_audit(t))
    past = [sum(1 for t in trials if passed(t) > rung) for rung in range(max((passed(t) for t in trials), default=0))]
    if past:
        screening += ", past rung " + ", ".join(f"{rung}: {count}" for rung, count in enumerate(past))
    return (
        f"trials {len(trials)}/{max_trials}: running {counts['running'] - suspended}, continued+finished "
        f"{counts['complete']}, cancelled {counts['pruned']}, failed {counts['failed']}{screening}"
        f"{f', audited {audited}' if audited else ''}; best early accuracy {best}"
    )


def format_params(params: dict[str, object]) -> str:
    """Short and readable: ``learning_rate=3.2e-04 lora_r=16``."""
    parts = []
    for name, value in sorted(params.items()):
        parts.append(f"{name}={value:.2e}" if isinstance(value, float) and abs(value) < 0.01 else f"{name}={value}")
    return " ".join(parts)
