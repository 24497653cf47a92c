"""The operator's Prometheus metrics, on a registry of their own (``METRICS.registry``), served by ``ftstudy
operator --metrics-port`` (docs/observability.md lists them, with the alerts and the dashboard built on them).

Conventions: every name starts with ``ftstudy_``, says its unit (``_seconds``, ``_ratio`` for accuracies, which are
fractions in [0, 1], ``_timestamp_seconds``), counters end in ``_total``. Labels are bounded:

- ``namespace`` and ``study``: as many as there are FineTuneStudies; a study's series are removed when it is deleted
  (the ServiceMonitor must keep these labels: ``honorLabels: true``, as for kube-state-metrics);
- ``state`` (running, completed, cancelled, failed), ``phase`` (Pending, Running, Succeeded, Failed), ``kind``
  (launched, continued, cancelled, finished, failed, relaunched), ``outcome`` (completed, cancelled, failed),
  ``split`` (early, final, test, independent_test), ``point`` (early, final), ``bound`` (estimate, low, high):
  fixed sets;
- never hyperparameters or failure reasons.

The one exception is ``ftstudy_trial_accuracy_ratio{trial, point}``, the early (20%) and final accuracy of each trial,
which the dashboard plots trial by trial: a study's trial numbers grow without bound, so only the ``RECENT_TRIALS``
(50) newest trials that have an accuracy keep a series, and a trial's series is removed when it leaves that window.
That bounds a study at 100 such series (about 200 series in all per study) while the last 50 points, the ones a
person looks at while a study runs, stay individually visible; the best trial's accuracies
(``ftstudy_best_trial_accuracy_ratio``) and the trial counts cover the whole study. A histogram of the accuracies
was the alternative: bounded without a window, but it loses which trial is which, and a restarted operator would
have to replay every trial into it, which ``rate`` over it would misread as a burst.

Where the numbers come from: the counts, the best trial and GPU time are the study's status, computed from the
Optuna trials (``ftstudy.kube.status``), so they survive operator restarts; counters (decisions, database errors)
and histograms (durations, latencies) count what this process did, from the engine's Events, and start at zero in a
new process (``rate``/``increase`` handle the reset). Only the leader acts, so only the leader exports study series;
``ftstudy_leader`` tells the replicas apart. After a restart a finished study is not reconciled again, so it exports
the series its stored status gives (phase, counts, best trial, GPU time), not the per-trial accuracies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from optuna.trial import FrozenTrial
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ftstudy import __version__
from ftstudy.kube.status import trial_seconds
from ftstudy.runner import Event
from ftstudy.study_store import early_accuracy
from ftstudy.trainer.reporting import UserAttr

RECENT_TRIALS = 50
# the names of status.trials (screened, suspended and promoted: promotion.mode screen; audited: promotion.auditFraction)
TRIAL_STATES = ("running", "completed", "cancelled", "failed", "screened", "suspended", "promoted", "audited",
                "queued")  # fmt: skip
# status.earlyScoreTrust key -> what its gauge says
TRUST_BOUNDS = {"spearman": "estimate", "low": "low", "high": "high"}
RUNG_STATES = ("scored", "promoted", "pruned")  # the counts of each status.rungs entry
PHASES = ("Pending", "Running", "Succeeded", "Failed")
DECISIONS = {  # Event.reason -> kind
    "TrialLaunched": "launched",
    "TrialContinued": "continued",
    "TrialCancelled": "cancelled",
    "TrialFinished": "finished",
    "TrialFailed": "failed",
    "TrialRelaunched": "relaunched",
    "TrialRelaunchedAfterOutage": "relaunched_after_outage",
    "TrialPromoted": "promoted",
    "TrialPruned": "pruned",
    "TrialResumed": "resumed",
    "TrialPromotedPastRung": "promoted_past_rung",
}
OUTCOMES = {"TrialFinished": "completed", "TrialCancelled": "cancelled", "TrialPruned": "cancelled",
            "TrialFailed": "failed"}  # fmt: skip
SPLITS = {  # status.best key -> split
    "earlyAccuracy": "early",
    "finalAccuracy": "final",
    "testAccuracy": "test",
    "independentTestAccuracy": "independent_test",
}
TRIAL_DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 57600, 86400)
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DECISION_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
STUDY = ("namespace", "study")


def _seconds_since_epoch(moment: datetime) -> float:
    return moment.timestamp()  # Optuna's naive datetimes are local time, which is what timestamp() assumes


class OperatorMetrics:
    """Every metric the operator exports, and how the reconcile loop feeds them (one instance per registry)."""

    def __init__(self, registry: CollectorRegistry | None = None, recent_trials: int = RECENT_TRIALS) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.recent_trials = recent_trials
        r = self.registry
        self.build_info = Gauge("ftstudy_build_info", "The operator's version (always 1).", ["version"], registry=r)
        self.leader = Gauge(
            "ftstudy_leader", "1 while this replica holds the leader Lease and acts on studies, else 0.", registry=r
        )
        self.trials = Gauge(
            "ftstudy_trials", "Trials of the study by state (as in status.trials).", [*STUDY, "state"], registry=r
        )
        self.max_trials = Gauge("ftstudy_study_max_trials", "The study's budget.maxTrials.", STUDY, registry=r)
        self.phase = Gauge(
            "ftstudy_study_phase", "1 for the study's current phase, 0 for the others.", [*STUDY, "phase"], registry=r
        )
        self.last_progress = Gauge(
            "ftstudy_study_last_progress_timestamp_seconds",
            "When the study last made progress: a trial launched, reported its early accuracy, or ended (unix time).",
            STUDY,
            registry=r,
        )
        self.best_accuracy = Gauge(
            "ftstudy_best_trial_accuracy_ratio",
            "Accuracy of the study's best trial (status.best): early (at the early step), final (validation), test, "
            "independent_test.",
            [*STUDY, "split"],
            registry=r,
        )
        self.trial_accuracy = Gauge(
            "ftstudy_trial_accuracy_ratio",
            f"Validation accuracy of each of the study's {recent_trials} newest trials with one: at the early step "
            "(point=early) and at the end (point=final).",
            [*STUDY, "trial", "point"],
            registry=r,
        )
        self.early_final_spearman = Gauge(
            "ftstudy_early_final_spearman",
            "Spearman correlation of early and final validation accuracy over the study's audited trials (drawn at "
            "random and trained to the end whatever their early accuracy: status.earlyScoreTrust), once there are "
            "4: the estimate, and the low and high ends of its 95% bootstrap interval.",
            [*STUDY, "bound"],
            registry=r,
        )
        self.audited_trials = Gauge(
            "ftstudy_audited_trials",
            "Audited trials trained to the end with an early and a final accuracy: what "
            "ftstudy_early_final_spearman is computed over (status.earlyScoreTrust.trials).",
            STUDY,
            registry=r,
        )
        self.rung_trials = Gauge(
            "ftstudy_rung_trials",
            "promotion.rungs: trials scored at each rung, promoted past it (at the last rung: to the end) and pruned "
            "there (status.rungs; rung is the fraction of training, e.g. 0.2).",
            [*STUDY, "rung", "state"],
            registry=r,
        )
        self.decisions = Counter(
            "ftstudy_decisions",
            "Decisions applied to trials: launched, continued, cancelled, finished, failed, relaunched (a retry), "
            "relaunched_after_outage (no retry spent); screening: promoted, pruned, resumed, promoted_past_rung.",
            [*STUDY, "kind"],
            registry=r,
        )
        self.preemptions = Counter(
            "ftstudy_trial_preemptions",
            "Preemptions of trials (a drain, a higher priority, Kueue suspending the Job, a pod deleted by hand), as "
            "their trainers reported them: each checkpointed and the trial resumes there; no retry is spent on them "
            "(Event TrialPreempted).",
            STUDY,
            registry=r,
        )
        self.outages = Counter(
            "ftstudy_trial_outages",
            "Trial launches that ended in an outage: the trainer could not reach its database or report endpoint, or "
            "use its object store (exit code 3 or 4). Each is launched again after a back-off, spending no retry "
            "(Event TrialOutage, condition TrialsReachStorage).",
            STUDY,
            registry=r,
        )
        self.trial_duration = Histogram(
            "ftstudy_trial_duration_seconds",
            "Wall time of trials from creation to their end, by outcome (completed, cancelled, failed).",
            [*STUDY, "outcome"],
            buckets=TRIAL_DURATION_BUCKETS,
            registry=r,
        )
        self.gpu_spent = Gauge(
            "ftstudy_gpu_spent_seconds", "GPU seconds the study's trials have held (status.gpuSeconds.spent).", STUDY,
            registry=r,
        )  # fmt: skip
        self.gpu_saved = Gauge(
            "ftstudy_gpu_saved_seconds",
            "GPU seconds saved by cancelling trials at the early step (status.gpuSeconds.saved).",
            STUDY,
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "ftstudy_reconcile_duration_seconds",
            "Time of one reconcile pass of a study (observe, decide, apply, write status).",
            STUDY,
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "ftstudy_reconcile_queue_wait_seconds",
            "How long after it was due (woken, or its poll) a study's pass started: the wait for a free reconcile "
            "thread (--reconcile-threads).",
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.decision_latency = Histogram(
            "ftstudy_decision_latency_seconds",
            "From a trial's early report (written by its trainer) to the continue or cancel decision applied.",
            STUDY,
            buckets=DECISION_LATENCY_BUCKETS,
            registry=r,
        )
        self.database_errors = Counter(
            "ftstudy_database_errors",
            "Reconcile passes that could not reach the study's database (DatabaseUnreachable).",
            STUDY,
            registry=r,
        )
        self.database_up = Gauge(
            "ftstudy_database_up", "1 when the study's last reconcile reached its database, 0 when it could not.",
            STUDY, registry=r,
        )  # fmt: skip
        self.reports = Counter(
            "ftstudy_reports",
            "Requests to the report endpoint by kind (status, early, attrs) and result (accepted, or the reason it "
            "was refused: unauthenticated, audience, other-trial, trial-ended, malformed, ...).",
            ["kind", "result"], registry=r,
        )  # fmt: skip
        self.build_info.labels(__version__).set(1)
        self.leader.set(0)
        self._lock = threading.Lock()
        self._known: set[tuple[str, str]] = set()
        self._recent: dict[tuple[str, str], set[str]] = {}

    # -- what the reconciler calls ------------------------------------------------------------------------------

    def study_seen(self, namespace: str, study: str) -> None:
        """Create the study's counters and histograms at zero, so that ``rate`` and the alerts see them from the
        start (a series that appears with its first increment hides that increment from ``increase``)."""
        key = (namespace, study)
        with self._lock:
            if key in self._known:
                return
            self._known.add(key)
        for kind in DECISIONS.values():
            self.decisions.labels(namespace, study, kind)
        for outcome in OUTCOMES.values():
            self.trial_duration.labels(namespace, study, outcome)
        self.database_errors.labels(namespace, study)
        self.preemptions.labels(namespace, study)
        self.outages.labels(namespace, study)
        self.reconcile_duration.labels(namespace, study)
        self.decision_latency.labels(namespace, study)

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)

    def observe_reconcile(self, namespace: str, study: str, seconds: float) -> None:
        self.reconcile_duration.labels(namespace, study).observe(seconds)

    def database_reached(self, namespace: str, study: str, reached: bool) -> None:
        if not reached:
            self.database_errors.labels(namespace, study).inc()
        self.database_up.labels(namespace, study).set(1 if reached else 0)

    def set_phase(self, namespace: str, study: str, phase: str) -> None:
        for each in PHASES:
            self.phase.labels(namespace, study, each).set(1 if each == phase else 0)

    def observe_status(self, namespace: str, study: str, status: Mapping[str, Any]) -> None:
        """The gauges that follow from a FineTuneStudy status (the one just written, or the stored one)."""
        if status.get("phase") in PHASES:
            self.set_phase(namespace, study, str(status["phase"]))
        counts = status.get("trials")
        if isinstance(counts, Mapping):
            for state in TRIAL_STATES:
                self.trials.labels(namespace, study, state).set(float(counts.get(state) or 0))
        progress = str(status.get("progress") or "")
        if "/" in progress and progress.rpartition("/")[2].isdigit():
            self.max_trials.labels(namespace, study).set(int(progress.rpartition("/")[2]))
        gpu = status.get("gpuSeconds")
        if isinstance(gpu, Mapping):
            self.gpu_spent.labels(namespace, study).set(float(gpu.get("spent") or 0.0))
            self.gpu_saved.labels(namespace, study).set(float(gpu.get("saved") or 0.0))
        found = status.get("earlyScoreTrust")
        if isinstance(found, Mapping):
            self.audited_trials.labels(namespace, study).set(float(found.get("trials") or 0))
            for key, bound in TRUST_BOUNDS.items():
                value = found.get(key)
                if value is None:
                    self.early_final_spearman.remove_by_labels({"namespace": namespace, "study": study, "bound": bound})
                else:
                    self.early_final_spearman.labels(namespace, study, bound).set(float(value))
        rungs = status.get("rungs")
        if isinstance(rungs, list):
            for rung in rungs:
                if isinstance(rung, Mapping) and _as_float(rung.get("fraction")) is not None:
                    for state in RUNG_STATES:
                        self.rung_trials.labels(namespace, study, f"{rung['fraction']:g}", state).set(
                            float(rung.get(state) or 0)
                        )
        if "best" in status:
            best = status.get("best") or {}
            for key, split in SPLITS.items():
                value = best.get(key)
                if value is None:
                    self.best_accuracy.remove_by_labels({"namespace": namespace, "study": study, "split": split})
                else:
                    self.best_accuracy.labels(namespace, study, split).set(float(value))

    def observe_trials(self, namespace: str, study: str, trials: Sequence[FrozenTrial]) -> None:
        """Per-trial accuracies of the newest trials (older ones' series removed) and the time of the last progress."""
        points: dict[str, dict[str, float]] = {}
        for trial in trials:
            early = early_accuracy(trial)
            final = trial.user_attrs.get(UserAttr.FINAL_ACCURACY.value)
            values = {"early": early, "final": final}
            present = {point: float(v) for point, v in values.items() if v is not None}
            if present:
                points[str(trial.number)] = present
        newest = sorted(points, key=int)[-self.recent_trials :] if self.recent_trials > 0 else []
        key = (namespace, study)
        with self._lock:
            stale = self._recent.get(key, set()) - set(newest)
            self._recent[key] = set(newest)
        for trial_label in stale:
            self.trial_accuracy.remove_by_labels({"namespace": namespace, "study": study, "trial": trial_label})
        for trial_label in newest:
            for point, value in points[trial_label].items():
                self.trial_accuracy.labels(namespace, study, trial_label, point).set(value)
        moments = [
            moment
            for trial in trials
            for moment in (
                _seconds_since_epoch(trial.datetime_start) if trial.datetime_start else None,
                _seconds_since_epoch(trial.datetime_complete) if trial.datetime_complete else None,
                _as_float(trial.user_attrs.get(UserAttr.EARLY_REPORTED_AT.value)),
            )
            if moment is not None
        ]
        if moments:
            self.last_progress.labels(namespace, study).set(max(moments))

    def observe_events(
        self,
        namespace: str,
        study: str,
        events: Iterable[Event],
        trials: Mapping[int, FrozenTrial],
        now: float | None = None,
    ) -> None:
        """Count the engine's decisions; time the trials that ended and the early decisions (``trials``: the newest
        reading of the study's trials, by number)."""
        now = time.time() if now is None else now
        for event in events:
            if event.reason == "TrialPreempted":
                self.preemptions.labels(namespace, study).inc()
            elif event.reason == "TrialOutage":
                self.outages.labels(namespace, study).inc()
            kind = DECISIONS.get(event.reason)
            if kind is None:
                continue
            self.decisions.labels(namespace, study, kind).inc()
            trial = trials.get(event.trial) if event.trial is not None else None
            if trial is None:
                continue
            outcome = OUTCOMES.get(event.reason)
            if outcome is not None and trial.datetime_start is not None:
                self.trial_duration.labels(namespace, study, outcome).observe(trial_seconds(trial, now))
            if kind in ("continued", "cancelled"):  # online only: a screened trial waits for its verdict on purpose
                reported = _as_float(trial.user_attrs.get(UserAttr.EARLY_REPORTED_AT.value))
                if reported is not None:
                    # ends when the decision was applied (the event's time), not when this pass posts its events
                    self.decision_latency.labels(namespace, study).observe(max(0.0, min(now, event.at) - reported))

    def forget(self, namespace: str, study: str) -> None:
        """Remove every series of a deleted study."""
        with self._lock:
            self._known.discard((namespace, study))
            self._recent.pop((namespace, study), None)
        labels = {"namespace": namespace, "study": study}
        for metric in (
            self.trials,
            self.max_trials,
            self.phase,
            self.last_progress,
            self.best_accuracy,
            self.trial_accuracy,
            self.decisions,
            self.trial_duration,
            self.gpu_spent,
            self.gpu_saved,
            self.early_final_spearman,
            self.audited_trials,
            self.rung_trials,
            self.reconcile_duration,
            self.decision_latency,
            self.database_errors,
            self.preemptions,
            self.outages,
            self.database_up,
        ):
            metric.remove_by_labels(labels)


def _as_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


METRICS = OperatorMetrics()
"""The operator's metrics; ``ftstudy operator`` serves ``METRICS.registry``."""
