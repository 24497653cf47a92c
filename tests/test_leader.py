"""Leader election against the real API server: expiry judged by this replica's clock, and a leader whose API server
hangs stops acting before its lease could pass to another replica."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from ftstudy.kube.api import Kube, load_config, path
from ftstudy.kube.leader import LeaderElector
from ftstudy.kube.times import api_micro_time
from tests.cluster.control_plane import ControlPlane


@pytest.fixture
def kube(control_plane: ControlPlane) -> Kube:
    return Kube(load_config(str(control_plane.kubeconfig)))


def lease(kube: Kube, namespace: str, name: str, holder: str, renewed: datetime, seconds: int) -> None:
    spec = {"holderIdentity": holder, "leaseDurationSeconds": seconds, "renewTime": api_micro_time(renewed),
            "acquireTime": api_micro_time(renewed), "leaseTransitions": 0}  # fmt: skip
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": spec}
    kube.create(path("coordination.k8s.io", "v1", "leases", namespace), body | {"metadata": {"name": name}})


def holder(kube: Kube, namespace: str, name: str) -> str | None:
    found: str | None = kube.get(path("coordination.k8s.io", "v1", "leases", namespace, name))["spec"].get(
        "holderIdentity"
    )
    return found


def test_a_holder_with_a_clock_an_hour_ahead_loses_its_dead_lease_after_one_duration(
    kube: Kube, cluster_namespace: str
) -> None:
    """Judged by the renewTime another machine wrote, this lease would look live for an hour."""
    lease(kube, cluster_namespace, "ahead", "crashed", datetime.now(UTC) + timedelta(hours=1), seconds=2)
    me = LeaderElector(kube, cluster_namespace, "ahead", "me", lease_seconds=2, renew_seconds=0.5, renew_deadline=1)
    started = time.monotonic()
    assert not me.try_acquire(), "first seen now: live for a whole duration from now"
    while not me.try_acquire():
        assert time.monotonic() - started < 4, "taken over within about one lease duration of no change"
        time.sleep(0.2)
    assert time.monotonic() - started >= 2
    assert holder(kube, cluster_namespace, "ahead") == "me"


def test_a_live_holder_with_a_clock_an_hour_behind_keeps_its_lease(kube: Kube, cluster_namespace: str) -> None:
    """Judged by its renewTime, this lease would look expired at once and be taken from a live leader."""
    behind = LeaderElector(kube, cluster_namespace, "behind", "behind", lease_seconds=2, renew_seconds=0.5,
                           renew_deadline=1, clock=lambda: datetime.now(UTC) - timedelta(hours=1))  # fmt: skip
    me = LeaderElector(kube, cluster_namespace, "behind", "me", lease_seconds=2, renew_seconds=0.5, renew_deadline=1)
    assert behind.try_acquire()
    for _ in range(10):  # 3 s: longer than the lease, which the holder renews all along
        assert not me.try_acquire()
        time.sleep(0.3)
        assert behind.try_acquire()
    assert holder(kube, cluster_namespace, "behind") == "behind"


def test_a_leader_whose_api_server_hangs_stops_before_its_lease_runs_out(
    control_plane: ControlPlane, kube: Kube, cluster_namespace: str
) -> None:
    """kube-apiserver stopped (SIGSTOP): every request hangs. The renewal gives up at its deadline, shorter than the
    lease, instead of waiting for the client's 30 s timeout while the process goes on acting."""
    leader = LeaderElector(kube, cluster_namespace, "hang", "me", lease_seconds=4, renew_seconds=0.5, renew_deadline=2)
    assert leader.try_acquire()
    lost, stop = threading.Event(), threading.Event()
    with control_plane.frozen("kube-apiserver"):
        started = time.monotonic()
        leader.keep_leading(lost.set, stop)
        assert lost.wait(6), "never gave up"
        waited = time.monotonic() - started
    stop.set()
    assert 1.5 <= waited < 4, f"gave up after {waited:.1f} s: must be before the 4 s lease could be taken over"


def test_the_protocol_needs_renewals_inside_the_lease(kube: Kube) -> None:
    with pytest.raises(ValueError, match="renew_seconds < renew_deadline < lease_seconds"):
        LeaderElector(kube, "ns", "x", "me", lease_seconds=10, renew_seconds=5, renew_deadline=12)


def test_a_leader_past_its_renew_deadline_writes_nothing_to_the_api_server_or_the_database(
    kube: Kube, cluster_namespace: str, postgres_url: str
) -> None:
    """Fencing: a reconcile thread that wakes from a pause after the renew deadline is refused its next write (a
    ConfigMap, a database statement) before it leaves the process, even though the renewal thread has not yet
    noticed; the Lease's own renewal is not fenced, and a renewal that wins lifts the fence."""
    from sqlalchemy import create_engine, text

    from ftstudy.kube import fencing

    now = [100.0]
    leader = LeaderElector(kube, cluster_namespace, "fence", "me", lease_seconds=4, renew_seconds=0.5,
                           renew_deadline=2, monotonic=lambda: now[0])  # fmt: skip
    assert leader.try_acquire()
    lost: list[str] = []
    engine = create_engine(postgres_url)
    fencing.fence_engine(engine)
    configmaps = path("", "v1", "configmaps", cluster_namespace)
    fencing.install(leader.guard(lambda: lost.append("lost")))
    try:
        kube.create(configmaps, {"metadata": {"name": "before"}, "data": {}})
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
        now[0] += 2.5  # a pause longer than the renew deadline: a standby may soon lead
        with pytest.raises(fencing.LeadershipLost):
            kube.create(configmaps, {"metadata": {"name": "after"}, "data": {}})
        with pytest.raises(fencing.LeadershipLost), engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert lost == ["lost", "lost"], "each refused write ends the leadership (the operator exits there)"
        assert kube.get(f"{configmaps}/before") and "after" not in {
            item["metadata"]["name"] for item in kube.list(configmaps)
        }, "the refused write never reached the API server"
        assert leader.try_acquire(), "the Lease's own renewal is not fenced"
        kube.create(configmaps, {"metadata": {"name": "renewed"}, "data": {}})
    finally:
        fencing.install(None)
        engine.dispose()
