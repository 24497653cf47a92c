"""The operator's decision latency, memory, API requests and database connections, on a real control plane, with 1
study and with 20 (or more) at once, polling only and woken by the trainers' reports.

What runs: the control plane of the operator tests (etcd, kube-apiserver, kube-controller-manager, kube-scheduler on
loopback; ``tests/cluster``), simulated GPU nodes with a GPU for every trial that may run at once (at least two, at most
100 GPUs each: a stand-in kubelet per node, running pods as local processes), the project's PostgreSQL, and the operator
as its own process (``python -m ftstudy.cli operator``) under a ServiceAccount bound to exactly ``ftstudy.kube.rbac``,
as in ``tests/test_operator.py``, at its default ``--poll-seconds`` unless told otherwise. Trials run
``bench/scripted_trainer.py`` instead of the trainer: the same rows written in the same order (early accuracy, then the
intermediate value, then ``NOTIFY``; after a continue the final user attrs, ``outcome`` last), sleeps instead of
training, and it records when it reported and when it saw the decision.

Decision latency, from the moment the early accuracy is committed to the database (the trainer's clock, just after
the write returns), to:

- cancel, recorded: the trial's ``datetime_complete`` in Optuna, which the operator sets when it tells PRUNED;
- continue, recorded: the bench's watch on Jobs sees the ``ftstudy.io/decision`` annotation, which the operator
  patches just after writing ``continue`` to the database (that write carries no timestamp);
- cancel, Job deleted: the watch sees the trial's Job deleted (the operator deletes it just after pruning);
- cancel / continue, seen by the trainer: it polls its trial every ``--trainer-poll`` (50 ms), so this is up to
  that late.

All clocks are this machine's. Runs: (a) the baseline, one study alone; (b) N studies (default 20) applied at once,
with the same spec (``maxTrials`` 6, ``parallelism`` 2, ``topK`` k=2); the baseline study has more trials (16) so its
percentiles rest on more than a handful of decisions. Both runs are made twice, each time under a fresh operator:
first polling only (``--no-notifications``), then woken by the trainers' ``NOTIFY`` (``ftstudy.notify``; the
default). Printed: p50 and p95 of each measure, (b)/(a), and notified/polling; each trial's times go to
``trials-<poll|notify>-<a|bN>.json`` in the work directory (kept with ``--keep``). ``--studies 20 100`` makes one
(b) run per count and prints the largest against the first: API requests per trial, the operator's database
connections (its pool and its listener), its peak RSS.

Memory: the operator's RSS (VmRSS of its process and any children) sampled every 0.5 s: idle (operator leading, no
study), peak during (a), peak during (b), each against idle. CPU: what the machine, the operator, the control plane,
PostgreSQL, the trainers and this harness used during each run; the rest is other work on the machine, which on a
shared 2-core machine decides much of the latency. API requests: the operator's ServiceAccount's, from the API
server's audit log, by verb and resource. Database connections: ``pg_stat_activity`` by ``application_name``, the
peak of each kind during each run.

    .venv/bin/python bench/operator_latency.py
    .venv/bin/python bench/operator_latency.py --studies 5 --poll-seconds 0.5
    .venv/bin/python bench/operator_latency.py --optuna-trainer    # trainers write through Optuna's RDBStorage
    .venv/bin/python bench/operator_latency.py --only notified     # one operator mode instead of both
    .venv/bin/python bench/operator_latency.py --reports           # trials report over HTTPS (the chart's default)
    # 100 studies: 200 trainers at once need more connections than the test server's 200, so a second server
    FTSTUDY_PG_PORT=55433 FTSTUDY_PG_MAX_CONNECTIONS=800 scripts/postgres.sh start
    .venv/bin/python bench/operator_latency.py --only notified --studies 20 100 --trainer-poll 0.5 --timeout 1200 \
        --storage postgresql+psycopg2://ftstudy:ftstudy@127.0.0.1:55433/ftstudy
    # 100 studies of 10 parallel trials: 1,000 trainers at once (8 MiB and a connection each), early reports after
    # 30-60 s so that a study's ten trials overlap, trainers and nodes polling less often
    FTSTUDY_PG_PORT=55433 FTSTUDY_PG_MAX_CONNECTIONS=1500 scripts/postgres.sh start
    .venv/bin/python bench/operator_latency.py --only notified --studies 20 100 --parallelism 10 --trials 10 \
        --baseline-trials 10 --trainer-early 30 60 --trainer-poll 2 --node-poll 1 --trainer-nice 19 --timeout 1800 \
        --storage postgresql+psycopg2://ftstudy:ftstudy@127.0.0.1:55433/ftstudy

With ``--reports`` the operator serves its report endpoint (``--report-url``, the chart's default; docs/protocol.md)
and the scripted trainers post to it with their pods' projected tokens (``--writer https``), holding no database
login: the moment a decision latency is measured from is then just after the endpoint acknowledged the early report
(the operator wrote it before answering), and the endpoint wakes the study in-process, so there is one mode only
(no ``NOTIFY``; ``--only`` is ignored). Printed besides: every database connection that is not the operator's or
this bench's (there should be none), and the TokenReviews and pod lists among the operator's API requests.

Everything listens on and talks to 127.0.0.1 only; every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import optuna
from kubernetes import client, watch
from kubernetes.client import ApiClient
from optuna.trial import TrialState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the test harness (tests/cluster) lives in the repository

from tests.cluster.control_plane import ControlPlane, free_port, stop_process  # noqa: E402
from tests.cluster.fixtures import gpu_node_env  # noqa: E402
from tests.cluster.gpu_nodes import POLL_S, GpuNodes  # noqa: E402

from ftstudy.kube import names, rbac  # noqa: E402
from ftstudy.kube.main import add_arguments  # noqa: E402
from ftstudy.promotion import percentile  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(ROOT)
REPORT_TLS_SECRET = "ftstudy-report-tls"
CRD = REPO / "crds" / "finetunestudies.ftstudy.io.yaml"
TRAINER = REPO / "bench" / "scripted_trainer.py"
SECRET = "ftstudy-db"
SA = "ftstudy-operator"
IDENTITY = "bench"
RSS_EVERY_S = 0.5
IDLE_S = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# --- the operator's memory and database connections ---------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (the operator starts none today; counted if it ever does)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, p in parents.items() if p == parent]
        found += kids
        frontier += kids
    return found


def rss_kib(pid: int) -> int:
    total = 0
    for each in (pid, *_children(pid)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


class _Sampler:
    """A thread that samples something every 0.5 s, each sample labelled with the phase the bench is in."""

    def __init__(self) -> None:
        self.phase = "starting"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        raise NotImplementedError


class MemorySampler(_Sampler):
    """The operator's RSS."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid
        self.samples: list[tuple[str, int]] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((self.phase, rss_kib(self.pid)))
            self._stop.wait(RSS_EVERY_S)

    def peak(self, phase: str) -> int:
        return max((kib for p, kib in self.samples if p == phase), default=0)

    def median(self, phase: str) -> float:
        values = [kib for p, kib in self.samples if p == phase]
        return statistics.median(values) if values else 0.0


