"""Which trials are audited (``ftstudy.audit``): a deterministic draw from the study's name and the trial's number."""

from __future__ import annotations

from ftstudy import audit


def test_the_draw_is_deterministic_and_about_the_fraction() -> None:
    draws = [audit.audited("example", n, 0.1) for n in range(4000)]
    assert draws == [audit.audited("example", n, 0.1) for n in range(4000)], "a restarted operator draws the same"
    assert 0.08 < sum(draws) / len(draws) < 0.12
    assert 0.28 < sum(audit.audited("example", n, 0.3) for n in range(4000)) / 4000 < 0.32
    other = [audit.audited("another-study", n, 0.1) for n in range(4000)]
    assert other != draws, "each study draws its own trials"
    assert not any(audit.audited("example", n, 0.0) for n in range(4000))


def test_the_baseline_is_never_audited() -> None:
    drawn = next(n for n in range(100) if audit.audited("example", n, 0.5))
    assert not audit.audited("example", drawn, 0.5, baseline=True)
    assert not any(audit.audited("example", n, 0.5, baseline=True) for n in range(1000))


def test_the_expected_count_leaves_out_the_baseline() -> None:
    assert audit.expected(0.1, 21, baseline=True) == 2.0
    assert audit.expected(0.1, 20, baseline=False) == 2.0
