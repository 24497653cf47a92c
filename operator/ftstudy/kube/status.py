"""The FineTuneStudy's status, computed from the study's trials: pure, so it is tested without a cluster.

Kept small on purpose (an object's status travels with every watch event): counts, the best trial, the baseline and
the gain over it, how far the early accuracy can be trusted to predict the final one (over the audited trials only,
``ftstudy.trust``: the promoted ones were chosen for their early accuracies, so a correlation over them is biased
and is not shown), and GPU time. The full history stays in the study's database (``ftstudy report``).

GPU seconds are wall time from a trial's creation to its end (cancellation, failure or finish) times the GPUs each
trial asks for: what the trials held, waiting for a node included. A screened trial (``promotion.mode: screen``)
holds no GPU while it waits for its verdict, so its seconds are its trainers' own (screening, then resume). A
cancelled trial saved what a full run would have cost beyond what it used: the median duration of the trials that
ran to the end (before any did, its own duration divided by the early fraction).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from statistics import median
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from ftstudy import trust
from ftstudy.kube.times import api_time
from ftstudy.report import Row, early_score_trust, rows
from ftstudy.report import best as best_row
from ftstudy.study_store import ADMITTED, requeued, rung_counts, screening_counts
from ftstudy.trainer.reporting import UserAttr

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"


def trial_seconds(trial: FrozenTrial, now: float) -> float:
    """Wall time from the trial's creation, or from when Kueue first admitted it (``ftstudy:admitted_at``), to its
    end, or to ``now`` (unix seconds) while it runs, less the time its Jobs waited in the queue again after that
    (``ftstudy:requeued``: a preemption). Optuna's datetimes are naive local time, which is what ``timestamp()``
    assumes. A screened trial: its trainers' time."""
    if UserAttr.CHECKPOINT.value in trial.user_attrs:
        seconds = trial.user_attrs.get(UserAttr.TRAIN_SECONDS.value)
        if isinstance(seconds, int | float):
            return float(seconds)
    if trial.datetime_start is None:
        return 0.0
    start = trial.datetime_start.timestamp()
    admitted = trial.system_attrs.get(ADMITTED)
    if isinstance(admitted, int | float):  # waiting in the queue held no GPU
        start = max(start, float(admitted))
    end = trial.datetime_complete.timestamp() if trial.datetime_complete is not None else now
    waited, since = requeued(trial)  # in the queue again: no GPU held there either
    if since is not None:
        waited += max(0.0, end - since)
    return max(0.0, end - start - waited)


def gpu_seconds(trials: Sequence[FrozenTrial], gpus: int, early_fraction: float, now: datetime) -> dict[str, float]:
    durations = {t.number: trial_seconds(t, now.timestamp()) for t in trials}
    table = {r.number: r for r in rows(trials)}
    full = [durations[n] for n, r in table.items() if r.state == "complete" and r.final is not None]
    typical = median(full) if full else None
    saved = 0.0
    for number, row in table.items():
        if row.state == "pruned":
            whole = typical if typical is not None else durations[number] / early_fraction
            saved += max(0.0, whole - durations[number])
    return {"spent": round(sum(durations.values()) * gpus, 1), "saved": round(saved * gpus, 1)}


def _trial_summary(row: Row) -> dict[str, Any]:
    summary: dict[str, Any] = {"trial": row.number, "params": dict(row.params)}
    for key, value in (
        ("earlyAccuracy", row.early),
        ("finalAccuracy", row.final),
        ("testAccuracy", row.test),
        ("independentTestAccuracy", row.independent_test),
        ("adapter", row.final_adapter),
    ):
        if value is not None:
            summary[key] = value
    return summary


def trial_counts(table: Sequence[Row], trials: Sequence[FrozenTrial] = ()) -> dict[str, int]:
    """By state; with ``trials``, also screening's (``ftstudy.study_store.screening_counts``). A suspended trial
    holds no GPU, so it is not counted as running."""
    count = {state: sum(1 for r in table if r.state == state) for state in ("running", "complete", "pruned", "failed")}
    screening = screening_counts(trials)
    return {
        "created": len(table),
        "running": count["running"] - screening["suspended"],
        "completed": count["complete"],
        "cancelled": count["pruned"],
        "failed": count["failed"],
        **screening,
        "audited": sum(1 for r in table if r.audit),
    }


def trust_status(table: Sequence[Row], k: int, audit_fraction: float, max_trials: int) -> dict[str, Any]:
    """``status.earlyScoreTrust``: the audited trials measured so far, how many to expect, and once there are enough
    Spearman(early, final) with its 95% interval and the top-K overlap with its own (absent while undefined)."""
    found = early_score_trust(table, k, audit_fraction, max_trials)
    out: dict[str, Any] = {
        "auditFraction": audit_fraction,
        "trials": found["trials"],
        "expected": round(found["expected"], 2),
    }
    estimate = found["estimate"] or {}
    for key, name in (("spearman", "spearman"), ("low", "low"), ("high", "high")):
        if estimate.get(key) is not None:
            out[name] = round(estimate[key], 4)
    for key, name in (("k", "topK"), ("overlap", "overlap"), ("overlap_low", "overlapLow"),
                      ("overlap_high", "overlapHigh")):  # fmt: skip
        if estimate.get(key) is not None and estimate.get("overlap") is not None:
            out[name] = estimate[key]
    return out