# --- Jobs: when each was annotated with its decision, when each was deleted ---------------------------------------


class JobWatch:
    """Watches the namespace's Jobs: the first moment each trial's Job was seen annotated ``ftstudy.io/decision``
    (the operator patches it just after writing a continue to the database) and seen deleted (or being deleted)."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.namespace = namespace
        self.annotated: dict[tuple[str, int], float] = {}  # (study, trial) -> time.time()
        self.deleted: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, name="job-watch", daemon=True)

    def start(self) -> JobWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._watch.stop()
        self._thread.join(timeout=10)
        self.api.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stream = self._watch.stream(
                    self.batch.list_namespaced_job, self.namespace, timeout_seconds=60, _request_timeout=90
                )
                for event in stream:
                    now = time.time()
                    job = event["object"]
                    labels = job.metadata.labels or {}
                    if names.STUDY in labels and names.TRIAL in labels:
                        key = (labels[names.STUDY], int(labels[names.TRIAL]))
                        if names.DECISION in (job.metadata.annotations or {}):
                            self.annotated.setdefault(key, now)
                        if event["type"] == "DELETED" or job.metadata.deletion_timestamp is not None:
                            self.deleted.setdefault(key, now)
                    if self._stop.is_set():
                        return
            except Exception as error:  # a dropped watch: start it again (what happened meanwhile is seen late)
                if not self._stop.is_set():
                    print(f"  (job watch restarted: {type(error).__name__})", file=sys.stderr)
                    time.sleep(0.2)


# --- CPU: who used the machine during a run ------------------------------------------------------------------------


class ConnectionSampler(_Sampler):
    """The database's connections by ``application_name``: the operator's pool says ``ftstudy-operator``, its
    listener ``ftstudy-operator-listen``, trainers ``ftstudy-trainer``."""

    def __init__(self, storage: str) -> None:
        from ftstudy.notify import connect_kwargs

        super().__init__()
        self.kwargs = connect_kwargs(storage) | {"application_name": "ftstudy-bench"}
        self.samples: list[tuple[str, dict[str, int]]] = []

    def _run(self) -> None:
        import psycopg2

        connection = psycopg2.connect(**self.kwargs)
        connection.autocommit = True
        try:
            while not self._stop.wait(0.5):
                with connection.cursor() as cursor:
                    # client backends only: an autovacuum worker on this database has an empty application_name
                    # too, and is no one's connection
                    cursor.execute("SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = "
                                   "current_database() AND backend_type = 'client backend' GROUP BY 1")  # fmt: skip
                    self.samples.append((self.phase, {str(name): int(n) for name, n in cursor.fetchall()}))
        finally:
            connection.close()

    def peak(self, phase: str, application: str) -> int:
        return max((counts.get(application, 0) for p, counts in self.samples if p == phase), default=0)

    def others(self, phase: str, known: tuple[str, ...]) -> tuple[int, list[str]]:
        """The most connections at once that were neither ``known`` applications' nor this bench's, and every
        application name they gave (a backend still authenticating shows an empty one for a moment)."""
        mine = (*known, "ftstudy-bench")
        peak, seen = 0, set()
        for p, counts in self.samples:
            if p == phase:
                theirs = {a: n for a, n in counts.items() if a not in mine}
                peak, seen = max(peak, sum(theirs.values())), seen | set(theirs)
        return peak, sorted(seen)


def operator_requests(plane: ControlPlane, namespace: str, since: float, until: float) -> dict[str, int]:
    """The operator's API requests between two moments, from the audit log (its ServiceAccount's), by verb and
    resource. A watch counts once, when it ends."""
    counts: dict[str, int] = {}
    for event in plane.requests_by(f"system:serviceaccount:{namespace}:{SA}"):
        stamp = event.get("requestReceivedTimestamp", "")
        try:
            at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if since <= at <= until:
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            key = f"{event.get('verb')} {resource}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def _ticks(pid: int, children: bool = False) -> int:
    """utime + stime of a process (+ those of its reaped children), in clock ticks; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)


@dataclass
class CpuSnapshot:
    at: float
    machine_busy: int
    groups: dict[str, int]


