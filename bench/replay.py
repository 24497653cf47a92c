"""Search methods replayed over real learning curves (``bench/curves.py``'s tables), many times, with intervals.

Tabular benchmarks (LCBench, HPOBench, NAS-Bench-201) train a fixed set of configurations once, record accuracy
along training, and replay every method over the table: replays are cheap, so each method gets hundreds of seeds.
Here every method searches the study's own continuous space; a configuration it asks for is answered by the table's
nearest configuration (log scale where the space is log, the same categorical values), so the objective is the
table's nearest-neighbour surface, the same for every method. Its validation accuracy at every 10% of training is
what the method sees; its independent-test accuracy at the end is what the user gets.

Methods (every one with the same trial budget, ``--trials``, on ``--parallelism`` GPUs):
- random search, every trial to the end; TPE (Optuna's, told the final validation accuracy), every trial to the end;
- ftstudy, driven by its real decision core (``ftstudy.core.decide``) and sampler (``EarlyScoreTPESampler``):
  online top-K at 20%, and screening (``promotion.mode: screen``, the default) at 20% and at 50%, and in rungs
  (``promotion.rungs`` [0.2, 0.5] and [0.2, 0.4, 0.6], reduction 3), each paying for the default ``auditFraction``
  (0.1) as a study does;
- Optuna's SuccessiveHalving, Hyperband and median pruners on the same TPE, reporting at every 10%.

Each replay advances every running trial by 10% of its training a tick. What the user has at any moment is the
finished trial (trained to the end) with the best final validation accuracy (the untrained model before any); its
independent-test accuracy is the method's result then. Printed for each method, over the replay seeds, with 95%
bootstrap intervals: GPU-steps until that result is within ``--tolerance`` of the table's best independent-test
accuracy (as a share of the budget of training every trial to the end, B = trials x steps; a replay that never gets
there counts as never), and the result at 10%, 25%, 50% and 100% of B. Also the table's ground truth: Spearman and
top-5 overlap of validation accuracy at each fraction against the end, over every configuration.

    .venv/bin/python bench/replay.py                                  # bench/curves/main.jsonl, 100 seeds
    .venv/bin/python bench/replay.py --table bench/curves/long.jsonl --seeds 200
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from ftstudy import audit
from ftstudy.core import (
    Cancel,
    Continue,
    Decision,
    Finish,
    LaunchNew,
    PassRung,
    Phase,
    Plan,
    Process,
    Resume,
    StudyDone,
    TrialView,
    decide,
)
from ftstudy.promotion import TopK
from ftstudy.spec import FineTuneStudy
from ftstudy.study_store import EarlyScoreTPESampler, distributions

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]
TICKS = 10  # a tick is 10% of a trial's training: the table's resolution
BUDGET_POINTS = (0.1, 0.25, 0.5, 1.0)
AUDIT_FRACTION = 0.1  # the default promotion.auditFraction: screening's replays pay for it as a study would


# ---- the table -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """One configuration of the table: its validation accuracy after each tenth of training (index 1..10, 0.0
    after a divergence, as the trainer reports it), and its test scores at the end (None if it diverged)."""

    number: int
    params: dict[str, Any]
    validation: tuple[float, ...]  # index t: after t tenths; index 0 unused
    test: float | None
    independent_test: float | None
    baseline: bool


@dataclass
class Table:
    configs: list[Config]
    space: dict[str, BaseDistribution]
    total_steps: int
    zero_shot_independent: float  # what the user has before any trial finishes
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def best_independent(self) -> float:
        return max(c.independent_test for c in self.configs if c.independent_test is not None)

    def coordinates(self, params: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[float, ...]]:
        """Categorical values (must match) and numeric ones scaled to [0, 1] (log where the space is log)."""
        categories, numbers = [], []
        for name in sorted(self.space):
            dist, value = self.space[name], params[name]
            if isinstance(dist, CategoricalDistribution):
                categories.append(value)
                continue
            low, high, x = float(dist.low), float(dist.high), float(value)  # type: ignore[attr-defined]
            if dist.log:  # type: ignore[attr-defined]
                low, high, x = math.log(low), math.log(high), math.log(x)
            numbers.append((x - low) / (high - low) if high > low else 0.0)
        return tuple(categories), tuple(numbers)

    def nearest(self, params: dict[str, Any]) -> Config:
        """The table's configuration nearest to ``params`` (same categorical values if any has them)."""
        categories, numbers = self.coordinates(params)
        best, best_distance = self.configs[0], math.inf
        for config in self.configs:
            other_categories, other_numbers = self._coords[config.number]
            distance = math.dist(numbers, other_numbers) + (0.0 if other_categories == categories else 10.0)
            if distance < best_distance:
                best, best_distance = config, distance
        return best

    def __post_init__(self) -> None:
        self._coords = {c.number: self.coordinates(c.params) for c in self.configs}


