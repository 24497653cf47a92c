"""Observability: the operator's Prometheus metrics, the alert rules and the Grafana dashboard.

- the alert rules pass ``promtool check rules`` and their unit tests (``promtool test rules``), which cover every
  alert, and every dashboard query parses;
- ``ftstudy.kube.metrics`` turns statuses, trials and the engine's Events into the right series, keeps the per-trial
  series to a bounded window and forgets a deleted study;
- a real operator (a process, on the real control plane, with simulated GPU nodes and the real trainer) runs a study
  to the end; a real scrape of its metrics port agrees with the study's status and its Optuna records, and exports
  every metric (with the labels and label values) that the rules and the dashboard query.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ftstudy.kube.metrics import OperatorMetrics
from ftstudy.runner import Event
from tests.cluster.builds import require_builds
from tests.cluster.control_plane import ControlPlane, free_port
from tests.cluster.gpu_nodes import GpuNodes
from tests.test_operator import (
    TEST_POLICY,
    Operators,
    apply,
    crd_installed,  # noqa: F401  (a fixture)
    optuna_trials,
    prepare_namespace,
    study_manifest,
    wait_for,
    wait_for_phase,
)

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "charts" / "ftstudy" / "files" / "alerts.rules.yaml"
RULE_TESTS = ROOT / "tests" / "promtool" / "alerts_test.yaml"
DASHBOARD = ROOT / "charts" / "ftstudy" / "files" / "grafana-dashboard.json"
PROMTOOL_SCRIPT = ROOT / "scripts" / "promtool.sh"


# -- the PromQL in the rules and the dashboard ------------------------------------------------------------------

KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "start", "end", "inf", "nan", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
SELECTOR = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
GRAFANA_VARIABLE = re.compile(r"\$\{?\w+(?::\w+)?\}?")


@dataclass(frozen=True)
class Selector:
    """A metric a query reads, with the label matchers it reads it by."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


