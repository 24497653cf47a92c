"""A real Prometheus watching a study: Debian's ``prometheus`` server (the package ``scripts/promtool.sh`` installs
for promtool) scrapes a running operator with the chart's own scrape configuration (its ServiceMonitor's endpoint:
path, interval, timeout and relabelling) and evaluates the chart's own alert rules (its PrometheusRule); the test
reads everything back through Prometheus's HTTP API, as Grafana and Alertmanager would.

What must hold: the target is up under the job name the rules and the dashboard select; every rule loads and
evaluates without error; the trial-progress series move while a study runs; every query of the dashboard returns
data from this server (not only parses); a failed study fires FtstudyStudyFailed after its ``for``, and a hung
trial FtstudyStudyStalled after its threshold (both cut short)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.builds import require_builds
from tests.cluster.control_plane import free_port, stop_process
from tests.cluster.gpu_nodes import GpuNodes
from tests.test_chart import Helm, helm  # noqa: F401 (the session's pinned helm)
from tests.test_hardening import held_after
from tests.test_observability import (
    PROMTOOL_SCRIPT,
    MeteredOperators,
    concrete,
    dashboard_expressions,
    metered_operators,  # noqa: F401
)
from tests.test_operator import apply, study_manifest, wait_for, wait_for_phase

JOB = "ftstudy-operator"  # the job label the chart's relabelling sets, which the rules and the dashboard select on
FIRED = "FtstudyStudyFailed"  # the alert the test fires
STALLED, STALLED_AFTER = "FtstudyStudyStalled", "> 3 * 3600"  # the stuck-trial alert, and its threshold


def prometheus_binary() -> str:
    """Debian's prometheus server: on PATH, else installed with promtool by scripts/promtool.sh."""
    require_builds("promtool", "the Prometheus server")
    found = shutil.which("prometheus")
    if found is None:
        subprocess.run([str(PROMTOOL_SCRIPT)], check=True, capture_output=True, text=True)
        found = shutil.which("prometheus")
    assert found, "scripts/promtool.sh installed Debian's prometheus package, yet there is no prometheus server"
    return found


