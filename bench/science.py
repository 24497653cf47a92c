"""Every figure of docs/science.md's learning-curve section, regenerated from the committed records.

Reads ``bench/curves/*.jsonl`` (``bench/curves.py``), replays the search methods over the main table
(``bench/replay.py``), and writes, between the ``curves`` markers of docs/science.md, a section that says what the
records hold (how many configurations, seeds, CPU time, code versions) and what they show, each figure with its 95%
bootstrap interval; the plots go to docs/science/ and every number to docs/science/curves.json. Nothing here trains
or chooses anything: a number in the docs is a function of committed records and this script.

    .venv/bin/python bench/science.py                 # 100 replay seeds (minutes)
    .venv/bin/python bench/science.py --seeds 20      # quicker, wider intervals
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CURVES = ROOT / "bench" / "curves"
DOC = ROOT / "docs" / "science.md"
FIGURES = ROOT / "docs" / "science"
BEGIN, END = "<!-- curves:begin -->", "<!-- curves:end -->"
FLOOR = 0.125  # an answer with every attribute null scores about this: the model has stopped extracting


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


replay = _module("replay")
curves = _module("curves")


def part(name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    header: dict[str, Any]
    records: list[dict[str, Any]]
    header, records = curves.read_table(CURVES / f"{name}.jsonl")
    return header, records


def interval(values: Sequence[float], statistic: Any = statistics.fmean, seed: int = 0) -> str:
    low, high = replay.bootstrap(values, statistic, seed)
    return f"[{low:.3f}, {high:.3f}]"


def paired_page_gain(a: dict[str, Any], b: dict[str, Any], split: str) -> tuple[float, float, float]:
    """Mean page-score difference a - b on the same pages, with the report's 95% paired bootstrap over pages."""
    from ftstudy.report import paired_gain_interval

    pa, pb = a["pages"][split], b["pages"][split]
    interval = paired_gain_interval(pa, pb)
    assert interval is not None, f"{split}: the two trials were scored on different pages"
    return statistics.fmean(x - y for x, y in zip(pa, pb, strict=True)), *interval


