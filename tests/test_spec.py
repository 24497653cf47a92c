from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftstudy import spec

ROOT = Path(__file__).resolve().parents[1]


def document(**spec_fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"dataset": {"generate": {"train": 10}}}
    body.update(spec_fields)
    return {"apiVersion": "ftstudy.io/v1alpha1", "kind": "FineTuneStudy", "metadata": {"name": "s"}, "spec": body}


def test_the_bundled_example_is_valid() -> None:
    study = spec.load(ROOT / "examples" / "study.yaml")
    assert study.spec.promotion.policy == "topK"
    assert study.spec.baseline is not None


def test_defaults_are_the_papers() -> None:
    s = spec.parse(document()).spec
    assert s.training.early_fraction == 0.2
    assert s.promotion.policy == "topK" and s.promotion.k == 5
    assert s.sampler.type == "tpe"
    space = s.search_space
    assert {"learning_rate", "lora_r", "lora_alpha", "lora_dropout"} <= set(space)
    assert isinstance(space["learning_rate"], spec.FloatParam) and space["learning_rate"].log


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"budget": {"maxTrials": 4, "parallelism": 8}}, "spec.budget: parallelism (8) must not exceed maxTrials (4)"),
        ({"training": {"earlyFraction": 1.5}}, "spec.training.earlyFraction: Input should be less than 1"),
        (
            {"searchSpace": {"learning_rate": {"type": "float", "low": 1, "high": 0.1}}},
            "spec.searchSpace.learning_rate: low (1.0) must be below high (0.1)",
        ),
        (
            {"searchSpace": {"lora_rank": {"type": "int", "low": 1, "high": 8}}},
            "searchSpace names unknown hyperparameter(s) lora_rank",
        ),
        ({"promotion": {"policy": "best"}}, "spec.promotion.policy: Input should be 'topK', 'percentile'"),
        ({"budget": {"maxTrails": 3}}, "spec.budget.maxTrails: unknown field"),
        ({"dataset": {}}, "give exactly one of dataset.path"),
        ({"baseline": {"params": {"batch_size": 4}}}, "baseline.params names batch_size, which searchSpace does not"),
        ({"dataset": {"generate": {"locales": ["de", "es"]}}}, "spec.dataset.generate.locales[1]: Input should be"),
        ({"dataset": {"generate": {"locales": ["de", "de"]}}}, "locales must not repeat"),
        ({"dataset": {"generate": {"locales": []}}}, "spec.dataset.generate.locales: List should have at least 1"),
        (
            {"dataset": {"generate": {"locales": ["de", "fr"], "independentLocales": ["it", "fr"]}}},
            "spec.dataset.generate: independentLocales and locales share fr; the independent test must come from "
            "other shops",
        ),
        ({"dataset": {"generate": {"independentLocales": ["it", "it"]}}}, "independentLocales must not repeat"),
        ({"dataset": {"generate": {"locales": ["de"], "validationHoldout": True}}}, "validationHoldout needs at least"),
        ({"dataset": {"generate": {"independentLocales": []}}}, "generate.independentLocales: List should have at"),
        (
            {"dataset": {"generate": {"locales": ["it", "us", "ca"]}}},
            "locales leave no holdout shop for the independent test's default",
        ),
        (
            {"searchSpace": {"train_samples": {"type": "float", "low": 0, "high": 100}}},
            "searchSpace.train_samples must be whole numbers >= 0",
        ),
        (
            {"searchSpace": {"train_samples": {"type": "categorical", "choices": [0, 12.5]}}},
            "searchSpace.train_samples must be whole numbers >= 0",
        ),
        (
            {"sampler": {"type": "grid"}, "searchSpace": {"learning_rate": {"type": "float", "low": 0.1, "high": 1}}},
            "sampler grid needs a finite list of values: give searchSpace.learning_rate choices or a step",
        ),
        (
            {
                "sampler": {"type": "grid"},
                "searchSpace": {"train_samples": {"type": "categorical", "choices": [0, 50, 100]}},
                "budget": {"maxTrials": 4},
            },
            "the grid has 3 points but budget.maxTrials is 4; set maxTrials to at most 3",
        ),
        (
            {
                "sampler": {"type": "grid"},
                "searchSpace": {"lora_r": {"type": "int", "low": 2, "high": 8, "step": 2}},
                "budget": {"maxTrials": 4},
                "baseline": {"params": {"lora_r": 4}},
            },
            "sampler grid runs every point of the grid; put the baseline's values in it instead",
        ),
        ({"training": {"extraEvalFractions": [0.1, 1.0]}}, "spec.training.extraEvalFractions[1]: Input should be less"),
        ({"promotion": {"rungs": [0.5, 0.2]}}, "promotion.rungs must be strictly increasing"),
        ({"promotion": {"rungs": [0.2, 0.2]}}, "promotion.rungs must be strictly increasing"),
        ({"promotion": {"rungs": [0.2, 1.0]}}, "spec.promotion.rungs[1]: Input should be less than 1"),
        ({"promotion": {"rungs": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}}, "spec.promotion.rungs"),
        ({"promotion": {"rungs": [0.2, 0.5], "mode": "online"}}, "promotion.rungs needs promotion.mode: screen"),
        ({"promotion": {"reduction": 1}}, "spec.promotion.reduction"),
        (
            {"promotion": {"rungs": [0.2, 0.5]}, "training": {"earlyFraction": 0.3}},
            "training.earlyFraction (0.3) differs from promotion.rungs[0] (0.2)",
        ),
    ],
)
def test_invalid_specs_name_the_field_and_the_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(spec.SpecError) as error:
        spec.parse(document(**fields))
    assert message in str(error.value)