def cpu_snapshot(operator_pid: int, bin_dir: Path) -> CpuSnapshot:
    """Clock ticks used so far: the whole machine, and the processes of this bench by role (the control plane: this
    bench's own, not those other sessions start from the same binaries)."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[:8])
    groups = {"operator": 0, "control plane": 0, "PostgreSQL (all its clients)": 0}
    groups["operator"] = sum(_ticks(pid) for pid in (operator_pid, *_children(operator_pid)))
    for pid in _children(os.getpid()):
        with contextlib.suppress(OSError):
            if Path(os.readlink(f"/proc/{pid}/exe")).parent == bin_dir:
                groups["control plane"] += _ticks(pid)
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                groups["PostgreSQL (all its clients)"] += _ticks(int(entry), children=True)
    mine = os.times()
    groups["trainers (reaped children)"] = round((mine.children_user + mine.children_system) * CLOCK_TICKS)
    groups["bench harness (simulated nodes, watch)"] = round((mine.user + mine.system) * CLOCK_TICKS)
    return CpuSnapshot(time.monotonic(), user + nice + system + irq + softirq + steal, groups)


def cpu_report(before: CpuSnapshot, after: CpuSnapshot) -> list[str]:
    cores, wall_s = os.cpu_count() or 1, after.at - before.at
    busy = (after.machine_busy - before.machine_busy) / CLOCK_TICKS
    lines = [f"machine busy {busy:.0f} CPU-s of {cores * wall_s:.0f} ({100 * busy / (cores * wall_s):.0f}%)"]
    known = 0.0
    for group, ticks in after.groups.items():
        used = max(0, ticks - before.groups[group]) / CLOCK_TICKS
        known += used
        lines.append(f"{group} {used:.0f}")
    lines.append(f"everything else on the machine {max(0.0, busy - known):.0f}")
    return lines


# --- the cluster ---------------------------------------------------------------------------------------------------


def study_manifest(name: str, max_trials: int, parallelism: int, seed: int, trainer_args: list[str]
                   ) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "ftstudy.io/v1alpha1",
        "kind": "FineTuneStudy",
        "metadata": {"name": name},
        "spec": {
            "model": "tiny",
            "dataset": {"path": "unused-by-the-scripted-trainer"},
            "searchSpace": {
                "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "lora_r": {"type": "int", "low": 2, "high": 8},
            },
            "sampler": {"type": "tpe", "nStartupTrials": 2, "seed": seed},
            # online: a decision the trial waits for while it trains (screening waits for the field on purpose);
            # minScored 1: decided on arrival, so what is measured is the operator, not the rule waiting for K+1
            "promotion": {"policy": "topK", "k": 2, "mode": "online", "minScored": 1},
            "budget": {"maxTrials": max_trials, "parallelism": parallelism, "maxFailedTrials": 2, "retriesPerTrial": 1},
            "baseline": {"params": {"learning_rate": 1e-3, "lora_r": 4}},
            "storage": {"secretRef": {"name": SECRET}},
            "trialTemplate": {
                "image": "ftstudy/bench:scripted",
                "command": ["python", str(TRAINER), *trainer_args],
                "resources": {"limits": {"nvidia.com/gpu": 1}},
                # a claim on a hostPath volume (Cluster.setup): the trial policy refuses a study's own hostPath
                "volumes": [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "artifacts"}}],
                "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts"}],
                "outputDir": "/artifacts",
            },
        },
    }


def bench_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna storage for the bench's own reads; its PostgreSQL connections say ``ftstudy-bench``."""
    if not url.startswith("postgresql"):
        return optuna.storages.RDBStorage(url)
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"application_name": "ftstudy-bench"}})