class Prometheus:
    """One server on a free loopback port with its own data directory, and what the test asks of its API."""

    def __init__(self, directory: Path, scrape: dict[str, Any], rules: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = {"global": {"evaluation_interval": "1s"}, "scrape_configs": [scrape],
                  "rule_files": [str(directory / "rules.yaml")]}  # fmt: skip
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log = directory / "prometheus.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [prometheus_binary(), f"--config.file={directory / 'prometheus.yml'}",
                 f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for("Prometheus ready", self._ready, 60, lambda: self.log.read_text()[-3000:])

    def _ready(self) -> bool:
        assert self.process.poll() is None, f"prometheus exited: {self.log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, endpoint: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{endpoint}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def wait_firing(self, alertname: str, study: str, timeout: float) -> list[dict[str, Any]]:
        """The alerts named ``alertname`` firing for ``study``, once there are any."""

        def firing() -> list[dict[str, Any]]:
            return [a for a in self.api("alerts")["alerts"] if a["labels"].get("alertname") == alertname
                    and a["labels"].get("study") == study and a["state"] == "firing"]  # fmt: skip

        found: list[dict[str, Any]] = wait_for(f"{alertname} firing for {study}", firing, timeout,
                                               lambda: json.dumps(self.api("alerts"))[-3000:], every=2)  # fmt: skip
        return found

    def stop(self) -> None:
        stop_process(self.process, 30)


def chart_monitoring(helm: Helm, interval: str) -> tuple[dict[str, Any], dict[str, Any]]:  # noqa: F811
    """The chart's ServiceMonitor endpoint and PrometheusRule, rendered with only the scrape interval and timeout
    changed (a test cannot wait for 30 s scrapes; Prometheus refuses a timeout longer than the interval), and the
    ``for`` of the alert the test fires cut to 5 s: what it shows is that the chart's expression and labels fire on
    a real server; promtool's unit tests (tests/promtool/alerts_test.yaml) hold every ``for``."""
    rendered = helm.template("--set", "metrics.serviceMonitor.enabled=true", "--set",
                             f"metrics.serviceMonitor.interval={interval}", "--set",
                             f"metrics.serviceMonitor.scrapeTimeout={interval}", "--set",
                             "metrics.prometheusRule.enabled=true", "--api-versions",
                             "monitoring.coreos.com/v1/ServiceMonitor", "--api-versions",
                             "monitoring.coreos.com/v1/PrometheusRule")  # fmt: skip
    (monitor,) = [m for m in rendered if m["kind"] == "ServiceMonitor"]
    (rule,) = [m for m in rendered if m["kind"] == "PrometheusRule"]
    (endpoint,) = monitor["spec"]["endpoints"]
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            if alert.get("alert") == FIRED:
                alert["for"] = "5s"
            elif alert.get("alert") == STALLED:  # and its three hours without progress cut to 5 s
                assert STALLED_AFTER in alert["expr"], alert["expr"]
                alert["expr"], alert["for"] = alert["expr"].replace(STALLED_AFTER, "> 5"), "5s"
    return endpoint, {"groups": rule["spec"]["groups"]}


def scrape_config(endpoint: dict[str, Any], target: str) -> dict[str, Any]:
    """What the Prometheus Operator generates from a ServiceMonitor endpoint, for a static target (the operator runs
    as a process here, so there is no Service to discover)."""
    relabel = [{"action": r["action"], "target_label": r["targetLabel"], "replacement": r["replacement"]}
               for r in endpoint.get("relabelings", [])]  # fmt: skip
    return {"job_name": "serviceMonitor/ftstudy", "metrics_path": endpoint["path"],
            "scrape_interval": endpoint["interval"], "scrape_timeout": endpoint["scrapeTimeout"],
            "static_configs": [{"targets": [target]}], "relabel_configs": relabel}  # fmt: skip


@pytest.fixture
def prometheus(
    helm: Helm,  # noqa: F811
    metered_operators: MeteredOperators,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Prometheus]:
    endpoint, rules = chart_monitoring(helm, "1s")
    server = Prometheus(tmp_path / "prometheus", scrape_config(endpoint, f"127.0.0.1:{metered_operators.metrics_port}"),
                        rules)  # fmt: skip
    yield server
    server.stop()


@pytest.mark.timeout(900)
def test_a_real_prometheus_scrapes_a_study_through_the_charts_configuration_and_fires_its_alert(
    metered_operators: MeteredOperators,  # noqa: F811
    prometheus: Prometheus,
    gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes],
    tmp_path: Path,
) -> None:
    ops, server = metered_operators, prometheus
    plane, ns = ops.plane, ops.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    ops.start()
    wait_for("the target up", lambda: server.query(f'up{{job="{JOB}"}} == 1'), 60,
             lambda: json.dumps(server.api("targets"))[-3000:])  # fmt: skip

    name = "watched"
    started = time.time()
    manifest = study_manifest(name, tmp_path / "artifacts", budget={"maxTrials": 3, "parallelism": 2},
                              promotion={"policy": "topK", "k": 1, "mode": "online", "auditFraction": 0.0})  # fmt: skip
    apply(plane, ns, manifest)
    study = wait_for_phase(ops, name, ("Succeeded", "Failed"), 420, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    done = f'ftstudy_study_phase{{namespace="{ns}", study="{name}", phase="Succeeded"}} == 1'
    wait_for("Prometheus to see the study succeed", lambda: server.query(done), 30)

    # the trial-progress series moved during the study: completed trials from 0 to 3, decisions counted
    completed = f'ftstudy_trials{{job="{JOB}", namespace="{ns}", study="{name}", state="completed"}}'
    window = f"{int(time.time() - started) + 5}s"
    (low,) = server.query(f"min_over_time({completed}[{window}])")
    (high,) = server.query(f"max_over_time({completed}[{window}])")
    assert (float(low["value"][1]), float(high["value"][1])) == (0.0, float(study["status"]["trials"]["completed"]))
    (launched,) = server.query(f'ftstudy_decisions_total{{namespace="{ns}", study="{name}", kind="launched"}}')
    assert float(launched["value"][1]) == 3

    # every rule of the chart loads and evaluates without error
    groups = server.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 4 and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]

    # every query of the dashboard returns data from this server
    empty = [title for title, expr in dashboard_expressions().items() if not server.query(concrete(expr))]
    assert empty == [], f"dashboard queries with no data from a real Prometheus: {empty}"

    # a study whose trials all fail fires FtstudyStudyFailed once its `for` (cut to 5 s here) has passed
    budget = {"maxTrials": 2, "parallelism": 2, "maxFailedTrials": 1, "retriesPerTrial": 0}
    doomed = study_manifest("doomed", tmp_path / "artifacts", budget=budget, trialTemplate={"command": ["false"]})
    apply(plane, ns, doomed)
    failed = wait_for_phase(ops, "doomed", ("Succeeded", "Failed"), 120, nodes)
    assert failed["status"]["phase"] == "Failed", failed["status"]

    (alert,) = server.wait_firing(FIRED, "doomed", 150)
    assert alert["labels"]["namespace"] == ns and alert["labels"].get("severity"), alert
    assert not [a for a in server.api("alerts")["alerts"] if a["labels"].get("study") == name], "not the good study"

    # a trial that hangs (held after step 7, past its early report: no launch, report or end after it) fires
    # FtstudyStudyStalled once the study has made no progress for its threshold (cut to 5 s, its `for` too)
    stuck = study_manifest("stuck", tmp_path / "artifacts", budget={"maxTrials": 1, "parallelism": 1},
                           trialTemplate={"env": held_after(7)})  # fmt: skip
    apply(plane, ns, stuck)

    (alert,) = server.wait_firing(STALLED, "stuck", 240)
    assert alert["labels"]["namespace"] == ns, alert
    assert any("holding for" in nodes.log(ns, r["pod"]) for r in nodes.runs if r["pod"].startswith("stuck-")), \
        "fired while the trainer hung, not after it ended"  # fmt: skip
    plane.kubectl("delete", "fts", "stuck", "-n", ns, "--wait=true", "--timeout=60s")