def records_section(parts: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[str]:
    lines = ["| part | trials recorded / planned | data seed | training seed | steps a trial | CPU minutes | "
             "code versions |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    planned = {p.name: p.trials for p in curves.PARTS}
    for name, (header, records) in parts.items():
        minutes = sum((r.get("train_seconds") or 0) for r in records) / 60
        steps = sorted({r["total_steps"] for r in records}) or ["-"]
        lines.append(f"| {name} | {len(records)} / {planned.get(name, '?')} | {header.get('data_seed')} | "
                     f"{header.get('train_seed')} | {', '.join(map(str, steps))} | {minutes:.0f} | "
                     f"{', '.join(header.get('code_versions', []))} |")  # fmt: skip
    return lines


def baseline_section() -> list[str]:
    _, records = part("baseline-pick")
    if not records:
        return ["The practitioner's baseline has not been picked yet (part `baseline-pick`)."]
    rows = sorted(records, key=lambda r: r["params"]["learning_rate"])
    pick = curves.baseline_pick(CURVES)
    cells = ", ".join(f"{r['params']['learning_rate']:g}: {r['validation'].get('1.0', float('nan')):.3f}" for r in rows)
    text = f"picked learning rate **{pick:g}**" if pick is not None else "not all three trained yet"
    return [f"The baseline, fixed before any search: the best learning rate of a three-point grid (rank 8, alpha 16, "
            f"attention) by final validation accuracy on other pages (data seed 1): {cells}; {text}."]  # fmt: skip


def trust_section(records: list[dict[str, Any]], label: str) -> list[str]:
    """Ground truth: every configuration trained to the end, so no selection by early score."""
    from ftstudy.report import spearman, top_k_overlap

    done = [r for r in records if "1.0" in r["validation"] or r["outcome"] == "diverged"]
    if len(done) < 6:
        return [f"{label}: {len(done)} configurations finished; too few for a correlation."]
    lines = [f"{label}: validation accuracy at each point of training against the end, over all {len(done)} "
             "configurations trained to the end (no selection by early score; 95% bootstrap over configurations):",
             "", "| at | Spearman [95% CI] | top-5 overlap [95% CI] |", "|---|---|---|"]  # fmt: skip
    for tenth in range(1, 10):
        key = str(round(tenth / 10, 1))
        pairs = [(r["trial"], r["validation"].get(key, 0.0), r["validation"].get("1.0", 0.0)) for r in done]
        rho = spearman([p[1] for p in pairs], [p[2] for p in pairs])
        rng = random.Random(tenth)
        rhos, overlaps = [], []
        for _ in range(2000):
            drawn = [pairs[rng.randrange(len(pairs))] for _ in pairs]
            renumbered = [(i, e, f) for i, (_, e, f) in enumerate(drawn)]
            value = spearman([p[1] for p in drawn], [p[2] for p in drawn])
            if value is not None:
                rhos.append(value)
            overlap = top_k_overlap(renumbered, 5)
            if overlap is not None:
                overlaps.append(overlap)
        overlap = top_k_overlap(pairs, 5)
        rho_text = f"{rho:.3f} {_percentiles(rhos, '.2f')}" if rho is not None else "-"
        overlap_text = f"{overlap} {_percentiles(overlaps, 'd')}" if overlap is not None and overlaps else "-"
        lines.append(f"| {tenth * 10}% | {rho_text} | {overlap_text} |")
    return lines


def transfer_section(parts: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[str]:
    """Does what a study selects by carry over? Over every configuration of each complete table (no selection),
    Spearman of the final validation accuracy (what a study chooses by) against test accuracy on the training shops
    and against independent-test accuracy on the new shop, each with a 95% bootstrap over configurations."""
    from ftstudy.report import spearman

    lines = ["Final validation accuracy (what a study chooses by) against the test sets, over every configuration of a "
             "table (95% bootstrap over configurations):", "",
             "| table | configurations | steps a trial | Spearman with test (training shops) | Spearman with "
             "independent test (new shop) |", "|---|---|---|---|---|"]  # fmt: skip
    for name in ("main", "long", "confirm", "holdout", "holdout50"):
        records = [r for r in parts.get(name, ({}, []))[1] if "1.0" in r["validation"] and r["test"] is not None
                   and r["independent_test"] is not None]  # fmt: skip
        planned = next(p.trials for p in curves.PARTS if p.name == name)
        if len(records) < planned:
            continue
        cells = []
        for split in ("test", "independent_test"):
            pairs = [(r["validation"]["1.0"], r[split]) for r in records]
            rho = spearman([a for a, _ in pairs], [b for _, b in pairs])
            rng = random.Random(0)
            rhos = []
            for _ in range(2000):
                drawn = [pairs[rng.randrange(len(pairs))] for _ in pairs]
                value = spearman([a for a, _ in drawn], [b for _, b in drawn])
                if value is not None:
                    rhos.append(value)
            cells.append(f"{rho:.2f} {_percentiles(rhos, '.2f')}" if rho is not None else "-")
        lines.append(f"| `{name}` | {len(records)} | {records[0]['total_steps']} | {cells[0]} | {cells[1]} |")
    return lines


def _percentiles(values: list[Any], spec: str) -> str:
    """The 2.5th and 97.5th percentiles of bootstrap values, as an interval."""
    ordered = sorted(values)
    return f"[{ordered[int(0.025 * len(ordered))]:{spec}}, {ordered[int(0.975 * len(ordered)) - 1]:{spec}}]"


def seed_noise_section(main: list[dict[str, Any]]) -> list[str]:
    """Configurations trained at three training seeds: how much one number moves with the seed alone."""
    by_trial: dict[int, list[dict[str, Any]]] = {r["trial"]: [r] for r in main}
    for name in ("seed1", "seed2"):
        for r in part(name)[1]:
            by_trial.setdefault(r["trial"], []).append(r)
    triples = [rs for rs in by_trial.values() if len(rs) == 3]
    if not triples:
        return [
            "Seed noise: no configuration has been trained at all three training seeds yet (parts `seed1`, `seed2`)."
        ]
    lines = [f"Seed noise over {len(triples)} configurations trained at training seeds 0, 1 and 2 (same data):"]
    for split, get in (("final validation", lambda r: r["validation"].get("1.0")),
                       ("independent test", lambda r: r["independent_test"])):  # fmt: skip
        sds = [statistics.stdev(v) for rs in triples if None not in (v := [get(r) for r in rs])]
        if sds:
            lines.append(f"- {split}: standard deviation across seeds, mean {statistics.fmean(sds):.3f} "
                         f"{interval(sds)}, largest {max(sds):.3f}")  # fmt: skip
    return lines


def best_section(main: list[dict[str, Any]], zero_shot: float | None) -> list[str]:
    """The table's best configuration by final validation (what a search that found it would hand over) against
    the baseline, on the independent test's pages (paired bootstrap over pages)."""
    finished = [r for r in main if r["validation"].get("1.0") is not None and r.get("pages")]
    baseline = next((r for r in finished if r["baseline"]), None)
    if not finished or baseline is None:
        return ["Best against baseline: not enough records yet."]
    best = max(finished, key=lambda r: (r["validation"]["1.0"], -r["trial"]))
    lines = [f"The table's best configuration by final validation accuracy (trial {best['trial']}: "
             f"{_params(best['params'])}) against the baseline ({_params(baseline['params'])}), on the same pages "
             "(95% bootstrap over pages):"]  # fmt: skip
    for split in ("test", "independent_test"):
        if split in best["pages"] and split in baseline["pages"]:
            gain, low, high = paired_page_gain(best, baseline, split)
            lines.append(f"- {split.replace('_', ' ')}: {best[split]:.3f} against {baseline[split]:.3f}: "
                         f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]")  # fmt: skip
    if zero_shot is not None:
        lines.append(f"- the untrained model on the independent test: {zero_shot:.3f}")
    return lines


def _params(params: dict[str, Any]) -> str:
    return (f"lr {params['learning_rate']:.2g}, r {params['lora_r']}, alpha {params['lora_alpha']}, "
            f"{params['target_modules']}")  # fmt: skip


def dead_corner(main: list[dict[str, Any]], path: Path) -> list[str]:
    """The paper's Figure 3 on mini: final accuracy over learning rate and alpha; the floor marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(main) < 3:
        return []
    finals = [r["validation"].get("1.0", 0.0) for r in main]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    points = ax.scatter([r["params"]["learning_rate"] for r in main], [r["params"]["lora_alpha"] for r in main],
                        c=finals, cmap="viridis", s=40, edgecolors="none")  # fmt: skip
    dead = [r for r, f in zip(main, finals, strict=True) if f <= FLOOR + 1e-9]
    ax.scatter(
        [r["params"]["learning_rate"] for r in dead],
        [r["params"]["lora_alpha"] for r in dead],
        facecolors="none",
        edgecolors="red",
        s=90,
        label=f"at or below the all-null floor ({FLOOR})",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("LoRA alpha")
    ax.set_title(f"final validation accuracy, {len(main)} configurations (mini, 50 steps)")
    fig.colorbar(points, ax=ax)
    if dead:
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    lowest = min(r["params"]["learning_rate"] for r in dead) if dead else None
    where = f", all at learning rate {lowest:.2g} or above" if lowest is not None else ""
    return [f"The dead corner (the paper's \"0-accuracy models\"): {len(dead)} of {len(main)} configurations ended at "
            f"or below the all-null floor ({FLOOR}){where}.", "", f"![dead corner](science/{path.name})"]  # fmt: skip


def efficiency_section() -> list[str]:
    """Accuracy against training samples at three data-and-training seeds (parts ``efficiency-s*``), with a
    two-level bootstrap (seeds, then pages within a seed) on the test set's 256 pages, and a saturation rule whose
    tolerance is twice the measured seed noise (never below 0.01)."""
    runs = {
        seed: {r["train_examples"]: r for r in part(f"efficiency-s{seed}")[1] if r.get("pages")} for seed in range(3)
    }
    runs = {seed: by_size for seed, by_size in runs.items() if by_size}
    if not runs:
        return ["Data efficiency: no sweep recorded yet (parts `efficiency-s0`, `-s1`, `-s2`)."]
    sizes = sorted({n for by_size in runs.values() for n in by_size})
    rng = random.Random(0)
    rows, means, sds = [], {}, []
    for n in sizes:
        present = [by_size[n] for by_size in runs.values() if n in by_size]
        tests = [r["test"] for r in present]
        means[n] = statistics.fmean(tests)
        if len(tests) > 1:
            sds.append(statistics.stdev(tests))
        draws = []
        for _ in range(2000):
            seeds_drawn = [present[rng.randrange(len(present))] for _ in present]
            pages = [r["pages"]["test"] for r in seeds_drawn]
            draws.append(statistics.fmean(statistics.fmean(p[rng.randrange(len(p))] for _ in p) for p in pages))
        validation = statistics.fmean(r["validation"].get("1.0", 0.0) for r in present)
        rows.append(f"| {n} | {len(present)} | {validation:.3f} | {means[n]:.3f} {_percentiles(draws, '.3f')} | "
                    f"{statistics.fmean(r['independent_test'] for r in present):.3f} |")  # fmt: skip
    noise = statistics.fmean(sds) if sds else None
    tolerance = max(0.01, 2 * noise) if noise is not None else 0.01
    best = max(means.values())
    within = [n for n in sizes if means[n] >= best - tolerance]
    saturation = within[0] if within and within[0] != sizes[-1] else None
    return [
        f"Data efficiency (fixed hyperparameters, each point trained to the end; {len(runs)} data-and-training seeds; "
        "test accuracy with a 95% bootstrap over seeds and pages):", "",
        "| training samples | seeds | validation | test [95% CI] | independent test |", "|---|---|---|---|---|",
        *rows, "",
        f"Seed noise (standard deviation of test accuracy across seeds, mean over sizes): "
        f"{noise:.3f}" if noise is not None else "Seed noise: one seed so far.",
        f"Saturation rule: the fewest samples whose mean test accuracy is within {tolerance:.3f} (twice the seed "
        f"noise, at least 0.01) of the best; not reached if only the largest is: "
        f"**{saturation if saturation is not None else 'not reached'}**.",
        *largest_point(runs.get(0, {}).get(3200), tolerance),
    ]  # fmt: skip


def largest_point(half: dict[str, Any] | None, tolerance: float) -> list[str]:
    """Part ``efficiency-6400``: the paper's saturation size, at seed 0 only (one trial of 1,600 steps), against seed
    0's 3,200-page point on the same test pages (paired over pages); saturated there by the same rule if the gain
    from 3,200 is below the rule's tolerance."""
    path = CURVES / "efficiency-6400.jsonl"
    records = [r for r in part("efficiency-6400")[1] if r.get("pages")] if path.exists() else []
    if not records or half is None:
        return ["", "The 6,400-page point (seed 0): not recorded yet (part `efficiency-6400`)."]
    big = records[0]
    gain, low, high = paired_page_gain(big, half, "test")
    independent, i_low, i_high = paired_page_gain(big, half, "independent_test")
    verdict = "below" if gain < tolerance else "above"
    return ["", f"At 6,400 pages (seed 0 only, 1,600 steps): test {big['test']:.3f} against {half['test']:.3f} "
            f"at 3,200 pages (seed 0), a paired gain of {gain:+.3f} [{low:+.3f}, {high:+.3f}] over the same 256 "
            f"pages, {verdict} the saturation rule's tolerance ({tolerance:.3f}); independent test "
            f"{big['independent_test']:.3f} ({independent:+.3f} [{i_low:+.3f}, {i_high:+.3f}])."]  # fmt: skip


def replay_section(seeds: int) -> tuple[list[str], dict[str, Any]]:
    path = CURVES / "main.jsonl"
    if not path.exists():
        return ["Replay: no main table yet."], {}
    table = replay.load_table(path)
    if len(table.configs) < 12:
        return [f"Replay: {len(table.configs)} configurations recorded; waiting for at least 12."], {}
    args = argparse.Namespace(table=path.relative_to(ROOT), trials=40, parallelism=4, k=5, seeds=seeds,
                              tolerance=0.01)  # fmt: skip
    results = replay.run(table, args.trials, args.parallelism, args.k, seeds, args.tolerance)
    lines = [f"`bench/replay.py --seeds {seeds}` over the main table as recorded now ({len(table.configs)} of 129 "
             "configurations; a configuration asked for is answered by the nearest recorded one, so a partial table "
             "is a coarser surface):", "", *replay.report(table, results, args)[3:], "",
             *replay.goals(results, 5), "", *example_section(table, seeds)]  # fmt: skip
    return lines, results


EXAMPLE_METHOD = "ftstudy screen top-3 at 50%"  # examples/study.yaml's promotion
# The confirmation fixed in docs/science.md on 2026-12-05, before any record of part long was read: the candidate
# becomes the default only if its gain over random search has a 95% interval above zero on long and is not below
# screening at 20%'s by more than CONFIRM_MARGIN. Not to be changed now that long has been read.
CANDIDATE, DEFAULT_METHOD, CONFIRM_MARGIN = "ftstudy rungs 20/40/60%, top-5", "ftstudy screen top-5 at 20%", 0.005


@functools.cache  # the second and third confirmations both replay confirm: once
def replay_complete_part(
    name: str, configurations: int, seeds: int, first: int | None = None
) -> tuple[Any, argparse.Namespace, Any] | str:
    """``bench/replay.py --table bench/curves/NAME.jsonl --seeds SEEDS`` with its defaults (and ``--first FIRST``
    where given), once the part is complete (else why not yet)."""
    path = CURVES / f"{name}.jsonl"
    table = replay.load_table(path) if path.exists() else None
    if table is None or len(table.configs) < configurations:
        recorded = len(table.configs) if table is not None else 0
        return f"part {name} has {recorded} of {configurations} configurations; it runs once complete."
    if first is not None:
        table = replay.first_trials(table, first)
    args = argparse.Namespace(table=path.relative_to(ROOT), trials=40, parallelism=4, k=5, seeds=seeds,
                              tolerance=0.01, first=first)  # fmt: skip
    return table, args, replay.run(table, args.trials, args.parallelism, args.k, seeds, args.tolerance)


def replayed_lines(title: str, table: Any, args: argparse.Namespace, results: Any, note: str = "") -> list[str]:
    """The command, the table's size and the replay's table, as both confirmations print them."""
    return [
        f"{title}, `.venv/bin/python bench/replay.py --table {args.table}"
        + (f" --first {args.first}" if args.first is not None else "")
        + f" --seeds {args.seeds}` "
        f"({len(table.configs)} configurations of {table.total_steps} steps{note}):",
        "",
        *replay.report(table, results, args)[3:],
        "",
    ]


def gain(results: dict[str, Any], method: str) -> tuple[float, float, float]:
    """A method's result minus random search's at the same GPU-steps: mean over replay seeds and 95% interval."""
    values = results[method]["over_random"]
    low, high = replay.bootstrap(values, replay.mean)
    return replay.mean(values), low, high


def gain_words(low: float, high: float) -> str:
    """What a gain's 95% interval says, as the confirmations' rules read it."""
    if low > 0:
        return "a gain (interval above zero)"
    return "no gain, a loss (interval below zero)" if high < 0 else "no measurable gain (interval not above zero)"


def confirmation_section(seeds: int) -> list[str]:
    """The pre-registered confirmation over part ``long``: ``bench/replay.py --table bench/curves/long.jsonl`` with
    its default settings, and the verdict the rule gives."""
    replayed = replay_complete_part("long", 41, seeds)
    if isinstance(replayed, str):
        return [f"Confirmation: {replayed}"]
    table, args, results = replayed
    (candidate, low, high), (default, _, _) = gain(results, CANDIDATE), gain(results, DEFAULT_METHOD)
    above_zero = low > 0
    close_enough = candidate >= default - CONFIRM_MARGIN
    verdict = (
        f"**confirmed**: {CANDIDATE} becomes the default"
        if above_zero and close_enough
        else f"**not confirmed**: {DEFAULT_METHOD} stays the default"
    )
    return [
        *replayed_lines(
            "The confirmation fixed in advance (above)",
            table,
            args,
            results,
            "; its raw output is `bench/results/confirmation-long/`",
        ),
        f"The rule: {CANDIDATE}'s gain over random search at the same GPU-steps is "
        f"{candidate:+.3f} [{low:+.3f}, {high:+.3f}] (interval above zero: "
        f"{'yes' if above_zero else 'no'}); {DEFAULT_METHOD}'s is {default:+.3f} (the candidate not "
        f"below it by more than {CONFIRM_MARGIN}: {'yes' if close_enough else 'no'}). Verdict: {verdict}.",
    ]


def example_section(table: Any, seeds: int) -> list[str]:
    """The bundled example's setting (10 trials, 2 at a time, screening top-3 at 50%) replayed over the table: what
    its result is worth against random search given the same GPU-steps, which one run of the example cannot say."""
    results = replay.run(table, 10, 2, 3, seeds, 0.01, only=[EXAMPLE_METHOD])
    gain = results[EXAMPLE_METHOD]["over_random"]
    low, high = replay.bootstrap(gain, replay.mean)
    spent = replay.mean(results[EXAMPLE_METHOD]["spent"])
    return [
        f"The example's setting (examples/study.yaml: 10 trials, 2 at a time, screening top-3 at 50%, audit share "
        f"0.1) replayed {seeds} times over the same table: it spends {spent:.2f} of the GPU-steps of training its 10 "
        f"trials to the end, and its best trial's independent-test accuracy minus what random search (every trial "
        f"to the end) had after as many GPU-steps is **{replay.mean(gain):+.3f} [{low:+.3f}, {high:+.3f}]** (mean over "
        "replay seeds, 95% bootstrap interval).",
    ]


# The second confirmation, fixed in docs/science.md on 2026-12-06 before any record of part confirm existed: does
# the default gain over random search at all, and does Optuna's Hyperband (the one method above zero on both main
# and long) beat the default by more than CONFIRM_MARGIN? Not to be changed once confirm has been read.
HYPERBAND = "Optuna Hyperband"


def second_confirmation_section(seeds: int) -> list[str]:
    """The pre-registered rules over part ``confirm``, with ``bench/replay.py``'s default settings."""
    replayed = replay_complete_part("confirm", 41, seeds)
    if isinstance(replayed, str):
        return [f"Second confirmation: {replayed}"]
    table, args, results = replayed
    (default, d_low, d_high), (hyperband, h_low, h_high) = gain(results, DEFAULT_METHOD), gain(results, HYPERBAND)
    hyperband_wins = h_low > 0 and hyperband > default + CONFIRM_MARGIN
    return [
        *replayed_lines("The second confirmation fixed in advance (above)", table, args, results,
                        "; its raw output is `bench/results/confirmation-confirm/`"),
        f"Rule 1: {DEFAULT_METHOD} (the default) gains over random search at the same GPU-steps "
        f"{default:+.3f} [{d_low:+.3f}, {d_high:+.3f}]: "
        + gain_words(d_low, d_high) + ".",
        f"Rule 2: {HYPERBAND} {hyperband:+.3f} [{h_low:+.3f}, {h_high:+.3f}]: "
        + ("above zero and above the default's by more than "
           f"{CONFIRM_MARGIN}: a Hyperband promotion becomes the next default candidate" if hyperband_wins
           else "not both above zero and above the default's by more than "
           f"{CONFIRM_MARGIN}: no change"),
    ]  # fmt: skip


def paired_lift(after: dict[str, Any], before: dict[str, Any], method: str) -> tuple[float, float, float]:
    """A method's final independent-test result over one table minus over another, paired by replay seed."""
    end = f"at_{max(replay.BUDGET_POINTS)}"  # what the method ends with: it never spends more than the budget
    lift = [a - b for a, b in zip(after[method][end], before[method][end], strict=True)]
    low, high = replay.bootstrap(lift, replay.mean)
    return replay.mean(lift), low, high


# The third confirmation, fixed in docs/science.md on 2026-12-06 before any record of part holdout existed: with
# validation pages from a held-out shop, layout and category, does the default gain over random search (rule 1), and
# is its independent-test result not worse than with confirm's validation, paired by replay seed (rule 2)? Not to be
# changed once holdout has been read.
def third_confirmation_section(seeds: int) -> list[str]:
    """The pre-registered rules over part ``holdout``, against part ``confirm``."""
    replayed = replay_complete_part("holdout", 41, seeds)
    if isinstance(replayed, str):
        return [f"Third confirmation: {replayed}"]
    table, args, results = replayed
    default, low, high = gain(results, DEFAULT_METHOD)
    rule_1 = low > 0
    before = replay_complete_part("confirm", 41, seeds)
    assert not isinstance(before, str), "part confirm is complete"
    lift, l_low, l_high = paired_lift(results, before[2], DEFAULT_METHOD)
    rule_2 = l_high >= 0  # "not below zero": the interval does not lie wholly below it
    recommended = rule_1 and rule_2
    return [
        *replayed_lines("The third confirmation fixed in advance (above)", table, args, results,
                        "; its raw output is `bench/results/confirmation-holdout/`"),
        f"Rule 1: with held-out validation, {DEFAULT_METHOD} (the default) gains over random search at the same "
        f"GPU-steps {default:+.3f} [{low:+.3f}, {high:+.3f}]: "
        + gain_words(low, high) + ".",
        f"Rule 2: its independent-test result with held-out validation minus with confirm's, paired by replay seed: "
        f"{lift:+.3f} [{l_low:+.3f}, {l_high:+.3f}] (interval "
        + ("not below zero" if rule_2 else "below zero") + "). Verdict: "
        + ("**confirmed**: validationHoldout is recommended" if recommended
           else "**not confirmed**: validationHoldout is not recommended") + ".",
    ]  # fmt: skip


# The fourth confirmation, fixed in docs/science.md on 2026-12-06 (23:00 UTC, b858f63) before any record of part
# holdout50 existed: on 50-step trials (the example's), does the default gain over random search with held-out
# validation (rule 1), and does held-out validation lower screening at 50%'s result (the example's early point)
# against main's first 41 trials, paired by replay seed (rule 2; wholly below zero: the example stops using it)? Not
# to be changed once holdout50 has been read.
SCREEN_50 = "ftstudy screen top-5 at 50%"


def fourth_confirmation_section(seeds: int) -> list[str]:
    """The pre-registered rules over part ``holdout50``, against ``main``'s first 41 trials."""
    replayed = replay_complete_part("holdout50", 41, seeds)
    if isinstance(replayed, str):
        return [f"Fourth confirmation: {replayed}"]
    table, args, results = replayed
    before = replay_complete_part("main", 129, seeds, first=41)
    assert not isinstance(before, str), "part main is complete"
    default, low, high = gain(results, DEFAULT_METHOD)
    lifts = {method: paired_lift(results, before[2], method) for method in (DEFAULT_METHOD, SCREEN_50)}
    drop = lifts[SCREEN_50][2] < 0  # the interval lies wholly below zero
    return [
        *replayed_lines("The fourth confirmation fixed in advance (above)", table, args, results,
                        "; its raw output is `bench/results/confirmation-holdout50/`"),
        *replayed_lines("Against it, main's first 41 trials", before[0], before[1], before[2]),
        f"Rule 1: on 50-step trials with held-out validation, {DEFAULT_METHOD} (the default) gains over random search "
        f"at the same GPU-steps {default:+.3f} [{low:+.3f}, {high:+.3f}]: "
        + gain_words(low, high) + ".",
        "Rule 2: the independent-test result over holdout50 minus over main's first 41, paired by replay seed: "
        + "; ".join(f"{method} {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]" for method, (mean, lo, hi) in lifts.items())
        + ". Verdict: "
        + (f"{SCREEN_50}'s interval lies below zero: **the example stops validating on held-out pages**, and they "
           "are recommended only for trials of 200 steps or more" if drop
           else f"{SCREEN_50}'s interval does not lie below zero: the example and docs/study.md stay as they are")
        + ".",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100)
    args = parser.parse_args(argv)
    parts = {p.name: part(p.name) for p in curves.PARTS if (CURVES / f"{p.name}.jsonl").exists()}
    main_records = parts.get("main", ({}, []))[1]
    zero_shot = next((r["zero_shot"].get("independent_test") for r in main_records if r.get("zero_shot")), None)
    FIGURES.mkdir(parents=True, exist_ok=True)
    replay_lines, results = replay_section(args.seeds)
    long_records = parts.get("long", ({}, []))[1]
    section = [
        BEGIN,
        f"Written by `.venv/bin/python bench/science.py --seeds {args.seeds}` from the committed records in "
        "`bench/curves/` (`bench/curves.py`; mini on the European task, 200 training pages, validation on 64 pages at "
        "every 10% of training, test and independent test on 256 pages each at the end).",
        "", *records_section(parts), "", *baseline_section(), "",
        *trust_section(main_records, "Trials of 50 steps (part `main`)"), "",
        *([*trust_section(long_records, "Trials of 200 steps (part `long`)"), ""] if long_records else []),
        *transfer_section(parts), "", *seed_noise_section(main_records), "", *best_section(main_records, zero_shot), "",
        *dead_corner(main_records, FIGURES / "dead_corner.png"), "", *efficiency_section(), "", *replay_lines, "",
        *(confirmation_section(args.seeds) if long_records else []), "", *second_confirmation_section(args.seeds),
        "", *third_confirmation_section(args.seeds), "", *fourth_confirmation_section(args.seeds), END,
    ]  # fmt: skip
    text = DOC.read_text()
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + "\n".join(section) + text[text.index(END) + len(END) :]
    else:
        raise SystemExit(f"{DOC} has no {BEGIN} marker")
    DOC.write_text(text)
    summary = {name: {k: v for k, v in figures.items()} for name, figures in results.items()}
    (FIGURES / "curves.json").write_text(json.dumps({"seeds": args.seeds, "replay": summary}, default=str, indent=1))
    print("\n".join(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
