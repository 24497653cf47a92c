from __future__ import annotations

import pytest

from ftstudy.report import Row, best, spearman, steps, summary, top_k_overlap


def row(number: int, state: str, early: float | None, final: float | None, **kw: object) -> Row:
    return Row(number=number, state=state, baseline=bool(kw.get("baseline")), early=early, final=final,
               test=kw.get("test"), independent_test=None, total_steps=100, early_step=20,  # type: ignore[arg-type]
               final_adapter=f"/a/{number}", failure_reason=None)  # fmt: skip


def test_spearman_matches_known_values() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2], [1, 2]) is None


def test_top_k_overlap() -> None:
    pairs = [(n, float(n), float(n)) for n in range(6)]
    assert top_k_overlap(pairs, 5) == 5
    pairs[0] = (0, 0.0, 99.0)  # worst early, best final
    assert top_k_overlap(pairs, 5) == 4
    assert top_k_overlap(pairs[:3], 5) is None


def test_summary_names_the_best_trial_the_gain_and_the_steps_saved() -> None:
    table = [
        row(0, "complete", 0.5, 0.6, baseline=True, test=0.55),
        row(1, "complete", 0.7, 0.8, test=0.58),
        row(2, "pruned", 0.2, None),
        row(3, "complete", 0.6, 0.9, test=0.57),
    ]
    top = best(table)
    assert top is not None and top.number == 3
    info = summary(table)
    assert info["test_gain_over_baseline"] == pytest.approx(0.02), "the best searched trial against the baseline"
    assert best([table[0], table[2]]) == table[0], "the baseline can be the best trial"
    assert steps(table) == {"spent": 320, "without_early_stopping": 400, "saved": 80}
