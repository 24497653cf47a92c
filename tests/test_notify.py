"""Trainers' reports wake the operator through PostgreSQL LISTEN/NOTIFY (``ftstudy.notify``), on the real database:
the trainer's own reporter notifies once its early accuracy is committed, one listener serves every study of a
database, and a listener whose connection is killed reconnects and wakes every study it serves (it may have missed
reports meanwhile; the poll would catch them anyway). On the real control plane, an operator that polls every ten
minutes still runs a study through, woken by those reports and by the Jobs that end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import psycopg2
from optuna.trial import TrialState

from ftstudy.notify import Notifications, connect_kwargs
from ftstudy.retry import RetryPolicy
from ftstudy.trainer.reporting import OptunaReporter
from tests.cluster.gpu_nodes import GpuNodes
from tests.conftest import PrivateDatabase
from tests.test_operator import Operators, apply, optuna_trials, study_manifest, wait_for_phase


def woken(event: threading.Event, timeout: float = 5.0) -> float | None:
    """Seconds until ``event`` is set (then cleared), or None."""
    started = time.monotonic()
    if not event.wait(timeout):
        return None
    event.clear()
    return time.monotonic() - started


def test_a_committed_report_wakes_its_study_and_only_it(private_database: PrivateDatabase) -> None:
    url = private_database.url
    for name in ("ns.a", "ns.b"):
        optuna.create_study(storage=url, study_name=name, direction="maximize").ask()
    notifications = Notifications()
    a, b = threading.Event(), threading.Event()
    try:
        notifications.watch(url, "ns.a", a.set)
        notifications.watch(url, "ns.b", b.set)
        assert len(notifications._listeners) == 1, "one connection per database, not per study"
        assert woken(a) is not None and woken(b) is not None, "a fresh listener wakes its studies once"
        reporter = OptunaReporter(url, "ns.a", 0, RetryPolicy(deadline_seconds=10))
        reporter.report_early(3, 0.5)
        seconds = woken(a, 2.0)
        assert seconds is not None and seconds < 1.0, seconds
        assert not b.is_set(), "another study's report does not wake this one"
        reporter.set_attrs({"final_accuracy": 0.6, "outcome": "completed"})
        assert woken(a, 2.0) is not None, "the trial's outcome wakes it too"
        notifications.forget("ns.b", a.set)
        assert "ns.b" in notifications._studies, "only the registration's own wake forgets it"
        notifications.forget("ns.a", a.set)
        notifications.forget("ns.b", b.set)
        assert notifications._listeners == {}, "a database no study uses has no listener"
    finally:
        notifications.close()


def test_a_listener_whose_connection_dies_reconnects_and_wakes_its_studies(private_database: PrivateDatabase) -> None:
    url = private_database.url
    notifications = Notifications()
    wake = threading.Event()
    try:
        notifications.watch(url, "ns.c", wake.set)
        assert woken(wake) is not None
        admin = psycopg2.connect(**connect_kwargs(url))
        admin.autocommit = True
        with admin.cursor() as cursor:
            listening = (
                "SELECT pid FROM pg_stat_activity "
                "WHERE query = 'LISTEN ftstudy_trials' AND datname = current_database()"
            )
            cursor.execute(f"SELECT pg_terminate_backend(pid) FROM ({listening}) AS l")
            assert cursor.rowcount == 1
        assert woken(wake, 10.0) is not None, "woken again once it has reconnected"
        assert notifications.listening(url)
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_notify('ftstudy_trials', 'ns.c')")
        assert woken(wake, 2.0) is not None, "and it listens again"
        admin.close()
    finally:
        notifications.close()


def test_an_operator_that_almost_never_polls_decides_as_reports_land(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    """With a 10-minute poll, only the trainers' NOTIFY and the watch on Jobs that end can move the study: it still
    runs to Succeeded in well under one poll, and every cancel is recorded within seconds of its report."""
    nodes = gpu_nodes_factory({"gpu-a": 2})
    operators.extra_args = ["--poll-seconds", "600", "--unnotified-poll-seconds", "600"]
    operators.start()
    name = "woken"
    started = time.monotonic()
    apply(operators.plane, operators.namespace, study_manifest(name, tmp_path / "artifacts"))
    study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 300, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert time.monotonic() - started < 300
    trials = optuna_trials(postgres_url, operators.namespace, name)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [t.state for t in trials]
    for trial in pruned:
        assert trial.datetime_complete is not None
        waited = trial.datetime_complete.timestamp() - float(trial.user_attrs["early_reported_at"])
        assert waited < 10, f"trial {trial.number}: cancelled {waited:.1f} s after its report"
    assert "Traceback" not in operators.log()
