"""The CRD is generated from the spec types and must stay in step with them; these tests need no cluster.

The real API server (tests/test_crd_apiserver.py) is the authority on what Kubernetes accepts; the checks here
catch the common mistakes in seconds: a stale committed file, a node the API server would call non-structural, a
field that exists on one side only, defaults that differ from pydantic's.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftstudy import cli, crd, spec

ROOT = Path(__file__).resolve().parents[1]
Schema = dict[str, Any]


def _schema() -> Schema:
    version = crd.crd()["spec"]["versions"][0]
    root: Schema = version["schema"]["openAPIV3Schema"]
    return root


def _example() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "study.yaml").read_text())
    document["spec"]["storage"] = {"secretRef": {"name": "x"}}
    return document


# ---- a small structural validator and defaulter (the subset of OpenAPI v3 the CRD uses) -------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _is(value: Any, kind: str) -> bool:
    return isinstance(value, _TYPES[kind]) and not (kind in ("integer", "number") and isinstance(value, bool))


def _validate(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Everything the API server checks before CEL, except formats; unknown fields are errors (it would prune them)."""
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, int | str) and not isinstance(value, bool)
        return [] if ok else [f"{path}: must be an integer or a string"]
    kind = schema.get("type")
    if kind is not None and not _is(value, kind):
        return [f"{path}: must be of type {kind}"]
    errors: list[str] = []
    branches = [_validate(value, branch, path) for branch in schema.get("anyOf", [])]
    if branches and all(branches):
        errors.append(f"{path}: matches no branch of anyOf: {branches}")
    if "not" in schema and not _validate(value, schema["not"], path):
        errors.append(f"{path}: must not match {schema['not']}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: must be one of {schema['enum']}")
    if kind in ("string", "array", "object"):
        errors += _sizes(value, schema, path)
    if kind == "array" and "items" in schema:
        for i, item in enumerate(value):
            errors += _validate(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        errors += _fields(value, schema, path)
    if "minimum" in schema:
        low = schema["minimum"]
        if value < low or (schema.get("exclusiveMinimum") and value == low):
            errors.append(f"{path}: below the minimum {low}")
    if "maximum" in schema:
        high = schema["maximum"]
        if value > high or (schema.get("exclusiveMaximum") and value == high):
            errors.append(f"{path}: above the maximum {high}")
    return errors


def _sizes(value: Any, schema: Schema, path: str) -> list[str]:
    errors: list[str] = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{path}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: does not match {schema['pattern']}")
    for key, check in (("minItems", "<"), ("minProperties", "<"), ("maxItems", ">"), ("maxProperties", ">")):
        if key in schema and (len(value) < schema[key] if check == "<" else len(value) > schema[key]):
            errors.append(f"{path}: violates {key} {schema[key]}")
    return errors


def _fields(value: dict[str, Any], schema: Schema, path: str) -> list[str]:
    """Required and known fields; a junctor branch (no type) only constrains the fields it names."""
    errors = [f"{path}.{name}: required" for name in schema.get("required", []) if name not in value]
    properties = schema.get("properties", {})
    for name, item in value.items():
        if name in properties:
            errors += _validate(item, properties[name], f"{path}.{name}")
        elif isinstance(schema.get("additionalProperties"), dict):
            errors += _validate(item, schema["additionalProperties"], f"{path}.{name}")
        elif "type" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            errors.append(f"{path}.{name}: unknown field")
    return errors


def _child(schema: Schema, name: str) -> Schema | None:
    properties: Schema = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    found: Schema | None = properties.get(name, extra if isinstance(extra, dict) else None)
    return found


def _default(value: Any, schema: Schema) -> Any:
    """As the API server defaults: missing fields get their default, then defaults are applied inside those too."""
    if isinstance(value, dict):
        for name, item in schema.get("properties", {}).items():
            if name not in value and "default" in item:
                value[name] = copy.deepcopy(item["default"])
        for name, item in value.items():
            child = _child(schema, name)
            if child is not None:
                _default(item, child)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default(item, schema["items"])
    return value


# ---- the tests --------------------------------------------------------------------------------------------------


def test_committed_file_is_the_generated_one() -> None:
    committed = (ROOT / crd.PATH).read_text()
    assert committed == crd.crd_yaml(), f"{crd.PATH} is stale: the spec changed. Regenerate it: {crd.REGENERATE}"


def test_cli_prints_and_writes_the_crd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crd"]) == 0
    assert capsys.readouterr().out == crd.crd_yaml()
    out = tmp_path / "crd.yaml"
    assert cli.main(["crd", "--out", str(out)]) == 0
    assert out.read_text() == crd.crd_yaml()
    assert yaml.safe_load(out.read_text()) == crd.crd()


def test_names() -> None:
    document = crd.crd()
    assert document["metadata"]["name"] == "finetunestudies.ftstudy.io"
    names = document["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == ("FineTuneStudy", "finetunestudies", "finetunestudy")
    assert names["shortNames"] == ["fts"] and names["categories"] == ["ftstudy"]
    assert document["spec"]["scope"] == "Namespaced"
    (version,) = document["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


_FORBIDDEN = {"$ref", "$defs", "oneOf", "allOf", "not", "title", "const", "discriminator", "nullable"}
_VALUE_VALIDATIONS = {"enum", "required", "properties", "not"}  # what the CRD's junctors may hold


def _junctor_problems(branch: Schema, node: Schema) -> list[str]:
    """A structural schema's junctors hold value validations only, on fields the node itself declares."""
    problems = [str(sorted(set(branch) - _VALUE_VALIDATIONS))] if set(branch) - _VALUE_VALIDATIONS else []
    for name, field in branch.get("properties", {}).items():
        if name not in node.get("properties", {}):
            problems.append(f"{name} is not a field of the node")
        problems += _junctor_problems(field, node["properties"].get(name, {}))
    if "not" in branch:
        problems += _junctor_problems(branch["not"], node)
    return problems


def _walk(schema: Schema, path: str = "") -> list[tuple[str, Schema]]:
    nodes = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        nodes += _walk(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += _walk(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        nodes += _walk(schema["items"], f"{path}[]")
    return nodes


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        where = path or "(root)"
        assert not _FORBIDDEN & set(node), f"{where}: {_FORBIDDEN & set(node)}"
        kinds = {"type", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"}
        assert kinds & set(node), f"{where} has no type"
        assert not ("properties" in node and "additionalProperties" in node), where
        assert "additionalProperties" not in node or isinstance(node["additionalProperties"], dict), where
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, True), bool), f"{where}: {bound} must be a boolean in OpenAPI v3.0"
        if "default" in node:
            assert not _validate(node["default"], node, where), f"{where}: its default does not validate"
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"] and rule["rule"], where
        for branch in node.get("anyOf", []):
            assert _junctor_problems(branch, node) == [], f"{where}: {branch}"


def test_every_field_has_a_description() -> None:
    nodes = _walk(_schema())
    undocumented = [p for p, node in nodes if p and not node.get("description") and not p.startswith(".metadata")]
    assert undocumented == [], "explain would show these bare: describe them in spec.py"
    assert crd.shadowed_descriptions() == [], "spec.py describes these now: delete them from crd._DESCRIPTIONS"


def _model_paths(node: Schema, defs: Schema, path: str) -> set[str]:
    """Field paths of pydantic's own JSON Schema, read independently of the CRD converter."""
    if "$ref" in node:
        return _model_paths(defs[node["$ref"].split("/")[-1]], defs, path)
    paths: set[str] = set()
    for option in node.get("anyOf", []) + node.get("oneOf", []):
        paths |= _model_paths(option, defs, path)
    for name, child in node.get("properties", {}).items():
        paths |= {f"{path}.{name}"} | _model_paths(child, defs, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        paths |= _model_paths(node["additionalProperties"], defs, f"{path}.*")
    if "items" in node:
        paths |= _model_paths(node["items"], defs, f"{path}[]")
    return paths


def test_fields_match_the_model_both_ways() -> None:
    source = spec.StudySpec.model_json_schema(by_alias=True)
    model = _model_paths(source, source.get("$defs", {}), "")
    generated = {p for p, _ in _walk(_schema()["properties"]["spec"]) if p and not p.endswith(("*", "[]"))}
    assert model - generated == set(), "fields of spec.py missing from the CRD"
    assert generated - model == set(), "fields of the CRD that spec.py does not have"
    assert ".searchSpace.*.choices" in generated and ".trialTemplate.volumeMounts" in generated


def test_crd_only_requirements() -> None:
    root = _schema()
    assert root["required"] == ["spec"]
    assert root["properties"]["spec"]["required"] == ["dataset", "storage"]
    rules = {r["rule"]: r["message"] for r in root["properties"]["spec"]["x-kubernetes-validations"]}
    assert rules["self.searchSpace == oldSelf.searchSpace"] == (
        "searchSpace is immutable once the study exists; create a new FineTuneStudy to search another space"
    )


def test_the_example_validates_against_both() -> None:
    document = _example()
    spec.parse(document)
    assert _validate(document, _schema()) == []


def test_the_schema_refuses_what_pydantic_refuses() -> None:
    """Only what the schema keywords decide (CEL rules need the API server: tests/test_crd_apiserver.py)."""
    cases = {
        "training.earlyFraction": ({"training": {"earlyFraction": 1.5}}, "above the maximum"),
        "budget.maxTrails": ({"budget": {"maxTrails": 3}}, "unknown field"),
        "searchSpace": ({"searchSpace": {}}, "minProperties"),
        "attributes[0]": ({"attributes": ["Title"]}, "does not match"),
        "choices": (
            {"searchSpace": {"target_modules": {"type": "categorical"}}},
            "matches no branch of anyOf: [['.spec.searchSpace.target_modules.choices: required']",
        ),
    }
    for name, (change, expected) in cases.items():
        document = _example()
        document["spec"].update(change)
        with pytest.raises(spec.SpecError):
            spec.parse(document)
        errors = _validate(document, _schema())
        assert any(expected in error for error in errors), (name, errors)


@pytest.mark.parametrize(
    "study",
    [
        {"dataset": {"path": "/data"}, "storage": {"secretRef": {"name": "db"}}},
        {"dataset": {"generate": {}}, "storage": {"secretRef": {"name": "db"}}, "budget": {"maxTrials": 4}},
        _example()["spec"],
    ],
    ids=["minimal", "partial", "example"],
)
def test_api_server_defaults_build_the_same_spec_as_pydantic(study: dict[str, Any]) -> None:
    """The operator parses what the API server stored; its defaults must not change what the study means, and
    none of them may be one that pydantic refuses (a type-specific default on the search-space union would be)."""
    document = {"apiVersion": spec.API_VERSION, "kind": spec.KIND, "metadata": {"name": "s"}, "spec": study}
    defaulted = _default(copy.deepcopy(document), _schema())
    assert _validate(defaulted, _schema()) == []
    assert spec.parse(defaulted) == spec.parse(document)
    assert defaulted["spec"]["training"]["earlyFraction"] == study.get("training", {}).get("earlyFraction", 0.2)
    assert defaulted["spec"]["promotion"]["policy"] in ("topK",)
    assert defaulted["spec"]["promotion"]["mode"] == study.get("promotion", {}).get("mode", "screen")


def test_printer_columns_point_into_the_status_schema() -> None:
    (version,) = crd.crd()["spec"]["versions"]
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Done", "Running", "Suspended", "Promoted", "Queued", "Best-Early", "Best-Final",
                             "Age"]  # fmt: skip
    wide = {c["name"] for c in version["additionalPrinterColumns"] if c.get("priority") == 1}
    assert wide == {"Suspended", "Promoted", "Queued"}, "screening's and Kueue's columns only with -o wide"
    root = _schema()
    for name, (kind, json_path) in columns.items():
        if json_path.startswith(".metadata"):
            continue
        node: Schema | None = root
        for part in json_path.strip(".").split("."):
            node = _child(node, part) if node is not None else None
        assert node is not None, f"{name}: {json_path} is not in the schema"
        assert node["type"] == kind, name
    conditions = root["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