@dataclass
class Cluster:
    plane: ControlPlane
    namespace: str
    storage: str
    workdir: Path
    operator: subprocess.Popen[bytes] | None = None
    metrics_url: str | None = None
    nodes: GpuNodes | None = None
    reports: bool = False  # the operator serves its report endpoint; trials hold no database login
    operator_log: Path = field(init=False)
    optuna: optuna.storages.BaseStorage = field(init=False)

    def __post_init__(self) -> None:
        self.operator_log = self.workdir / "operator.log"
        # the bench's own reads, named as the sampler's connection is, so that they are not counted as anyone else's
        self.optuna = bench_storage(self.storage)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.plane.kubectl(*args, input=input).stdout

    def setup(self) -> Path:
        """CRD, namespace, the operator's ServiceAccount with exactly its Role, the storage Secret; its kubeconfig."""
        self.kubectl("apply", "--server-side", "-f", str(CRD))
        deadline = time.monotonic() + 60
        while True:  # a CRD that has no status yet makes `kubectl wait` fail at once rather than wait: ask again
            wait = ("wait", "--for=condition=Established", "crd/finetunestudies.ftstudy.io", "--timeout=30s")
            if self.plane.kubectl(*wait, check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the FineTuneStudy CRD was not Established within 60 s")
            time.sleep(0.5)
        ns = self.namespace
        self.kubectl("create", "namespace", ns)
        deadline = time.monotonic() + 30
        while self.plane.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no default ServiceAccount in {ns}")
            time.sleep(0.1)
        self.kubectl("create", "serviceaccount", SA, "-n", ns)
        for name, rules in (("ftstudy-operator", rbac.RULES), ("ftstudy-operator-leader", rbac.LEADER_ELECTION_RULES)):
            manifests = [rbac.role(name, ns, rules), rbac.role_binding(name, ns, SA, ns)]
            self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in manifests))
        self.kubectl("create", "secret", "generic", SECRET, "-n", ns, f"--from-literal=url={self.storage}")
        if self.reports:  # what the chart grants for the report endpoint
            self.kubectl("create", "secret", "generic", REPORT_TLS_SECRET, "-n", ns)
            manifests = rbac.report_manifests(ns, SA, REPORT_TLS_SECRET)
            self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in manifests))
        self.plane.host_path_claim(ns, "artifacts", self.workdir / "artifacts")
        # A CRD just established answers 429 "storage is (re)initializing" for a moment: let that pass before the
        # operator starts, so that its log shows only what happens during the runs.
        deadline = time.monotonic() + 30
        while self.plane.kubectl("get", "fts", "-n", ns, check=False).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.plane.service_account_kubeconfig(ns, SA)

    def start_operator(self, kubeconfig: Path, poll_seconds: float | None, extra: list[str] | None = None
                       ) -> subprocess.Popen[bytes]:  # fmt: skip
        """``ftstudy operator`` as in tests/test_operator.py (leader election on), once it leads."""
        command = [sys.executable, "-m", "ftstudy.cli", "operator", "--namespace", self.namespace,
                   "--kubeconfig", str(kubeconfig), "--identity", IDENTITY, "--trial-claim", "artifacts",
                   *(extra or [])]  # fmt: skip
        if poll_seconds is not None:
            command += ["--poll-seconds", str(poll_seconds)]
        if self.reports:
            port = free_port()
            command += ["--report-url", f"https://127.0.0.1:{port}", "--report-address", "127.0.0.1",
                        "--report-port", str(port), "--report-tls-secret", REPORT_TLS_SECRET]  # fmt: skip
        if "metrics_port" in operator_defaults():  # its Prometheus metrics, on loopback and a free port
            port = free_port()
            command += ["--metrics-port", str(port), "--metrics-address", "127.0.0.1"]
            self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        with self.operator_log.open("ab") as log:
            self.operator = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 60
        while f"leading as {IDENTITY}" not in self.operator_log.read_text(errors="replace"):
            if self.operator.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start:\n{self.operator_log.read_text()[-3000:]}")
            time.sleep(0.2)
        return self.operator

    def stop_operator(self) -> None:
        stop_process(self.operator, grace=20)


# --- one run: apply studies, wait for them, collect the latencies --------------------------------------------------

CANCEL_RECORDED = "cancel: recorded (Optuna datetime_complete)"
CANCEL_DELETED = "cancel: Job deleted (watch)"
CONTINUE_RECORDED = "continue: recorded (Job annotated, watch)"
ANY_RECORDED = "any decision: recorded"
CANCEL_SEEN = "cancel: seen by the trainer (its poll)"
CONTINUE_SEEN = "continue: seen by the trainer (its poll)"
POLLING, NOTIFIED, REPORTS = "polling only", "notified", "reports over HTTPS"
MEASURES = (ANY_RECORDED, CANCEL_RECORDED, CONTINUE_RECORDED, CANCEL_DELETED, CANCEL_SEEN, CONTINUE_SEEN)


@dataclass
class RunResult:
    label: str
    studies: int
    wall_s: float
    phases: dict[str, str]
    latencies: dict[str, list[float]]
    reported: int
    cpu: list[str]
    metrics: list[str]
    trials: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=dict)  # peak per application_name
    running_peak: int = 0  # the most trainer processes alive at once (the simulated nodes' count)
    other_connections: list[str] = field(default_factory=list)  # application names of connections no one expects

    def requests_per_trial(self) -> float:
        return sum(self.requests.values()) / max(1, self.trials)


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    """A Prometheus text exposition as (name, labels, value); no proxy, whatever the environment says."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = dict(LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def histogram_quantile(buckets: dict[float, float], q: float) -> float:
    """Prometheus' estimate from cumulative bucket counts: linear within the bucket the quantile falls in."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, buckets[bound]
    return lower


def histogram_buckets(samples: list[tuple[str, dict[str, str], float]], metric: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts by upper bound, summed over the series in ``samples``."""
    buckets: dict[float, float] = {}
    for name, labels, value in samples:
        if name == f"{metric}_bucket":
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def operator_metrics(url: str | None, studies: list[str]) -> list[str]:
    """What the operator says of itself for these studies: reconcile passes, and its own decision latency (from
    the trainer's ``early_reported_at``, at the start of the reconcile that applied the decision)."""
    if url is None:
        return ["this operator serves no metrics"]
    try:
        samples = [(n, labels, v) for n, labels, v in scrape(url) if labels.get("study") in studies]
    except OSError as error:
        return [f"metrics unavailable ({error})"]
    lines = []
    for metric, what in (("ftstudy_reconcile_duration_seconds", "reconcile pass"),
                         ("ftstudy_decision_latency_seconds", "ftstudy_decision_latency_seconds")):  # fmt: skip
        count = sum(v for n, _, v in samples if n == f"{metric}_count")
        total = sum(v for n, _, v in samples if n == f"{metric}_sum")
        buckets = histogram_buckets(samples, metric)
        if not count:
            lines.append(f"{what}: none observed")
            continue
        p50, p95 = histogram_quantile(buckets, 0.5), histogram_quantile(buckets, 0.95)
        lines.append(f"{what}: n={count:.0f} mean {total / count:.2f} s, p50 ~{p50:.2f} s, p95 ~{p95:.2f} s "
                     "(estimated from its buckets)")  # fmt: skip
    return lines


def queue_waits(url: str | None) -> dict[float, float]:
    """The cumulative buckets of ``ftstudy_reconcile_queue_wait_seconds`` (operator-wide), {} if none."""
    if url is None:
        return {}
    try:
        samples = scrape(url)
    except OSError:
        return {}
    return histogram_buckets(samples, "ftstudy_reconcile_queue_wait_seconds")


def queue_wait_line(before: dict[float, float], after: dict[float, float]) -> str:
    """How long passes waited for a reconcile thread during the run: the difference of two scrapes."""
    buckets = {bound: count - before.get(bound, 0.0) for bound, count in after.items()}
    if not buckets or not buckets.get(float("inf")):
        return "reconcile queue wait: none observed (an operator without --reconcile-threads)"
    p50, p95 = histogram_quantile(buckets, 0.5), histogram_quantile(buckets, 0.95)
    return f"reconcile queue wait: n={buckets[float('inf')]:.0f} p50 ~{p50:.2f} s, p95 ~{p95:.2f} s (its buckets)"


def phases(api: ApiClient, namespace: str) -> dict[str, str]:
    listed: dict[str, Any] = client.CustomObjectsApi(api).list_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.PLURAL
    )
    return {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "") for i in listed["items"]}


