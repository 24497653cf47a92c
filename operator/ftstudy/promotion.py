"""Promotion policies: which scored trials train to the end. Small classes behind one interface, as Optuna's pruners.

A policy sees one scored trial and the standing it is scored in (every early accuracy known so far, how many there
will be, whether that is all of them, and whether waiting is cheap) and answers PROMOTE, PRUNE or WAIT. The core
(``ftstudy.core``) asks it and turns the answer into actions; a policy does no I/O and keeps no state, so a
restarted engine asks again and gets the same answers.

Ranking is by early accuracy, ties going to the lower trial number, whatever order the reports arrived in.

Two situations differ in what waiting costs:

- **online** (``screening`` False): the trial keeps training while it waits, so the policy decides as soon as
  ``min_scored`` trials are scored: before that, nobody is compared with anything, and the first trials to report
  would be free passes.
- **screening** (``screening`` True): the trial has checkpointed and exited; waiting holds no accelerator. The
  policy promotes early only a trial that is clearly among the best (ASHA-like: in the top ``K/expected`` share of
  at least ``min_scored`` scored, so promotions start while screening goes on) and prunes nobody until every trial
  is scored, when the final ranking decides.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    PROMOTE = "promote"
    PRUNE = "prune"
    WAIT = "wait"


@dataclass(frozen=True)
class Standing:
    """The early accuracies a verdict is given among."""

    scored: Sequence[tuple[int, float]]  # (trial number, early accuracy) of every trial scored so far
    expected: int  # how many trials will have been scored once every trial has reported (or failed)
    complete: bool  # every trial that will be scored is: the ranking is final
    screening: bool  # a waiting trial is paused (checkpointed, its accelerator free) rather than training


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), written out to keep the core dependency-free."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rank(number: int, score: float, scored: Sequence[tuple[int, float]]) -> int:
    """How many scored trials rank ahead: a higher early accuracy, or the same and a lower trial number."""
    return sum(
        1 for other, value in scored if other != number and (value > score or (value == score and other < number))
    )


class PromotionPolicy(ABC):
    """Answer for one scored trial; subclasses say what "among the best" means."""

    min_scored: int = 1

    def verdict(self, number: int, score: float, standing: Standing) -> Verdict:
        if standing.complete:
            return Verdict.PROMOTE if self.among_best(number, score, standing) else Verdict.PRUNE
        if len(standing.scored) < self.min_scored:
            return Verdict.WAIT
        if standing.screening:
            return Verdict.PROMOTE if self.clearly_among_best(number, score, standing) else Verdict.WAIT
        return Verdict.PROMOTE if self.among_best(number, score, standing) else Verdict.PRUNE

    @abstractmethod
    def among_best(self, number: int, score: float, standing: Standing) -> bool:
        """Would the trial be kept if the standing were final?"""

    def clearly_among_best(self, number: int, score: float, standing: Standing) -> bool:
        """Safe to promote before the standing is complete (screening only); by default, the same test."""
        return self.among_best(number, score, standing)


@dataclass(frozen=True)
class TopK(PromotionPolicy):
    """The K best early accuracies train to the end."""

    k: int = 5
    min_scored: int = 0  # 0: K + 1, so the first decision compares at least one trial more than it keeps

    def __post_init__(self) -> None:
        if self.min_scored == 0:
            object.__setattr__(self, "min_scored", self.k + 1)

    def among_best(self, number: int, score: float, standing: Standing) -> bool:
        return rank(number, score, standing.scored) < self.k

    def clearly_among_best(self, number: int, score: float, standing: Standing) -> bool:
        """In the top K/expected share of those scored so far: as many places as the final ranking would give a
        standing this size (``floor``, so a standing of 4 out of 20 with K 5 promotes its best one)."""
        places = math.floor(self.k * len(standing.scored) / max(standing.expected, 1))
        return rank(number, score, standing.scored) < places


@dataclass(frozen=True)
class Percentile(PromotionPolicy):
    """At or above the q-th percentile of the early accuracies (median: q 50)."""

    q: float = 50.0
    min_scored: int = 0  # 0: 3, the fewest scores a percentile means something for

    def __post_init__(self) -> None:
        if self.min_scored == 0:
            object.__setattr__(self, "min_scored", 3)

    def among_best(self, number: int, score: float, standing: Standing) -> bool:
        return score >= percentile([value for _, value in standing.scored], self.q)


@dataclass(frozen=True)
class EveryTrial(PromotionPolicy):
    """Policy ``none``: every trial trains to the end (to measure how well the early accuracy predicts)."""

    def verdict(self, number: int, score: float, standing: Standing) -> Verdict:
        return Verdict.PROMOTE

    def among_best(self, number: int, score: float, standing: Standing) -> bool:
        return True


def policy_for(name: str, k: int = 5, q: float = 50.0, min_scored: int = 0) -> PromotionPolicy:
    """The spec's ``promotion.policy`` name as a policy object (the one place the name is read)."""
    if name == "topK":
        return TopK(k, min_scored)
    if name == "percentile":
        return Percentile(q, min_scored)
    if name == "median":
        return Percentile(50.0, min_scored)
    if name == "none":
        return EveryTrial()
    raise ValueError(f"unknown promotion policy {name!r}")
