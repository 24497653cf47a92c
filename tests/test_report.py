from __future__ import annotations

import pytest

from ftstudy.report import (
    Row,
    best,
    data_efficiency,
    saturation_point,
    spearman,
    steps,
    summary,
    summary_text,
    top_k_overlap,
)


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


@pytest.mark.parametrize(
    ("curve", "expected"),
    [
        # the paper's shape: a steep rise, then a plateau where another doubling adds less than a point
        ([(0, 0.70), (200, 0.88), (800, 0.90), (3200, 0.93), (6400, 0.945), (12800, 0.95)], 6400),
        # still rising at the largest size: no saturation within the sweep
        ([(0, 0.4), (100, 0.6), (200, 0.7), (400, 0.8)], None),
        # noise past the plateau: the first size within a point of the best counts
        ([(0, 0.4), (50, 0.8), (100, 0.86), (200, 0.855), (400, 0.865)], 100),
        # flat from the start (nothing to learn): the untrained model already saturates
        ([(0, 0.5), (100, 0.5), (200, 0.505)], 0),
        ([(0, 0.5)], None),
    ],
)
def test_saturation_point_on_known_curves(curve: list[tuple[int, float]], expected: int | None) -> None:
    assert saturation_point(curve) == expected
    assert saturation_point(list(reversed(curve))) == expected, "the order of the points does not matter"


def test_saturation_tolerance_is_a_setting() -> None:
    curve = [(0, 0.5), (100, 0.8), (200, 0.84), (400, 0.85)]
    assert saturation_point(curve, tolerance=0.01) == 200
    assert saturation_point(curve, tolerance=0.05) == 100


def sized(number: int, samples: int, final: float) -> Row:
    return Row(number=number, state="complete", baseline=False, early=final, final=final, test=final,
               independent_test=None, total_steps=samples, early_step=samples // 5, final_adapter=None,
               failure_reason=None, params={"train_samples": samples}, train_examples=samples)  # fmt: skip


def test_data_efficiency_averages_repeats_and_uses_the_zero_shot_point() -> None:
    table = [sized(0, 100, 0.7), sized(1, 200, 0.8), sized(2, 200, 0.9)]
    assert data_efficiency(table) is None, "two sizes are no curve"
    table[0] = Row(**{**table[0].__dict__, "zero_shot": {"validation": 0.3, "test": 0.31}})
    curve = data_efficiency(table)
    assert curve is not None
    assert [(p["samples"], p["accuracy"]) for p in curve["points"]] == [
        (0, 0.3),
        (100, 0.7),
        (200, pytest.approx(0.85)),
    ]
    assert curve["saturation"] is None, "still rising at the largest size"
    curve = data_efficiency([*table, sized(3, 400, 0.86)])
    assert curve is not None and curve["saturation"] == 200


def test_summary_text_says_what_the_study_found() -> None:
    table = [
        Row(**{**row(0, "complete", 0.5, 0.6, baseline=True, test=0.55).__dict__, "zero_shot": {"validation": 0.4}}),
        row(1, "complete", 0.7, 0.8, test=0.58),
        row(2, "pruned", 0.2, None),
        row(3, "complete", 0.6, 0.9, test=0.57),
    ]
    info = summary(table, k=2)
    assert info["best_gain_over_zero_shot"] == pytest.approx(0.5)
    assert info["final_spread"] == pytest.approx(0.3)
    assert info["top_k"] == 2 and info["top_k_overlap"] == 2
    text = summary_text(info)
    assert "best trial 3: validation 0.900" in text
    assert "untrained model (zero-shot): validation 0.400" in text and "+0.500 above it" in text
    assert "gain over the baseline (trial 0): test +0.020" in text
    assert "Spearman 0.50, top-2 overlap 2/2" in text