def run_studies(
    cluster: Cluster,
    api: ApiClient,
    jobs: JobWatch,
    bin_dir: Path,
    label: str,
    study_names: list[str],
    max_trials: int,
    parallelism: int,
    timeout_s: float,
    tag: str,
    connections: ConnectionSampler,
    trainer_args: list[str],
) -> RunResult:
    assert cluster.operator is not None and cluster.nodes is not None
    connections.phase = tag
    since = time.time()
    manifests = [study_manifest(n, max_trials, parallelism, seed=i, trainer_args=trainer_args)
                 for i, n in enumerate(study_names)]  # fmt: skip
    cluster.nodes.max_running = 0
    cpu_before = cpu_snapshot(cluster.operator.pid, bin_dir)
    waits_before = queue_waits(cluster.metrics_url)
    started = time.monotonic()
    cluster.kubectl("apply", "-n", cluster.namespace, "-f", "-", input="\n---\n".join(json.dumps(m) for m in manifests))
    print(f"{label}: applied {len(study_names)} FineTuneStudy ({max_trials} trials each, parallelism {parallelism})")
    deadline = started + timeout_s
    now: dict[str, str] = {}
    next_progress = started + 30
    while time.monotonic() < deadline:
        now = {n: p for n, p in phases(api, cluster.namespace).items() if n in study_names}
        done = sum(1 for p in now.values() if p in ("Succeeded", "Failed"))
        if time.monotonic() >= next_progress:
            print(f"  {done}/{len(study_names)} ended after {time.monotonic() - started:.0f} s", flush=True)
            next_progress += 30
        if done == len(study_names):
            break
        if cluster.operator.poll() is not None:
            print(f"  the operator exited with {cluster.operator.returncode}")
            break
        time.sleep(1.0)
    wall = time.monotonic() - started
    time.sleep(0.5)  # the last Job events reach the watch; the last trainers are reaped
    cpu = cpu_report(cpu_before, cpu_snapshot(cluster.operator.pid, bin_dir))
    stuck = {n: p for n, p in now.items() if p not in ("Succeeded", "Failed")}
    if stuck:
        print(f"  NOT ENDED after {timeout_s:.0f} s: {stuck}")
    latencies, reported = collect(cluster, jobs, study_names, tag)
    metrics = operator_metrics(cluster.metrics_url, study_names)
    metrics.append(queue_wait_line(waits_before, queue_waits(cluster.metrics_url)))
    requests = operator_requests(cluster.plane, cluster.namespace, since, time.time())
    known = ("ftstudy-operator", "ftstudy-operator-listen", "ftstudy-trainer")
    others, other_names = connections.others(tag, known)
    peaks = {app: connections.peak(tag, app) for app in known} | {"others": others}
    return RunResult(label, len(study_names), wall, now, latencies, reported, cpu, metrics,
                     trials=max_trials * len(study_names), requests=requests, connections=peaks,
                     running_peak=cluster.nodes.max_running, other_connections=other_names)  # fmt: skip


def collect(cluster: Cluster, jobs: JobWatch, study_names: list[str], tag: str) -> tuple[dict[str, list[float]], int]:
    """Latencies of every trial that reported an early accuracy, from its bench.json, Optuna and the Job watch;
    each trial's times also go to ``<workdir>/trials-<run>.json``."""
    latencies: dict[str, list[float]] = {measure: [] for measure in MEASURES}
    details: list[dict[str, Any]] = []
    reported_trials = 0
    for name in study_names:
        records = {}
        # <outputDir>/<namespace>/<study>-<first 8 of its UID>/trial-NNNN (ftstudy.kube.identity)
        for path in (cluster.workdir / "artifacts" / cluster.namespace).glob(f"{name}-*/trial-*/bench.json"):
            record = json.loads(path.read_text())
            records[int(record["trial"])] = record
        optuna_name = names.newest_optuna_study(optuna.get_all_study_names(cluster.optuna), cluster.namespace, name)
        if optuna_name is None:
            continue
        study = optuna.load_study(study_name=optuna_name, storage=cluster.optuna)
        for trial in study.get_trials(deepcopy=False):
            record = records.get(trial.number)
            if record is None or "reported_at" not in record:
                continue
            reported_trials += 1
            reported = float(record["reported_at"])
            if record.get("seen") == "cancel":
                latencies[CANCEL_SEEN].append(float(record["seen_at"]) - reported)
            elif record.get("seen") == "continue":
                latencies[CONTINUE_SEEN].append(float(record["seen_at"]) - reported)
            key = (name, trial.number)
            details.append(record | {"state": trial.state.name, "annotated_at": jobs.annotated.get(key),
                                     "deleted_at": jobs.deleted.get(key)})  # fmt: skip
            if trial.state == TrialState.PRUNED:
                if trial.datetime_complete is not None:  # naive local time, as Optuna returns it
                    details[-1]["complete_at"] = trial.datetime_complete.timestamp()
                    latencies[CANCEL_RECORDED].append(trial.datetime_complete.timestamp() - reported)
                if key in jobs.deleted:
                    latencies[CANCEL_DELETED].append(jobs.deleted[key] - reported)
            elif key in jobs.annotated:
                latencies[CONTINUE_RECORDED].append(jobs.annotated[key] - reported)
    latencies[ANY_RECORDED] = latencies[CANCEL_RECORDED] + latencies[CONTINUE_RECORDED]
    (cluster.workdir / f"trials-{tag}.json").write_text(json.dumps(details, indent=1))
    return latencies, reported_trials


