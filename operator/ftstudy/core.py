"""The decision core: given a study's plan and what is observed of every trial, what to do next.

Pure: no I/O, no clock, no randomness. The local runner and the Kubernetes operator both observe (Optuna storage
plus whatever runs the trials), call ``decide``, and apply the actions it returns. Everything the core needs to
remember lives in what it observes (Optuna's trial state, the early accuracy, a recorded decision, the number of
launches), so a restarted runner decides exactly as the one that died would have.

Rules, in order:

1. A scored trial not yet decided gets the promotion policy's verdict (``ftstudy.promotion``; the baseline and
   audited trials always continue): continue, cancel, or wait. Online (``screening`` False) that is a trial still
   training; screening, a trial that checkpointed at its early step and exited (``screened``), whose continuation
   is a resume. The baseline and audited trials train to the end in either mode, so they are decided online.
2. A trial whose process ended is finished (the trainer recorded a result), retried (a crash, while retries remain),
   or failed. Bad input is never retried: it would fail the same way. Nor is a malformed report (a string where a
   number belongs): the trial fails with the reason, whatever its process is doing. A continued screened trial is
   resumed from its checkpoint (its first resume is not a retry; a failed resume is retried like a launch). A
   launch that ended in an outage (the trainer could not reach its database, object store or report endpoint: not
   the trial's fault, and the next trial would meet it too) is launched again however often it happens, spending
   no retry; the shell waits a back-off before it does (``outage`` on the action).
3. A RUNNING trial with no process (the runner or operator died) is relaunched the same way: it is matched against
   what actually runs, so no trial stays RUNNING forever. One that was never launched at all (asked for, then the
   launcher died) is launched as its first attempt: no retry is spent on what never ran.
4. Screening in rungs (``plan.rungs`` > 1, ``promotion.rungs``): a screened trial stops at every rung and is
   decided there (``ftstudy.rungs``): at each rung but the last, it goes on (``PassRung``, then a resume) while in
   the top 1/``reduction`` of the trials scored at that rung, and is pruned by the rung's final ranking otherwise;
   at the last rung rule 1 applies among the trials scored there. The baseline and audited trials bypass rungs.
5. ``maxFailedTrials`` failures end the study as failed; otherwise resumes, then new trials, start while fewer
   than ``parallelism`` run and fewer than ``maxTrials`` exist (the baseline first). With every trial created, none
   running and none screened and undecided or continued and unfinished, the study is done.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ftstudy.promotion import PromotionPolicy, Standing, TopK, Verdict, rank


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
    rungs: int = 1  # screening points: 1 is the single early point; more stop a trial at each (``ftstudy.rungs``)
    reduction: int = 3  # at a rung but the last, the top 1/reduction go on


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
    # Drawn at random when created (by the shell: ``ftstudy.audit``) to train to the end whatever its early accuracy:
    # an unbiased sample for measuring how well early accuracy predicts (``ftstudy.trust``). In screen mode the shell
    # launches it as a full run, like the baseline. Last, so that positional construction keeps its meaning.
    is_audit: bool = False
    # Rungs (``plan.rungs`` > 1): the validation accuracy at rungs 1, 2... where the trial was scored (rung 0's is
    # ``early_accuracy``), and how many rungs it was promoted past (a recorded decision, so it survives restarts).
    later_scores: tuple[float, ...] = ()
    passed: int = 0
    # The latest launch ended in an outage (``process`` FAILED: the trainer could not reach its database, object
    # store or report endpoint), and how many earlier launches did (recorded by the shell): those spent no retry.
    outage: bool = False
    outages: int = 0  # among the screening attempts
    resume_outages: int = 0  # among the resumes


@dataclass(frozen=True)
class LaunchNew:
    baseline: bool = False


@dataclass(frozen=True)
class Relaunch:
    number: int
    attempt: int
    outage: str | None = None  # why the last attempt ended, when an outage did it: no retry spent, the shell waits


@dataclass(frozen=True)
class Resume:
    """Launch a continued screened trial from its checkpoint."""

    number: int
    attempt: int
    outage: str | None = None  # why the last resume ended, when an outage did it: no retry spent, the shell waits


@dataclass(frozen=True)
class Continue:
    number: int


@dataclass(frozen=True)
class PassRung:
    """Promote a screened trial past rung ``rung`` (not the last) to the next: record it, then resume it.
    ``place`` (0 the best) among ``of`` scored there so far: for the person watching."""

    number: int
    rung: int
    score: float
    place: int
    of: int


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


Action = LaunchNew | Relaunch | Resume | Continue | PassRung | Cancel | Finish | Fail | StudyDone | StudyFailed


def standing_of(plan: Plan, trials: Sequence[TrialView]) -> Standing:
    """The early accuracies known now, and whether they are all there will be (every trial created and every one
    still to count scored: a trial that ended unscored is not waited for)."""
    scored = [(t.number, t.early_accuracy) for t in trials if t.early_accuracy is not None]
    unscored_ended = sum(1 for t in trials if t.phase is not Phase.RUNNING and t.early_accuracy is None)
    expected = plan.max_trials - unscored_ended
    return Standing(scored, expected, len(scored) >= expected, plan.screening)


def verdict(plan: Plan, trial: TrialView, standing: Standing, score: float | None = None) -> Verdict:
    """The policy's answer for a scored trial (``score``: at the last rung, else its early accuracy); the baseline
    and audited trials always train to the end (an audited trial's early accuracy still counts in the standing
    others are ranked in)."""
    score = trial.early_accuracy if score is None else score
    assert score is not None
    if trial.is_baseline or trial.is_audit:
        return Verdict.PROMOTE
    return plan.promotion.verdict(trial.number, score, standing)


def score_at(trial: TrialView, rung: int) -> float | None:
    """The trial's validation accuracy at a rung, if it was scored there."""
    if rung == 0:
        return trial.early_accuracy
    return trial.later_scores[rung - 1] if len(trial.later_scores) >= rung else None


