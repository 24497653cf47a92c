"""Leader election on a coordination.k8s.io Lease, so two operator replicas never both act.

The standard protocol (client-go's leaderelection): a replica becomes leader by writing its identity into the Lease
while the lease is free or expired, renews it well within its duration, and steps down by exiting when it cannot
renew in time; the API server's optimistic concurrency (resourceVersion) decides every race. A standby replica
waits, so a Deployment with two replicas fails over within about one lease duration.

Two rules keep the guarantee when clocks and networks misbehave:
- Expiry is judged by this replica's own monotonic clock, never by the timestamps another machine wrote: a standby
  takes over only once the Lease record has stayed unchanged for a whole lease duration *as it observed it* (a
  holder whose clock runs an hour ahead cannot keep the lease forever, nor one an hour behind lose it at once).
- The leader stops acting (exits) once it has not renewed for ``renew_deadline`` seconds, less than the lease
  duration, and every renewal request is cut off at that deadline: a request that hangs cannot keep a leader acting
  past the moment a standby may start.
- Every write is fenced by the same deadline (``guard``, ``ftstudy.kube.fencing``): a thread that wakes from a
  pause after it writes nothing, even before the renewal thread has noticed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ftstudy import faults
from ftstudy.kube.api import ApiError, Kube, Unreachable, path
from ftstudy.kube.fencing import LeadershipLost
from ftstudy.kube.times import api_micro_time

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        renew_deadline: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` only stamps what this replica writes (people read it); ``monotonic`` decides."""
        if not renew_seconds < renew_deadline < lease_seconds:
            raise ValueError("leader election needs renew_seconds < renew_deadline < lease_seconds")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.renew_deadline = renew_deadline
        self.clock = clock
        self.monotonic = monotonic
        self.leases = path("coordination.k8s.io", "v1", "leases", namespace)
        self.observed: tuple[Any, ...] | None = None  # the Lease record as last read or written
        self.observed_at = 0.0  # when (monotonic) that record was first seen
        self.renewed_at: float | None = None  # when (monotonic) the last attempt that won the lease was started

    def _timeout(self, deadline: float) -> float:
        return max(0.1, deadline - self.monotonic())

    def _lease(self, deadline: float) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = self.kube.get(f"{self.leases}/{self.name}", timeout=self._timeout(deadline))
            return lease
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def _observe(self, spec: dict[str, Any]) -> None:
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self.observed:
            self.observed, self.observed_at = record, self.monotonic()

    def try_acquire(self, deadline: float | None = None) -> bool:
        """One attempt to become (or stay) leader; False when another replica holds a live lease or won a race.
        ``deadline`` (monotonic): no request runs past it."""
        started = self.monotonic()
        deadline = deadline if deadline is not None else started + self.renew_seconds
        now = self.clock()
        lease = self._lease(deadline)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": api_micro_time(now),
        }
        try:
            if lease is None:
                spec |= {"acquireTime": api_micro_time(now), "leaseTransitions": 0}
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": spec}
                body |= {"metadata": {"name": self.name, "namespace": self.namespace}}
                self.kube.create(self.leases, body, timeout=self._timeout(deadline), fenced=False)
                self._observe(spec)
                self.renewed_at = started
                return True
            current = lease.get("spec") or {}
            self._observe(current)
            holder = current.get("holderIdentity")
            duration = int(current.get("leaseDurationSeconds") or self.lease_seconds)
            expired = self.monotonic() - self.observed_at > duration
            if holder and holder != self.identity and not expired:
                return False
            if holder != self.identity:
                spec |= {
                    "acquireTime": api_micro_time(now),
                    "leaseTransitions": int(current.get("leaseTransitions") or 0) + 1,
                }
            else:
                spec |= {k: current[k] for k in ("acquireTime", "leaseTransitions") if k in current}
            lease["spec"] = spec
            # carries resourceVersion: a lost race is a 409
            self.kube.replace(f"{self.leases}/{self.name}", lease, timeout=self._timeout(deadline), fenced=False)
            self._observe(spec)
            self.renewed_at = started
            return True
        except ApiError as error:
            if error.status == 409:
                return False
            raise

    def wait_until_leader(self, stop: threading.Event) -> bool:
        """Block until this replica leads (True) or ``stop`` is set (False)."""
        announced = False
        while not stop.is_set():
            try:
                if self.try_acquire():
                    log.info("leading as %s (Lease %s/%s)", self.identity, self.namespace, self.name)
                    return True
            except (ApiError, Unreachable) as error:
                log.warning("leader election: %s", error)
            if not announced:
                log.info("standing by: another replica holds Lease %s/%s", self.namespace, self.name)
                announced = True
            stop.wait(self.renew_seconds)
        return False

    def keep_leading(self, on_lost: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Renew in the background; call ``on_lost`` once renewal has failed for ``renew_deadline`` seconds,
        counted from the start of the last renewal that succeeded (by then a standby may soon lead, so this
        replica must stop acting at once)."""

        if self.renewed_at is None:
            self.renewed_at = self.monotonic()

        def renew() -> None:
            while not stop.wait(self.renew_seconds):
                faults.point("lease.renew")  # the tests' stand-in for a renewal thread starved or paused
                last = self.renewed_at or 0.0
                try:
                    if self.try_acquire(deadline=last + self.renew_deadline):
                        continue
                    log.error("lost the Lease %s/%s to another replica", self.namespace, self.name)
                except (ApiError, Unreachable) as error:
                    log.warning("could not renew the Lease: %s", error)
                    if self.monotonic() - last < self.renew_deadline:
                        continue
                on_lost()
                return

        thread = threading.Thread(target=renew, name="lease-renewal", daemon=True)
        thread.start()
        return thread

    def guard(self, on_lost: Callable[[], None]) -> Callable[[], None]:
        """The fence for this replica's writes (``fencing.install``): once the last renewal that won the lease was
        started ``renew_deadline`` seconds ago or more, call ``on_lost`` (which ends the process) and refuse."""

        def check() -> None:
            since = self.monotonic() - self.renewed_at if self.renewed_at is not None else float("inf")
            if since >= self.renew_deadline:
                log.critical("fenced: a write %.1f s after the last renewal of Lease %s/%s (deadline %.1f s); "
                             "another replica may lead", since, self.namespace, self.name,
                             self.renew_deadline)  # fmt: skip
                on_lost()
                raise LeadershipLost(f"not sure to lead: the Lease was last renewed {since:.1f} s ago")

        return check

    def release(self) -> None:
        """Hand the lease over at once on a clean shutdown, instead of making the standby wait for it to expire."""
        try:
            deadline = self.monotonic() + self.renew_seconds
            lease = self._lease(deadline)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["renewTime"] = None
                self.kube.replace(f"{self.leases}/{self.name}", lease, timeout=self._timeout(deadline),
                                  fenced=False)  # fmt: skip
        except (ApiError, Unreachable) as error:
            log.warning("could not release the Lease: %s", error)