def load_table(path: Path) -> Table:
    """A ``bench/curves.py`` part: its header's study spec gives the space; records become configurations."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header = lines[0]["header"]
    spec = FineTuneStudy.model_validate(
        {"apiVersion": "ftstudy.io/v1alpha1", "kind": "FineTuneStudy", "metadata": {"name": "replay"},
         "spec": header["spec"]}
    ).spec  # fmt: skip
    configs, totals, zero_shot = [], set(), None
    for row in lines[1:]:
        curve = [0.0] * (TICKS + 1)
        seen = 0.0
        for tenth in range(1, TICKS + 1):
            value = row["validation"].get(str(round(tenth / TICKS, 1)))
            seen = float(value) if value is not None else (0.0 if row["outcome"] == "diverged" else seen)
            curve[tenth] = seen
        configs.append(Config(row["trial"], row["params"], tuple(curve), row["test"], row["independent_test"],
                              row["baseline"]))  # fmt: skip
        totals.add(row["total_steps"])
        if row.get("zero_shot") and "independent_test" in row["zero_shot"]:
            zero_shot = float(row["zero_shot"]["independent_test"])
    if len(totals) != 1:
        raise SystemExit(f"{path}: trials of different lengths {sorted(totals)}; one table holds one length")
    if zero_shot is None:
        raise SystemExit(f"{path}: no trial recorded the untrained model's independent-test accuracy")
    return Table(configs, distributions(spec), totals.pop(), zero_shot, header)


def on_the_test_set(table: Table, path: Path) -> Table:
    """The same table scored on the test set of the training shops: a diagnostic of whether what a method selects
    on validation pages carries over to those shops, as against a shop no training saw."""
    zero_shot = None
    for line in path.read_text().splitlines()[1:]:
        found = (json.loads(line).get("zero_shot") or {}).get("test")
        zero_shot = float(found) if found is not None else zero_shot
    if zero_shot is None:
        raise SystemExit(f"{path}: no trial recorded the untrained model's test accuracy")
    configs = [replace(c, independent_test=c.test) for c in table.configs]
    return replace(table, configs=configs, zero_shot_independent=zero_shot)


def first_trials(table: Table, count: int) -> Table:
    """The table's first ``count`` configurations by trial number: to compare it with a shorter table that trained
    the same first configurations (a Halton design's draws come in the same order at any length)."""
    kept = sorted(table.configs, key=lambda c: c.number)[:count]
    if len(kept) < count:
        raise SystemExit(f"the table has {len(kept)} trials, fewer than --first {count}")
    return replace(table, configs=kept)


# ---- one replay ------------------------------------------------------------------------------------------------
@dataclass
class Trace:
    """What a replay spent and what the user had: (GPU-steps spent, independent-test accuracy of the incumbent)
    at every change of the incumbent."""

    points: list[tuple[float, float]] = field(default_factory=list)
    spent: float = 0.0
    best_validation: float = -1.0

    def finished(self, config: Config) -> None:
        final = config.validation[TICKS]
        if config.independent_test is not None and final > self.best_validation:
            self.best_validation = final
            self.points.append((self.spent, config.independent_test))

    def result_at(self, steps: float, floor: float) -> float:
        value = floor
        for spent, accuracy in self.points:
            if spent <= steps:
                value = accuracy
        return value

    def steps_to(self, target: float) -> float:
        return next((spent for spent, accuracy in self.points if accuracy >= target), math.inf)


@dataclass
class Running:
    config: Config
    trial: Any
    tenths: int = 0


def replay_optuna(table: Table, sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
                  trials: int, parallelism: int) -> Trace:  # fmt: skip
    """Optuna with ``parallelism`` workers in lockstep: each reports every 10% and asks ``should_prune``; the
    objective is the final validation accuracy (random and TPE to the end use the no-op pruner)."""
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner, study_name="replay")
    step = table.total_steps / TICKS
    trace, running, asked = Trace(), [], 0
    while running or asked < trials:
        while len(running) < parallelism and asked < trials:
            trial = study.ask(table.space)
            running.append(Running(table.nearest(trial.params), trial))
            asked += 1
        for item in list(running):
            item.tenths += 1
            trace.spent += step
            value = item.config.validation[item.tenths]
            if item.tenths == TICKS:
                study.tell(item.trial, value)
                trace.finished(item.config)
                running.remove(item)
                continue
            item.trial.report(value, item.tenths)
            if item.trial.should_prune():
                study.tell(item.trial, state=optuna.trial.TrialState.PRUNED)
                running.remove(item)
    return trace


