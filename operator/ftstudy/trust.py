"""How far a study's early accuracies can be trusted to predict the final ones, measured on its audited trials.

The trials a promotion policy trains to the end were picked for their high early accuracies, so a correlation over
them is biased: the range of early accuracies is cut, and with four such trials a top-3 overlap of at least 2 of 3
is guaranteed whatever the early accuracy is worth. Audited trials (``ftstudy.audit``) are drawn at random when
they are created and trained to the end whatever their early accuracy: a random sample of the study's trials, on
which Spearman's correlation of early and final accuracy and the top-K overlap estimate, without that bias, what
they would be over every trial of the study.

Each figure comes with a 95% percentile bootstrap interval over the audited trials (2,000 resamples, seeded: the
same data gives the same interval every time). With fewer than ``MIN_TRIALS`` audited trials there is no estimate.
Pure: no I/O, no clock; the randomness is a seeded generator of its own.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ftstudy.promotion import percentile

# Below 8 audited trials the percentile bootstrap's interval is not a 95% one: drawn at random from the learning-curve
# tables (bench/trust_coverage.py, bench/results/trust-coverage/), 4 audited trials gave intervals that held the
# table's Spearman in 42-79% of draws, often the degenerate [1.00, 1.00]; 8 gave 90-98%, 12 and more 94-100%.
MIN_TRIALS = 8
RESAMPLES = 2000
SEED = 0
Pair = tuple[int, float, float]  # (trial number, early accuracy, final accuracy)


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


@dataclass(frozen=True)
class Estimate:
    """Spearman(early, final) and the top-K overlap over ``trials`` audited trials, each with its 95% interval
    (None where undefined: a side that is constant, in the data or in too many resamples)."""

    trials: int
    spearman: float | None
    low: float | None
    high: float | None
    k: int
    overlap: int | None
    overlap_low: int | None
    overlap_high: int | None

    @property
    def untrusted(self) -> bool:
        """The interval reaches zero or lies below it: the early accuracy may rank trials no better than chance."""
        return self.low is not None and self.low <= 0


def _interval(values: Sequence[float], resamples: int) -> tuple[float, float] | None:
    """The 2.5th and 97.5th percentiles; None when most resamples had no value (a constant side)."""
    if len(values) < resamples / 2:
        return None
    return percentile(values, 2.5), percentile(values, 97.5)


def estimate(
    pairs: Sequence[Pair], k: int, resamples: int = RESAMPLES, seed: int = SEED, minimum: int = MIN_TRIALS
) -> Estimate | None:
    """Over the audited trials' (number, early, final); ``k``: the study's top-K (K is then at most half the
    trials, so the overlap can miss). None below ``minimum`` trials (lowered only to measure why it is 8).
    Remembered for the same data: the operator writes a study's status on every pass, and 2,000 resamples of 50
    trials take most of a second."""
    return _estimate(tuple(pairs), k, resamples, seed, minimum)


@functools.lru_cache(maxsize=256)
def _estimate(pairs: tuple[Pair, ...], k: int, resamples: int, seed: int, minimum: int) -> Estimate | None:
    n = len(pairs)
    if n < max(minimum, 3):
        return None
    top = max(1, min(k, n // 2))
    rng = random.Random(seed)
    rhos: list[float] = []
    overlaps: list[float] = []
    for _ in range(resamples):
        drawn = [pairs[rng.randrange(n)] for _ in range(n)]
        # a resample repeats trials: renumber, so that a top-K set counts each draw once
        sample = [(i, early, final) for i, (_, early, final) in enumerate(drawn)]
        rho = spearman([p[1] for p in sample], [p[2] for p in sample])
        if rho is not None:
            rhos.append(rho)
        overlap = top_k_overlap(sample, top)
        if overlap is not None:
            overlaps.append(float(overlap))
    rho_interval = _interval(rhos, resamples)
    overlap_interval = _interval(overlaps, resamples)
    return Estimate(
        trials=n,
        spearman=spearman([p[1] for p in pairs], [p[2] for p in pairs]),
        low=rho_interval[0] if rho_interval else None,
        high=rho_interval[1] if rho_interval else None,
        k=top,
        overlap=top_k_overlap(pairs, top),
        overlap_low=math.floor(overlap_interval[0]) if overlap_interval else None,
        overlap_high=math.ceil(overlap_interval[1]) if overlap_interval else None,
    )


def _count(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def figures(found: Estimate) -> str:
    """``Spearman 0.62 [0.21, 0.88] over 6 audited trials``."""
    if found.spearman is None:
        rho = "Spearman undefined (every audited trial has the same early or the same final accuracy)"
    elif found.low is None or found.high is None:
        rho = f"Spearman {found.spearman:.2f}"
    else:
        rho = f"Spearman {found.spearman:.2f} [{found.low:.2f}, {found.high:.2f}]"
    return f"{rho} over {found.trials} audited trials"


def text(found: Estimate | None, trials: int, expected: float, fraction: float) -> str:
    """One line for ``ftstudy run`` and ``ftstudy report``. ``trials``: audited trials with both accuracies;
    ``expected``: how many the study should have in the end; ``fraction``: its audit fraction."""
    if found is None:
        if fraction <= 0 and trials == 0:
            return (
                "early scores against final ones: not measured (no trial is audited: promotion.auditFraction is 0, "
                "or the study is older than audits); the trials trained to the end were chosen for their early "
                "scores, so a correlation over them would be biased"
            )
        return (
            f"early scores against final ones: not enough audited trials yet: {trials} of the ~{_count(expected)} "
            f"expected ({MIN_TRIALS} needed; audited trials are drawn at random and trained to the end whatever "
            "their early score)"
        )
    if found.spearman is None or found.low is None:
        verdict = "early scores against final ones"
    elif found.untrusted:
        verdict = "early scores do not clearly predict final ones"
    else:
        verdict = "early scores predict final ones"
    line = f"{verdict}: {figures(found)} (drawn at random and trained to the end whatever their early score)"
    if found.overlap is not None:
        line += f"; top-{found.k} overlap {found.overlap}/{found.k}"
        if found.overlap_low is not None:
            line += f" [{found.overlap_low}, {found.overlap_high}]"
    return line


def warning(found: Estimate, early_fraction: float) -> str:
    """The message of the operator's EarlyScoresUntrusted condition and Event."""
    return (
        f"early scores at {early_fraction:.0%} do not predict the final ones in this study ({figures(found)}); "
        "consider a later early point (training.earlyFraction)"
    )
