"""The decision core: given a study's plan and what is observed of every trial, what to do next.

Pure: no I/O, no clock, no randomness. The local runner and the Kubernetes operator both observe (Optuna storage
plus whatever runs the trials), call ``decide``, and apply the actions it returns. Everything the core needs to
remember lives in what it observes (Optuna's trial state, the early accuracy, a recorded decision, the number of
launches), so a restarted runner decides exactly as the one that died would have.

Rules, in order:

1. A running trial whose early accuracy is in and not yet decided is continued or cancelled by the promotion policy
   (the baseline always continues). ``topK`` continues it when fewer than K trials rank ahead of it so far.
2. A trial whose process ended is finished (the trainer recorded a result), retried (a crash, while retries remain),
   or failed. Bad input is never retried: it would fail the same way. Nor is a malformed report (a string where a
   number belongs): the trial fails with the reason, whatever its process is doing.
3. A RUNNING trial with no process (the runner or operator died) is relaunched the same way: it is matched against
   what actually runs, so no trial stays RUNNING forever. One that was never launched at all (asked for, then the
   launcher died) is launched as its first attempt: no retry is spent on what never ran.
4. ``maxFailedTrials`` failures end the study as failed; otherwise new trials start while fewer than
   ``parallelism`` run and fewer than ``maxTrials`` exist (the baseline first). With every trial created and none
   running, the study is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


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
    policy: str = "topK"  # topK | percentile | median | none
    k: int = 5
    percentile: float = 50.0
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


@dataclass(frozen=True)
class LaunchNew:
    baseline: bool = False


@dataclass(frozen=True)
class Relaunch:
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


Action = LaunchNew | Relaunch | Continue | Cancel | Finish | Fail | StudyDone | StudyFailed


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), written out to keep the core dependency-free."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def promote(plan: Plan, trial: TrialView, scored: Sequence[tuple[int, float]]) -> bool:
    """Should this trial train to the end? ``scored`` holds (number, early accuracy) of every trial scored so far,
    this one included.

    ``topK`` ranks by early accuracy, ties going to the earlier trial: a later trial must beat, not merely equal,
    the K trials already holding the top places. So the decision does not depend on which report arrived first.
    """
    if trial.is_baseline or plan.policy == "none":
        return True
    score = trial.early_accuracy
    assert score is not None
    if plan.policy == "topK":
        ahead = sum(1 for number, other in scored if other > score or (other == score and number < trial.number))
        return ahead < plan.k
    q = 50.0 if plan.policy == "median" else plan.percentile
    return score >= percentile([other for _, other in scored], q)


def _ended(plan: Plan, trial: TrialView) -> Action:
    """A RUNNING trial whose process is gone: finish it, retry it, or fail it."""
    if trial.has_result:
        return Finish(trial.number)
    if trial.attempts == 0 and trial.process is Process.ABSENT:
        return Relaunch(trial.number, 1)  # asked for, never launched: its first attempt, not a retry
    reason = (
        trial.failure_reason
        or {
            Process.SUCCEEDED: "the trainer exited without recording a result",
            Process.FAILED: "the trainer failed",
            Process.ABSENT: "the trial's process disappeared",
        }[trial.process]
    )
    if trial.retryable and trial.attempts <= plan.retries_per_trial:
        return Relaunch(trial.number, trial.attempts + 1)
    if trial.attempts > 1:
        reason = f"{reason} (after {trial.attempts} attempts)"
    return Fail(trial.number, reason)


def decide(plan: Plan, trials: Sequence[TrialView]) -> list[Action]:
    """The actions to take now; applying them and deciding again converges, and never repeats work."""
    ordered = sorted(trials, key=lambda t: t.number)
    scored = [(t.number, t.early_accuracy) for t in ordered if t.early_accuracy is not None]
    actions: list[Action] = []
    failed = sum(1 for t in ordered if t.phase is Phase.FAILED)
    running = 0

    for trial in ordered:
        if trial.phase is not Phase.RUNNING:
            continue
        if trial.report_error is not None:
            actions.append(Fail(trial.number, trial.report_error))
            failed += 1
            continue
        if trial.process is Process.RUNNING:
            running += 1
            if trial.early_accuracy is not None and trial.decision is None:
                if promote(plan, trial, scored):
                    actions.append(Continue(trial.number))
                else:
                    actions.append(Cancel(trial.number))
                    running -= 1
            continue
        action = _ended(plan, trial)
        actions.append(action)
        if isinstance(action, Relaunch):
            running += 1
        elif isinstance(action, Fail):
            failed += 1

    if failed >= plan.max_failed_trials:
        relaunched = {a.number for a in actions if isinstance(a, Relaunch)}
        actions = [a for a in actions if not isinstance(a, Relaunch | Continue)]
        ending = {a.number for a in actions if isinstance(a, Cancel | Fail)}
        for trial in ordered:
            still_running = trial.process is Process.RUNNING or trial.number in relaunched
            if trial.phase is Phase.RUNNING and still_running and trial.number not in ending:
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

    if created >= plan.max_trials and running == 0:
        actions.append(StudyDone())
    return actions