@dataclass
class Simulated:
    config: Config
    trial_id: int
    tenths: int = 0
    phase: Phase = Phase.RUNNING
    process: Process = Process.RUNNING
    early: float | None = None
    decision: Decision | None = None
    screened: bool = False
    resumes: int = 0
    done: bool = False
    audit: bool = False
    later: list[float] = field(default_factory=list)  # validation at rungs 1, 2... (rung 0's is ``early``)
    passed: int = 0  # rungs it was promoted past


def replay_ftstudy(table: Table, plan: Plan, early_tenths: int, seed: int, audit_fraction: float = 0.0,
                   later_rungs: Sequence[int] = ()) -> Trace:  # fmt: skip
    """ftstudy's engine loop: ``decide`` over what is observed, its actions applied, running trials advanced one
    tenth a tick; screening, a trial stops at its early tenth until promoted and resumed, and at each of
    ``later_rungs`` (tenths; ``plan.rungs`` is their number plus one) until promoted past it. Audited trials (drawn
    as the engine draws them, ``ftstudy.audit``) train to the end whatever their early accuracy, and cost that."""
    sampler = EarlyScoreTPESampler(seed=seed, n_startup_trials=5, constant_liar=True, multivariate=True)
    study = optuna.create_study(direction="maximize", sampler=sampler, study_name="replay")
    step = table.total_steps / TICKS
    trace, trials = Trace(), []
    while True:
        views = [TrialView(number=n, phase=t.phase, process=t.process, early_accuracy=t.early, decision=t.decision,
                           has_result=t.done, screened=t.screened, resumes=t.resumes, is_audit=t.audit,
                           later_scores=tuple(t.later), passed=t.passed)
                 for n, t in enumerate(trials)]  # fmt: skip
        actions = decide(plan, views)
        for action in actions:
            match action:
                case LaunchNew():
                    asked = study.ask(table.space)
                    audited = audit.audited(f"replay-{seed}", asked.number, audit_fraction)
                    trials.append(Simulated(table.nearest(asked.params), asked._trial_id, audit=audited))
                case Continue(number=n):
                    trials[n].decision = Decision.CONTINUE
                case Cancel(number=n):
                    study.tell(n, state=optuna.trial.TrialState.PRUNED)
                    trials[n].process, trials[n].phase = Process.SUCCEEDED, Phase.PRUNED
                case PassRung(number=n):
                    trials[n].passed += 1
                case Resume(number=n):
                    trials[n].process, trials[n].resumes = Process.RUNNING, trials[n].resumes + 1
                case Finish(number=n):
                    study.tell(n, trials[n].early)
                    trials[n].phase = Phase.COMPLETE
        if any(isinstance(a, StudyDone) for a in actions):
            return trace
        for trial in trials:
            if trial.process is not Process.RUNNING or trial.phase is not Phase.RUNNING:
                continue
            trial.tenths += 1
            trace.spent += step
            if trial.tenths == early_tenths:
                trial.early = trial.config.validation[early_tenths]
                study._storage.set_trial_intermediate_value(trial.trial_id, early_tenths, trial.early)
                if plan.screening and not trial.audit:
                    trial.screened, trial.process = True, Process.SUCCEEDED
            elif trial.tenths in later_rungs and trial.screened and not trial.audit:
                trial.later.append(trial.config.validation[trial.tenths])
                trial.process = Process.SUCCEEDED  # checkpointed at the rung: waits for its verdict there
            elif trial.tenths == TICKS:
                trial.done, trial.process = True, Process.SUCCEEDED
                trace.finished(trial.config)