# --- the report ----------------------------------------------------------------------------------------------------


def print_run(result: RunResult) -> None:
    succeeded = sum(1 for p in result.phases.values() if p == "Succeeded")
    print(f"{result.label}: {succeeded}/{result.studies} Succeeded in {result.wall_s:.0f} s, "
          f"{result.reported} early reports, at most {result.running_peak} trainers running at once")  # fmt: skip
    for what in MEASURES:
        values = result.latencies[what]
        if values:
            print(f"  {what:<45} n={len(values):<4} p50 {percentile(values, 50):5.2f} s   "
                  f"p95 {percentile(values, 95):5.2f} s   min {min(values):5.2f}   max {max(values):5.2f}")  # fmt: skip
        else:
            print(f"  {what:<45} n=0")
    print("  CPU-seconds: " + "; ".join(result.cpu))
    top = sorted(result.requests.items(), key=lambda kv: -kv[1])[:6]
    print(f"  API requests by the operator (audit log): {sum(result.requests.values())}, "
          f"{result.requests_per_trial():.1f} per trial; " + ", ".join(f"{k} {v}" for k, v in top))  # fmt: skip
    reviews = result.requests.get("create tokenreviews", 0)
    if reviews:  # --reports: what checking the trials' tokens costs
        print(f"  of which TokenReviews {reviews} ({reviews / max(1, result.trials):.1f} per trial)")
    c = result.connections
    print(
        f"  database connections, peak: operator's pool {c.get('ftstudy-operator', 0)}, its listener "
        f"{c.get('ftstudy-operator-listen', 0)}, trainers {c.get('ftstudy-trainer', 0)}, anyone else "
        f"{c.get('others', 0)}" + (f" (application names {result.other_connections})" if c.get("others") else "")
    )
    for line in result.metrics:
        print(f"  operator's metrics: {line}")


def print_ratios(base: RunResult, many: RunResult) -> None:
    print(f"decision latency, {many.studies} studies / 1 study:")
    for what in MEASURES:
        a, b = base.latencies[what], many.latencies[what]
        if a and b:
            print(f"  {what:<45} p50 {percentile(b, 50) / percentile(a, 50):5.2f}   "
                  f"p95 {percentile(b, 95) / percentile(a, 95):5.2f}")  # fmt: skip


def print_memory(sampler: MemorySampler, studies: list[int]) -> None:
    idle = sampler.median("idle")
    print("operator memory (RSS of its process and children, sampled every 0.5 s):")
    print(f"  idle (leading, no study)          {idle / 1024:7.1f} MiB")
    for phase, text in (("one", "peak with 1 study"), *((f"many-{n}", f"peak with {n} studies") for n in studies)):
        value = sampler.peak(phase)
        if value:
            print(f"  {text:<33} {value / 1024:7.1f} MiB   ratio to idle {value / idle:5.2f}")


def operator_problems(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(w in line for w in ("ERROR", "CRITICAL", "Traceback", "WARNING"))]


def trainer_problems(logs: Path) -> tuple[int, list[str]]:
    """What the trial pods' logs say went wrong (a state check that could not reach the operator, a refused report,
    a traceback): how many pods said anything, and the distinct lines with numbers blanked out."""
    pods, lines = 0, set()
    for log in sorted(logs.rglob("*.log")):
        found = [line for line in log.read_text(errors="replace").splitlines()
                 if any(w in line for w in ("Traceback", "Error", "WARNING", "cannot reach", "refused"))]  # fmt: skip
        pods += bool(found)
        lines.update(re.sub(r"\d+(\.\d+)?", "N", line.strip())[:200] for line in found)
    return pods, sorted(lines)


# --- main ----------------------------------------------------------------------------------------------------------


def operator_defaults() -> dict[str, Any]:
    """``ftstudy operator``'s options and their defaults."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args([]))


def k8s_bin_dir() -> Path:
    override = os.environ.get("FTSTUDY_K8S_BIN")
    if override:
        return Path(override)
    result = subprocess.run([str(REPO / "scripts" / "k8s-build.sh")], capture_output=True, text=True, check=True)
    return Path(result.stdout.strip().splitlines()[-1])


def postgres_url() -> str:
    script = str(REPO / "scripts" / "postgres.sh")
    return subprocess.run([script, "start"], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]


@dataclass
class ModeResult:
    """The runs under one operator: polling only (``--no-notifications``) or woken by the trainers' NOTIFY."""

    mode: str
    base: RunResult
    many: list[RunResult]  # one per --studies count
    sampler: MemorySampler
    problems: list[str]


