"""The generated CRD against the real kube-apiserver: the authority on what Kubernetes accepts, defaults and says.

tests/test_crd.py checks the schema's shape; only the API server can say whether it is structural, whether the CEL
rules compile within their cost budget, what a user sees when a manifest is refused, and which defaults it stores.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftstudy import crd, spec
from tests.cluster.control_plane import ControlPlane
from tests.cluster.fixtures import *  # noqa: F403

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plane(control_plane: ControlPlane) -> ControlPlane:
    """The session's control plane with the committed CRD applied and Established (applying it again is harmless,
    so other modules may do the same)."""
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / crd.PATH))
    # Right after the apply `kubectl wait` can fail at once ("status.conditions accessor error": no conditions yet;
    # it failed the whole module so on a busy machine), so poll for Established.
    deadline = time.monotonic() + 60
    while control_plane.kubectl("wait", "--for=condition=Established", f"crd/{crd.NAME}", "--timeout=5s",
                                check=False).returncode != 0:  # fmt: skip
        assert time.monotonic() < deadline, f"crd/{crd.NAME} not Established within 60 s"
        time.sleep(0.5)
    return control_plane


def _eventually(check: Callable[[], str | None], what: str, timeout: float = 30.0) -> None:
    """The aggregated OpenAPI that kubectl explain reads is published a moment after the CRD is Established."""
    deadline = time.monotonic() + timeout
    while (problem := check()) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: {problem}")
        time.sleep(0.5)


def study(name: str = "s", **changes: Any) -> dict[str, Any]:
    """A small valid study; ``changes`` replace top-level spec fields (None removes one)."""
    body: dict[str, Any] = {
        "dataset": {"generate": {"train": 40}},
        "storage": {"secretRef": {"name": "optuna-db"}},
        "searchSpace": {
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "lora_r": {"type": "int", "low": 2, "high": 16},
            "target_modules": {"type": "categorical", "choices": ["attention", "attention_mlp"]},
        },
        "budget": {"maxTrials": 4, "parallelism": 2},
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return {"apiVersion": spec.API_VERSION, "kind": spec.KIND, "metadata": {"name": name}, "spec": body}


def apply(plane: ControlPlane, namespace: str, document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``kubectl apply`` with strict field validation: an unknown field is an error, not a pruned warning."""
    return plane.kubectl(
        "apply", "--validate=strict", "-n", namespace, "-f", "-", input=json.dumps(document), check=False
    )


