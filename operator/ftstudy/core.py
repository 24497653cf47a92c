"""The decision core: given a study's plan and what is observed of every trial, what to do next.

Pure: no I/O, no clock, no randomness. The local runner and the Kubernetes operator both observe (Optuna storage
plus whatever runs the trials), call ``decide``, and apply the actions it returns. Everything the core needs to
remember lives in what it observes (Optuna's trial state, the early accuracy, a recorded decision, the number of
launches), so a restarted runner decides exactly as the one that died would have.

Rules, in order:

1. A scored trial not yet decided gets the promotion policy's verdict (``ftstudy.promotion``; the baseline always
   continues): continue, cancel, or wait. Online (``screening`` False) that is a trial still training; screening,
   a trial that checkpointed at its early step and exited (``screened``), whose continuation is a resume.
2. A trial whose process ended is finished (the trainer recorded a result), retried (a crash, while retries remain),
   or failed. Bad input is never retried: it would fail the same way. Nor is a malformed report (a string where a
   number belongs): the trial fails with the reason, whatever its process is doing. A continued screened trial is
   resumed from its checkpoint (its first resume is not a retry; a failed resume is retried like a launch).
3. A RUNNING trial with no process (the runner or operator died) is relaunched the same way: it is matched against
   what actually runs, so no trial stays RUNNING forever. One that was never launched at all (asked for, then the
   launcher died) is launched as its first attempt: no retry is spent on what never ran.
4. ``maxFailedTrials`` failures end the study as failed; otherwise resumes, then new trials, start while fewer
   than ``parallelism`` run and fewer than ``maxTrials`` exist (the baseline first). With every trial created, none
   running and none screened and undecided or continued and unfinished, the study is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ftstudy.promotion import PromotionPolicy, Standing, TopK, Verdict


class Phase(StrEnum):
    """The trial's state in the study's storage (Optuna's, without WAITING)."""

    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"


class Process(StrEnum):
    """What the executor sees of the trial's process (or Job)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"  # exited 0
    FAILED = "failed"  # exited non-zero, was killed, or its pod failed
    ABSENT = "absent"  # nothing runs for it and nothing ended: the launcher died, or it was never started


class Decision(StrEnum):
    CONTINUE = "continue"


@dataclass(frozen=True)
class Plan:
    """The part of a study's spec the core decides by, as plain data."""

    max_trials: int
    parallelism: int
    max_failed_trials: int
    retries_per_trial: int
    promotion: PromotionPolicy = field(default_factory=TopK)
    screening: bool = False  # trials stop at the early step (checkpointed) and only the continued ones resume
    has_baseline: bool = False


@dataclass(frozen=True)
class TrialView:
    number: int
    phase: Phase
    process: Process = Process.ABSENT
    early_accuracy: float | None = None
    decision: Decision | None = None
    has_result: bool = False  # the trainer recorded its final outcome (completed or diverged)
    attempts: int = 1  # launches so far
    is_baseline: bool = False
    retryable: bool = True  # False when the process failed on bad input
    failure_reason: str | None = None
    report_error: str | None = None  # what was malformed in what the trainer reported
    screened: bool = False  # the trainer checkpointed at the early step and exited (screening)
    resumes: int = 0  # resume launches so far (screening); ``process`` is then the latest resume's


@dataclass(frozen=True)
class LaunchNew:
    baseline: bool = False


@dataclass(frozen=True)
class Relaunch:
    number: int
    attempt: int


@dataclass(frozen=True)
class Resume:
    """Launch a continued screened trial from its checkpoint."""

    number: int
    attempt: int


@dataclass(frozen=True)
class Continue:
    number: int


@dataclass(frozen=True)
class Cancel:
    number: int


@dataclass(frozen=True)
class Finish:
    number: int


@dataclass(frozen=True)
class Fail:
    number: int
    reason: str


@dataclass(frozen=True)
class StudyDone:
    pass


@dataclass(frozen=True)
class StudyFailed:
    reason: str


Action = LaunchNew | Relaunch | Resume | Continue | Cancel | Finish | Fail | StudyDone | StudyFailed


def standing_of(plan: Plan, trials: Sequence[TrialView]) -> Standing:
    """The early accuracies known now, and whether they are all there will be (every trial created and every one
    still to count scored: a trial that ended unscored is not waited for)."""
    scored = [(t.number, t.early_accuracy) for t in trials if t.early_accuracy is not None]
    unscored_ended = sum(1 for t in trials if t.phase is not Phase.RUNNING and t.early_accuracy is None)
    expected = plan.max_trials - unscored_ended
    return Standing(scored, expected, len(scored) >= expected, plan.screening)


def verdict(plan: Plan, trial: TrialView, standing: Standing) -> Verdict:
    """The policy's answer for a scored trial; the baseline always trains to the end."""
    assert trial.early_accuracy is not None
    if trial.is_baseline:
        return Verdict.PROMOTE
    return plan.promotion.verdict(trial.number, trial.early_accuracy, standing)


def _why(trial: TrialView, which: str = "") -> str:
    """Why a launch ended without a result: what the trainer or executor said, else what was seen of it."""
    seen = {
        Process.SUCCEEDED: f"the {which}trainer exited without recording a result",
        Process.FAILED: f"the {which}trainer failed",
        Process.ABSENT: f"the {which}trial's process disappeared",
    }
    return trial.failure_reason or seen.get(trial.process, "")


def _resume_or_fail(plan: Plan, trial: TrialView) -> Resume | Fail:
    """A continued screened trial with nothing running for it and no result: resume it (again)."""
    if trial.resumes == 0:
        return Resume(trial.number, 1)
    reason = _why(trial, "resumed ")
    if trial.retryable and trial.resumes <= plan.retries_per_trial:
        return Resume(trial.number, trial.resumes + 1)
    return Fail(trial.number, f"{reason} (after {trial.resumes} resumes)" if trial.resumes > 1 else reason)


def _ended(plan: Plan, trial: TrialView) -> Action:
    """A RUNNING trial whose process is gone: finish it, retry it, or fail it."""
    if trial.has_result:
        return Finish(trial.number)
    if trial.attempts == 0 and trial.process is Process.ABSENT:
        return Relaunch(trial.number, 1)  # asked for, never launched: its first attempt, not a retry
    reason = _why(trial)
    if trial.retryable and trial.attempts <= plan.retries_per_trial:
        return Relaunch(trial.number, trial.attempts + 1)
    if trial.attempts > 1:
        reason = f"{reason} (after {trial.attempts} attempts)"
    return Fail(trial.number, reason)


def decide(plan: Plan, trials: Sequence[TrialView]) -> list[Action]:
    """The actions to take now; applying them and deciding again converges, and never repeats work."""
    ordered = sorted(trials, key=lambda t: t.number)
    standing = standing_of(plan, ordered)
    actions: list[Action] = []
    failed = sum(1 for t in ordered if t.phase is Phase.FAILED)
    running = 0
    to_resume: list[TrialView] = []  # continued screened trials waiting for a free slot
    undecided = 0  # screened trials the policy waits on: the study is not done while there are any

    for trial in ordered:
        if trial.phase is not Phase.RUNNING:
            continue
        if trial.report_error is not None:
            actions.append(Fail(trial.number, trial.report_error))
            failed += 1
            continue
        if trial.process is Process.RUNNING:
            running += 1
            # Online, a trial is decided while it trains; screening, one that reported is about to exit.
            if trial.early_accuracy is not None and trial.decision is None and not trial.screened:
                answer = verdict(plan, trial, standing) if not plan.screening or trial.is_baseline else Verdict.WAIT
                if answer is Verdict.PROMOTE:
                    actions.append(Continue(trial.number))
                elif answer is Verdict.PRUNE:
                    actions.append(Cancel(trial.number))
                    running -= 1
            continue
        if trial.has_result:
            actions.append(Finish(trial.number))
            continue
        if trial.screened and trial.early_accuracy is not None:
            if trial.decision is not None:
                to_resume.append(trial)
                continue
            answer = verdict(plan, trial, standing)
            if answer is Verdict.PROMOTE:
                actions.append(Continue(trial.number))
            elif answer is Verdict.PRUNE:
                actions.append(Cancel(trial.number))
            undecided += 1 if answer is not Verdict.PRUNE else 0  # a continued one still has to be resumed
            continue
        action = _ended(plan, trial)
        actions.append(action)
        if isinstance(action, Relaunch):
            running += 1
        elif isinstance(action, Fail):
            failed += 1

    if failed < plan.max_failed_trials:
        for trial in to_resume:
            resume = _resume_or_fail(plan, trial)
            if isinstance(resume, Fail):
                actions.append(resume)
                failed += 1
            elif running < plan.parallelism:
                actions.append(resume)
                running += 1
            else:
                undecided += 1  # waits for a slot

    if failed >= plan.max_failed_trials:
        relaunched = {a.number for a in actions if isinstance(a, Relaunch | Resume)}
        actions = [a for a in actions if not isinstance(a, Relaunch | Resume | Continue)]
        ending = {a.number for a in actions if isinstance(a, Cancel | Fail)}
        for trial in ordered:
            still_running = trial.process is Process.RUNNING or trial.number in relaunched
            paused = trial.screened and not trial.has_result and trial.process is not Process.RUNNING
            if trial.phase is Phase.RUNNING and (still_running or paused) and trial.number not in ending:
                actions.append(Fail(trial.number, "stopped: the study failed"))
        actions.append(StudyFailed(f"{failed} trials failed; maxFailedTrials is {plan.max_failed_trials}"))
        return actions

    created = len(ordered)
    baseline_exists = any(t.is_baseline for t in ordered)
    while running < plan.parallelism and created < plan.max_trials:
        baseline = plan.has_baseline and not baseline_exists
        actions.append(LaunchNew(baseline=baseline))
        baseline_exists = True
        created += 1
        running += 1

    if created >= plan.max_trials and running == 0 and undecided == 0:
        actions.append(StudyDone())
    return actions
