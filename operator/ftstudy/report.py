"""What a study found: the leaderboard, the best trial, its gain over the untrained model (zero-shot) and over the
baseline, how well the early accuracy predicts the final one (measured on the audited trials only: ``ftstudy.trust``),
the training steps the early decisions saved and, for a study that varies the number of training samples, the
data-efficiency curve and its saturation point. Pure functions over trial records; ``plots`` is the only part that
writes files.

No correlation is computed over the trials trained to the end because the policy promoted them: they were chosen
for their early accuracies, so such a figure is biased (with four of them, a top-3 overlap of 2 of 3 is certain).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from ftstudy import audit, trust
from ftstudy.study_store import drawn_by, early_accuracy, is_audit, is_baseline, phase
from ftstudy.trainer.reporting import PAGE_SCORES, UserAttr
from ftstudy.trust import spearman as spearman  # re-exported: bench/ reads them from here
from ftstudy.trust import top_k_overlap as top_k_overlap


@dataclass(frozen=True)
class Row:
    number: int
    state: str
    baseline: bool
    early: float | None
    final: float | None
    test: float | None
    independent_test: float | None
    total_steps: int | None
    early_step: int | None
    final_adapter: str | None
    failure_reason: str | None
    params: dict[str, Any] = field(default_factory=dict)
    train_examples: int | None = None
    zero_shot: dict[str, float] | None = None  # the base model's accuracy, when this trial scored it
    accuracy_at_step: dict[int, float] = field(default_factory=dict)
    train_seconds: float | None = None
    eval_seconds: float | None = None
    audit: bool = False  # drawn at random and trained to the end whatever its early accuracy (``ftstudy.audit``)
    drawn_by: str | None = None  # what chose its parameters (``study_store.Draw``): a start-up draw is luck, not TPE


# What drew a trial's parameters, as the report says it (``study_store.Draw``'s values).
DRAWN_NAMES = {
    "baseline": "the baseline's, fixed in the spec",
    "start-up": "a start-up draw (random, before TPE models anything): luck, not the search",
    "model": "chosen by TPE's model of the early scores so far",
    "random": "a random draw",
    "grid": "a point of the grid",
    "design": "a point of the Halton design",
}


def rows(trials: Sequence[FrozenTrial]) -> list[Row]:
    def attr(trial: FrozenTrial, key: UserAttr) -> Any:
        return trial.user_attrs.get(key.value)

    def zero_shot(trial: FrozenTrial) -> dict[str, float] | None:
        keys = {
            "validation": UserAttr.ZERO_SHOT_ACCURACY,
            "test": UserAttr.ZERO_SHOT_TEST_ACCURACY,
            "independent_test": UserAttr.ZERO_SHOT_INDEPENDENT_TEST_ACCURACY,
        }
        found = {name: float(attr(trial, key)) for name, key in keys.items() if attr(trial, key) is not None}
        return found or None

    return [
        Row(
            number=t.number,
            state=phase(t).value,
            baseline=is_baseline(t),
            early=early_accuracy(t),
            final=attr(t, UserAttr.FINAL_ACCURACY),
            test=attr(t, UserAttr.TEST_ACCURACY),
            independent_test=attr(t, UserAttr.INDEPENDENT_TEST_ACCURACY),
            total_steps=attr(t, UserAttr.TOTAL_STEPS),
            early_step=attr(t, UserAttr.EARLY_STEP),
            final_adapter=attr(t, UserAttr.FINAL_ADAPTER),
            failure_reason=attr(t, UserAttr.FAILURE_REASON),
            params=dict(t.params),
            train_examples=attr(t, UserAttr.TRAIN_EXAMPLES),
            zero_shot=zero_shot(t),
            accuracy_at_step={int(k): float(v) for k, v in (attr(t, UserAttr.ACCURACY_AT_STEP) or {}).items()},
            train_seconds=attr(t, UserAttr.TRAIN_SECONDS),
            eval_seconds=attr(t, UserAttr.EVAL_SECONDS),
            audit=is_audit(t),
            drawn_by=drawn_by(t),
        )
        for t in trials
    ]


def best(table: Sequence[Row], searched_only: bool = False) -> Row | None:
    """The trial with the best final validation accuracy (early accuracy breaks ties); the baseline competes
    unless ``searched_only``, since a search that cannot beat it should say so."""
    finished = [r for r in table if r.state == "complete" and r.final is not None]
    if searched_only:
        finished = [r for r in finished if not r.baseline]
    if not finished:
        return None
    return max(finished, key=lambda r: (r.final or 0.0, r.early or 0.0, -r.number))


def steps(table: Sequence[Row]) -> dict[str, int]:
    """Training steps spent, and what running every trial to the end would have cost."""
    spent = full = 0
    for r in table:
        if r.total_steps is None:
            continue
        full += r.total_steps
        spent += r.early_step or 0 if r.state == "pruned" else r.total_steps
    return {"spent": spent, "without_early_stopping": full, "saved": full - spent}


def zero_shot(table: Sequence[Row]) -> dict[str, float] | None:
    """The untrained model's accuracy: what trial 0 measured before training, or a trial that trained on nothing."""
    for r in table:
        if r.zero_shot is not None:
            return r.zero_shot
    for r in table:
        if r.train_examples == 0 and r.final is not None:
            found = {"validation": r.final, "test": r.test, "independent_test": r.independent_test}
            return {k: v for k, v in found.items() if v is not None}
    return None


