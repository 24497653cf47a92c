"""How far early scores can be trusted (``ftstudy.trust``): known figures on fixed data, and no estimate on too few
audited trials."""

from __future__ import annotations

import pytest

from ftstudy import trust

EARLY = [0.31, 0.42, 0.28, 0.55, 0.47, 0.36, 0.60, 0.25]
FINAL = [0.50, 0.58, 0.41, 0.66, 0.52, 0.57, 0.71, 0.45]
PAIRS = list(zip(range(8), EARLY, FINAL, strict=True))


def test_a_known_spearman_and_its_bootstrap_interval() -> None:
    found = trust.estimate(PAIRS, k=3)
    assert found is not None and found.trials == 8
    # rank differences 0, -1, 1, 0, 2, -1, 0, -1: 1 - 6 * 8 / (8 * 63)
    assert found.spearman == pytest.approx(1 - 48 / 504)
    # 2,000 resamples of the 8 trials with the seeded generator: the 2.5th and 97.5th percentiles
    assert (found.low, found.high) == (pytest.approx(0.407407, abs=1e-6), 1.0)
    assert (found.k, found.overlap, found.overlap_low, found.overlap_high) == (3, 2, 1, 3)
    assert not found.untrusted
    assert trust.estimate(PAIRS, k=3) == found, "seeded: the same data, the same interval"
    assert trust.estimate(list(reversed(PAIRS)), k=3).spearman == found.spearman  # type: ignore[union-attr]


def test_k_is_at_most_half_the_audited_trials() -> None:
    """Top-3 of 4 trials overlaps in at least 2 whatever the scores: K is capped so that it can miss."""
    found = trust.estimate(PAIRS, k=5)
    assert found is not None and found.k == 4
    assert trust.estimate(PAIRS, k=10).k == 4  # type: ignore[union-attr]


def test_no_estimate_under_eight_audited_trials() -> None:
    """Fewer give no honest 95% interval (bench/trust_coverage.py: 4 audited trials held the truth in 42-79%)."""
    assert trust.estimate(PAIRS[:7], k=3) is None
    assert trust.estimate(PAIRS[:8], k=3) is not None
    line = trust.text(None, 3, 4.2, 0.2)
    assert "not enough audited trials yet: 3 of the ~4.2 expected (8 needed" in line
    assert "not measured" in trust.text(None, 0, 0.0, 0.0)


def test_an_interval_that_includes_zero_is_a_warning() -> None:
    finals = [0.5, 0.7, 0.6, 0.4, 0.45, 0.66, 0.52, 0.58]
    unrelated = list(zip(range(8), EARLY, finals, strict=True))
    found = trust.estimate(unrelated, k=3)
    assert found is not None and found.low is not None and found.low <= 0 <= found.high  # type: ignore[operator]
    assert found.untrusted
    assert trust.text(found, 8, 8.0, 0.3).startswith("early scores do not clearly predict final ones: Spearman")
    message = trust.warning(found, 0.2)
    assert message.startswith("early scores at 20% do not predict the final ones in this study (Spearman ")
    assert "over 8 audited trials); consider a later early point" in message


def test_a_constant_side_gives_no_correlation() -> None:
    """The tiny model scores every trial alike: Spearman is undefined, not 0."""
    found = trust.estimate([(n, 0.25, 0.25) for n in range(8)], k=3)
    assert found is not None and found.spearman is None and found.low is None and not found.untrusted
    assert "Spearman undefined" in trust.text(found, 5, 5.0, 0.5)
