"""A space-filling design: trial N gets point N of one randomly shifted Halton sequence.

A learning-curve table, or a study's first look at a space, wants configurations spread evenly over the search
space rather than drawn at random (random draws cluster and leave holes). Optuna's ``QMCSampler`` gives that, but it
needs SciPy (not in the operator's image), hands its first trial to a random sampler to learn the space and counts
its points in a study attribute, so its design depends on the order of asks and on which trials were enqueued. Here
the point is a pure function of the trial's number, the seed and the search space: two studies with the same seed
and space (one at training seed 0, one at seed 1) train exactly the same configurations, and a study resumed
anywhere carries on with the next point. An enqueued trial (the baseline) keeps its own values and uses up its
number.

Halton (the radical inverse of N in the first primes, one per parameter) is low-discrepancy in the few dimensions a
LoRA search has; a Cranley-Patterson rotation (a seeded shift of every coordinate, modulo 1) makes each seed its own
design while keeping that property.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97)


def radical_inverse(number: int, base: int) -> float:
    """``number``'s digits in ``base`` mirrored behind the point: 1 -> 0.1, 2 -> 0.01, 3 -> 0.11 in base 2."""
    value, scale = 0.0, 1.0 / base
    while number:
        number, digit = divmod(number, base)
        value += digit * scale
        scale /= base
    return value


def design_point(distributions: Mapping[str, BaseDistribution], seed: int, number: int) -> dict[str, Any]:
    """Point ``number`` of the shifted Halton design over ``distributions`` (parameters in name order)."""
    names = sorted(distributions)
    if len(names) > len(PRIMES):
        raise ValueError(f"a Halton design here covers at most {len(PRIMES)} parameters, not {len(names)}")
    shift = random.Random(seed)
    unit = [(radical_inverse(number, base) + shift.random()) % 1.0 for base in PRIMES[: len(names)]]
    return {name: _scale(distributions[name], u) for name, u in zip(names, unit, strict=True)}


def _scale(distribution: BaseDistribution, u: float) -> Any:
    """Map ``u`` in [0, 1) onto the distribution: log-uniform where it is log, as a sampler would draw it."""
    if isinstance(distribution, CategoricalDistribution):
        choices = distribution.choices
        return choices[min(int(u * len(choices)), len(choices) - 1)]
    if isinstance(distribution, FloatDistribution | IntDistribution):
        low, high = float(distribution.low), float(distribution.high)
        if isinstance(distribution, IntDistribution):  # every integer gets an equal share of [0, 1)
            low, high = low - 0.5, high + 0.5  # a log int's low is >= 1 (Optuna's rule), so low stays > 0
        if distribution.log:
            value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            value = low + u * (high - low)
        if isinstance(distribution, IntDistribution):
            step = distribution.step
            snapped = distribution.low + step * round((value - distribution.low) / step)
            return int(min(max(snapped, distribution.low), distribution.high))
        if distribution.step is not None:
            value = distribution.low + distribution.step * round((value - distribution.low) / distribution.step)
        return float(min(max(value, distribution.low), distribution.high))
    raise TypeError(f"no Halton mapping for {type(distribution).__name__}")


class HaltonSampler(optuna.samplers.BaseSampler):
    """Optuna sampler for ``sampler.type: halton``: the design point of the trial's own number."""

    def __init__(self, distributions: Mapping[str, BaseDistribution], seed: int = 0) -> None:
        self._distributions = dict(distributions)
        self._seed = seed

    def infer_relative_search_space(self, study: Any, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(
        self, study: Any, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        point = design_point(self._distributions, self._seed, trial.number)
        return {name: point[name] for name in search_space}

    def sample_independent(
        self, study: Any, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        """A parameter outside the study's space (never asked by the engine): the design's unit value for it."""
        return design_point({param_name: param_distribution}, self._seed, trial.number)[param_name]

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        return None
