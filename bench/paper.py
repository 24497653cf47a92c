"""The shape of the paper's three claims, reproduced with ftstudy's own studies (Oliver & Wang, 2024).

1. Data efficiency: accuracy against the number of training samples (0, the untrained model, up to 3,200), every
   point trained to the end with fixed hyperparameters; the saturation point by ``ftstudy.report``'s rule.
2. Is 20% trustworthy: a study of 20 trials trained to the end (policy ``none``, random sampler so the trials
   spread over the space), with validation accuracy also measured at 10%, 30% and 50%; Spearman(early, final) and
   top-5 overlap at each fraction, with 95% bootstrap intervals over trials.
3. Search vs baseline: the bundled example study (TPE, scored at 20%, top-K continued) with three sampler seeds;
   the best searched trial against the baseline hyperparameters on the test and independent test sets (mean and
   spread), and the training steps the 20% rule spent against training every trial to the end.

Every study runs through ``ftstudy run`` (trials as local processes, SQLite), so the bench measures the product.
It writes ``docs/science/paper-<model>.json``, the plots beside it, and the results section of docs/science.md
(between its ``paper-bench`` markers), each result beside the paper's number.

    .venv/bin/python bench/paper.py                       # the mini model on this machine's CPUs (under an hour)
    .venv/bin/python bench/paper.py --only efficiency     # one part
    .venv/bin/python bench/paper.py --model smollm2 --scale paper   # on a GPU: the paper's sizes (200 samples up)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ftstudy.cli import main as ftstudy
from ftstudy.report import Row, data_efficiency, data_efficiency_plot, rows, spearman, steps, summary, top_k_overlap

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "study.yaml"
SWEEP = ROOT / "examples" / "data-efficiency.yaml"
FRACTIONS = (0.1, 0.2, 0.3, 0.5)
PAPER = {
    "zero_shot": 0.70,
    "at_200": 0.88,
    "saturation": 6500,
    "top5_overlap": 4,
    "test_gain": 0.02,
}
ALL_PARTS = "efficiency,trust,search"
MARK_BEGIN, MARK_END = "<!-- paper-bench:begin -->", "<!-- paper-bench:end -->"


def _document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def _run_study(document: dict[str, Any], workdir: Path, log: Path) -> tuple[list[Row], float]:
    """Run one study with ``ftstudy run`` (its output to ``log``) and read its trials back; returns the rows and
    the wall time."""
    import optuna

    name = document["metadata"]["name"]
    study_file = workdir / f"{name}.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    study_file.write_text(yaml.safe_dump(document, sort_keys=False))
    started = time.monotonic()
    with log.open("a") as out, contextlib.redirect_stdout(out):
        code = ftstudy(["run", str(study_file), "--workdir", str(workdir)])
    elapsed = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"study {name} ended with exit code {code}; see {log}")
    url = f"sqlite:///{workdir / name / 'study.db'}"
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    return rows(trials), elapsed


def _with_model(document: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The trainer picks the device itself (a GPU when there is one)."""
    document["spec"]["model"] = args.model
    return document


