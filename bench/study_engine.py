"""The study engine's costs, each against a baseline measured in the same run.

1. Decision core: time of one ``decide`` over a study of N trials.
2. Storage: SQL statements per trial for a whole trial lifecycle (ask, launch, the trainer's writes, the engine's
   polls, decision, finish), at 50 and at 200 trials: bounded means the per-trial count does not grow with N; and
   the engine's incremental poll against Optuna's read of every trial.
3. Training steps for a 200-trial study with a scripted accuracy curve: ``topK`` (early decision at 20%) against
   ``none`` (every trial to the end) and Optuna's own SuccessiveHalvingPruner, with the best final accuracy each
   finds.

    .venv/bin/python bench/study_engine.py                       # SQLite in a temporary directory
    .venv/bin/python bench/study_engine.py --storage "$(scripts/postgres.sh url)"
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
from typing import Any

import optuna
from sqlalchemy import event

from ftstudy.core import Decision, Phase, Plan, Process, TrialView, decide, promote
from ftstudy.retry import RetryPolicy
from ftstudy.spec import parse
from ftstudy.study_store import StudyStore

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


def simulate_engine(policy: str, trials: int, seed: int) -> tuple[int, float]:
    """Sequential study with ftstudy's rule: objective = early accuracy, promote() decides who continues."""
    plan = Plan(max_trials=trials, parallelism=1, max_failed_trials=trials, retries_per_trial=0, policy=policy, k=5)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed,
                                n_startup_trials=10))  # fmt: skip
    noise = random.Random(seed)
    steps, best_final, scored = 0, 0.0, []
    for _ in range(trials):
        trial = study.ask(space())
        early = curve(trial.params, EARLY_STEP / TOTAL_STEPS, noise)
        view = TrialView(trial.number, Phase.RUNNING, Process.RUNNING, early)
        scored.append((trial.number, early))
        trial.report(early, EARLY_STEP)
        if promote(plan, view, scored):
            steps += TOTAL_STEPS
            best_final = max(best_final, curve(trial.params, 1.0, noise))
            study.tell(trial, early)
        else:
            steps += EARLY_STEP
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return steps, best_final


def simulate_sha(trials: int, seed: int) -> tuple[int, float]:
    """Optuna's SuccessiveHalvingPruner, reporting every 10% of training; objective = final accuracy."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed,
                                n_startup_trials=10), pruner=optuna.pruners.SuccessiveHalvingPruner())  # fmt: skip
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
    return steps, best_final


def bench_steps(trials: int, seeds: int) -> None:
    totals: dict[str, list[tuple[int, float]]] = {"topK": [], "none": [], "sha": []}
    for seed in range(seeds):
        totals["topK"].append(simulate_engine("topK", trials, seed))
        totals["none"].append(simulate_engine("none", trials, seed))
        totals["sha"].append(simulate_sha(trials, seed))
    mean = {k: (statistics.mean(s for s, _ in v), statistics.mean(b for _, b in v)) for k, v in totals.items()}
    for name, (steps, best) in mean.items():
        print(f"steps: {name:>5}: {steps:>8.0f} trainer steps for {trials} trials, best final accuracy {best:.4f}")
    print(f"steps: topK / none = {mean['topK'][0] / mean['none'][0]:.3f}   "
          f"topK / SuccessiveHalving = {mean['topK'][0] / mean['sha'][0]:.3f}   (mean of {seeds} seeds)")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage", default=None, help="SQLAlchemy URL (default: a temporary SQLite file)")
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    bench_core()
    with tempfile.TemporaryDirectory() as tmp:
        bench_storage(args.storage or f"sqlite:///{tmp}/bench.db")
    bench_steps(args.trials, args.seeds)


if __name__ == "__main__":
    main()
