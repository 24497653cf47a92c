"""Generated manifests (hypothesis) through the real API server and through ``ftstudy.spec``: the two must agree.

Each manifest is a valid study with a few random mutations: wrong types, out-of-range numbers, unknown fields,
random search spaces, names and choices. It is sent to the API server as a server-side dry run (the CRD's schema,
defaults and CEL rules judge it, nothing is stored) and parsed by ``spec.parse``, the operator's own reading:

- refused by the API server: ``spec.parse`` refuses it too, and both messages name a field that was mutated;
- accepted: ``spec.parse`` accepts what the API server would store (so the operator runs it), or refuses it only for
  what the CRD documents it cannot check (values that may be strings or numbers: ``training.hyperparameters``,
  ``baseline.params``, categorical ``choices``), which the operator reports as an InvalidSpec condition.

Then a sample of the accepted ones is created for real under a running operator: each is run (its trials launched)
or reported with a condition, with one Event per problem, and the operator never logs a traceback. Last, generated
updates of a stored study (dry-run replaces): the API server refuses every one that changes what the operator holds
a running study to (its frozen meaning, storage, outputDir), but for what CEL cannot see.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftstudy import spec
from ftstudy.kube.api import ApiError, Kube, load_config, path
from ftstudy.kube.identity import FROZEN_FIELDS, meaning
from ftstudy.kube.names import data_check_job_name
from ftstudy.spec import HYPERPARAMETERS
from tests.cluster.control_plane import ControlPlane
from tests.studies import tiny_study
from tests.test_operator import LATER_SECRET, Operators, apply, get_study, jobs, wait_for

EXAMPLES = 1000
# What the CRD says it cannot check (crd.py's docstring): values typed "string or number" are invisible to CEL, and
# the core/v1 objects of trialTemplate (env, volumes, volumeMounts, tolerations) are kept free-form.
BLIND_SPOTS = re.compile(
    r"spec(\.|: )(training\.hyperparameters|baseline(\.params)?|searchSpace(\.[a-z_]+)?(\.choices)?"
    r"|trialTemplate\.(env|volumes|volumeMounts|tolerations))\b"
)

# --- the manifests ---------------------------------------------------------------------------------------------

names = st.sampled_from([*HYPERPARAMETERS[:6], "lora_rank", "LR", ""])
junk = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70), st.floats(-2, 2, allow_nan=False), st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=2), st.just({"x": 1}),
)  # fmt: skip
numbers = st.one_of(st.integers(-2, 40), st.floats(-1, 2, allow_nan=False, allow_infinity=False))


core_objects = st.sampled_from([
    {}, {"x": 1}, {"name": 1}, {"name": "A", "value": "1"}, {"name": "A", "valueFrom": {"secretKeyRef": "s"}},
    {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, {"name": "v", "configMap": "x"},
    {"name": "v", "emptyDir": {}}, {"name": "v"}, {"name": "v", "mountPath": ""}, {"name": "v", "mountPath": "/x"},
    {"key": 1, "operator": "Exists"}, {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},
])  # fmt: skip


@st.composite
def param(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["float", "int", "categorical", "bool"]))
    out: dict[str, Any] = {"type": kind}
    if kind == "categorical" or draw(st.booleans()):
        out["choices"] = draw(st.lists(st.one_of(st.integers(0, 3), st.sampled_from(["a", "b"]), st.just(0.5)),
                                       max_size=3))  # fmt: skip
    if kind != "categorical" or draw(st.integers(0, 4)) == 0:
        out |= {"low": draw(numbers), "high": draw(numbers)}
        if draw(st.booleans()):
            out["log"] = draw(st.booleans())
        if draw(st.integers(0, 2)) == 0:
            out["step"] = draw(numbers)
    return out


MUTATIONS: dict[str, Any] = {
    "model": st.one_of(st.sampled_from(["tiny", "smollm2", ""]), junk),
    "dataset": st.one_of(
        st.just({"path": "/data"}), st.just({}), st.just({"path": "/d", "generate": {"train": 4}}),
        st.builds(lambda n, k: {"generate": {k: n}}, numbers, st.sampled_from(["train", "test", "independentTest"])),
        junk,
    ),
    "attributes": st.one_of(st.lists(st.sampled_from(["brand", "color", "Brand", "1x", "brand"]), max_size=3), junk),
    "training": st.builds(lambda k, v: {k: v},
                          st.sampled_from(["earlyFraction", "maxSeqLen", "epochs", "maxSteps", "evalSamples",
                                           "checkEvery", "trainSamples", "seed", "bogus"]),
                          st.one_of(numbers, junk)),
    "training.hyperparameters": st.dictionaries(names, st.one_of(numbers, st.text(max_size=3), st.booleans()),
                                                max_size=2),
    "searchSpace": st.one_of(st.dictionaries(names, param(), max_size=3), junk),
    "sampler": st.builds(lambda k, v: {k: v}, st.sampled_from(["type", "nStartupTrials", "seed"]),
                         st.one_of(st.sampled_from(["tpe", "random", "grid"]), numbers, junk)),
    "promotion": st.builds(lambda k, v: {k: v}, st.sampled_from(["policy", "k", "percentile"]),
                           st.one_of(st.sampled_from(["topK", "median", "none", "best"]), numbers, junk)),
    "budget": st.builds(lambda k, v: {k: v},
                        st.sampled_from(["maxTrials", "parallelism", "maxFailedTrials", "retriesPerTrial", "max"]),
                        st.one_of(numbers, junk)),
    "baseline": st.one_of(st.builds(lambda p: {"params": p}, st.dictionaries(names, numbers, max_size=2)), junk),
    "trialTemplate": st.builds(lambda k, v: {k: v},
                               st.sampled_from(["image", "fsGroup", "activeDeadlineSeconds", "command", "outputDir"]),
                               st.one_of(st.sampled_from(["ftstudy/trainer:x", ""]), numbers, junk)),
    # core/v1 objects the CRD keeps free-form (crd.py): shapes Kubernetes' own types would refuse, and valid ones
    "trialTemplate.pod": st.builds(lambda k, v: {k: v}, st.sampled_from(["env", "volumes", "volumeMounts",
                                                                         "tolerations"]),
                                   st.one_of(st.lists(core_objects, max_size=2), junk)),
    "cleanup": st.builds(lambda v: {"deleteStudyRecords": v}, junk),
    "metadata.name": st.sampled_from(["a" * 63, "a" * 64, "a.b", "Fuzz", "-fuzz", "fuzz-", "f", "9-lives"]),
    "unknown": junk,
}  # fmt: skip


def base(name: str) -> dict[str, Any]:
    document = tiny_study(name)
    document["spec"]["storage"] = {"secretRef": {"name": LATER_SECRET}}
    return document


def mutated(document: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(document)
    body = out["spec"]
    for key, value in changes.items():
        if key == "training.hyperparameters":
            body.setdefault("training", {})["hyperparameters"] = value
        elif key == "metadata.name":
            out["metadata"]["name"] = value
        elif key == "trialTemplate.pod":  # after "trialTemplate" (sorted), which may have made it junk
            template = body.get("trialTemplate")
            body["trialTemplate"] = {**(template if isinstance(template, dict) else {}), **value}
        elif key in ("training", "sampler", "promotion", "budget", "trialTemplate") and isinstance(value, dict):
            body[key] = {**body.get(key, {}), **value}  # one field changed, the others kept
        else:
            body[key] = value
    return out


@st.composite
def manifests(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    keys = draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=3, unique=True))
    changes = {key: draw(MUTATIONS[key]) for key in keys}
    return mutated(base("fuzz"), changes), {k.split(".")[0] for k in keys}


# --- the verdicts ----------------------------------------------------------------------------------------------


@dataclass
class Tally:
    refused_by_both: int = 0
    accepted_by_both: int = 0
    blind_spots: int = 0
    accepted: list[dict[str, Any]] = field(default_factory=list)  # what the API server would store, for phase two


def verdicts(kube: Kube, namespace: str, document: dict[str, Any]) -> tuple[dict[str, Any] | str, str | None]:
    """(the object the API server would store, or its refusal) and (None, or ``spec.parse``'s refusal)."""
    try:
        stored = kube.request(
            "POST",
            path("ftstudy.io", "v1alpha1", "finetunestudies", namespace),
            query={"dryRun": "All", "fieldValidation": "Strict"},
            body=document,
        )
        server: dict[str, Any] | str = stored
    except ApiError as error:
        assert error.status in (400, 422), (error, document)
        server = error.message
    try:
        spec.parse(server if isinstance(server, dict) else document)
        return server, None
    except spec.SpecError as error:
        return server, str(error)


@pytest.fixture
def kube(control_plane: ControlPlane, crd_installed: None) -> Kube:
    return Kube(load_config(str(control_plane.kubeconfig)))


@pytest.fixture(scope="module")
def results() -> Iterator[Tally]:
    yield Tally()


def test_the_api_server_and_the_spec_agree_on_generated_manifests(
    kube: Kube, cluster_namespace: str, results: Tally
) -> None:
    generate(kube, cluster_namespace, results)


def generate(kube: Kube, cluster_namespace: str, results: Tally) -> None:
    """Each generated manifest judged by the API server (a dry run) and by ``spec.parse``; the accepted ones kept
    in ``results`` for the operator to run."""
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(manifests())
    def check(case: tuple[dict[str, Any], set[str]]) -> None:
        document, touched = case
        server, refusal = verdicts(kube, cluster_namespace, document)
        if isinstance(server, str):
            assert refusal is not None, f"the API server refused what ftstudy accepts: {server}\n{document['spec']}"
            fields = "|".join(sorted(touched))
            # spec.budget.x: ..., spec: budget.x ..., or a rule on spec whose message names the field
            named = re.compile(rf"\bspec\b.*\b({fields})\b|\bmetadata\.name\b" if "metadata" in touched
                               else rf"\bspec\b.*\b({fields})\b", re.S)  # fmt: skip
            assert named.search(server), f"the API server's message names no field it was given: {server}"
            assert named.search(refusal), f"ftstudy's message names no field it was given: {refusal}"
            results.refused_by_both += 1
        elif refusal is not None:
            problems = [line.strip() for line in refusal.splitlines()[1:]]
            assert problems and all(BLIND_SPOTS.match(p) for p in problems), f"accepted, yet refused: {refusal}"
            results.blind_spots += 1
            results.accepted.append(server)
        else:
            results.accepted_by_both += 1
            results.accepted.append(server)

    check()
    seconds = time.monotonic() - started
    print(
        f"{EXAMPLES} manifests in {seconds:.0f}s: {results.refused_by_both} refused by both, "
        f"{results.accepted_by_both} accepted by both, {results.blind_spots} accepted but refused by ftstudy"
    )
    assert results.refused_by_both and results.accepted_by_both and results.blind_spots, "every kind was generated"


def test_accepted_manifests_run_or_are_reported_and_the_operator_never_crashes(
    operators: Operators, kube: Kube, cluster_namespace: str, results: Tally
) -> None:
    if not results.accepted:  # run alone (or first): generate them here rather than skip
        generate(kube, cluster_namespace, results)
    ops, plane, ns = operators, operators.plane, operators.namespace
    invalid = [m for m in results.accepted if _refused(m)][:8]
    valid = [m for m in results.accepted if not _refused(m)][:8]
    documents = [*invalid, *valid]
    for i, document in enumerate(documents):
        manifest = {k: v for k, v in document.items() if k != "status"}
        manifest["metadata"] = {"name": study_name(i)}
        manifest["spec"] = {**manifest["spec"], "storage": {"secretRef": {"name": "ftstudy-db"}}}
        apply(plane, ns, manifest)
    ops.start()
    count = len(invalid) + len(valid)

    def settled() -> bool:
        statuses = [get_study(plane, ns, study_name(i)).get("status") or {} for i in range(count)]
        return all(s.get("phase") in ("Running", "Failed", "Succeeded") or _checking_data(s) for s in statuses)

    wait_for("every study run or reported", settled, 180, lambda: ops.log()[-4000:])
    time.sleep(3)
    for i in range(count):
        status = get_study(plane, ns, study_name(i))["status"]
        if i < len(invalid):
            failed = next(c for c in status["conditions"] if c["type"] == "Failed")
            assert (status["phase"], failed["reason"]) == ("Failed", "InvalidSpec"), status
            assert BLIND_SPOTS.search(failed["message"]), failed
        else:
            launched = [j for j in jobs(plane, ns) if j["metadata"]["labels"]["ftstudy.io/study"] == study_name(i)]
            if _checking_data(status):  # dataset.path: a CPU Job reads it first; this cluster has no node to run it
                assert documents[i]["spec"]["dataset"].get("path"), status
                assert [j["metadata"]["name"] for j in launched] == [data_check_job_name(study_name(i))], launched
                continue
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            if ready["reason"] == "TrialPolicyViolation":  # a volume, a secret or a toleration the policy refuses
                assert ready["status"] == "False" and ready["message"] and not launched, status
                continue
            assert (status["phase"], ready["status"]) == ("Running", "True"), status
            assert launched, f"{study_name(i)} runs: its trials are launched"
    log = ops.log()
    assert "Traceback" not in log, log[-4000:]
    warnings = [line for line in log.splitlines() if "InvalidSpec" in line]
    assert len(warnings) <= len(invalid), "each invalid study reported once, not at every pass"


def study_name(i: int) -> str:
    """Every other study's name as long as a name may be (63): its Jobs' names and label values must still fit."""
    return f"fuzz-{i}" if i % 2 == 0 else f"fuzz-{i}-{'long' * 16}"[:63]


def _checking_data(status: dict[str, Any]) -> bool:
    """Pending while the study's data check Job reads ``dataset.path`` (before any trial is launched)."""
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
    return status.get("phase") == "Pending" and bool(ready) and ready[0].get("reason") == "CheckingData"


def _refused(document: dict[str, Any]) -> bool:
    try:
        spec.parse(document)
        return False
    except spec.SpecError:
        return True


def test_a_dry_run_returns_the_defaulted_manifest_and_stores_nothing(kube: Kube) -> None:
    """The dry-run path itself: what it returns is the manifest with the CRD's defaults, and nothing is created."""
    document = base("dry-run")
    studies = path("ftstudy.io", "v1alpha1", "finetunestudies", "default")
    stored = kube.request("POST", studies, query={"dryRun": "All"}, body=document)
    assert stored["spec"]["budget"] == {**document["spec"]["budget"], "pendingSeconds": 86400}  # defaulted
    assert stored["spec"]["promotion"]["percentile"] == 50
    with pytest.raises(ApiError) as missing:
        kube.get(f"{studies}/dry-run")
    assert missing.value.status == 404


UPDATES = 300


def test_updates_of_a_stored_study_are_refused_where_they_change_what_it_is_frozen_on(
    kube: Kube, cluster_namespace: str
) -> None:
    """Generated updates of a stored study, judged by the API server (a dry-run replace: the CRD's transition rules)
    and by the operator's own reading of an update (``ftstudy.kube.identity``'s frozen meaning, the immutable
    storage and outputDir). An accepted update changes nothing the study is frozen on but what CEL cannot see
    (``training.hyperparameters``, categorical ``choices``), which the operator then reports as SpecChanged; a
    refused one is invalid on its own or changes a frozen field, and the refusal names a field it was given."""
    studies = path("ftstudy.io", "v1alpha1", "finetunestudies", cluster_namespace)
    stored = kube.create(studies, base("fuzz-update"))
    old = spec.parse(stored).spec
    counts = {"refused": 0, "accepted": 0, "blind": 0}
    try:

        @settings(max_examples=UPDATES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
        @given(manifests())
        def check(case: tuple[dict[str, Any], set[str]]) -> None:
            document, touched = case
            document["metadata"] = {"name": "fuzz-update", "resourceVersion": stored["metadata"]["resourceVersion"]}
            try:
                updated = kube.request("PUT", f"{studies}/fuzz-update", body=document,
                                       query={"dryRun": "All", "fieldValidation": "Strict"})  # fmt: skip
            except ApiError as error:
                assert error.status in (400, 422), (error, document)
                named = re.compile(rf"\bspec\b.*\b({'|'.join(sorted(touched))})\b", re.S)
                assert named.search(error.message), f"the refusal names no field it was given: {error.message}"
                assert _refused(document) or _frozen_changes(old, document), (
                    f"the API server refused an update the operator would run: {error.message}\n{document['spec']}"
                )
                counts["refused"] += 1
                return
            if _refused(updated):  # invalid where CEL cannot see: the first test's blind spots
                counts["blind"] += 1
                return
            changed = _frozen_changes(old, updated)
            assert all(_only_blind(field, old, spec.parse(updated).spec) for field in changed), (
                f"the API server accepted an update of {changed}, which the study is frozen on\n{document['spec']}"
            )
            counts["blind" if changed else "accepted"] += 1

        check()
    finally:
        kube.delete(f"{studies}/fuzz-update")
    print(f"{UPDATES} updates: {counts}")
    assert counts["refused"] and counts["accepted"], "both kinds were generated"


def _frozen_changes(old: spec.StudySpec, document: dict[str, Any]) -> list[str]:
    """The fields the operator refuses to see change under a running study: its frozen meaning, the storage and
    the trials' outputDir (what ``ftstudy.kube.identity`` and the CRD's transition rules guard)."""
    try:
        new = spec.parse(document).spec
    except spec.SpecError:
        return []
    was, now = meaning(old), meaning(new)
    changed = [field for field in FROZEN_FIELDS if was[field] != now[field]]
    if old.storage != new.storage:
        changed.append("storage")
    if old.trial_template.output_dir != new.trial_template.output_dir:
        changed.append("trialTemplate.outputDir")
    return changed


def _only_blind(field: str, old: spec.StudySpec, new: spec.StudySpec) -> bool:
    """Does ``field`` differ only where CEL cannot see (crd.py's docstring)?"""
    was, now = meaning(old).get(field), meaning(new).get(field)
    if field == "training":
        return {**was, "hyperparameters": None} == {**now, "hyperparameters": None}
    if field == "searchSpace":

        def shape(space: dict[str, Any]) -> dict[str, Any]:
            return {name: {k: v for k, v in p.items() if k != "choices"} for name, p in space.items()}

        return shape(was) == shape(now)
    return False