def _difference(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def eval_share(table: Sequence[Row]) -> float | None:
    """The share of the trainers' time spent scoring (generation and validation loss), over trials that trained."""
    timed = [r for r in table if r.train_seconds and r.eval_seconds is not None]
    total = sum(r.train_seconds or 0.0 for r in timed)
    return sum(r.eval_seconds or 0.0 for r in timed) / total if total else None


def audited_pairs(table: Sequence[Row]) -> list[tuple[int, float, float]]:
    """(number, early, final) of the audited trials that trained to the end: the sample ``ftstudy.trust`` measures.
    A diverged one counts with final accuracy 0 (what the model it leaves scores): leaving it out would hide the
    very case an early score failed to foresee."""
    return [
        (r.number, r.early, r.final if r.final is not None else 0.0)
        for r in table
        if r.audit and r.state == "complete" and r.early is not None
    ]


def early_score_trust(
    table: Sequence[Row], k: int = 5, audit_fraction: float = 0.0, planned: int | None = None
) -> dict[str, Any]:
    """How far the early accuracies can be trusted, over the audited trials; ``planned``: the trials the study will
    have (``maxTrials``; default: those it has), for the count of audited trials to expect."""
    pairs = audited_pairs(table)
    expected = audit.expected(audit_fraction, planned or len(table), any(r.baseline for r in table))
    found = trust.estimate(pairs, k)
    return {
        "audit_fraction": audit_fraction,
        "audited": sum(1 for r in table if r.audit),
        "trials": len(pairs),
        "expected": expected,
        "estimate": asdict(found) if found else None,
        "text": trust.text(found, len(pairs), expected, audit_fraction),
    }


def page_scores(table: Sequence[Row]) -> dict[int, dict[str, list[float]]]:
    """Each finished trial's page scores (``page_scores.json`` beside its final adapter), where this process can read
    them: on the machine that ran the trials or from the object store the adapter is in (with the credentials of
    this process's environment, as the trainers had), not from a cluster's volume. Missing ones are left out."""
    found: dict[int, dict[str, list[float]]] = {}
    for row in table:
        if row.final_adapter:
            try:
                found[row.number] = json.loads(_beside(row.final_adapter, PAGE_SCORES))
            except (OSError, ValueError, RuntimeError, ImportError):  # RuntimeError: ObjectStoreError
                continue
    return found


def _beside(adapter: str, name: str) -> bytes:
    """The file ``name`` in the directory (or under the URL prefix) that holds ``adapter``."""
    from ftstudy.object_store import is_url

    if not is_url(adapter):
        return (Path(adapter).parent / name).read_bytes()
    from ftstudy.object_store import Missing, ObjectStore

    data = ObjectStore(adapter.rstrip("/").rsplit("/", 1)[0], retry_seconds=5).get(name)
    if isinstance(data, Missing):
        raise OSError(f"{name} is not beside {adapter}")
    return data


def paired_gain_interval(
    ours: Sequence[float], theirs: Sequence[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """95% percentile interval of the mean page-score difference over the same pages (a paired bootstrap over pages,
    seeded: the same every time); None when the pages differ in number."""
    if len(ours) != len(theirs) or len(ours) < 2:
        return None
    diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(len(diffs))] for _ in diffs) / len(diffs) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def _gain_intervals(
    searched: Row | None, baseline: Row | None, pages: dict[int, dict[str, list[float]]]
) -> dict[str, tuple[float, float] | None]:
    if searched is None or baseline is None or searched.number not in pages or baseline.number not in pages:
        return {}
    ours, theirs = pages[searched.number], pages[baseline.number]
    return {
        split: paired_gain_interval(ours[split], theirs[split])
        for split in ("test", "independent_test")
        if split in ours and split in theirs
    }


def summary(
    table: Sequence[Row],
    k: int = 5,
    audit_fraction: float = 0.0,
    planned: int | None = None,
    pages: dict[int, dict[str, list[float]]] | None = None,
) -> dict[str, Any]:
    """``k``: the top-K overlap's K (a topK study passes its own; 5, the paper's, otherwise); ``audit_fraction`` and
    ``planned``: see ``early_score_trust``; ``pages``: trials' page scores (``page_scores``), for intervals on the
    gain over the baseline."""
    top = best(table)
    searched = best(table, searched_only=True)
    baseline = next((r for r in table if r.baseline and r.final is not None), None)
    base = zero_shot(table)
    counts: dict[str, int] = {}
    for r in table:
        counts[r.state] = counts.get(r.state, 0) + 1
    finals = [r.final for r in table if r.state == "complete" and r.final is not None]
    return {
        "trials": counts,
        "best": asdict(top) if top else None,
        "baseline": asdict(baseline) if baseline else None,
        "zero_shot": base,
        "best_gain_over_zero_shot": _difference(top.final if top else None, (base or {}).get("validation")),
        "test_gain_over_baseline": _difference(
            searched.test if searched else None, baseline.test if baseline else None
        ),
        "independent_test_gain_over_baseline": _difference(
            searched.independent_test if searched else None, baseline.independent_test if baseline else None
        ),
        "gain_over_baseline_interval": _gain_intervals(searched, baseline, pages or {}),
        "final_spread": max(finals) - min(finals) if finals else None,
        "early_score_trust": early_score_trust(table, k, audit_fraction, planned),
        "steps": steps(table),
        "eval_share": eval_share(table),
        "data_efficiency": data_efficiency(table),
        "failures": failures(table),
    }


def failures(table: Sequence[Row]) -> list[dict[str, Any]]:
    """Why trials failed, each reason once with its trials (several trials failing for one cause, a missing file
    or a bad setting, are one thing to fix), most frequent first."""
    by_reason: dict[str, list[int]] = {}
    for r in table:
        if r.state == "failed":
            by_reason.setdefault(r.failure_reason or "no reason recorded", []).append(r.number)
    return [{"reason": reason, "trials": numbers}
            for reason, numbers in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))]  # fmt: skip


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def summary_text(info: dict[str, Any]) -> str:
    """The summary as a person reads it after ``ftstudy run`` and ``ftstudy report``."""
    lines = []
    best_row, base = info["best"], info["zero_shot"] or {}
    if best_row:
        where = best_row["final_adapter"] or "the base model (no adapter)"
        lines.append(
            f"best trial {best_row['number']}: validation {_pct(best_row['final'])}, test {_pct(best_row['test'])}, "
            f"independent test {_pct(best_row['independent_test'])}; adapter {where}"
        )
        if best_row.get("drawn_by") in DRAWN_NAMES:
            lines.append(f"its parameters were {DRAWN_NAMES[best_row['drawn_by']]}")
    if base:
        lines.append(
            f"untrained model (zero-shot): validation {_pct(base.get('validation'))}, test "
            f"{_pct(base.get('test'))}; the best trial is {_pct(info['best_gain_over_zero_shot'], True)} above it"
        )
    if info["baseline"]:
        intervals = info.get("gain_over_baseline_interval") or {}

        def gain(split: str) -> str:
            value, interval = _pct(info[f"{split}_gain_over_baseline"], True), intervals.get(split)
            return f"{value} [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else value

        lines.append(
            f"gain over the baseline (trial {info['baseline']['number']}): test {gain('test')}, independent test "
            f"{gain('independent_test')}" + (" (95% paired bootstrap over pages)" if intervals else "")
        )
    if info["final_spread"] is not None:
        lines.append(f"final validation accuracy of the trials trained to the end spans {info['final_spread']:.3f}")
    lines.append(info["early_score_trust"]["text"])
    s = info["steps"]
    if s["without_early_stopping"]:
        lines.append(
            f"training steps: {s['spent']} spent, {s['saved']} saved "
            f"({s['saved'] / s['without_early_stopping']:.0%} of running every trial to the end)"
        )
    if info["eval_share"] is not None:
        lines.append(f"time spent scoring: {info['eval_share']:.0%} of the trainers' time")
    for failure in info.get("failures") or []:
        numbers = failure["trials"]
        listed = ", ".join(map(str, numbers))
        which = f"trial {numbers[0]}" if len(numbers) == 1 else f"{len(numbers)} trials ({listed})"
        lines.append(f"{which} failed: {failure['reason']}")
    curve = info["data_efficiency"]
    if curve:
        points = ", ".join(f"{p['samples']}: {p['accuracy']:.3f}" for p in curve["points"])
        at = curve["saturation"]
        lines.append(f"accuracy by training samples: {points}")
        lines.append(f"saturation: {at if at is not None else 'not reached'} ({curve['rule']})")
    return "\n".join(lines)