def kept(plan: Plan, scored: int) -> int:
    """How many of ``scored`` trials a complete rung (not the last) keeps: the top 1/reduction, never fewer than the
    policy's K (so the last rung still has K to choose from), never more than there are."""
    least = plan.promotion.k if isinstance(plan.promotion, TopK) else 1
    return min(scored, max(scored // plan.reduction, least))


def rung_standings(plan: Plan, trials: Sequence[TrialView]) -> list[Standing]:
    """The standing at every rung. Rung 0's is ``standing_of``'s. A later rung's trials are those promoted past the
    previous one (the baseline and audited trials bypass rungs): how many is known once the previous rung is
    complete (its final ranking promotes the last ones), and the rung is complete when every one of them is scored
    there or ended; before that, the expected count is at least what the previous rung will keep."""
    standings = [standing_of(plan, trials)]
    for rung in range(1, plan.rungs):
        before = standings[-1]
        population = [t for t in trials if not (t.is_baseline or t.is_audit) and score_at(t, rung - 1) is not None]
        scored = [(t.number, s) for t in population if (s := score_at(t, rung)) is not None]
        going = sum(
            1 for t in population if t.phase is Phase.RUNNING and t.passed >= rung and score_at(t, rung) is None
        )
        if before.complete:
            keep = kept(plan, len(before.scored))
            late = sum(
                1
                for t in population
                if t.phase is Phase.RUNNING and t.passed < rung and score_at(t, rung) is None
                and rank(t.number, score_at(t, rung - 1) or 0.0, before.scored) < keep
            )  # fmt: skip
            expected = len(scored) + going + late
            standings.append(Standing(scored, expected, going + late == 0, plan.screening))
        else:
            expected = max(len(scored) + going, kept(plan, before.expected))
            standings.append(Standing(scored, expected, False, plan.screening))
    return standings


def rung_verdict(plan: Plan, trial: TrialView, rung: int, standing: Standing) -> tuple[Verdict, int]:
    """At a rung but the last (ASHA's asynchronous promotion): promote while the trial ranks in the top
    floor(n/reduction) of the n scored there so far; once the rung is complete, its final ranking (``kept``)
    promotes the rest of the top and prunes the others. Also the trial's place (0 the best)."""
    score = score_at(trial, rung)
    assert score is not None
    place = rank(trial.number, score, standing.scored)
    if standing.complete:
        return (Verdict.PROMOTE if place < kept(plan, len(standing.scored)) else Verdict.PRUNE), place
    return (Verdict.PROMOTE if place < len(standing.scored) // plan.reduction else Verdict.WAIT), place


def _why(trial: TrialView, which: str = "") -> str:
    """Why a launch ended without a result: what the trainer or executor said, else what was seen of it."""
    seen = {
        Process.SUCCEEDED: f"the {which}trainer exited without recording a result",
        Process.FAILED: f"the {which}trainer failed",
        Process.ABSENT: f"the {which}trial's process disappeared",
    }
    return trial.failure_reason or seen.get(trial.process, "")


def _resume_or_fail(plan: Plan, trial: TrialView) -> Resume | Fail:
    """A continued screened trial with nothing running for it and no result: resume it (again). Each promotion (past
    a rung, or to the end) earns one resume; resumes beyond those are retries, from one budget per trial."""
    promotions = max(1, trial.passed + (1 if trial.decision is not None else 0))
    if trial.resumes < promotions:
        return Resume(trial.number, trial.resumes + 1)
    if trial.outage:
        return Resume(trial.number, trial.resumes + 1, outage=_why(trial, "resumed "))
    reason = _why(trial, "resumed ")
    spent = trial.resumes - trial.resume_outages - promotions  # resumes beyond the promotions', outages aside
    if trial.retryable and spent + 1 <= plan.retries_per_trial:
        return Resume(trial.number, trial.resumes + 1)
    return Fail(trial.number, f"{reason} (after {trial.resumes} resumes)" if trial.resumes > 1 else reason)


def _ended(plan: Plan, trial: TrialView) -> Action:
    """A RUNNING trial whose process is gone: finish it, retry it, or fail it."""
    if trial.has_result:
        return Finish(trial.number)
    if trial.attempts == 0 and trial.process is Process.ABSENT:
        return Relaunch(trial.number, 1)  # asked for, never launched: its first attempt, not a retry
    if trial.outage:
        return Relaunch(trial.number, trial.attempts + 1, outage=_why(trial))
    reason = _why(trial)
    if trial.retryable and trial.attempts - trial.outages <= plan.retries_per_trial:  # retries spent, + this one
        return Relaunch(trial.number, trial.attempts + 1)
    if trial.attempts > 1:
        reason = f"{reason} (after {trial.attempts} attempts)"
    return Fail(trial.number, reason)


def _most_frequent(reasons: Sequence[str], failed: int) -> str:
    """The study's failure names its commonest cause, so that the condition says what to fix (the trials' own
    reasons stay in each trial's records and ``ftstudy report``)."""
    if not reasons:
        return ""
    reason, count = Counter(reasons).most_common(1)[0]
    return f"; the most frequent reason ({count} of {failed}): {reason}"


def decide(plan: Plan, trials: Sequence[TrialView]) -> list[Action]:
    """The actions to take now; applying them and deciding again converges, and never repeats work."""
    ordered = sorted(trials, key=lambda t: t.number)
    standings = rung_standings(plan, ordered)
    standing = standings[0]
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
                full_run = not plan.screening or trial.is_baseline or trial.is_audit  # not stopping at the early step
                answer = verdict(plan, trial, standing) if full_run else Verdict.WAIT
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
            at = min(len(trial.later_scores), plan.rungs - 1)  # the rung it stopped at
            if trial.decision is not None or trial.passed > at:
                to_resume.append(trial)
                continue
            if at < plan.rungs - 1:
                answer, place = rung_verdict(plan, trial, at, standings[at])
                score = score_at(trial, at)
                assert score is not None
                promote: Action = PassRung(trial.number, at, score, place, len(standings[at].scored))
            else:
                answer = verdict(plan, trial, standings[at], score_at(trial, at))
                promote = Continue(trial.number)
            if answer is Verdict.PROMOTE:
                actions.append(promote)
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
        # One waiting out an outage first: the shell holds its slot through the back-off, which a trial continued
        # meanwhile must not take (the resume would wait again, told anew).
        for trial in sorted(to_resume, key=lambda t: (not t.outage, t.number)):
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
        reasons = [t.failure_reason for t in ordered if t.phase is Phase.FAILED and t.failure_reason]
        reasons += [a.reason for a in actions if isinstance(a, Fail)]
        relaunched = {a.number for a in actions if isinstance(a, Relaunch | Resume)}
        actions = [a for a in actions if not isinstance(a, Relaunch | Resume | Continue | PassRung)]
        ending = {a.number for a in actions if isinstance(a, Cancel | Fail)}
        for trial in ordered:
            still_running = trial.process is Process.RUNNING or trial.number in relaunched
            paused = trial.screened and not trial.has_result and trial.process is not Process.RUNNING
            if trial.phase is Phase.RUNNING and (still_running or paused) and trial.number not in ending:
                actions.append(Fail(trial.number, "stopped: the study failed"))
        limit = f"{failed} trials failed; maxFailedTrials is {plan.max_failed_trials}"
        actions.append(StudyFailed(limit + _most_frequent(reasons, failed)))
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