def test_rungs_set_the_early_point_and_default_to_the_single_one() -> None:
    assert spec.parse(document()).spec.promotion.rungs == []
    s = spec.parse(document(promotion={"rungs": [0.25, 0.5]})).spec
    assert s.training.early_fraction == 0.25 and s.promotion.reduction == 3
    same = spec.parse(document(promotion={"rungs": [0.25, 0.5]}, training={"earlyFraction": 0.25})).spec
    assert same.training.early_fraction == 0.25


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(spec.SpecError, match="no such file"):
        spec.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("spec: [unclosed")
    with pytest.raises(spec.SpecError, match="not valid YAML"):
        spec.load(tmp_path / "bad.yaml")
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump({"kind": "Job"}))
    with pytest.raises(spec.SpecError) as error:
        spec.load(tmp_path / "wrong.yaml")
    assert "apiVersion: required field is missing" in str(error.value)
    assert "kind: Input should be 'FineTuneStudy'" in str(error.value)


def test_a_data_efficiency_sweep_is_a_grid_over_train_samples() -> None:
    sweep = spec.load(ROOT / "examples" / "data-efficiency.yaml").spec
    assert sweep.sampler.type == "grid" and sweep.promotion.policy == "none"
    values = spec.grid_values(sweep.search_space["train_samples"])
    assert values is not None and values[0] == 0, "the untrained model is the curve's first point"
    assert sweep.budget.max_trials == len(values)


def test_grid_values_enumerate_ints_and_stepped_floats() -> None:
    assert spec.grid_values(spec.IntParam(type="int", low=2, high=8, step=3)) == [2, 5, 8]
    assert spec.grid_values(spec.FloatParam(low=0.1, high=0.3, step=0.1)) == [0.1, 0.2, 0.3]
    assert spec.grid_values(spec.FloatParam(low=0.1, high=0.3)) is None


def test_the_independent_test_shops_default_to_the_holdouts_and_may_be_named() -> None:
    generate = spec.parse(document()).spec.dataset.generate
    assert generate is not None
    assert generate.locales == ["us", "uk", "de", "fr", "ch"] and generate.independent_locales is None
    named = spec.parse(document(dataset={"generate": {"locales": ["de"], "independentLocales": ["ca", "it"]}}))
    assert named.spec.dataset.generate is not None and named.spec.dataset.generate.independent_locales == ["ca", "it"]
    # Training on a holdout shop is allowed when no independent test is wanted, or its shops are named.
    spec.parse(document(dataset={"generate": {"locales": ["it"], "independentTest": 0}}))
    spec.parse(document(dataset={"generate": {"locales": ["it"], "independentLocales": ["ca"]}}))


def test_a_held_out_validation_reaches_the_trials_and_gets_its_own_data_directory() -> None:
    from ftstudy.runner import generated_data_name
    from ftstudy.trial_command import trainer_args

    def generate_data(study: spec.StudySpec) -> dict[str, object]:
        args = trainer_args(study, "demo", 3, "/data", "/out", generate_data=True)
        settings: dict[str, object] = json.loads(args[args.index("--generate-data") + 1])
        return settings

    plain = spec.parse(document(dataset={"generate": {"locales": ["de", "fr"]}})).spec
    held = spec.parse(document(dataset={"generate": {"locales": ["de", "fr"], "validationHoldout": True}})).spec
    assert "validation_holdout" not in generate_data(plain), "a study without it keeps the command it had"
    assert generate_data(held)["validation_holdout"] is True
    assert generated_data_name(plain) != generated_data_name(held)
    # The directory of a study written before the field existed: its settings' hash, without the field.
    assert plain.dataset.generate is not None
    before = plain.dataset.generate.model_dump_json(exclude={"validation_holdout"})
    assert generated_data_name(plain) == f"data-{hashlib.sha256(before.encode()).hexdigest()[:12]}"