# ---- methods, seeds and intervals ------------------------------------------------------------------------------
RANDOM = "random search, to the end"  # the rival every method's result is also compared with at its own GPU-steps


def methods(trials: int, parallelism: int, k: int) -> dict[str, Callable[[Table, int], Trace]]:
    plan = Plan(max_trials=trials, parallelism=parallelism, max_failed_trials=trials, retries_per_trial=0,
                promotion=TopK(k))  # fmt: skip
    screen = Plan(**{**plan.__dict__, "screening": True})
    rungs = Plan(**{**screen.__dict__, "rungs": 2, "reduction": 3})
    rungs3 = Plan(**{**screen.__dict__, "rungs": 3, "reduction": 3})

    def tpe(seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, constant_liar=True, multivariate=True)

    nop = optuna.pruners.NopPruner
    return {
        RANDOM: lambda t, s: replay_optuna(t, optuna.samplers.RandomSampler(seed=s), nop(),
                                                                 trials, parallelism),
        "TPE, to the end": lambda t, s: replay_optuna(t, tpe(s), nop(), trials, parallelism),
        f"ftstudy online top-{k} at 20%": lambda t, s: replay_ftstudy(t, plan, 2, s),
        f"ftstudy screen top-{k} at 20%": lambda t, s: replay_ftstudy(t, screen, 2, s, AUDIT_FRACTION),
        f"ftstudy screen top-{k} at 50%": lambda t, s: replay_ftstudy(t, screen, 5, s, AUDIT_FRACTION),
        f"ftstudy rungs 20/50%, top-{k}": lambda t, s: replay_ftstudy(t, rungs, 2, s, AUDIT_FRACTION, (5,)),
        f"ftstudy rungs 20/40/60%, top-{k}": lambda t, s: replay_ftstudy(t, rungs3, 2, s, AUDIT_FRACTION, (4, 6)),
        "Optuna SuccessiveHalving": lambda t, s: replay_optuna(
            t, tpe(s), optuna.pruners.SuccessiveHalvingPruner(min_resource=1), trials, parallelism),
        "Optuna Hyperband": lambda t, s: replay_optuna(
            t, tpe(s), optuna.pruners.HyperbandPruner(min_resource=1, max_resource=TICKS), trials, parallelism),
        "Optuna median": lambda t, s: replay_optuna(
            t, tpe(s), optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1), trials, parallelism),
    }  # fmt: skip