def stored(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(plane.kubectl("get", "fts", name, "-n", namespace, "-o", "json").stdout)
    return result


def test_crd_is_established_and_its_names_accepted(plane: ControlPlane) -> None:
    document = json.loads(plane.kubectl("get", "crd", crd.NAME, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in document["status"]["conditions"]}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    assert conditions.get("NonStructuralSchema", "False") == "False", document["status"]["conditions"]
    assert document["status"]["acceptedNames"]["shortNames"] == ["fts"]


def test_explain_teaches_the_fields(plane: ControlPlane) -> None:
    expected = {
        "fts.spec.budget": ["How many trials in all", "parallelism", "trials running at once; at most maxTrials"],
        "fts.spec.training.earlyFraction": ["<number>", "strictly between 0 and 1"],
        "fts.spec.searchSpace": ["the paper's LoRA space"],
        "fts.status.best": ["earlyAccuracy", "independentTestAccuracy"],
    }

    def check() -> str | None:
        for field, texts in expected.items():
            result = plane.kubectl("explain", field, check=False)
            printed = " ".join(result.stdout.split())  # explain wraps descriptions
            missing = [text for text in texts if text not in printed]
            if result.returncode or missing:
                return f"kubectl explain {field} lacks {missing}:\n{result.stdout}{result.stderr}"
        return None

    _eventually(check, "kubectl explain")


def test_get_by_short_name_prints_the_columns(plane: ControlPlane, cluster_namespace: str) -> None:
    result = apply(plane, cluster_namespace, study("cols"))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    best = {"earlyAccuracy": 0.61, "finalAccuracy": 0.83, "params": {"learning_rate": 0.001, "lora_r": 8}}
    status = {"phase": "Running", "progress": "3/4", "trials": {"running": 2}, "best": best}
    plane.kubectl(
        "patch", "fts", "cols", "-n", cluster_namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    header, row = plane.kubectl("get", "fts", "-n", cluster_namespace).stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "DONE", "RUNNING", "BEST-EARLY", "BEST-FINAL", "AGE"]
    assert row.split()[:6] == ["cols", "Running", "3/4", "2", "0.61", "0.83"]
    assert "cols" in plane.kubectl("get", "ftstudy", "-n", cluster_namespace).stdout  # the category
    kept = stored(plane, cluster_namespace, "cols")["status"]["best"]["params"]
    assert kept == {"learning_rate": 0.001, "lora_r": 8}  # preserved, not pruned


def _space(**params: Any) -> dict[str, Any]:
    return {"searchSpace": params}


_LR = {"type": "float", "low": 1e-4, "high": 1e-2}
INVALID: dict[str, tuple[dict[str, Any], list[str]]] = {
    "parallelism above maxTrials": (
        {"budget": {"maxTrials": 4, "parallelism": 8}},
        ["spec.budget", "parallelism (8) must not exceed maxTrials (4); lower parallelism or raise maxTrials"],
    ),
    "low not below high": (
        _space(learning_rate=_LR | {"low": 0.1, "high": 0.01}),
        ["spec.searchSpace[learning_rate]", "low (0.1) must be below high (0.01)"],
    ),
    "low equal to high": (_space(lora_r={"type": "int", "low": 8, "high": 8}), ["low (8) must be below high (8)"]),
    "earlyFraction 1.5": (
        {"training": {"earlyFraction": 1.5}},
        ["spec.training.earlyFraction", "should be less than 1"],
    ),
    "both dataset.path and dataset.generate": (
        {"dataset": {"path": "/data", "generate": {}}},
        ["spec.dataset", "give exactly one of dataset.path (a directory of JSONL splits) or dataset.generate"],
    ),
    "neither dataset.path nor dataset.generate": ({"dataset": {}}, ["give exactly one of dataset.path"]),
    "unknown field": ({"budget": {"maxTrails": 3}}, ['unknown field "spec.budget.maxTrails"']),
    "missing storage": ({"storage": None}, ["spec.storage: Required value"]),
    "categorical without choices": (
        _space(target_modules={"type": "categorical"}),
        ["spec.searchSpace.target_modules.choices: Required value"],
    ),
    "low on a categorical": (
        _space(target_modules={"type": "categorical", "choices": ["attention"], "low": 1}),
        ["a categorical parameter takes only choices"],
    ),
    "float without high": (_space(learning_rate={"type": "float", "low": 0.1}), ["needs low and high"]),
    "log scale from 0": (_space(learning_rate=_LR | {"low": 0.0, "log": True}), ["log-scale parameter needs low > 0"]),
    "fractional int bounds": (_space(lora_r={"type": "int", "low": 2.5, "high": 8}), ["whole numbers"]),
    "step with log": (_space(learning_rate=_LR | {"log": True, "step": 0.001}), ["step and log cannot be combined"]),
    "unknown parameter type": (_space(lora_r={"type": "integer", "low": 2, "high": 8}), ["Unsupported value"]),
    "misspelt hyperparameter": (
        _space(learning_rat=_LR),
        ['searchSpace names unknown hyperparameter(s) ["learning_rat"]; the trainer supports learning_rate, lora_r'],
    ),
    "empty search space": (_space(), ["spec.searchSpace"]),
    "bad attribute name": ({"attributes": ["Title"]}, ["spec.attributes[0]", "should match"]),
}
CRD_ONLY = {"missing storage"}  # ftstudy run takes --storage instead


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_manifests_are_refused_with_the_reason(plane: ControlPlane, cluster_namespace: str, case: str) -> None:
    changes, expected = INVALID[case]
    document = study("bad", **changes)
    if case not in CRD_ONLY:
        with pytest.raises(spec.SpecError):  # the cluster refuses what `ftstudy run` refuses
            spec.parse(document)
    result = apply(plane, cluster_namespace, document)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for text in expected:
        assert text in result.stderr, f"{case}: {text!r} not in:\n{result.stderr}"
    assert plane.kubectl("get", "fts", "bad", "-n", cluster_namespace, check=False).returncode != 0


# CEL cannot see values that may be strings or floats (ftstudy.crd's docstring): the API server stores these, and
# the operator refuses them through ftstudy.spec.parse, with these messages, as `ftstudy run` does.
OPERATOR_ONLY: dict[str, tuple[dict[str, Any], str]] = {
    "misspelt fixed hyperparameter": (
        {"training": {"hyperparameters": {"batchsize": 4}}},
        "training.hyperparameters names unknown hyperparameter(s) batchsize",
    ),
    "baseline outside the search space": (
        {"baseline": {"params": {"lora_alpha": 16}}},
        "baseline.params names lora_alpha, which searchSpace does not search",
    ),
    "choices on a float": (_space(learning_rate=_LR | {"choices": [1]}), "choices: unknown field"),
    "a choice that is not a scalar": (
        _space(target_modules={"type": "categorical", "choices": [{"a": 1}]}),
        "target_modules.choices[0]",
    ),
}


@pytest.mark.parametrize("case", list(OPERATOR_ONLY))
def test_what_only_the_operator_refuses(plane: ControlPlane, cluster_namespace: str, case: str) -> None:
    changes, expected = OPERATOR_ONLY[case]
    document = study("late", **changes)
    result = apply(plane, cluster_namespace, document)
    assert result.returncode == 0, result.stderr
    with pytest.raises(spec.SpecError, match=re.escape(expected)):
        spec.parse(stored(plane, cluster_namespace, "late"))


def test_the_bundled_example_is_accepted_without_warnings(plane: ControlPlane, cluster_namespace: str) -> None:
    document = yaml.safe_load((ROOT / "examples" / "study.yaml").read_text())
    document["spec"]["storage"] = {"secretRef": {"name": "optuna-db"}}
    result = apply(plane, cluster_namespace, document)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert spec.parse(stored(plane, cluster_namespace, "example")).spec == spec.parse(document).spec


def test_what_early_accuracy_means_is_immutable_the_budget_is_not(plane: ControlPlane, cluster_namespace: str) -> None:
    assert apply(plane, cluster_namespace, study("imm")).returncode == 0

    def patch(change: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return plane.kubectl(
            "patch", "fts", "imm", "-n", cluster_namespace, "--type=merge", "-p", json.dumps({"spec": change}),
            check=False,
        )  # fmt: skip

    refused = patch({"searchSpace": {"lora_alpha": {"type": "int", "low": 4, "high": 64}}})
    assert refused.returncode != 0
    assert "searchSpace is immutable once the study exists; create a new FineTuneStudy" in refused.stderr
    refused = patch({"searchSpace": {"learning_rate": {"high": 0.05}}})
    assert "searchSpace is immutable" in refused.stderr
    # choices are invisible to CEL field access (untyped), but the comparison of the whole map still sees them
    refused = patch({"searchSpace": {"target_modules": {"choices": ["attention"]}}})
    assert "searchSpace is immutable" in refused.stderr
    # what an early accuracy means cannot change either; each refusal names the field
    for field, change in (
        ("model", "smollm2"),
        ("dataset", {"generate": {"train": 41}}),
        ("attributes", ["brand", "color"]),
        ("training", {"earlyFraction": 0.3}),
        ("training", {"hyperparameters": {"weight_decay": 0.1}}),  # untyped values: the map comparison sees them
        ("promotion", {"policy": "median"}),
    ):
        refused = patch({field: change})
        assert refused.returncode != 0, (field, change)
        assert f"{field} is immutable once the study exists: it defines what the trials' early" in refused.stderr
    # where the study's records and checkpoints are cannot change under it either
    refused = patch({"storage": {"secretRef": {"name": "another-db"}}})
    assert refused.returncode != 0 and "storage is immutable once set: the study's records" in refused.stderr
    refused = patch({"trialTemplate": {"outputDir": "/elsewhere"}})
    assert refused.returncode != 0
    assert "trialTemplate.outputDir is immutable once set: screened trials resume from checkpoints" in refused.stderr
    accepted = patch({"budget": {"maxTrials": 8}, "trialTemplate": {"image": "ftstudy/trainer:0.1.1"}})
    assert accepted.returncode == 0, accepted.stderr
    after = stored(plane, cluster_namespace, "imm")["spec"]
    assert after["budget"]["maxTrials"] == 8
    assert after["searchSpace"] == study()["spec"]["searchSpace"] | {
        "lora_r": {"type": "int", "low": 2, "high": 16}  # no type-specific defaults on the union
    }
    # the same document applied again is no change, so the rule lets it through
    assert apply(plane, cluster_namespace, study("imm", budget={"maxTrials": 8, "parallelism": 2})).returncode == 0


def test_defaults_are_applied_by_the_api_server(plane: ControlPlane, cluster_namespace: str) -> None:
    minimal = study("defaults", searchSpace=None, budget=None, dataset={"path": "/data"})
    result = apply(plane, cluster_namespace, minimal)
    assert result.returncode == 0, result.stderr
    document = stored(plane, cluster_namespace, "defaults")
    body = document["spec"]
    assert body["training"]["earlyFraction"] == 0.2
    assert (body["promotion"]["policy"], body["promotion"]["k"], body["promotion"]["mode"]) == ("topK", 5, "screen")
    assert body["budget"] == {"maxTrials": 20, "parallelism": 2, "maxFailedTrials": 3, "retriesPerTrial": 1,
                              "pendingSeconds": 86400}  # fmt: skip
    assert body["storage"]["secretRef"]["key"] == "url"
    assert body["trialTemplate"]["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert set(body["searchSpace"]) == {"learning_rate", "lora_r", "lora_alpha", "lora_dropout", "target_modules"}
    # what the operator reads back means what the user wrote, by ftstudy's own reading of it
    assert spec.parse(document).spec == spec.parse(copy.deepcopy(minimal)).spec
    # applying the same manifest again, budget changed, defaults the search space to the same value: no change
    again = apply(
        plane,
        cluster_namespace,
        study("defaults", searchSpace=None, budget={"maxTrials": 6}, dataset={"path": "/data"}),
    )
    assert again.returncode == 0, again.stderr
    assert stored(plane, cluster_namespace, "defaults")["spec"]["budget"]["maxTrials"] == 6