def run_mode(cluster: Cluster, api: ApiClient, jobs: JobWatch, bin_dir: Path, kubeconfig: Path,
             args: argparse.Namespace, mode: str, trainer_args: list[str], connections: ConnectionSampler
             ) -> ModeResult:  # fmt: skip
    """Start the operator in ``mode``, run (a) one study and (b) N studies for each N, deleting each run's studies
    before the next, then stop the operator."""
    tag = {POLLING: "poll", NOTIFIED: "notify", REPORTS: "reports"}[mode]
    extra = (["--no-notifications"] if mode == POLLING else []) + args.operator_arg
    cluster.operator_log = cluster.workdir / f"operator-{tag}.log"
    operator = cluster.start_operator(kubeconfig, args.poll_seconds, extra)
    sampler = MemorySampler(operator.pid).start()
    time.sleep(2.0)  # kopf's start-up (its first list of studies) is not idle time
    sampler.phase = connections.phase = "idle"
    time.sleep(IDLE_S)
    sampler.phase = "one"
    alone = f"{tag}-alone"
    base = run_studies(cluster, api, jobs, bin_dir, f"{mode}, (a) 1 study", [alone], args.baseline_trials,
                       args.parallelism, args.timeout, f"{tag}-a", connections, trainer_args)  # fmt: skip
    many = []
    for count in args.studies:
        sampler.phase = connections.phase = "between"
        cluster.kubectl("delete", "fts", "--all", "-n", cluster.namespace, "--wait=true", "--timeout=300s")
        sampler.phase = f"many-{count}"
        names_ = [f"{tag}-{count}-s{i:03d}" for i in range(1, count + 1)]
        many.append(run_studies(cluster, api, jobs, bin_dir, f"{mode}, (b) {count} studies", names_, args.trials,
                                args.parallelism, args.timeout, f"{tag}-b{count}", connections,
                                trainer_args))  # fmt: skip
    sampler.stop()
    cluster.kubectl("delete", "fts", "--all", "-n", cluster.namespace, "--wait=true", "--timeout=300s")
    cluster.stop_operator()
    problems = operator_problems(cluster.operator_log.read_text(errors="replace"))
    return ModeResult(mode, base, many, sampler, problems)


def print_mode_ratios(polling: ModeResult, notified: ModeResult) -> None:
    print("decision latency, notified / polling only (the same runs, the operator started without LISTEN):")
    for a, b in zip([polling.base, *polling.many], [notified.base, *notified.many], strict=True):
        for what in (ANY_RECORDED, CANCEL_DELETED):
            x, y = a.latencies[what], b.latencies[what]
            if x and y:
                print(f"  {b.studies:>3} studies  {what:<40} p50 {percentile(y, 50):5.2f} s vs {percentile(x, 50):5.2f}"
                      f" ({percentile(y, 50) / percentile(x, 50):4.2f})   p95 {percentile(y, 95):5.2f} s vs "
                      f"{percentile(x, 95):5.2f} ({percentile(y, 95) / percentile(x, 95):4.2f})")  # fmt: skip


def print_scale(result: ModeResult) -> None:
    """The largest run against the first (b) run: what grows with the number of studies, per trial."""
    first, last = result.many[0], result.many[-1]
    rss = (result.sampler.peak(f"many-{last.studies}"), result.sampler.peak(f"many-{first.studies}"))
    pool = (last.connections.get("ftstudy-operator", 0), first.connections.get("ftstudy-operator", 0))
    listen = (last.connections.get("ftstudy-operator-listen", 0), first.connections.get("ftstudy-operator-listen", 0))
    print(f"{result.mode}: {last.studies} studies / {first.studies} studies:")
    print(f"  API requests per trial    {last.requests_per_trial():6.1f} vs {first.requests_per_trial():6.1f}"
          f"   ratio {last.requests_per_trial() / max(first.requests_per_trial(), 1e-9):5.2f}")  # fmt: skip
    print(f"  operator's DB connections {pool[0] + listen[0]:6d} vs {pool[1] + listen[1]:6d}"
          f"   ratio {(pool[0] + listen[0]) / max(pool[1] + listen[1], 1):5.2f} (pool + listener, peak)")  # fmt: skip
    print(f"  operator RSS peak         {rss[0] / 1024:6.1f} vs {rss[1] / 1024:6.1f} MiB   ratio "
          f"{rss[0] / max(rss[1], 1):5.2f}")  # fmt: skip


