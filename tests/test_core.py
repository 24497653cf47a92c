"""The decision core: examples of each rule, and properties that hold for any observations (hypothesis)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ftstudy.core import (
    Cancel,
    Continue,
    Decision,
    Fail,
    Finish,
    LaunchNew,
    PassRung,
    Phase,
    Plan,
    Process,
    Relaunch,
    Resume,
    StudyDone,
    StudyFailed,
    TrialView,
    decide,
)
from ftstudy.promotion import EveryTrial, Percentile, TopK

PLAN = Plan(max_trials=10, parallelism=2, max_failed_trials=3, retries_per_trial=1, promotion=TopK(2))


def running(number: int, early: float | None = None, **kw: object) -> TrialView:
    return TrialView(number=number, phase=Phase.RUNNING, process=Process.RUNNING, early_accuracy=early, **kw)  # type: ignore[arg-type]


def finished(number: int, early: float, phase: Phase = Phase.COMPLETE) -> TrialView:
    return TrialView(number=number, phase=phase, process=Process.SUCCEEDED, early_accuracy=early)


def test_an_empty_study_launches_up_to_parallelism_baseline_first() -> None:
    plan = replace(PLAN, has_baseline=True)
    assert decide(plan, []) == [LaunchNew(baseline=True), LaunchNew(baseline=False)]


def test_top_k_continues_the_promising_and_cancels_the_rest() -> None:
    trials = [finished(0, 0.8), finished(1, 0.6), running(2, 0.7), running(3, 0.5)]
    actions = decide(PLAN, trials)
    assert Continue(2) in actions and Cancel(3) in actions


def test_ties_go_to_the_earlier_trial() -> None:
    trials = [finished(0, 0.5), finished(1, 0.5), running(2, 0.5)]
    assert Cancel(2) in decide(PLAN, trials)
    assert Continue(1) in decide(PLAN, [finished(0, 0.5), running(1, 0.5), running(2, 0.5)])


def test_the_baseline_always_runs_to_the_end() -> None:
    trials = [finished(0, 0.9), finished(1, 0.9), running(2, 0.0, is_baseline=True)]
    assert Continue(2) in decide(PLAN, trials)


def test_an_audited_trial_is_promoted_whatever_its_early_score_online() -> None:
    """The worst early score of the field, under a policy that would cancel it: an audited trial trains on."""
    trials = [finished(0, 0.9), finished(1, 0.8), running(2, 0.7), running(3, 0.0, is_audit=True)]
    actions = decide(PLAN, trials)
    assert Continue(3) in actions and Cancel(3) not in actions
    assert Continue(2) not in actions, "its early score still counts in the standing the others are ranked in"
    assert Cancel(3) in decide(PLAN, [*trials[:3], running(3, 0.0)]), "not audited, the same trial is cancelled"


def test_an_audited_trial_is_promoted_whatever_its_early_score_when_screening() -> None:
    """Screening, an audited trial is launched as a full run (by the shell, like the baseline): it is decided while it
    trains on, not told to wait for the field; were it screened, it would be promoted all the same."""
    field = [screened(0, 0.9), screened(1, 0.8), running(2, 0.0, is_audit=True)]
    assert Continue(2) in decide(SCREEN, field)
    waiting = decide(SCREEN, [*field[:2], running(2, 0.0)])
    assert not [a for a in waiting if getattr(a, "number", None) == 2], "not audited, a screening trial waits"
    final = [screened(n, 0.9 - 0.1 * n) for n in range(5)]
    actions = decide(SCREEN, [*final, screened(5, 0.0, is_audit=True)])
    assert Continue(5) in actions and Cancel(4) in actions and Cancel(5) not in actions


def test_policies() -> None:
    scores = [finished(0, 0.1), finished(1, 0.2), finished(2, 0.3), finished(3, 0.4)]
    assert Continue(4) in decide(replace(PLAN, promotion=EveryTrial()), [*scores, running(4, 0.0)])
    assert Cancel(4) in decide(replace(PLAN, promotion=Percentile(50)), [*scores, running(4, 0.15)])
    assert Continue(4) in decide(replace(PLAN, promotion=Percentile(50)), [*scores, running(4, 0.3)])
    assert Continue(4) in decide(replace(PLAN, promotion=Percentile(25)), [*scores, running(4, 0.2)])


def test_a_decided_trial_is_not_decided_again() -> None:
    assert decide(PLAN, [running(0, 0.5, decision=Decision.CONTINUE), running(1)]) == []


def test_ended_trials_finish_retry_or_fail() -> None:
    done = TrialView(0, Phase.RUNNING, Process.SUCCEEDED, 0.5, Decision.CONTINUE, has_result=True)
    crashed = TrialView(1, Phase.RUNNING, Process.FAILED, attempts=1)
    crashed_twice = TrialView(2, Phase.RUNNING, Process.FAILED, attempts=2, failure_reason="boom")
    bad_input = TrialView(3, Phase.RUNNING, Process.FAILED, attempts=1, retryable=False, failure_reason="bad data")
    orphan = TrialView(4, Phase.RUNNING, Process.ABSENT, attempts=0)
    plan = replace(PLAN, max_failed_trials=9, parallelism=5)
    actions = decide(plan, [done, crashed, crashed_twice, bad_input, orphan])
    assert Finish(0) in actions
    assert Relaunch(1, 2) in actions
    assert Fail(2, "boom (after 2 attempts)") in actions
    assert Fail(3, "bad data") in actions
    assert Relaunch(4, 1) in actions


def test_an_outage_relaunches_whatever_the_retry_budget_and_spends_no_retry() -> None:
    store_down = "the trainer could not use its object store (exit code 4): 503 Service Unavailable"
    met = TrialView(0, Phase.RUNNING, Process.FAILED, attempts=3, outage=True, outages=2, failure_reason=store_down)
    none_left = replace(PLAN, retries_per_trial=0)
    assert decide(none_left, [met])[:1] == [Relaunch(0, 4, outage=store_down)], "the fourth outage in a row too"
    # after two outages, a crash of the third attempt: one retry is left, none was spent on the outages
    crashed = replace(met, outage=False, outages=2, failure_reason="the trainer crashed (exit code 1)")
    assert decide(PLAN, [crashed])[:1] == [Relaunch(0, 4)]
    assert decide(none_left, [crashed])[:1] == [Fail(0, "the trainer crashed (exit code 1) (after 3 attempts)")]
    # a resume that met an outage is resumed again; its outages are not counted against the retries either
    resumed = screened(0, 0.9, decision=Decision.CONTINUE, resumes=1, process=Process.FAILED, outage=True,
                       failure_reason=store_down)  # fmt: skip
    assert decide(replace(SCREEN, retries_per_trial=0), [resumed])[0] == Resume(0, 2, outage=store_down)
    # its slot is kept through the back-off: a trial continued meanwhile waits for the next one
    continued = screened(1, 0.8, decision=Decision.CONTINUE)
    assert decide(replace(SCREEN, parallelism=1), [resumed, continued])[0] == Resume(0, 2, outage=store_down)
    assert decide(replace(SCREEN, parallelism=1), [replace(continued, number=0), replace(resumed, number=1)]) == [
        Resume(1, 2, outage=store_down)
    ]
    after = replace(resumed, resumes=3, outage=False, resume_outages=2, failure_reason="crashed")
    assert decide(SCREEN, [after])[0] == Resume(0, 4), "two outages and one crash: one retry left"
    assert decide(replace(SCREEN, retries_per_trial=0), [after])[0] == Fail(0, "crashed (after 3 resumes)")


def test_a_trial_never_launched_gets_its_first_attempt_whatever_the_retry_budget() -> None:
    never = TrialView(0, Phase.RUNNING, Process.ABSENT, attempts=0, retryable=False)
    assert decide(replace(PLAN, retries_per_trial=0), [never])[:1] == [Relaunch(0, 1)]


def test_a_malformed_report_fails_its_trial_and_counts_as_a_failure() -> None:
    bad = running(0, 0.5, report_error="the trainer reported malformed results: final_accuracy = 'abc'")
    actions = decide(replace(PLAN, max_failed_trials=1), [bad, running(1)])
    assert actions[0] == Fail(0, "the trainer reported malformed results: final_accuracy = 'abc'")
    assert Fail(1, "stopped: the study failed") in actions and isinstance(actions[-1], StudyFailed)
    assert len([a for a in actions if isinstance(a, Fail) and a.number == 0]) == 1


def test_too_many_failures_fail_the_study_and_stop_running_trials() -> None:
    missing = "dataset file not found: /data/train.jsonl"
    trials = [TrialView(0, Phase.FAILED, failure_reason=missing), TrialView(1, Phase.FAILED, failure_reason=missing),
              running(2), TrialView(3, Phase.RUNNING, Process.FAILED, attempts=2)]  # fmt: skip
    actions = decide(PLAN, trials)
    assert Fail(3, "the trainer failed (after 2 attempts)") in actions
    assert Fail(2, "stopped: the study failed") in actions
    # the condition names what to fix: the commonest reason, not the trials stopped because the study failed
    assert actions[-1] == StudyFailed(f"3 trials failed; maxFailedTrials is 3; the most frequent reason (2 of 3): "
                                      f"{missing}")  # fmt: skip
    assert not any(isinstance(a, LaunchNew) for a in actions)


def test_done_when_every_trial_exists_and_none_runs() -> None:
    trials = [finished(n, 0.5, Phase.PRUNED if n % 2 else Phase.COMPLETE) for n in range(10)]
    assert decide(PLAN, trials) == [StudyDone()]


def screened(number: int, early: float, **kw: object) -> TrialView:
    """A trial that checkpointed at its early step and exited (promotion.mode screen)."""
    fields: dict[str, object] = {"process": Process.SUCCEEDED, **kw}
    return TrialView(number, Phase.RUNNING, early_accuracy=early, screened=True, **fields)  # type: ignore[arg-type]


SCREEN = replace(PLAN, screening=True, max_trials=6, parallelism=2)


def test_online_waits_for_k_plus_one_scores_and_ties_do_not_depend_on_arrival() -> None:
    plan = replace(PLAN, promotion=TopK(1))
    assert decide(plan, [running(0), running(1, 0.5)]) == [], "one score: nobody is compared yet, both train on"
    for first, second in ((0, 1), (1, 0)):
        trials = sorted([running(first, 0.5), running(second, 0.5)], key=lambda t: t.number)
        actions = decide(plan, trials)
        assert Continue(0) in actions and Cancel(1) in actions, "equal scores: the lower number, whoever came first"


def test_screening_prunes_nobody_until_every_trial_is_scored_then_keeps_the_top_k() -> None:
    field = [screened(0, 0.3), screened(1, 0.6), screened(2, 0.5), running(3)]
    actions = decide(SCREEN, field)
    assert not any(isinstance(a, Cancel) for a in actions), "waiting costs no GPU: no early pruning"
    assert Continue(1) in actions, "3 of 6 scored with K 2: the best one is clearly among the best (top 1)"
    assert LaunchNew() in actions
    final = [screened(0, 0.3), screened(1, 0.6, decision=Decision.CONTINUE, resumes=1, process=Process.RUNNING),
             screened(2, 0.5), screened(3, 0.1), screened(4, 0.55), screened(5, 0.2)]  # fmt: skip
    actions = decide(SCREEN, final)
    assert {a for a in actions if isinstance(a, Continue | Cancel)} == {Continue(4), Cancel(0), Cancel(2), Cancel(3),
                                                                      Cancel(5)}  # fmt: skip
    assert not any(isinstance(a, StudyDone) for a in actions), "trial 4 is still to be resumed"


def test_a_continued_screened_trial_is_resumed_before_new_trials_start() -> None:
    plan = replace(SCREEN, parallelism=1)
    trials = [screened(0, 0.9, decision=Decision.CONTINUE), screened(1, 0.2), screened(2, 0.3)]
    assert decide(plan, trials) == [Resume(0, 1)]
    busy = [running(5), screened(0, 0.9, decision=Decision.CONTINUE)]
    assert decide(plan, busy) == [], "no free slot: the resume waits, and the study is not done"


def test_a_failed_resume_is_retried_then_fails_and_bad_input_is_not_retried() -> None:
    crashed = screened(0, 0.9, decision=Decision.CONTINUE, resumes=1, process=Process.FAILED)
    assert decide(SCREEN, [crashed])[0] == Resume(0, 2)
    again = replace(crashed, resumes=2, failure_reason="the trainer crashed (exit code 1)")
    assert decide(SCREEN, [again])[0] == Fail(0, "the trainer crashed (exit code 1) (after 2 resumes)")
    corrupt = replace(crashed, retryable=False, failure_reason="checkpoint file /x/state.pt is corrupt")
    assert decide(SCREEN, [corrupt])[0] == Fail(0, "checkpoint file /x/state.pt is corrupt")


def test_screening_is_done_only_when_every_screened_trial_is_decided_and_finished() -> None:
    done = [finished(n, 0.5, Phase.PRUNED if n % 2 else Phase.COMPLETE) for n in range(6)]
    assert decide(SCREEN, done) == [StudyDone()]
    resumed_and_finished = replace(screened(0, 0.9, decision=Decision.CONTINUE, resumes=1), has_result=True)
    assert decide(SCREEN, [resumed_and_finished, *done[1:]]) == [Finish(0), StudyDone()]


# --- properties -------------------------------------------------------------------------------------------------

phases = st.sampled_from(list(Phase))
processes = st.sampled_from(list(Process))
scores = st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))


@st.composite
def observations(draw: st.DrawFn) -> tuple[Plan, list[TrialView]]:
    max_trials = draw(st.integers(1, 12))
    plan = Plan(
        max_trials=max_trials,
        parallelism=draw(st.integers(1, max_trials)),
        max_failed_trials=draw(st.integers(1, 4)),
        retries_per_trial=draw(st.integers(0, 2)),
        promotion=draw(
            st.one_of(
                st.builds(TopK, st.integers(1, 5), st.integers(0, 6)),
                st.builds(Percentile, st.floats(1, 99), st.integers(0, 6)),
                st.just(EveryTrial()),
            )
        ),
        screening=(screening := draw(st.booleans())),
        has_baseline=draw(st.booleans()),
        rungs=draw(st.integers(1, 3)) if screening else 1,
        reduction=draw(st.integers(2, 4)),
    )
    count = draw(st.integers(0, max_trials))
    trials = []
    for number in range(count):
        phase = draw(phases)
        trials.append(
            TrialView(
                number=number,
                phase=phase,
                process=draw(processes) if phase is Phase.RUNNING else Process.SUCCEEDED,
                early_accuracy=draw(scores),
                decision=draw(st.sampled_from([None, Decision.CONTINUE])),
                has_result=draw(st.booleans()),
                attempts=draw(st.integers(0, 3)),
                is_baseline=plan.has_baseline and number == 0,
                retryable=draw(st.booleans()),
                report_error=draw(st.sampled_from([None, None, None, "malformed"])),
                screened=plan.screening and draw(st.booleans()),
                resumes=draw(st.integers(0, 2)),
                is_audit=not (plan.has_baseline and number == 0) and draw(st.booleans()),
                later_scores=tuple(draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), max_size=plan.rungs - 1))),
                passed=draw(st.integers(0, plan.rungs - 1)),
                outage=draw(st.booleans()),
                outages=draw(st.integers(0, 2)),
                resume_outages=draw(st.integers(0, 2)),
            )
        )
    return plan, trials


def running_after(trials: list[TrialView], actions: list[object]) -> int:
    """Trials that will be running once the actions are applied."""
    stopped = {a.number for a in actions if isinstance(a, Cancel | Fail | Finish)}  # type: ignore[attr-defined]
    alive = {t.number for t in trials if t.phase is Phase.RUNNING and t.process is Process.RUNNING} - stopped
    relaunched = {a.number for a in actions if isinstance(a, Relaunch | Resume)} - stopped
    return len(alive | relaunched) + sum(isinstance(a, LaunchNew) for a in actions)


@settings(max_examples=400, deadline=None)
@given(observations())
def test_never_exceeds_parallelism_or_max_trials(case: tuple[Plan, list[TrialView]]) -> None:
    plan, trials = case
    actions = decide(plan, trials)
    launches = sum(isinstance(a, LaunchNew) for a in actions)
    assert len(trials) + launches <= plan.max_trials
    if launches:
        assert running_after(trials, actions) <= plan.parallelism


@settings(max_examples=400, deadline=None)
@given(observations())
def test_never_acts_twice_on_a_trial_or_on_a_finished_one(case: tuple[Plan, list[TrialView]]) -> None:
    plan, trials = case
    actions = decide(plan, trials)
    numbered = [a.number for a in actions if hasattr(a, "number")]  # type: ignore[attr-defined]
    assert len(numbered) == len(set(numbered)), actions
    finished_numbers = {t.number for t in trials if t.phase is not Phase.RUNNING}
    assert not finished_numbers & set(numbered)
    assert sum(isinstance(a, LaunchNew) and a.baseline for a in actions) <= 1
    if any(t.is_baseline for t in trials):
        assert not any(isinstance(a, LaunchNew) and a.baseline for a in actions)


@settings(max_examples=400, deadline=None)
@given(observations())
def test_the_baseline_and_audited_trials_are_never_cancelled(case: tuple[Plan, list[TrialView]]) -> None:
    plan, trials = case
    kept = {t.number for t in trials if t.is_baseline or t.is_audit}
    assert not any(isinstance(a, Cancel) and a.number in kept for a in decide(plan, trials))


def applied(trials: list[TrialView], actions: list[object]) -> list[TrialView]:
    """The observations after the actions took effect, as the engine applies them."""
    by_number = {t.number: t for t in trials}
    for action in actions:
        match action:
            case Continue(number=n):
                by_number[n] = replace(by_number[n], decision=Decision.CONTINUE)
            case PassRung(number=n, rung=rung):
                by_number[n] = replace(by_number[n], passed=rung + 1)
            case Cancel(number=n):
                by_number[n] = replace(by_number[n], phase=Phase.PRUNED)
            case Finish(number=n):
                by_number[n] = replace(by_number[n], phase=Phase.COMPLETE)
            case Fail(number=n):
                by_number[n] = replace(by_number[n], phase=Phase.FAILED)
            case Resume(number=n, attempt=resume):
                by_number[n] = replace(by_number[n], process=Process.RUNNING, resumes=resume, retryable=True,
                                       failure_reason=None, outage=False)  # fmt: skip
            case Relaunch(number=n, attempt=attempt):
                relaunched = replace(by_number[n], process=Process.RUNNING, attempts=attempt, retryable=True,
                                     outage=False)  # fmt: skip
                by_number[n] = replace(relaunched, failure_reason=None)
            case LaunchNew(baseline=baseline):
                n = max(by_number, default=-1) + 1
                by_number[n] = TrialView(n, Phase.RUNNING, Process.RUNNING, attempts=1, is_baseline=baseline)
    return sorted(by_number.values(), key=lambda t: t.number)


@settings(max_examples=400, deadline=None)
@given(observations())
def test_deciding_again_after_applying_never_repeats_an_action(case: tuple[Plan, list[TrialView]]) -> None:
    """What ``decide`` promises: applying its actions and deciding again converges and never repeats work (the
    engine decides every few seconds from what it observes, so a repeated action would be done twice)."""
    plan, trials = case
    first = decide(plan, trials)
    second = decide(plan, applied(trials, first))
    done = {(type(a), a.number) for a in first if hasattr(a, "number")}  # type: ignore[attr-defined]
    again = {(type(a), a.number) for a in second if hasattr(a, "number")}  # type: ignore[attr-defined]
    assert not done & again, (first, second)
    if any(isinstance(a, StudyDone | StudyFailed) for a in first):
        assert not any(isinstance(a, LaunchNew | Relaunch | Resume) for a in second), second


# --- screening in rungs (promotion.rungs) -----------------------------------------------------------------------

RUNGS = replace(SCREEN, max_trials=9, parallelism=3, promotion=TopK(1), rungs=2, reduction=3)


def at_rung_1(number: int, early: float, later: float, **kw: object) -> TrialView:
    """Promoted past rung 0, resumed, and stopped at rung 1 with its score there."""
    fields: dict[str, object] = {"passed": 1, "resumes": 1, **kw}
    return screened(number, early, later_scores=(later,), **fields)


def test_a_trial_goes_past_rung_0_only_in_the_top_third_of_those_scored_so_far() -> None:
    field = [screened(0, 0.3), screened(1, 0.6), screened(2, 0.5), running(3), running(4), running(5)]
    actions = decide(RUNGS, field)
    assert [a for a in actions if isinstance(a, PassRung)] == [PassRung(1, 0, 0.6, 0, 3)], "floor(3/3) = 1: the best"
    assert not any(isinstance(a, Cancel | Continue) for a in actions), "nobody pruned before rung 0 is complete"
    two = [screened(0, 0.3), screened(1, 0.6), running(2), running(3)]
    assert not any(isinstance(a, PassRung) for a in decide(RUNGS, two)), "floor(2/3) = 0: nobody goes on yet"


def test_rung_0_complete_its_ranking_keeps_the_top_third_and_prunes_the_rest() -> None:
    scores = [0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6, 0.5]
    field = [screened(n, s) for n, s in enumerate(scores)]
    actions = decide(RUNGS, field)
    passed = {a.number for a in actions if isinstance(a, PassRung)}
    assert passed == {1, 3, 5}, "floor(9/3) = 3 go on"
    assert {a.number for a in actions if isinstance(a, Cancel)} == {0, 2, 4, 6, 7, 8}
    assert not any(isinstance(a, StudyDone) for a in actions)


def test_never_fewer_than_k_kept_at_a_rung() -> None:
    plan = replace(RUNGS, promotion=TopK(4))
    field = [screened(n, n / 10) for n in range(9)]
    passed = {a.number for a in decide(plan, field) if isinstance(a, PassRung)}
    assert passed == {8, 7, 6, 5}, "K 4 > floor(9/3): four go on, so the last rung has K to choose from"


def test_a_trial_passed_past_a_rung_is_resumed_and_the_record_survives_a_restart() -> None:
    promoted = screened(1, 0.9, passed=1)
    assert Resume(1, 1) in decide(RUNGS, [promoted, *(screened(n, 0.1) for n in (0, 2))]), "passed: resume it"
    crashed = replace(promoted, resumes=1, process=Process.FAILED)
    assert Resume(1, 2) in decide(RUNGS, [crashed]), "a failed resume to the next rung is retried"
    second = at_rung_1(1, 0.9, 0.5, passed=2)
    assert Resume(1, 2) in decide(replace(RUNGS, rungs=3), [second]), (
        "its second promotion earns its second resume (not a retry)"
    )


def test_the_last_rung_uses_the_policy_among_the_trials_scored_there_and_the_study_ends() -> None:
    early = [replace(screened(n, 0.1), phase=Phase.PRUNED) for n in (0, 2, 4, 6, 7, 8)]
    last = [at_rung_1(1, 0.9, 0.4), at_rung_1(3, 0.8, 0.7), at_rung_1(5, 0.7, 0.5)]
    actions = decide(RUNGS, [*early, *last])
    assert Continue(3) in actions, "K 1 at the last rung: the best there, not the best at rung 0"
    assert {a.number for a in actions if isinstance(a, Cancel)} == {1, 5}
    ends = [*early, replace(last[0], phase=Phase.PRUNED), replace(last[2], phase=Phase.PRUNED),
            replace(last[1], decision=Decision.CONTINUE, resumes=2, has_result=True)]  # fmt: skip
    assert decide(RUNGS, ends) == [Finish(3), StudyDone()]


def test_the_last_rung_waits_for_every_trial_promoted_to_it() -> None:
    early = [replace(screened(n, 0.1), phase=Phase.PRUNED) for n in (0, 2, 4, 6, 7, 8)]
    field = [*early, at_rung_1(1, 0.9, 0.9), at_rung_1(3, 0.8, 0.7), screened(5, 0.7, passed=1, resumes=1,
                                                                              process=Process.RUNNING)]  # fmt: skip
    actions = decide(RUNGS, field)
    assert not any(isinstance(a, Cancel) for a in actions), "trial 5 is still to be scored at the last rung"
    assert not any(isinstance(a, StudyDone) for a in actions)


def test_baseline_and_audited_trials_bypass_rungs() -> None:
    field = [running(0, 0.0, is_baseline=True), running(1, 0.0, is_audit=True),
             *(screened(n, n / 10) for n in range(2, 9))]  # fmt: skip
    actions = decide(RUNGS, field)
    assert Continue(0) in actions and Continue(1) in actions
    assert not any(isinstance(a, PassRung | Cancel) and a.number in {0, 1} for a in actions)


def simulate(plan: Plan, scores: dict[int, tuple[float, ...]], restart_every: int = 0) -> list[object]:
    """Run a whole study through ``decide``: a launched or resumed trial stops at its next rung (or finishes) on the
    next pass. Every pass starts from the observations alone, as a restarted runner would."""
    trials: list[TrialView] = []
    log: list[object] = []
    for _ in range(200):
        moved = []
        for t in trials:
            if t.phase is Phase.RUNNING and t.process is Process.RUNNING:
                if t.decision is not None or t.is_baseline or t.is_audit:
                    t = replace(t, process=Process.SUCCEEDED, has_result=True,
                                early_accuracy=scores[t.number][0])  # fmt: skip
                elif t.early_accuracy is None:
                    t = replace(t, process=Process.SUCCEEDED, screened=True, early_accuracy=scores[t.number][0])
                else:
                    t = replace(t, process=Process.SUCCEEDED, later_scores=scores[t.number][1 : t.passed + 1])
            moved.append(t)
        actions = decide(plan, moved)
        log += actions
        trials = applied(moved, actions)
        if any(isinstance(a, StudyDone | StudyFailed) for a in actions):
            return log
    raise AssertionError("the study never ended")


def test_a_whole_study_in_three_rungs_ends_and_keeps_the_best_at_the_last() -> None:
    plan = replace(RUNGS, rungs=3, max_trials=9, parallelism=2)
    scores = {n: (n / 10, 1 - n / 10, n / 100) for n in range(9)}  # rung 1 reverses rung 0's order
    log = simulate(plan, scores)
    assert StudyDone() in log
    past_0 = {a.number for a in log if isinstance(a, PassRung) and a.rung == 0}
    past_1 = {a.number for a in log if isinstance(a, PassRung) and a.rung == 1}
    continued = {a.number for a in log if isinstance(a, Continue)}
    assert {6, 7, 8} <= past_0, "the top third at rung 0 go on"
    assert past_1 <= past_0 and len(past_1) >= 1
    assert len(continued) == 1 and continued <= past_1, "K 1 at the last rung"
    assert not any(isinstance(a, Cancel) and a.number in continued for a in log)