def bootstrap(values: Sequence[float], statistic: Callable[[Sequence[float]], float], seed: int = 0,
              resamples: int = 2000) -> tuple[float, float]:  # fmt: skip
    """95% percentile interval of ``statistic`` over resamples of ``values`` (seeded: the same every run)."""
    rng = random.Random(seed)
    stats = sorted(statistic([values[rng.randrange(len(values))] for _ in values]) for _ in range(resamples))
    return stats[int(0.025 * resamples)], stats[int(0.975 * resamples) - 1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values))


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    from ftstudy.report import spearman as rho

    return rho(list(xs), list(ys))


def ground_truth(table: Table) -> list[str]:
    """Spearman and top-5 overlap of validation at each tenth against the end, over every configuration."""
    from ftstudy.report import top_k_overlap

    lines = [f"ground truth over all {len(table.configs)} configurations (95% bootstrap over configurations):"]
    for tenth in range(1, TICKS):
        pairs = [(c.number, c.validation[tenth], c.validation[TICKS]) for c in table.configs]
        rho = spearman([p[1] for p in pairs], [p[2] for p in pairs])
        rng = random.Random(tenth)
        samples = []
        for _ in range(1000):
            drawn = [pairs[rng.randrange(len(pairs))] for _ in pairs]
            value = spearman([p[1] for p in drawn], [p[2] for p in drawn])
            if value is not None:
                samples.append(value)
        samples.sort()
        low, high = samples[25], samples[974]
        overlap = top_k_overlap(pairs, 5)
        lines.append(f"  at {tenth * 10:>3}%: Spearman {rho:.3f} [{low:.2f}, {high:.2f}], top-5 overlap {overlap}/5")
    return lines


