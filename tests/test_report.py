from __future__ import annotations

from pathlib import Path

import pytest

from ftstudy.report import (
    Row,
    audited_pairs,
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
               final_adapter=f"/a/{number}", failure_reason=None, audit=bool(kw.get("audit")))  # fmt: skip


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
    text = summary_text(info)
    assert "best trial 3: validation 0.900" in text
    assert "untrained model (zero-shot): validation 0.400" in text and "+0.500 above it" in text
    assert "gain over the baseline (trial 0): test +0.020" in text
    assert "early scores against final ones: not measured" in text


def test_no_correlation_is_shown_over_the_trials_promoted_for_their_early_scores() -> None:
    """Trials 0-3 were trained to the end because their early accuracies were high: a correlation over them is
    biased, so neither the summary nor its text gives one. The audited trials (4-11, drawn at random and trained to
    the end whatever their early score) give the estimate, theirs alone: perfectly ordered here, while the
    promoted ones are in reverse order."""
    promoted = [row(n, "complete", 0.9 - 0.1 * n, 0.5 + 0.1 * n) for n in range(4)]
    pruned = [row(n, "pruned", 0.1, None) for n in range(12, 16)]
    audited = [row(n, "complete", 0.1 * n - 0.3, 0.05 * n, audit=True) for n in range(4, 12)]
    info = summary([*promoted, *pruned, *audited], k=3, audit_fraction=0.3, planned=20)
    assert not {"spearman_early_final", "top_k_overlap", "top5_overlap"} & set(info)
    trust = info["early_score_trust"]
    assert trust["trials"] == 8 and trust["audited"] == 8 and trust["expected"] == pytest.approx(6.0)
    assert trust["estimate"]["spearman"] == pytest.approx(1.0), "over the audited trials only"
    assert trust["estimate"]["k"] == 3 and trust["estimate"]["overlap"] == 3
    text = summary_text(info)
    assert (
        "early scores predict final ones: Spearman 1.00 [1.00, 1.00] over 8 audited trials (drawn at random and "
        "trained to the end whatever their early score); top-3 overlap 3/3" in text
    ), text
    assert text.count("Spearman") == 1, text
    alone = summary_text(summary([*promoted, *pruned], k=3, audit_fraction=0.3, planned=20))
    assert "Spearman" not in alone and "overlap" not in alone, alone


def test_the_summary_says_how_many_audited_trials_are_still_missing() -> None:
    table = [row(0, "complete", 0.5, 0.6, baseline=True), row(1, "complete", 0.3, 0.4, audit=True),
             row(2, "complete", 0.5, 0.6, audit=True), row(3, "running", None, None, audit=True)]  # fmt: skip
    info = summary(table, audit_fraction=0.1, planned=21)
    assert info["early_score_trust"]["estimate"] is None
    assert "not enough audited trials yet: 2 of the ~2 expected" in summary_text(info)


def test_a_diverged_audited_trial_counts_with_final_accuracy_zero() -> None:
    """What the early score failed to foresee must not drop out of the sample."""
    audited = [row(n, "complete", 0.1 * n, 0.1 * n, audit=True) for n in range(1, 5)]
    diverged = row(5, "complete", 0.9, None, audit=True)
    pairs = audited_pairs([*audited, diverged, row(6, "pruned", 0.95, None, audit=True)])
    assert pairs[-1] == (5, 0.9, 0.0) and len(pairs) == 5


def test_the_gain_over_the_baseline_gets_a_paired_interval_over_the_same_pages(tmp_path: Path) -> None:
    """Each trial's page scores sit beside its final adapter; the gain's interval resamples the pages, so the two
    trials are compared on the same pages."""
    import json

    from ftstudy.report import page_scores, paired_gain_interval

    pages = {0: [0.5, 0.5, 0.25, 0.75] * 16, 1: [0.75, 0.5, 0.5, 0.75] * 16}
    rows = []
    for number, scores in pages.items():
        adapter = tmp_path / f"trial-{number}" / "final_adapter"
        adapter.mkdir(parents=True)
        (adapter.parent / "page_scores.json").write_text(json.dumps({"test": scores, "independent_test": scores}))
        mean = sum(scores) / len(scores)
        rows.append(Row(number, "complete", number == 0, 0.3, mean, mean, mean, 50, 10, str(adapter), None))
    found = page_scores(rows)
    assert set(found) == {0, 1}
    info = summary(rows, pages=found)
    low, high = info["gain_over_baseline_interval"]["independent_test"]
    assert 0 < low < info["independent_test_gain_over_baseline"] < high
    assert "(95% paired bootstrap over pages)" in summary_text(info)
    assert paired_gain_interval([1.0, 0.0], [1.0]) is None
    assert "paired bootstrap" not in summary_text(summary(rows)), "no pages, no interval"
