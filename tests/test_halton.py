"""The space-filling design (``sampler.type: halton``): point N is a function of the trial number, seed and space."""

from __future__ import annotations

import math

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from ftstudy.halton import HaltonSampler, design_point, radical_inverse
from ftstudy.spec import parse
from ftstudy.study_store import sampler

SPACE = {
    "learning_rate": FloatDistribution(1e-4, 5e-2, log=True),
    "lora_r": IntDistribution(2, 32, log=True),
    "lora_alpha": IntDistribution(4, 128, log=True),
    "target_modules": CategoricalDistribution(["attention", "attention_mlp"]),
}


def test_radical_inverse_mirrors_the_digits() -> None:
    assert [radical_inverse(n, 2) for n in range(1, 5)] == [0.5, 0.25, 0.75, 0.125]
    assert math.isclose(radical_inverse(5, 3), 2 / 3 + 1 / 9)  # 5 is 12 in base 3: mirrored, 0.21


def test_points_stay_in_the_space_and_fill_it() -> None:
    points = [design_point(SPACE, 0, n) for n in range(128)]
    for point in points:
        assert 1e-4 <= point["learning_rate"] <= 5e-2
        assert 2 <= point["lora_r"] <= 32 and isinstance(point["lora_r"], int)
        assert 4 <= point["lora_alpha"] <= 128
    # Log-uniform and evenly spread: every one of 8 equal slices of log(learning rate) holds 16 points (+-1); 128
    # random draws would leave some slices with 8 and others with 24.
    low, high = math.log(1e-4), math.log(5e-2)
    counts = [0] * 8
    for point in points:
        counts[min(7, int(8 * (math.log(point["learning_rate"]) - low) / (high - low)))] += 1
    assert max(counts) - min(counts) <= 2, counts
    assert {p["target_modules"] for p in points} == {"attention", "attention_mlp"}


def test_the_same_seed_gives_the_same_design_and_another_seed_another() -> None:
    assert design_point(SPACE, 3, 17) == design_point(SPACE, 3, 17)
    assert design_point(SPACE, 3, 17) != design_point(SPACE, 4, 17)


def test_trial_n_gets_point_n_whatever_was_enqueued_before_it() -> None:
    """Two studies with the same seed train the same configurations by number, so a table can be trained again
    at another training seed; an enqueued trial (the baseline) keeps its own values and uses up its number."""
    study = optuna.create_study(direction="maximize", sampler=HaltonSampler(SPACE, seed=0))
    study.enqueue_trial({"learning_rate": 2e-4, "lora_r": 8, "lora_alpha": 16, "target_modules": "attention"})
    asked = [study.ask(SPACE) for _ in range(4)]
    assert asked[0].params["learning_rate"] == 2e-4
    for trial in asked[1:]:
        assert trial.params == design_point(SPACE, 0, trial.number)


def test_a_study_spec_can_ask_for_it() -> None:
    document = {
        "apiVersion": "ftstudy.io/v1alpha1", "kind": "FineTuneStudy", "metadata": {"name": "design"},
        "spec": {"dataset": {"path": "unused"}, "sampler": {"type": "halton", "seed": 5}},
    }  # fmt: skip
    chosen = sampler(parse(document).spec)
    assert isinstance(chosen, HaltonSampler)
