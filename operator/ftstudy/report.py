"""What a study found: the leaderboard, the best trial, the gain over the baseline, and how well the early
accuracy predicted the final one (Spearman correlation, top-5 overlap), plus the training steps the early decisions
saved. Pure functions over trial records; ``plots`` is the only part that writes files.
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


def rows(trials: Sequence[FrozenTrial]) -> list[Row]:
    def attr(trial: FrozenTrial, key: UserAttr) -> Any:
        return trial.user_attrs.get(key.value)

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


def summary(table: Sequence[Row]) -> dict[str, Any]:
    pairs = [(r.number, r.early, r.final) for r in table if r.early is not None and r.final is not None]
    top = best(table)
    searched = best(table, searched_only=True)
    baseline = next((r for r in table if r.baseline and r.final is not None), None)
    gain = None
    if searched is not None and baseline is not None and searched.test is not None and baseline.test is not None:
        gain = searched.test - baseline.test
    counts: dict[str, int] = {}
    for r in table:
        counts[r.state] = counts.get(r.state, 0) + 1
    return {
        "trials": counts,
        "best": asdict(top) if top else None,
        "baseline": asdict(baseline) if baseline else None,
        "test_gain_over_baseline": gain,
        "spearman_early_final": spearman([p[1] for p in pairs], [p[2] for p in pairs]),
        "top5_overlap": top_k_overlap(pairs, 5),
        "steps": steps(table),
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


def plots(table: Sequence[Row], directory: Path) -> list[Path]:
    """Early vs final accuracy, accuracy by trial number, learning rate vs LoRA alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    info = summary(table)

    both = [r for r in table if r.early is not None and r.final is not None]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(_values([r.early for r in both]), _values([r.final for r in both]), color="tab:blue")
    for r in both:
        ax.annotate(str(r.number), (r.early or 0.0, r.final or 0.0), fontsize=8)
    rho = info["spearman_early_final"]
    overlap = info["top5_overlap"]
    ax.set_title(
        f"Early vs final accuracy (Spearman {_fmt(rho)}, top-5 overlap {overlap if overlap is not None else '-'})"
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
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