def run(table: Table, trials: int, parallelism: int, k: int, seeds: int, tolerance: float,
        only: Sequence[str] = ()) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every method over ``seeds`` replay seeds; per method, the raw figures per seed."""
    budget = trials * table.total_steps
    target = table.best_independent - tolerance
    results: dict[str, dict[str, Any]] = {}
    floor = table.zero_shot_independent
    every = methods(trials, parallelism, k)
    random_search = [every[RANDOM](table, seed) for seed in range(seeds)]
    for name, method in every.items():
        if only and name not in only:
            continue
        traces = random_search if name == RANDOM else [method(table, seed) for seed in range(seeds)]
        results[name] = {
            "steps_to_target": [t.steps_to(target) / budget for t in traces],
            "spent": [t.spent / budget for t in traces],
            **{f"at_{q}": [t.result_at(q * budget, floor) for t in traces] for q in BUDGET_POINTS},
            # what the method ends with, against what random search had after as many GPU-steps (same seed)
            "over_random": [t.result_at(t.spent, floor) - r.result_at(t.spent, floor)
                            for t, r in zip(traces, random_search, strict=True)],
        }  # fmt: skip
    return results


def _fmt_share(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.2f}"


def report(table: Table, results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    budget = args.trials * table.total_steps
    lines = [
        f"table: {args.table} ({len(table.configs)} configurations, {table.total_steps} steps each; best "
        f"independent test {table.best_independent:.3f}, untrained {table.zero_shot_independent:.3f})",
        f"replay: {args.trials} trials on {args.parallelism} GPUs, top-{args.k}, {args.seeds} seeds; B = {budget} "
        f"GPU-steps (every trial to the end); target: within {args.tolerance} of the best "
        f"({table.best_independent - args.tolerance:.3f})",
        "",
        "| method | GPU-steps / B spent | to target, median share of B [95% CI] | reached | "
        + " | ".join(f"result at {int(q * 100)}% of B [95% CI]" for q in BUDGET_POINTS)
        + " | its result minus random search's at the same GPU-steps [95% CI] |",
        "|---" * (5 + len(BUDGET_POINTS)) + "|",
    ]
    for name, figures in results.items():
        to_target = figures["steps_to_target"]
        low, high = bootstrap(to_target, median)
        reached = sum(1 for v in to_target if not math.isinf(v)) / len(to_target)
        cells = []
        for q in BUDGET_POINTS:
            values = figures[f"at_{q}"]
            a, b = bootstrap(values, mean)
            cells.append(f"{mean(values):.3f} [{a:.3f}, {b:.3f}]")
        interval = f"[{_fmt_share(low)}, {_fmt_share(high)}]"
        gain = figures["over_random"]
        a, b = bootstrap(gain, mean)
        cells.append(f"{mean(gain):+.3f} [{a:+.3f}, {b:+.3f}]")
        lines.append(f"| {name} | {mean(figures['spent']):.2f} | {_fmt_share(median(to_target))} {interval} "
                     f"| {reached:.0%} | " + " | ".join(cells) + " |")  # fmt: skip
    return lines


def ratio_of_medians(numerator: Sequence[float], denominator: Sequence[float], seed: int = 0,
                     resamples: int = 2000) -> tuple[float, float, float]:  # fmt: skip
    """median(numerator) / median(denominator) over the same replay seeds, with a 95% paired bootstrap interval
    (inf when the numerator's median never reaches the target, 0 when only the denominator's does not)."""

    def ratio(indices: Sequence[int]) -> float:
        top, bottom = median([numerator[i] for i in indices]), median([denominator[i] for i in indices])
        if math.isinf(top):
            return math.inf
        return 0.0 if math.isinf(bottom) else top / bottom

    rng = random.Random(seed)
    count = len(numerator)
    stats = sorted(ratio([rng.randrange(count) for _ in range(count)]) for _ in range(resamples))
    return ratio(range(count)), stats[int(0.025 * resamples)], stats[int(0.975 * resamples) - 1]


def _fmt_ratio(value: float) -> str:
    """inf: the method's median run never reaches the target; 0: the rival's never does."""
    return "inf" if math.isinf(value) else f"{value:.2f}"


def goals(results: dict[str, dict[str, Any]], k: int) -> list[str]:
    """The issue's goals for the default promotion (screening, top-K at 20%): to the target with at most 25% of
    random search's GPU-steps, and with fewer than SuccessiveHalving and Hyperband."""
    default = f"ftstudy screen top-{k} at 20%"
    if default not in results:
        return []
    lines = []
    for rival in (RANDOM, "Optuna SuccessiveHalving", "Optuna Hyperband"):
        if rival in results:
            value, low, high = ratio_of_medians(results[default]["steps_to_target"], results[rival]["steps_to_target"])
            interval = f"[{_fmt_ratio(low)}, {_fmt_ratio(high)}]"
            never = " (0: the rival's median run never reaches the target)" if value == 0 else ""
            lines.append(f"GPU-steps to the target, {default} / {rival}: {_fmt_ratio(value)} {interval} "
                         f"(ratio of medians, paired bootstrap over seeds){never}")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=ROOT / "bench" / "curves" / "main.jsonl")
    parser.add_argument("--trials", type=int, default=40, help="each method's trial budget")
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--k", type=int, default=5, help="top-K of ftstudy's promotion")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--only", default="", help="comma-separated method names")
    parser.add_argument("--first", type=int, help="replay over the table's first N trials only (by trial number)")
    parser.add_argument("--json", type=Path, help="also write the raw per-seed figures here")
    parser.add_argument(
        "--score",
        choices=("independent", "test"),
        default="independent",
        help="what the user gets: the independent test set (the default), or, as a diagnostic, the test set of the "
        "training shops (every 'independent test' figure printed is then that test set's)",
    )
    args = parser.parse_args(argv)
    table = load_table(args.table)
    if args.first is not None:
        table = first_trials(table, args.first)
    if args.score == "test":
        table = on_the_test_set(table, args.table)
        print("score: the test set of the training shops, not the independent one (--score test)")
    results = run(table, args.trials, args.parallelism, args.k, args.seeds, args.tolerance,
                  [m for m in args.only.split(",") if m])  # fmt: skip
    for line in [*report(table, results, args), "", *goals(results, args.k), "", *ground_truth(table)]:
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
