"""What a study found: the leaderboard, the best trial, its gain over the untrained model (zero-shot) and over the
baseline, how well the early accuracy predicted the final one (Spearman correlation, top-K overlap), the training
steps the early decisions saved and, for a study that varies the number of training samples, the data-efficiency
curve and its saturation point. Pure functions over trial records; ``plots`` is the only part that writes files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from ftstudy.study_store import early_accuracy, is_baseline, phase
from ftstudy.trainer.reporting import UserAttr


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
        )
        for t in trials
    ]


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when undefined (fewer than 3 pairs or a constant side)."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return float(cov / (vx * vy) ** 0.5)


def top_k_overlap(pairs: Sequence[tuple[int, float, float]], k: int = 5) -> int | None:
    """How many of the k best trials by early accuracy are also among the k best by final accuracy."""
    if len(pairs) < k:
        return None
    by_early = {n for n, _, _ in sorted(pairs, key=lambda p: (-p[1], p[0]))[:k]}
    by_final = {n for n, _, _ in sorted(pairs, key=lambda p: (-p[2], p[0]))[:k]}
    return len(by_early & by_final)


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


def summary(table: Sequence[Row], k: int = 5) -> dict[str, Any]:
    """``k``: the top-K overlap's K (a topK study passes its own; 5, the paper's, otherwise)."""
    pairs = [(r.number, r.early, r.final) for r in table if r.early is not None and r.final is not None]
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
        "final_spread": max(finals) - min(finals) if finals else None,
        "spearman_early_final": spearman([p[1] for p in pairs], [p[2] for p in pairs]),
        "top_k": k,
        "top_k_overlap": top_k_overlap(pairs, k),
        "top5_overlap": top_k_overlap(pairs, 5),
        "steps": steps(table),
        "eval_share": eval_share(table),
        "data_efficiency": data_efficiency(table),
    }


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
    if base:
        lines.append(
            f"untrained model (zero-shot): validation {_pct(base.get('validation'))}, test "
            f"{_pct(base.get('test'))}; the best trial is {_pct(info['best_gain_over_zero_shot'], True)} above it"
        )
    if info["baseline"]:
        lines.append(
            f"gain over the baseline (trial {info['baseline']['number']}): test "
            f"{_pct(info['test_gain_over_baseline'], True)}, independent test "
            f"{_pct(info['independent_test_gain_over_baseline'], True)}"
        )
    if info["final_spread"] is not None:
        lines.append(f"final validation accuracy of the trials trained to the end spans {info['final_spread']:.3f}")
    if info["spearman_early_final"] is not None:
        overlap = info["top_k_overlap"]
        lines.append(
            f"early vs final accuracy: Spearman {info['spearman_early_final']:.2f}"
            + (f", top-{info['top_k']} overlap {overlap}/{info['top_k']}" if overlap is not None else "")
            + " (over the trials trained to the end)"
        )
    s = info["steps"]
    if s["without_early_stopping"]:
        lines.append(
            f"training steps: {s['spent']} spent, {s['saved']} saved "
            f"({s['saved'] / s['without_early_stopping']:.0%} of running every trial to the end)"
        )
    if info["eval_share"] is not None:
        lines.append(f"time spent scoring: {info['eval_share']:.0%} of the trainers' time")
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
        tag = " (baseline)" if r.baseline else ""
        lines.append(
            f"{r.number:>5}  {r.state:<8} {_fmt(r.early):>6} {_fmt(r.final):>6} {_fmt(r.test):>6} "
            f"{_fmt(r.independent_test):>6}  {params}{tag}"
        )
    if len(ordered) > limit:
        lines.append(f"  ... and {len(ordered) - limit} more")
    return "\n".join(lines)


def _values(values: Sequence[float | None]) -> list[float]:
    return [v if v is not None else float("nan") for v in values]


def plots(table: Sequence[Row], directory: Path, k: int = 5) -> list[Path]:
    """Early vs final accuracy, accuracy by trial number, learning rate vs LoRA alpha, and the data-efficiency
    curve when the study varied the number of training samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    info = summary(table, k)
    base = (info["zero_shot"] or {}).get("validation")

    both = [r for r in table if r.early is not None and r.final is not None]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(_values([r.early for r in both]), _values([r.final for r in both]), color="tab:blue")
    for r in both:
        ax.annotate(str(r.number), (r.early or 0.0, r.final or 0.0), fontsize=8)
    if base is not None:
        ax.axhline(base, color="grey", linestyle="--", label=f"untrained model {base:.3f}")
        ax.legend(loc="lower right")
    rho = info["spearman_early_final"]
    overlap = info["top_k_overlap"]
    ax.set_title(
        f"Early vs final accuracy\n(Spearman {_fmt(rho)}, top-{k} overlap {overlap if overlap is not None else '-'})"
    )
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