def gpu_nodes(gpus: int, per_node: int = 100) -> dict[str, int]:
    """Nodes of at most ``per_node`` GPUs, at least two: a kubelet runs at most 110 pods, as a real one does by
    default, so a thousand trials at once need ten nodes."""
    count = max(2, -(-gpus // per_node))
    return {f"bench-gpu-{i:02d}": gpus // count + (1 if i < gpus % count else 0) for i in range(count)}


def check_trainer_names() -> None:
    """The scripted trainer spells out the attribute names it writes (importing ftstudy would cost each of a
    thousand processes 3 MiB more): they must be the trainer's."""
    from ftstudy.trainer.reporting import UserAttr

    spec = importlib.util.spec_from_file_location("scripted_trainer", TRAINER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    wrong = {k: v for k, v in module.ATTRS.items() if UserAttr[k].value != v}
    if wrong:
        raise SystemExit(f"{TRAINER.name} writes attribute names the trainer does not: {wrong}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--studies",
        type=int,
        nargs="+",
        default=[20],
        help="concurrent studies in run (b), one run each: `--studies 20 100` prints what grows from 20 to 100",
    )
    p.add_argument("--trials", type=int, default=6, help="maxTrials of each of them")
    p.add_argument("--baseline-trials", type=int, default=16, help="maxTrials of the study that runs alone")
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--poll-seconds", type=float, default=None, help="the operator's; default: its own default")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds each run may take")
    p.add_argument("--storage", default=None, help="SQLAlchemy URL (default: scripts/postgres.sh start)")
    p.add_argument("--optuna-trainer", action="store_true", help="trainers write through Optuna's RDBStorage")
    p.add_argument(
        "--reports",
        action="store_true",
        help="trials report over HTTPS to the operator's endpoint with projected tokens and hold no database login",
    )
    p.add_argument(
        "--report-connections",
        choices=("kept", "new"),
        default="kept",
        help="--reports: the trainers keep one connection to the endpoint open (as the trainer does) or open a new "
        "one per request (as it did before 2026-12-06), to measure what keeping it saves",
    )
    p.add_argument("--only", choices=(POLLING, NOTIFIED), default=None, help="one mode instead of both")
    p.add_argument(
        "--trainer-poll",
        type=float,
        default=0.05,
        help="seconds between the scripted trainers' reads "
        "of their trial (latency is measured to within it; hundreds of trainers need more)",
    )
    p.add_argument(
        "--trainer-early",
        type=float,
        nargs=2,
        default=(1.0, 3.0),
        metavar=("LOW", "HIGH"),
        help="seconds from a scripted trainer's start to its early report, drawn uniformly: longer makes a study's "
        "parallel trials overlap (100 studies of 10 at once)",
    )
    p.add_argument("--node-poll", type=float, default=POLL_S, help="seconds between a simulated node's pod lists")
    p.add_argument(
        "--trainer-nice",
        type=int,
        default=0,
        help="run the scripted trainers at this nice value: hundreds of them starting at once would otherwise take "
        "the CPU from the control plane, which on a cluster runs elsewhere",
    )
    p.add_argument(
        "--operator-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for `ftstudy operator` (repeat), e.g. --operator-arg=--reconcile-threads=32",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, artifacts)")
    args = p.parse_args()

    check_trainer_names()
    poll = args.poll_seconds if args.poll_seconds is not None else float(operator_defaults()["poll_seconds"])
    gpus = max(args.studies) * args.parallelism  # no trial waits for a GPU: the latency is the operator's
    node_gpus = gpu_nodes(gpus)
    writer = "https" if args.reports else "optuna" if args.optuna_trainer else "sql"
    trainer_args = ["--writer", writer, "--poll-seconds", str(args.trainer_poll),
                    "--early-seconds", *(str(s) for s in args.trainer_early),
                    "--report-connections", args.report_connections]  # fmt: skip
    print(f"operator --poll-seconds {poll} ({'given' if args.poll_seconds is not None else 'its default'}); "
          f"{os.cpu_count()} CPU cores; {len(node_gpus)} simulated GPU nodes, {gpus} GPUs; "
          f"scripted trainers, --writer {writer}{f' ({args.report_connections} connections)' if args.reports else ''}, "
          f"early report after {args.trainer_early[0]:g}-"
          f"{args.trainer_early[1]:g} s, polling every {args.trainer_poll:g} s")  # fmt: skip
    storage = args.storage or postgres_url()
    bin_dir = k8s_bin_dir()
    workdir = Path(tempfile.mkdtemp(prefix="ftstudy-bench-operator-"))
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    plane = ControlPlane(bin_dir, workdir / "k8s")
    cluster = Cluster(plane, namespace, storage, workdir, reports=args.reports)
    api: ApiClient | None = None
    nodes: GpuNodes | None = None
    jobs: JobWatch | None = None
    connections: ConnectionSampler | None = None
    results: list[ModeResult] = []
    modes = [REPORTS] if args.reports else [args.only] if args.only else [POLLING, NOTIFIED]
    ok = False
    try:
        plane.start()
        kubeconfig = cluster.setup()
        api = plane.api_client()
        nodes = GpuNodes(api, node_gpus, gpu_node_env(), workdir / "nodes", poll_s=args.node_poll,
                         nice=args.trainer_nice).start()  # fmt: skip
        cluster.nodes = nodes
        jobs = JobWatch(plane.api_client(), namespace).start()
        connections = ConnectionSampler(storage).start()
        for mode in modes:
            results.append(run_mode(cluster, api, jobs, bin_dir, kubeconfig, args, mode, trainer_args, connections))

        for result in results:
            print(f"\n=== operator {result.mode} ===")
            print_run(result.base)
            for many in result.many:
                print_run(many)
                print_ratios(result.base, many)
            print_memory(result.sampler, args.studies)
            if len(result.many) > 1:
                print_scale(result)
            print(f"operator log: {len(result.problems)} warning/error lines")
            for line in result.problems[:20]:
                print(f"  {line[:300]}")
        print()
        if len(results) == 2:
            print_mode_ratios(results[0], results[1])
        pods, lines = trainer_problems(workdir / "nodes" / "logs")
        print(f"trial pods' logs: {pods} with warning/error lines")
        for line in lines[:10]:
            print(f"  {line}")
        if nodes.errors:
            print(f"simulated nodes: {len(nodes.errors)} errors, e.g. {nodes.errors[:3]}")
        ok = all(p == "Succeeded" for r in results for run in (r.base, *r.many) for p in run.phases.values())
    finally:
        if connections is not None:
            connections.stop()
        cluster.stop_operator()
        if jobs is not None:
            jobs.stop()
        if nodes is not None:
            nodes.stop()
        if api is not None:
            api.close()
        plane.stop()
        for result in results:  # the bench's Optuna records: best effort
            with contextlib.suppress(Exception):
                stored = optuna.get_all_study_names(cluster.optuna)
            for name in (*result.base.phases, *(n for run in result.many for n in run.phases)):
                with contextlib.suppress(Exception):
                    found = names.newest_optuna_study(stored, namespace, name)
                    if found is not None:
                        optuna.delete_study(study_name=found, storage=cluster.optuna)
        if args.keep or not ok:
            print(f"work directory (logs, artifacts): {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