def selectors(expr: str) -> list[Selector]:
    """The metrics a PromQL expression selects: identifiers that are not functions, aggregations, keywords, label
    names of groupings, durations or numbers; with their label matchers."""
    text = GROUPING.sub(" ", expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    found = []
    position = 0
    while match := SELECTOR.search(text, position):
        position = match.end()
        word, braces = match.group(1), match.group(2)
        if braces is None and text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if word in KEYWORDS or word.startswith("$"):
            continue
        if match.start() > 0 and text[match.start() - 1] == "$":
            continue  # a Grafana variable's name
        if re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        matchers = tuple(MATCHER.findall(braces or ""))
        found.append(Selector(word, matchers))
    return found


def _without_strings_outside_braces(expr: str) -> str:
    """Strings appear only inside label matchers in these queries; a quoted string elsewhere would fool the
    selector scan, so refuse it."""
    outside = re.sub(r"\{[^}]*\}", "", expr)
    assert not STRING.search(outside), f"a string outside a label matcher: {expr}"
    return expr


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule.get("alert") or rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    """Every PromQL query of the dashboard, by panel title, and the metrics its template variables read."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries: dict[str, str] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries[f"{panel['title']} [{target['refId']}]"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
        assert inner, f"variable {variable['name']}: expected label_values(selector, label): {query}"
        queries[f"variable {variable['name']}"] = inner.group(1)
    return queries


def concrete(expr: str) -> str:
    """A Grafana query with its variables replaced by values Prometheus accepts."""
    for variable, value in (("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "6h")):
        expr = expr.replace(variable, value)
    return GRAFANA_VARIABLE.sub(".*", expr)


def test_the_selector_scan_finds_metrics_and_only_metrics() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(ftstudy_x_bucket{namespace=~"$namespace", kind="a|b"}'
        "[$__rate_interval]))) * 3600 > 1e3 and on (namespace, study) time() - max by (study) (ftstudy_y) > 3 * 60"
        " unless ftstudy_z offset 5m"
    )
    found = selectors(expr)
    assert [s.metric for s in found] == ["ftstudy_x_bucket", "ftstudy_y", "ftstudy_z"]
    assert found[0].matchers == (("namespace", "=~", "$namespace"), ("kind", "=", "a|b"))


# -- promtool ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> str:
    """Debian's promtool: $FTSTUDY_PROMTOOL, else on PATH, else installed by scripts/promtool.sh."""
    require_builds("promtool", "promtool")
    path = os.environ.get("FTSTUDY_PROMTOOL") or shutil.which("promtool")
    if path:
        return path
    result = subprocess.run([str(PROMTOOL_SCRIPT)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"{PROMTOOL_SCRIPT} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


def test_the_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = set(rule_expressions())
    assert alerts == {"FtstudyStudyFailed", "FtstudyTrialFailureRateHigh", "FtstudyStudyStalled",
                      "FtstudyDatabaseUnreachable", "FtstudyTrialOutage"}  # fmt: skip
    assert f"SUCCESS: {len(alerts)} rules found" in result.stdout


def test_every_alert_has_unit_tests_that_pass(promtool: str) -> None:
    result = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = set(rule_expressions())
    assert fires == alerts, f"alerts never shown firing: {alerts - fires}"
    assert silent == alerts, f"alerts never shown silent: {alerts - silent}"


def test_every_alert_has_a_severity_a_for_and_a_runbook() -> None:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["for"], rule["alert"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
            assert "Runbook" in rule["annotations"]["description"], rule["alert"]


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query (its Grafana variables filled in) as a recording rule's expression."""
    queries = dashboard_expressions()
    assert len(queries) >= 15
    rules = [{"record": f"ftstudy:dashboard_query_{i}", "expr": concrete(q)} for i, q in enumerate(queries.values())]
    path = tmp_path / "dashboard-queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_is_a_grafana_dashboard_for_the_sidecar() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["id"] is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "study"} <= set(variables)
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    needed = ["trial progress", "early step (20%) and at the end, per trial", "best trial accuracy", "decisions",
              "gpu time spent and saved", "decision latency", "reconcile", "database errors"]  # fmt: skip
    assert [n for n in needed if n not in titles] == []


# -- ftstudy.kube.metrics without a cluster -------------------------------------------------------------------------

START = datetime(2026, 11, 25, 11, 0)


def trial(number: int, state: TrialState, early: float | None, final: float | None, seconds: float,
          reported: float | None = None) -> FrozenTrial:  # fmt: skip
    attrs: dict[str, Any] = {}
    if final is not None:
        attrs["final_accuracy"] = final
    if reported is not None:
        attrs["early_reported_at"] = reported
    frozen = create_trial(
        state=state,
        value=early if state == TrialState.COMPLETE else None,
        params={"learning_rate": 1e-3},
        distributions={"learning_rate": FloatDistribution(1e-5, 1e-1, log=True)},
        intermediate_values={2: early} if early is not None else {},
        user_attrs=attrs,
    )
    frozen.number = number
    frozen.datetime_start = START + timedelta(seconds=10 * number)
    frozen.datetime_complete = (
        None if state == TrialState.RUNNING else frozen.datetime_start + timedelta(seconds=seconds)
    )
    return frozen


def scrape_registry(metrics: OperatorMetrics) -> list[Sample]:
    text = generate_latest(metrics.registry).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    hits = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(hits) <= 1, (name, labels, hits)
    return hits[0] if hits else None


def test_metrics_follow_the_status_the_trials_and_the_events() -> None:
    metrics = OperatorMetrics()
    ns, name = "ml", "demo"
    metrics.study_seen(ns, name)
    status = {
        "phase": "Running",
        "progress": "3/10",
        "trials": {"created": 4, "running": 1, "completed": 2, "cancelled": 1, "failed": 0},
        "gpuSeconds": {"spent": 490.0, "saved": 180.0},
        "best": {"trial": 1, "earlyAccuracy": 0.7, "finalAccuracy": 0.8, "testAccuracy": 0.75},
    }
    metrics.observe_status(ns, name, status)
    trials = [
        trial(0, TrialState.COMPLETE, 0.5, 0.6, 100, reported=START.timestamp() + 20),
        trial(1, TrialState.COMPLETE, 0.7, 0.8, 120, reported=START.timestamp() + 35),
        trial(2, TrialState.PRUNED, 0.2, None, 20, reported=START.timestamp() + 38),
        trial(3, TrialState.RUNNING, None, None, 0),
    ]
    metrics.observe_trials(ns, name, trials)
    applied = START.timestamp() + 40  # the decisions' time: latency runs from the early report to here
    events = [
        Event(3, "launched", "TrialLaunched", at=applied),
        Event(1, "continue", "TrialContinued", at=applied),
        Event(2, "cancel", "TrialCancelled", at=applied),
        Event(1, "finished", "TrialFinished", at=applied),
        Event(None, "the database is down", "DatabaseUnreachable", at=applied),
    ]
    metrics.observe_events(ns, name, events, {t.number: t for t in trials}, now=applied + 1)
    metrics.database_reached(ns, name, False)
    metrics.observe_reconcile(ns, name, 0.2)

    s = scrape_registry(metrics)
    study = {"namespace": ns, "study": name}
    assert {state: value(s, "ftstudy_trials", **study, state=state) for state in
            ("running", "completed", "cancelled", "failed")} == {"running": 1, "completed": 2, "cancelled": 1,
                                                                 "failed": 0}  # fmt: skip
    assert value(s, "ftstudy_study_max_trials", **study) == 10
    assert value(s, "ftstudy_study_phase", **study, phase="Running") == 1
    assert value(s, "ftstudy_study_phase", **study, phase="Failed") == 0
    assert value(s, "ftstudy_best_trial_accuracy_ratio", **study, split="final") == 0.8
    assert value(s, "ftstudy_best_trial_accuracy_ratio", **study, split="independent_test") is None
    assert (
        value(s, "ftstudy_gpu_spent_seconds", **study) == 490 and value(s, "ftstudy_gpu_saved_seconds", **study) == 180
    )
    assert value(s, "ftstudy_trial_accuracy_ratio", **study, trial="1", point="early") == 0.7
    assert value(s, "ftstudy_trial_accuracy_ratio", **study, trial="1", point="final") == 0.8
    assert value(s, "ftstudy_trial_accuracy_ratio", **study, trial="2", point="final") is None
    assert value(s, "ftstudy_trial_accuracy_ratio", **study, trial="3", point="early") is None
    # the newest progress: trial 1 ended at START + 10 + 120 s
    assert value(s, "ftstudy_study_last_progress_timestamp_seconds", **study) == START.timestamp() + 130
    decisions = {k: value(s, "ftstudy_decisions_total", **study, kind=k) for k in
                 ("launched", "continued", "cancelled", "finished", "failed", "relaunched")}  # fmt: skip
    assert decisions == {"launched": 1, "continued": 1, "cancelled": 1, "finished": 1, "failed": 0, "relaunched": 0}
    assert value(s, "ftstudy_trial_duration_seconds_count", **study, outcome="completed") == 1
    assert value(s, "ftstudy_trial_duration_seconds_sum", **study, outcome="completed") == 120
    assert value(s, "ftstudy_trial_duration_seconds_sum", **study, outcome="cancelled") == 20
    assert value(s, "ftstudy_trial_duration_seconds_count", **study, outcome="failed") == 0
    # latency: 40 - 35 s for trial 1, 40 - 38 s for trial 2
    assert value(s, "ftstudy_decision_latency_seconds_count", **study) == 2
    assert value(s, "ftstudy_decision_latency_seconds_sum", **study) == pytest.approx(7.0)
    assert value(s, "ftstudy_database_errors_total", **study) == 1 and value(s, "ftstudy_database_up", **study) == 0
    assert value(s, "ftstudy_reconcile_duration_seconds_count", **study) == 1
    assert value(s, "ftstudy_leader") == 0 and value(s, "ftstudy_build_info", version="0.1.0") == 1


def test_per_trial_series_are_kept_for_the_newest_trials_only_and_a_deleted_study_is_forgotten() -> None:
    metrics = OperatorMetrics(recent_trials=3)
    metrics.study_seen("ml", "demo")
    metrics.study_seen("ml", "other")
    metrics.observe_status("ml", "other", {"phase": "Running", "trials": {"running": 1}})
    metrics.observe_trials("ml", "demo", [trial(n, TrialState.PRUNED, 0.1 * n, None, 5) for n in range(5)])
    s = scrape_registry(metrics)
    kept = sorted(x.labels["trial"] for x in s if x.name == "ftstudy_trial_accuracy_ratio")
    assert kept == ["2", "3", "4"]
    metrics.observe_trials("ml", "demo", [trial(n, TrialState.PRUNED, 0.1, None, 5) for n in range(7)])
    s = scrape_registry(metrics)
    assert sorted(x.labels["trial"] for x in s if x.name == "ftstudy_trial_accuracy_ratio") == ["4", "5", "6"]

    metrics.forget("ml", "demo")
    s = scrape_registry(metrics)
    assert not [x for x in s if x.labels.get("study") == "demo"]
    assert value(s, "ftstudy_trials", namespace="ml", study="other", state="running") == 1
    assert value(s, "ftstudy_decisions_total", namespace="ml", study="other", kind="launched") == 0


def test_the_early_score_trust_of_the_audited_trials_is_exported() -> None:
    metrics = OperatorMetrics()
    trust = {"auditFraction": 0.2, "trials": 6, "expected": 4.0, "spearman": 0.05, "low": -0.41, "high": 0.52}
    metrics.observe_status("ml", "demo", {"trials": {"audited": 7}, "earlyScoreTrust": trust})
    s = scrape_registry(metrics)
    study = {"namespace": "ml", "study": "demo"}
    bounds = {b: value(s, "ftstudy_early_final_spearman", **study, bound=b) for b in ("estimate", "low", "high")}
    assert bounds == {"estimate": 0.05, "low": -0.41, "high": 0.52}
    assert value(s, "ftstudy_audited_trials", **study) == 6
    assert value(s, "ftstudy_trials", **study, state="audited") == 7
    metrics.observe_status("ml", "demo", {"earlyScoreTrust": {"auditFraction": 0.2, "trials": 3, "expected": 4.0}})
    s = scrape_registry(metrics)
    assert not [x for x in s if x.name == "ftstudy_early_final_spearman"], "no estimate under 8 audited trials"
    assert value(s, "ftstudy_audited_trials", **study) == 3
    metrics.forget("ml", "demo")
    assert not [x for x in scrape_registry(metrics) if x.name == "ftstudy_audited_trials"]


def test_a_finished_study_without_a_best_trial_exports_no_best_accuracy() -> None:
    metrics = OperatorMetrics()
    metrics.observe_status("ml", "demo", {"best": {"finalAccuracy": 0.5, "earlyAccuracy": 0.4}})
    metrics.observe_status("ml", "demo", {"phase": "Failed", "best": None})
    s = scrape_registry(metrics)
    assert not [x for x in s if x.name == "ftstudy_best_trial_accuracy_ratio"]
    assert value(s, "ftstudy_study_phase", namespace="ml", study="demo", phase="Failed") == 1


# -- a real operator, a real scrape ----------------------------------------------------------------------------------


@dataclass
class MeteredOperators(Operators):
    """Operator processes that serve their metrics on a free loopback port."""

    metrics_port: int = 0

    def start(self, identity: str = "replica-a") -> subprocess.Popen[bytes]:
        log = self.log_path(identity).open("ab")
        command = [sys.executable, "-m", "ftstudy.cli", "operator", "--namespace", self.namespace,
                   "--kubeconfig", str(self.kubeconfig), "--identity", identity, "--poll-seconds", "0.5",
                   "--stuck-seconds", "30", "--metrics-address", "127.0.0.1",
                   "--metrics-port", str(self.metrics_port), *TEST_POLICY]  # fmt: skip
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text: str = response.read().decode()
            return text


@pytest.fixture
def metered_operators(
    control_plane: ControlPlane,
    cluster_namespace: str,
    crd_installed: None,  # noqa: F811
    postgres_url: str,
    tmp_path: Path,
) -> Iterator[MeteredOperators]:
    kubeconfig, volume = prepare_namespace(control_plane, cluster_namespace, postgres_url, tmp_path)
    harness = MeteredOperators(control_plane, cluster_namespace, kubeconfig, tmp_path, metrics_port=free_port())
    yield harness
    harness.stop_all()
    control_plane.kubectl("delete", "persistentvolume", volume, "--wait=false", check=False)


def samples_of(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def scraped(ops: MeteredOperators, check: Callable[[list[Sample]], bool], what: str, timeout: float) -> list[Sample]:
    """Scrape until ``check`` holds for the samples: what the operator counts after writing the status lags by a
    moment."""
    latest: list[Sample] = []

    def attempt() -> bool:
        nonlocal latest
        try:
            text = ops.scrape()
        except OSError:
            return False
        (ops.logs / f"metrics-{re.sub(r'[^a-z]+', '-', what)}.txt").write_text(text)  # for a person reading a failure
        latest = samples_of(text)
        return check(latest)

    wait_for(what, attempt, timeout, lambda: "\n".join(map(str, latest))[-6000:])
    return latest


def test_a_real_scrape_of_a_running_operator_matches_the_study_and_serves_every_queried_metric(
    metered_operators: MeteredOperators,
    gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes],
    postgres_url: str,
    tmp_path: Path,
) -> None:
    ops = metered_operators
    plane, ns = ops.plane, ops.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    ops.start()
    standing = scraped(ops, lambda s: value(s, "ftstudy_leader") == 1, "the operator to lead", 60)
    assert value(standing, "ftstudy_build_info", version="0.1.0") == 1

    name = "observed"
    manifest = study_manifest(name, tmp_path / "artifacts", budget={"maxTrials": 3, "parallelism": 2},
                              promotion={"policy": "topK", "k": 1, "mode": "online", "auditFraction": 0.0})  # fmt: skip
    apply(plane, ns, manifest)
    study = wait_for_phase(ops, name, ("Succeeded", "Failed"), 420, nodes)
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    counts = status["trials"]
    ended = counts["completed"] + counts["cancelled"] + counts["failed"]
    labels = {"namespace": ns, "study": name}

    def settled(s: list[Sample]) -> bool:
        decided = sum(value(s, "ftstudy_decisions_total", **labels, kind=k) or 0
                      for k in ("finished", "cancelled", "failed"))  # fmt: skip
        return value(s, "ftstudy_study_phase", **labels, phase="Succeeded") == 1 and decided == ended

    s = scraped(ops, settled, "the metrics to show the finished study", 30)

    # (a) the numbers agree with the status and the Optuna records
    for state in ("running", "completed", "cancelled", "failed"):
        assert value(s, "ftstudy_trials", **labels, state=state) == counts[state], state
    assert value(s, "ftstudy_study_max_trials", **labels) == 3
    assert {p: value(s, "ftstudy_study_phase", **labels, phase=p) for p in ("Pending", "Running", "Succeeded",
            "Failed")} == {"Pending": 0, "Running": 0, "Succeeded": 1, "Failed": 0}  # fmt: skip
    trials = optuna_trials(postgres_url, ns, name)
    attempts = sum(int(t.system_attrs["ftstudy:attempts"]) for t in trials)
    decisions = {k: value(s, "ftstudy_decisions_total", **labels, kind=k) for k in
                 ("launched", "continued", "cancelled", "finished", "failed", "relaunched")}  # fmt: skip
    assert decisions["launched"] == counts["created"] == 3
    assert decisions["relaunched"] == attempts - 3
    assert decisions["finished"] == counts["completed"] and decisions["cancelled"] == counts["cancelled"]
    assert decisions["failed"] == counts["failed"] == 0
    early_reported = [t for t in trials if t.intermediate_values]
    assert decisions["continued"] + decisions["cancelled"] == len(early_reported) == 3
    best = status["best"]
    for key, split in (("earlyAccuracy", "early"), ("finalAccuracy", "final"), ("testAccuracy", "test"),
                       ("independentTestAccuracy", "independent_test")):  # fmt: skip
        assert value(s, "ftstudy_best_trial_accuracy_ratio", **labels, split=split) == pytest.approx(best[key]), split
    for t in trials:
        early = t.intermediate_values[max(t.intermediate_values)]
        point = value(s, "ftstudy_trial_accuracy_ratio", **labels, trial=str(t.number), point="early")
        assert point == pytest.approx(early)
        final = value(s, "ftstudy_trial_accuracy_ratio", **labels, trial=str(t.number), point="final")
        assert final == (pytest.approx(t.user_attrs["final_accuracy"]) if t.state == TrialState.COMPLETE else None)
    assert value(s, "ftstudy_gpu_spent_seconds", **labels) == pytest.approx(status["gpuSeconds"]["spent"])
    assert value(s, "ftstudy_gpu_saved_seconds", **labels) == pytest.approx(status["gpuSeconds"]["saved"])
    for outcome, count in (("completed", counts["completed"]), ("cancelled", counts["cancelled"]), ("failed", 0)):
        assert value(s, "ftstudy_trial_duration_seconds_count", **labels, outcome=outcome) == count, outcome
    assert (value(s, "ftstudy_trial_duration_seconds_sum", **labels, outcome="completed") or 0) > 0
    latency_count = value(s, "ftstudy_decision_latency_seconds_count", **labels)
    latency_sum = value(s, "ftstudy_decision_latency_seconds_sum", **labels)
    assert latency_count == 3 and latency_sum is not None
    assert 0 <= latency_sum / 3 < 30, "the operator decides within a few polls of the early report"
    assert (value(s, "ftstudy_reconcile_duration_seconds_count", **labels) or 0) >= 3
    assert value(s, "ftstudy_database_up", **labels) == 1
    assert value(s, "ftstudy_database_errors_total", **labels) == 0
    progress = value(s, "ftstudy_study_last_progress_timestamp_seconds", **labels)
    assert progress is not None and time.time() - 600 < progress <= time.time()

    # (b) every metric the rules and the dashboard query is exported, with the labels and values they select by
    exported: dict[str, list[Sample]] = {}
    for sample in s:
        exported.setdefault(sample.name, []).append(sample)
    queries = {f"rule {k}": v for k, v in rule_expressions().items()} | {
        f"dashboard {k}": v for k, v in dashboard_expressions().items()
    }
    used = 0
    for where, expr in queries.items():
        found = selectors(_without_strings_outside_braces(expr))
        assert found, f"{where}: no metric found in {expr}"
        for selector in found:
            used += 1
            assert selector.metric in exported, f"{where}: {selector.metric} is not exported"
            series = exported[selector.metric]
            for label, operator, wanted in selector.matchers:
                assert any(label in x.labels for x in series), f"{where}: {selector.metric} has no label {label}"
                if operator in ("=", "=~") and "$" not in wanted and re.fullmatch(r"\w+(\|\w+)*", wanted):
                    have = {x.labels.get(label) for x in series}
                    missing = set(wanted.split("|")) - have
                    assert not missing, f"{where}: {selector.metric}{{{label}}} never takes the values {missing}"
    assert used >= 30

    # a deleted study's series go
    plane.kubectl("delete", "fts", name, "-n", ns, "--wait=true", "--timeout=60s")
    scraped(ops, lambda s: not [x for x in s if x.labels.get("study") == name], "the study's series removed", 60)
    assert "Traceback" not in ops.log(), ops.log()[-3000:]


def test_a_port_in_use_does_not_stop_the_operator(caplog: pytest.LogCaptureFixture) -> None:
    """The operator's work does not depend on being watched: a metrics port that cannot be bound is logged as an
    error, and the operator goes on; port 0 serves nothing and says nothing."""
    import socket

    from ftstudy.kube import main

    caplog.set_level("INFO", logger="ftstudy.operator")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        main._serve_metrics("127.0.0.1", port)  # logs an error, raises nothing
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1, caplog.text
        assert f"cannot serve metrics on 127.0.0.1:{port}" in errors[0].getMessage()
        assert "running without them" in errors[0].getMessage()
    caplog.clear()
    main._serve_metrics("127.0.0.1", 0)  # disabled
    assert caplog.records == []