SATURATION_TOLERANCE = 0.01


def saturation_point(points: Sequence[tuple[int, float]], tolerance: float = SATURATION_TOLERANCE) -> int | None:
    """The fewest samples whose accuracy is within ``tolerance`` of the best accuracy of the curve; None when only
    the largest sample count gets there (the curve is still rising: more data would still pay)."""
    if len(points) < 2:
        return None
    ordered = sorted(points)
    target = max(accuracy for _, accuracy in ordered) - tolerance
    first = next(samples for samples, accuracy in ordered if accuracy >= target)
    return None if first == ordered[-1][0] else first


def data_efficiency(table: Sequence[Row], tolerance: float = SATURATION_TOLERANCE) -> dict[str, Any] | None:
    """Final validation accuracy by number of training samples, when the study varied it (three sizes or more,
    counting the untrained model as 0); repeated sizes are averaged."""
    by_size: dict[int, list[float]] = {}
    for r in table:
        if r.train_examples is not None and r.final is not None and r.state == "complete":
            by_size.setdefault(r.train_examples, []).append(r.final)
    base = zero_shot(table)
    if base and "validation" in base and 0 not in by_size and by_size:
        by_size[0] = [base["validation"]]
    if len(by_size) < 3:
        return None
    points = [(n, sum(v) / len(v)) for n, v in sorted(by_size.items())]
    return {
        "points": [{"samples": n, "accuracy": a} for n, a in points],
        "saturation": saturation_point(points, tolerance),
        "rule": f"the fewest samples within {tolerance:.2f} of the best accuracy; not reached if only the largest is",
    }