def trust_condition(
    found: dict[str, Any], early_fraction: float, generation: int, now: datetime
) -> dict[str, Any] | None:
    """``EarlyScoresUntrusted``, once ``status.earlyScoreTrust`` has an interval: True (a warning) when it includes
    zero or lies below it, False otherwise; None before."""
    if found.get("low") is None or found.get("high") is None:
        return None
    estimate = trust.Estimate(
        found["trials"], found.get("spearman"), found["low"], found["high"], found.get("topK", 0),
        found.get("overlap"), found.get("overlapLow"), found.get("overlapHigh"),
    )  # fmt: skip
    if estimate.untrusted:
        reason = "EarlyScoresAnticorrelated" if found["high"] < 0 else "IntervalIncludesZero"
        return condition("EarlyScoresUntrusted", True, reason, trust.warning(estimate, early_fraction), generation, now)
    message = f"early scores at {early_fraction:.0%} predict the final ones in this study ({trust.figures(estimate)})"
    return condition("EarlyScoresUntrusted", False, "EarlyScoresPredictFinal", message, generation, now)


def untrusted(conditions: Sequence[dict[str, Any]]) -> bool:
    """Does a list of conditions say the early scores are not to be trusted?"""
    return any(c.get("type") == "EarlyScoresUntrusted" and c.get("status") == "True" for c in conditions)


def study_status(
    trials: Sequence[FrozenTrial],
    max_trials: int,
    gpus: int,
    early_fraction: float,
    now: datetime,
    k: int = 5,
    audit_fraction: float = 0.0,
    rungs: Sequence[float] = (),
) -> dict[str, Any]:
    """Everything in the status that follows from the trials (phase and conditions are the caller's). ``k``: the
    top-K overlap's K; ``audit_fraction``: the share of trials the study audits (``ftstudy.audit``); ``rungs``:
    ``promotion.rungs``, whose counts go to ``status.rungs``."""
    table = rows(trials)
    counts = trial_counts(table, trials)
    finished = counts["completed"] + counts["cancelled"] + counts["failed"]
    status: dict[str, Any] = {
        "progress": f"{finished}/{max_trials}",
        "trials": counts,
        "gpuSeconds": gpu_seconds(trials, gpus, early_fraction, now),
        "best": None,
        "baseline": None,
        "testGainOverBaseline": None,
        "earlyScoreTrust": trust_status(table, k, audit_fraction, max_trials),
    }
    if rungs:
        status["rungs"] = rung_counts(trials, rungs)
    top = best_row(table)
    if top is not None:
        status["best"] = _trial_summary(top)
    baseline = next((r for r in table if r.baseline and r.final is not None), None)
    if baseline is not None:
        status["baseline"] = {k: v for k, v in _trial_summary(baseline).items() if k != "independentTestAccuracy"}
    searched = best_row(table, searched_only=True)
    if searched is not None and baseline is not None and searched.test is not None and baseline.test is not None:
        status["testGainOverBaseline"] = round(searched.test - baseline.test, 6)
    status["lastFailure"] = last_failure(trials)
    return status


def last_failure(trials: Sequence[FrozenTrial]) -> dict[str, Any] | None:
    """The trial that failed last and why (the same reason as its TrialFailed Event): what ``kubectl get fts -o yaml``
    shows of failures without reading Events, which expire after an hour."""
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if not failed:
        return None
    latest = max(failed, key=lambda t: (t.datetime_complete or t.datetime_start or datetime.min, t.number))
    reason = latest.user_attrs.get(UserAttr.FAILURE_REASON.value)
    return {"trial": latest.number, "reason": str(reason)[:1000] if reason is not None else "unknown"}


def condition(kind: str, ok: bool, reason: str, message: str, generation: int, now: datetime) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": api_time(now),
        "observedGeneration": generation,
    }


def merge_conditions(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace conditions by type, keeping ``lastTransitionTime`` when the status did not change."""
    by_type = {c["type"]: dict(c) for c in old}
    for fresh in new:
        previous = by_type.get(fresh["type"])
        if previous is not None and previous.get("status") == fresh["status"]:
            fresh = {**fresh, "lastTransitionTime": previous.get("lastTransitionTime", fresh["lastTransitionTime"])}
        by_type[fresh["type"]] = fresh
    return sorted(by_type.values(), key=lambda c: str(c["type"]))
