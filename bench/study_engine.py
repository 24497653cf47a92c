"""The study engine's costs, each against a baseline measured in the same run.

1. Decision core: time of one ``decide`` over a study of N trials.
2. Storage: SQL statements per trial for a whole trial lifecycle (ask, launch, the trainer's writes, the engine's
   polls, decision, finish), at 50 and at 200 trials: bounded means the per-trial count does not grow with N; and
   the engine's incremental poll against Optuna's read of every trial.
3. GPU-steps for a study with a scripted accuracy curve, driven by the real decision core: every trial to the end
   (policy ``none``), online top-K, screen-then-promote (``promotion.mode: screen``), and Optuna's own
   SuccessiveHalving and Hyperband pruners on the same sampler and trial budget, with the best final accuracy each
   finds and the ratios.

    .venv/bin/python bench/study_engine.py                       # SQLite in a temporary directory
    .venv/bin/python bench/study_engine.py --storage "$(scripts/postgres.sh url)"
    .venv/bin/python bench/study_engine.py --only-steps --trials 20 --k 3 --parallelism 2   # the example's shape
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import optuna
from sqlalchemy import event

from ftstudy.core import (
    Cancel,
    Continue,
    Decision,
    Finish,
    LaunchNew,
    Phase,
    Plan,
    Process,
    Resume,
    StudyDone,
    TrialView,
    decide,
)
from ftstudy.promotion import EveryTrial, TopK
from ftstudy.retry import RetryPolicy
from ftstudy.spec import parse
from ftstudy.study_store import EarlyScoreTPESampler, StudyStore

optuna.logging.set_verbosity(optuna.logging.WARNING)
TOTAL_STEPS = 100
EARLY_STEP = 20


def bench_core() -> None:
    plan = Plan(max_trials=200, parallelism=8, max_failed_trials=10, retries_per_trial=1)
    rng = random.Random(0)
    for n in (20, 200):
        trials = [
            TrialView(
                i,
                Phase.COMPLETE if i < n - 8 else Phase.RUNNING,
                Process.RUNNING,
                rng.random(),
                Decision.CONTINUE if i % 3 else None,
            )
            for i in range(n)
        ]
        repeats = 2000
        started = time.perf_counter()
        for _ in range(repeats):
            decide(plan, trials)
        per_call = (time.perf_counter() - started) / repeats
        print(f"core: decide() over {n} trials: {per_call * 1e6:.1f} us per call")


@contextmanager
def count_statements(store: StudyStore) -> Iterator[list[int]]:
    counter = [0]

    def on_execute(*_: Any) -> None:
        counter[0] += 1

    engine = store.storage.engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


def study_document(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "ftstudy.io/v1alpha1", "kind": "FineTuneStudy", "metadata": {"name": name},
        "spec": {"dataset": {"path": "unused"}, "sampler": {"type": "random"},
                 "budget": {"maxTrials": 1000, "parallelism": 4}},
    }  # fmt: skip


def lifecycle(store: StudyStore, rng: random.Random) -> None:
    """What the engine and one trainer do to the database over one trial, with 4 polls of the study."""
    number, _ = store.ask(baseline=False)
    store.record_attempt(number, 1)
    trial_id = store._trial_id(number)
    storage = store.storage
    storage.get_trial_params(trial_id)  # the trainer reads its parameters
    storage.set_trial_user_attr(trial_id, "total_steps", TOTAL_STEPS)
    storage.set_trial_user_attr(trial_id, "early_step", EARLY_STEP)
    storage.get_trial(trial_id)  # the trainer's pruned-state check (every few steps; counted once here)
    storage.set_trial_user_attr(trial_id, "early_accuracy", rng.random())
    storage.set_trial_intermediate_value(trial_id, EARLY_STEP, rng.random())
    for _ in range(4):
        store.trials()
    if rng.random() < 0.5:
        store.prune(number)
    else:
        store.record_decision(number, Decision.CONTINUE)
        storage.set_trial_user_attr(trial_id, "final_accuracy", rng.random())
        store.complete(number, rng.random())


def bench_storage(url: str) -> None:
    rng = random.Random(0)
    results = {}
    for existing in (50, 200):
        name = f"bench-{uuid.uuid4().hex[:8]}"
        study = parse(study_document(name))
        store = StudyStore(url, name, study.spec, RetryPolicy())
        for _ in range(existing):
            lifecycle(store, rng)
        measured = 10
        started = time.perf_counter()
        with count_statements(store) as counter:
            for _ in range(measured):
                lifecycle(store, rng)
        seconds = (time.perf_counter() - started) / measured
        results[existing] = counter[0] / measured
        polls = 20
        started = time.perf_counter()
        for _ in range(polls):
            store.trials()
        incremental = (time.perf_counter() - started) / polls
        started = time.perf_counter()
        for _ in range(polls):
            store.study.get_trials(deepcopy=False)
        full = (time.perf_counter() - started) / polls
        print(
            f"storage: one poll of a {existing + measured}-trial study: {incremental * 1000:.1f} ms incremental, "
            f"{full * 1000:.1f} ms reading every trial (Optuna get_trials): ratio {incremental / full:.3f}"
        )
        print(f"storage: trial lifecycle with {existing} trials in the study: "
              f"{counter[0] / measured:.1f} SQL statements, {seconds * 1000:.1f} ms")  # fmt: skip
    print(f"storage: statements per trial at 200 vs 50 trials: ratio {results[200] / results[50]:.2f} (1.00 = bounded)")


def curve(params: dict[str, float], fraction: float, noise: random.Random) -> float:
    """A scripted learning curve: the final accuracy depends on lr and alpha (too high both: diverges to 0)."""
    lr, alpha = params["learning_rate"], params["lora_alpha"]
    if lr > 2e-3 and alpha > 64:
        return 0.0
    final = 0.9 - 0.08 * (math.log10(lr) + 3.3) ** 2 - 0.02 * abs(math.log2(alpha / 32))
    progress = (1 - math.exp(-5 * fraction)) / (1 - math.exp(-5))
    return max(0.0, min(1.0, 0.7 * final + 0.3 * final * progress + noise.gauss(0, 0.01)))


def space() -> dict[str, optuna.distributions.BaseDistribution]:
    return {
        "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
        "lora_alpha": optuna.distributions.IntDistribution(8, 128, log=True),
    }


@dataclass
class SimTrial:
    """One trial of the simulated study, as the executor and the trainer would leave it."""

    params: dict[str, Any]
    trial_id: int
    steps: int = 0  # steps trained so far
    phase: Phase = Phase.RUNNING
    process: Process = Process.RUNNING
    early: float | None = None
    decision: Decision | None = None
    screened: bool = False
    resumes: int = 0
    final: float | None = None


def simulate_core(plan: Plan, seed: int) -> tuple[int, float, int]:
    """A study driven by ftstudy's own decision core (``decide``) and sampler, trials advancing one step per tick
    on ``plan.parallelism`` GPUs. Returns (GPU-steps spent, best final accuracy, ticks to the end).

    Online, a trial keeps training while its decision waits; screening, it stops at the early step and holds no
    GPU until it is resumed. GPU-steps are what the study pays for; ticks are its wall-clock time."""
    study = optuna.create_study(
        direction="maximize",
        sampler=EarlyScoreTPESampler(seed=seed, n_startup_trials=10, constant_liar=True, multivariate=True),
    )
    noise = random.Random(seed)
    trials: list[SimTrial] = []
    spent = ticks = 0
    while True:
        views = [
            TrialView(
                n,
                t.phase,
                t.process,
                t.early,
                t.decision,
                t.final is not None,
                1,
                False,
                True,
                screened=t.screened,
                resumes=t.resumes,
            )
            for n, t in enumerate(trials)
        ]
        actions = decide(plan, views)
        for action in actions:
            match action:
                case LaunchNew():
                    asked = study.ask(space())
                    trials.append(SimTrial(asked.params, asked._trial_id))
                case Continue(number=n):
                    trials[n].decision = Decision.CONTINUE
                case Cancel(number=n):
                    study.tell(n, state=optuna.trial.TrialState.PRUNED)
                    trials[n].process, trials[n].phase = Process.SUCCEEDED, Phase.PRUNED
                case Resume(number=n):
                    trials[n].process, trials[n].resumes = Process.RUNNING, trials[n].resumes + 1
                case Finish(number=n):
                    study.tell(n, trials[n].early)
                    trials[n].phase = Phase.COMPLETE
        if any(isinstance(a, StudyDone) for a in actions):
            break
        for trial in trials:
            if trial.process is not Process.RUNNING or trial.phase is not Phase.RUNNING:
                continue
            trial.steps += 1
            spent += 1
            if trial.steps == EARLY_STEP:
                trial.early = curve(trial.params, EARLY_STEP / TOTAL_STEPS, noise)
                study._storage.set_trial_intermediate_value(trial.trial_id, EARLY_STEP, trial.early)
                if plan.screening:
                    trial.screened, trial.process = True, Process.SUCCEEDED
            elif trial.steps == TOTAL_STEPS:
                trial.final, trial.process = curve(trial.params, 1.0, noise), Process.SUCCEEDED
        ticks += 1
    return spent, max((t.final for t in trials if t.final is not None), default=0.0), ticks


def simulate_pruner(pruner: optuna.pruners.BasePruner, trials: int, seed: int) -> tuple[int, float, int]:
    """Optuna's own pruners (SuccessiveHalving, Hyperband) with the same sampler and trial budget, reporting every
    10% of training; their objective is the final accuracy (they must train a trial to the end to know it).
    Sequential: Optuna has no scheduler of its own, so GPU-steps and ticks are the same."""
    study = optuna.create_study(direction="maximize", pruner=pruner, study_name=f"bench-{seed}",  # Hyperband's
                                # brackets hash the study's name: fixed, so a seed gives the same run
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=10))  # fmt: skip
    noise = random.Random(seed)
    steps, best_final = 0, 0.0
    for _ in range(trials):
        trial = study.ask(space())
        pruned = False
        for step in range(10, TOTAL_STEPS + 1, 10):
            trial.report(curve(trial.params, step / TOTAL_STEPS, noise), step)
            if step < TOTAL_STEPS and trial.should_prune():
                steps += step
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        steps += TOTAL_STEPS
        final = curve(trial.params, 1.0, noise)
        best_final = max(best_final, final)
        study.tell(trial, final)
    return steps, best_final, steps


def bench_steps(trials: int, seeds: int, parallelism: int, k: int) -> None:
    """GPU-steps to the best final accuracy: every trial to the end, online top-K, screen-then-promote, and
    Optuna's SuccessiveHalving and Hyperband pruners, same sampler and trial budget."""
    base = Plan(max_trials=trials, parallelism=parallelism, max_failed_trials=trials, retries_per_trial=0)
    contenders: dict[str, Any] = {
        "every trial to the end": lambda seed: simulate_core(replace(base, promotion=EveryTrial()), seed),
        f"online top-{k}": lambda seed: simulate_core(replace(base, promotion=TopK(k)), seed),
        f"screen, promote top-{k}": lambda seed: simulate_core(replace(base, promotion=TopK(k), screening=True), seed),
        "Optuna SuccessiveHalving": lambda seed: simulate_pruner(
            optuna.pruners.SuccessiveHalvingPruner(), trials, seed
        ),
        "Optuna Hyperband": lambda seed: simulate_pruner(
            optuna.pruners.HyperbandPruner(min_resource=10, max_resource=TOTAL_STEPS), trials, seed
        ),
    }
    mean: dict[str, tuple[float, float, float]] = {}
    for name, simulate in contenders.items():
        runs = [simulate(seed) for seed in range(seeds)]
        steps, best, ticks = (statistics.mean(r[i] for r in runs) for i in range(3))
        mean[name] = (steps, best, ticks)
    reference = mean["every trial to the end"]
    print(f"steps: {trials} trials, {parallelism} GPUs (ftstudy) or 1 (Optuna's pruners), early step {EARLY_STEP} "
          f"of {TOTAL_STEPS}, mean of {seeds} seeds")  # fmt: skip
    for name, (steps, best, ticks) in mean.items():
        print(f"steps: {name:>26}: {steps:>8.0f} GPU-steps ({steps / reference[0]:.3f} of every trial to the end), "
              f"best final accuracy {best:.4f} ({best - reference[1]:+.4f}), {ticks:>6.0f} ticks")  # fmt: skip
    online, screen = mean[f"online top-{k}"], mean[f"screen, promote top-{k}"]
    print(f"steps: screen / every trial = {screen[0] / reference[0]:.3f}   screen / online = "
          f"{screen[0] / online[0]:.3f}   screen / SuccessiveHalving = "
          f"{screen[0] / mean['Optuna SuccessiveHalving'][0]:.3f}   screen / Hyperband = "
          f"{screen[0] / mean['Optuna Hyperband'][0]:.3f}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage", default=None, help="SQLAlchemy URL (default: a temporary SQLite file)")
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--parallelism", type=int, default=4)
    p.add_argument("--k", type=int, default=5, help="topK's K")
    p.add_argument("--only-steps", action="store_true", help="skip the core and storage parts")
    args = p.parse_args()
    if not args.only_steps:
        bench_core()
        with tempfile.TemporaryDirectory() as tmp:
            bench_storage(args.storage or f"sqlite:///{tmp}/bench.db")
    bench_steps(args.trials, args.seeds, args.parallelism, args.k)


if __name__ == "__main__":
    main()