def _fmt(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


def leaderboard(table: Sequence[Row], limit: int = 15) -> str:
    """Trials that ran to the end by final accuracy, then the others by early accuracy."""
    ordered = sorted(table, key=lambda r: (r.final is None, -(r.final or 0.0), -(r.early or 0.0), r.number))
    lines = [f"{'trial':>5}  {'state':<8} {'early':>6} {'final':>6} {'test':>6} {'indep':>6}  params"]
    for r in ordered[:limit]:
        params = " ".join(f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(r.params.items()))
        tag = " (baseline)" if r.baseline else " (audit)" if r.audit else ""
        if r.drawn_by in DRAWN_NAMES and not r.baseline:
            tag += f" [{r.drawn_by}]"
        lines.append(
            f"{r.number:>5}  {r.state:<8} {_fmt(r.early):>6} {_fmt(r.final):>6} {_fmt(r.test):>6} "
            f"{_fmt(r.independent_test):>6}  {params}{tag}"
        )
    if len(ordered) > limit:
        lines.append(f"  ... and {len(ordered) - limit} more")
    return "\n".join(lines)


def _values(values: Sequence[float | None]) -> list[float]:
    return [v if v is not None else float("nan") for v in values]


def plots(table: Sequence[Row], directory: Path, k: int = 5, audit_fraction: float = 0.0) -> list[Path]:
    """Early vs final accuracy (audited trials marked: the figures in the title are theirs alone), accuracy by trial
    number, learning rate vs LoRA alpha, and the data-efficiency curve when the study varied the number of training
    samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    info = summary(table, k, audit_fraction)
    base = (info["zero_shot"] or {}).get("validation")

    both = [r for r in table if r.early is not None and r.final is not None]
    promoted = [r for r in both if not r.audit]
    audited = [r for r in both if r.audit]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(_values([r.early for r in promoted]), _values([r.final for r in promoted]), color="tab:blue",
               label="promoted for its early accuracy (or the baseline)")  # fmt: skip
    ax.scatter(_values([r.early for r in audited]), _values([r.final for r in audited]), color="tab:orange",
               marker="D", label="audited: drawn at random")  # fmt: skip
    for r in both:
        ax.annotate(str(r.number), (r.early or 0.0, r.final or 0.0), fontsize=8)
    if base is not None:
        ax.axhline(base, color="grey", linestyle="--", label=f"untrained model {base:.3f}")
    ax.legend(loc="lower right", fontsize=8)
    found = info["early_score_trust"]["estimate"]
    measured = (
        trust.figures(trust.Estimate(**found)) if found else f"{info['early_score_trust']['trials']} audited trials"
    )
    ax.set_title(f"Early vs final accuracy\n({measured})", fontsize=10)
    ax.set_xlabel("validation accuracy at the early step")
    ax.set_ylabel("validation accuracy at the end")
    written.append(_save(fig, directory / "early_vs_final.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    early = [r for r in table if r.early is not None]
    ax.scatter([r.number for r in early], _values([r.early for r in early]), label="early", marker="o")
    ax.scatter([r.number for r in both], _values([r.final for r in both]), label="final", marker="^")
    cancelled = [r for r in early if r.state == "pruned"]
    ax.scatter(
        [r.number for r in cancelled], _values([r.early for r in cancelled]), label="cancelled", marker="x", color="red"
    )
    if base is not None:
        ax.axhline(base, color="grey", linestyle="--", label="untrained model")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Accuracy at the early point and at the end, by trial")
    ax.legend()
    written.append(_save(fig, directory / "accuracy_by_trial.png"))

    fig, ax = plt.subplots(figsize=(6, 5))
    with_lr = [r for r in table if "learning_rate" in r.params and "lora_alpha" in r.params]
    ax.set_title("Learning rate vs LoRA alpha")
    if with_lr:
        ok = [r for r in with_lr if r.state != "failed"]
        points = ax.scatter(
            [r.params["learning_rate"] for r in ok],
            [r.params["lora_alpha"] for r in ok],
            c=[r.final if r.final is not None else (r.early or 0.0) for r in ok],
            cmap="viridis",
        )
        failed = [r for r in with_lr if r.state == "failed"]
        ax.scatter([r.params["learning_rate"] for r in failed], [r.params["lora_alpha"] for r in failed],
                   marker="x", color="red", label="failed")  # fmt: skip
        fig.colorbar(points, label="accuracy (final, else early)")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("LoRA alpha")
        if failed:
            ax.legend()
    else:
        ax.text(0.5, 0.5, "this study does not search both learning_rate and lora_alpha", ha="center", wrap=True)
        ax.set_axis_off()
    written.append(_save(fig, directory / "lr_vs_alpha.png"))

    curve = info["data_efficiency"]
    if curve:
        written.append(data_efficiency_plot(curve, directory / "data_efficiency.png"))
    return written


def data_efficiency_plot(curve: dict[str, Any], path: Path, paper: Sequence[tuple[int, float]] = ()) -> Path:
    """Accuracy against training samples on a symmetric-log axis (0, the untrained model, included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [p["samples"] for p in curve["points"]]
    ax.plot(xs, [p["accuracy"] for p in curve["points"]], marker="o", label="this study")
    if paper:
        ax.plot([n for n, _ in paper], [a for _, a in paper], marker="s", linestyle=":", label="the paper")
    if curve["saturation"] is not None:
        ax.axvline(curve["saturation"], color="grey", linestyle="--", label=f"saturation: {curve['saturation']}")
    ax.set_xscale("symlog", linthresh=max(1, min((x for x in xs if x > 0), default=1)))
    ax.set_xlabel("training samples (0: the untrained model)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Data efficiency")
    ax.legend()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