# ---- 1. data efficiency ----------------------------------------------------------------------------------------
def efficiency(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    document = _with_model(_document(SWEEP), args)
    # On two CPU cores the example's 3,200-sample point alone takes a quarter of an hour; the bench stops at 1,600.
    sizes = (
        [0, 50, 100, 200, 400, 800, 1600, 3200, 6400]
        if args.scale == "paper"
        else [0, 25, 50, 100, 200, 400, 800, 1600]
    )
    document["spec"]["dataset"]["generate"]["train"] = sizes[-1]
    document["spec"]["searchSpace"]["train_samples"]["choices"] = sizes
    document["spec"]["budget"]["maxTrials"] = len(sizes)
    table, _ = _run_study(document, args.workdir, out / "efficiency.log")
    curve = data_efficiency(table)
    assert curve is not None, "the sweep produced fewer than three points"
    paper_curve = [(0, PAPER["zero_shot"]), (200, PAPER["at_200"]), (PAPER["saturation"], 0.90)]
    data_efficiency_plot(curve, out / "data_efficiency.png", paper=paper_curve if args.plot_paper else ())
    at_200 = next((p["accuracy"] for p in curve["points"] if p["samples"] == 200), None)
    return {"curve": curve, "at_200": at_200, "zero_shot": curve["points"][0]["accuracy"]}


# ---- 2. is 20% trustworthy -------------------------------------------------------------------------------------
def _bootstrap(
    pairs: Sequence[tuple[int, float, float]], statistic: Callable[[Sequence[tuple[int, float, float]]], Any]
) -> tuple[float, float] | None:
    """95% percentile interval of ``statistic`` over 2,000 resamples of the trials (seeded: the same every run)."""
    rng = random.Random(0)
    values = []
    for _ in range(2000):
        sample = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        # a resample repeats trials: renumber so that top-K sets count each draw once
        value = statistic([(i, early, final) for i, (_, early, final) in enumerate(sample)])
        if value is not None:
            values.append(float(value))
    if len(values) < 100:
        return None
    values.sort()
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


def trust(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    document = _with_model(_document(EXAMPLE), args)
    spec = document["spec"]
    document["metadata"]["name"] = "trust"
    spec["sampler"] = {"type": "random", "seed": 1}
    spec["promotion"] = {"policy": "none"}
    spec["budget"] = {"maxTrials": args.trust_trials, "parallelism": 2, "maxFailedTrials": 3, "retriesPerTrial": 1}
    spec.pop("baseline", None)
    spec["training"]["extraEvalFractions"] = [f for f in FRACTIONS if f != spec["training"]["earlyFraction"]]
    table, _ = _run_study(document, args.workdir, out / "trust.log")
    results: dict[str, Any] = {"trials": len(table), "fractions": {}}
    for fraction in FRACTIONS:
        pairs = []
        for r in table:
            if r.total_steps is None or r.state != "complete":
                continue
            final = r.final if r.final is not None else 0.0  # diverged: the model it leaves scores nothing
            step = max(1, round(r.total_steps * fraction))
            early = r.early if step == r.early_step else r.accuracy_at_step.get(step)
            if early is None and r.final is None:
                early = 0.0  # diverged before this point
            if early is not None:
                pairs.append((r.number, early, final))
        rho = spearman([p[1] for p in pairs], [p[2] for p in pairs])
        results["fractions"][str(fraction)] = {
            "pairs": len(pairs),
            "spearman": rho,
            "spearman_ci": _bootstrap(pairs, lambda p: spearman([x[1] for x in p], [x[2] for x in p])),
            "top5_overlap": top_k_overlap(pairs, 5),
            "top5_overlap_ci": _bootstrap(pairs, lambda p: top_k_overlap(p, 5)),
        }
    _trust_plot(table, out / "early_vs_final.png")
    return results


def _trust_plot(table: Sequence[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    done = [r for r in table if r.state == "complete"]
    ax.scatter([r.early or 0.0 for r in done], [r.final or 0.0 for r in done])
    for r in done:
        ax.annotate(str(r.number), (r.early or 0.0, r.final or 0.0), fontsize=8)
    ax.set_xlabel("validation accuracy at 20% of training")
    ax.set_ylabel("validation accuracy at the end")
    ax.set_title(f"{len(done)} trials trained to the end")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- 3. search vs baseline -------------------------------------------------------------------------------------
def search(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    runs = []
    for seed in range(1, args.seeds + 1):
        document = _with_model(_document(EXAMPLE), args)
        document["metadata"]["name"] = f"search-seed{seed}"
        document["spec"]["sampler"]["seed"] = seed
        # The paper's rule, as the committed results (docs/science.md) were measured: scored at 20%, decided online
        # against the trials scored before (minScored 1). The bundled example itself now screens at 50% on mini.
        document["spec"]["training"]["earlyFraction"] = 0.2
        document["spec"]["promotion"] = {"policy": "topK", "k": 3, "minScored": 1, "mode": "online"}
        table, seconds = _run_study(document, args.workdir, out / "search.log")
        info = summary(table, document["spec"]["promotion"].get("k", 5))
        spent = steps(table)
        runs.append(
            {
                "seed": seed,
                "minutes": seconds / 60,
                "best": info["best"]["number"] if info["best"] else None,
                "test_gain": info["test_gain_over_baseline"],
                "independent_test_gain": info["independent_test_gain_over_baseline"],
                "best_gain_over_zero_shot": info["best_gain_over_zero_shot"],
                "final_spread": info["final_spread"],
                "steps_ratio": spent["spent"] / spent["without_early_stopping"],
            }
        )

    def stats(key: str) -> dict[str, float | None]:
        values = [r[key] for r in runs if r[key] is not None]
        if not values:
            return {"mean": None, "min": None, "max": None}
        return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}

    return {
        "runs": runs,
        **{k: stats(k) for k in ("test_gain", "independent_test_gain", "steps_ratio", "best_gain_over_zero_shot")},
    }


# ---- the report ------------------------------------------------------------------------------------------------
def _f(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _interval(ci: Sequence[float] | None) -> str:
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [MARK_BEGIN, f"Written by `{command}` on {results['machine']}, {results['date']} "
             f"({results['minutes']:.0f} minutes in all). Model: `{results['model']}`.", ""]  # fmt: skip
    lines += ["| claim | the paper | this run |", "|---|---|---|"]
    e = results.get("efficiency")
    if e:
        sat = e["curve"]["saturation"]
        lines.append(f"| untrained → 200 training samples | 0.70 → 0.88 | {_f(e['zero_shot'])} → {_f(e['at_200'])} |")
        lines.append(
            f"| gains saturate at | ~6,500 samples | {sat if sat is not None else 'not within the sweep'} "
            f"(largest: {e['curve']['points'][-1]['samples']}) |"
        )
    t = results.get("trust")
    if t:
        at = t["fractions"]["0.2"]
        lines.append(
            f"| top-5 at 20% still top-5 at the end | 4 of 5 | {at['top5_overlap']} of 5"
            f"{_interval(at['top5_overlap_ci'])} ({at['pairs']} trials) |"
        )
        lines.append(f"| Spearman(20%, final) | not given | {_f(at['spearman'])}{_interval(at['spearman_ci'])} |")
    s = results.get("search")
    if s:
        g, i = s["test_gain"], s["independent_test_gain"]
        lines.append(
            f"| search's best vs baseline, test | about +0.02 | {_f(g['mean'], True)} "
            f"(seeds: {', '.join(_f(r['test_gain'], True) for r in s['runs'])}) |"
        )
        lines.append(
            f"| search's best vs baseline, independent test | about +0.02 | {_f(i['mean'], True)} "
            f"(seeds: {', '.join(_f(r['independent_test_gain'], True) for r in s['runs'])}) |"
        )
        lines.append(
            f"| training steps, 20% rule / every trial to the end | (GPU time saved) | {s['steps_ratio']['mean']:.2f} |"
        )
    lines.append("")
    if t:
        lines += ["Early accuracy as a predictor of the final one, by where it is measured:", "",
                  "| measured at | Spearman [95% CI] | top-5 overlap [95% CI] |", "|---|---|---|"]  # fmt: skip
        for fraction, at in t["fractions"].items():
            lines.append(
                f"| {float(fraction):.0%} | {_f(at['spearman'])}{_interval(at['spearman_ci'])} | "
                f"{at['top5_overlap']}{_interval(at['top5_overlap_ci'])} |"
            )
        lines.append("")
    if e:
        lines += ["Accuracy by training samples (validation, fixed hyperparameters):", "",
                  "| samples | " + " | ".join(str(p["samples"]) for p in e["curve"]["points"]) + " |",
                  "|---" * (len(e["curve"]["points"]) + 1) + "|",
                  "| accuracy | " + " | ".join(f"{p['accuracy']:.3f}" for p in e["curve"]["points"]) + " |", "",
                  f"Saturation rule: {e['curve']['rule']}.", "",
                  "![data efficiency](science/data_efficiency.png)", ""]  # fmt: skip
    if t:
        lines += ["![early vs final](science/early_vs_final.png)", ""]
    lines.append(MARK_END)
    return "\n".join(lines)


def _write_markdown(doc: Path, section: str) -> None:
    text = doc.read_text() if doc.exists() else f"# Science\n\n{MARK_BEGIN}\n{MARK_END}\n"
    if MARK_BEGIN not in text:
        text += f"\n{MARK_BEGIN}\n{MARK_END}\n"
    before, rest = text.split(MARK_BEGIN, 1)
    _, after = rest.split(MARK_END, 1)
    doc.write_text(before + section + after)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mini", help="mini (CPU) or smollm2 (a GPU); any model reference")
    p.add_argument("--scale", choices=["cpu", "paper"], default="cpu", help="paper: the paper's sample sizes")
    p.add_argument("--only", default=ALL_PARTS, help="comma-separated parts (added to earlier results)")
    p.add_argument("--seeds", type=int, default=3, help="sampler seeds of the search-vs-baseline part")
    p.add_argument("--trust-trials", type=int, default=20)
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "paper")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "science")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "science.md")
    p.add_argument("--plot-paper", action="store_true", help="draw the paper's three known points on the curve")
    p.add_argument("--machine", default="a 2-core CPU machine (no accelerator)")
    args = p.parse_args(argv)
    args.workdir = args.workdir / args.model.replace("/", "_")
    args.out.mkdir(parents=True, exist_ok=True)
    parts: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
        "efficiency": efficiency,
        "trust": trust,
        "search": search,
    }
    # Parts run separately (--only) add to the results of earlier runs of the same model, so the report can be
    # built a part at a time; each part records its own minutes.
    record = args.out / f"paper-{args.model}.json"
    results: dict[str, Any] = json.loads(record.read_text()) if record.exists() and args.only != ALL_PARTS else {}
    results.update({"model": args.model, "machine": args.machine, "date": time.strftime("%Y-%m-%d")})
    commands = results.setdefault("commands", {})
    command = ("bench/paper.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    for name in args.only.split(","):
        part_started = time.monotonic()
        print(f"== {name}", file=sys.stderr, flush=True)
        results[name] = parts[name](args, args.out)
        results[name]["minutes"] = (time.monotonic() - part_started) / 60
        commands[name] = command
        print(f"   {name}: {results[name]['minutes']:.1f} min", file=sys.stderr, flush=True)
    results["minutes"] = sum(results[name]["minutes"] for name in parts if name in results)
    record.write_text(json.dumps(results, indent=2, default=str) + "\n")
    section = markdown(results, " ; ".join(dict.fromkeys(commands.values())))
    _write_markdown(args.doc, section)
    print(io.StringIO(section).getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
