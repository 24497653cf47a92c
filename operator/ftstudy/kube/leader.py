"""Leader election on a coordination.k8s.io Lease, so two operator replicas never both act.

The standard protocol (client-go's leaderelection): a replica becomes leader by writing its identity into the Lease
while the lease is free or expired, renews it well within its duration, and steps down by exiting when it cannot
renew in time; the API server's optimistic concurrency (resourceVersion) decides every race. A standby replica
waits, so a Deployment with two replicas fails over within about one lease duration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ftstudy.kube.api import ApiError, Kube, Unreachable, path
from ftstudy.kube.times import api_micro_time, parse_api_time

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
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.clock = clock
        self.leases = path("coordination.k8s.io", "v1", "leases", namespace)

    def _lease(self) -> dict[str, Any] | None:
        try:
            lease: dict[str, Any] = self.kube.get(f"{self.leases}/{self.name}")
            return lease
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def try_acquire(self) -> bool:
        """One attempt to become (or stay) leader; False when another replica holds a live lease or won a race."""
        now = self.clock()
        lease = self._lease()
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": api_micro_time(now),
        }
        try:
            if lease is None:
                spec |= {"acquireTime": api_micro_time(now), "leaseTransitions": 0}
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": spec}
                self.kube.create(self.leases, body | {"metadata": {"name": self.name, "namespace": self.namespace}})
                return True
            current = lease.get("spec") or {}
            holder = current.get("holderIdentity")
            renewed = parse_api_time(current.get("renewTime")) or parse_api_time(current.get("acquireTime"))
            duration = int(current.get("leaseDurationSeconds") or self.lease_seconds)
            expired = renewed is None or (now - renewed).total_seconds() > duration
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
            self.kube.replace(f"{self.leases}/{self.name}", lease)  # carries resourceVersion: a lost race is a 409
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
        """Renew in the background; call ``on_lost`` once renewal has failed for longer than the lease lasts (by
        then another replica may lead, so this one must stop acting at once)."""

        def renew() -> None:
            last = time.monotonic()
            while not stop.wait(self.renew_seconds):
                try:
                    if self.try_acquire():
                        last = time.monotonic()
                        continue
                    log.error("lost the Lease %s/%s to another replica", self.namespace, self.name)
                except (ApiError, Unreachable) as error:
                    log.warning("could not renew the Lease: %s", error)
                    if time.monotonic() - last < self.lease_seconds - self.renew_seconds:
                        continue
                on_lost()
                return

        thread = threading.Thread(target=renew, name="lease-renewal", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        """Hand the lease over at once on a clean shutdown, instead of making the standby wait for it to expire."""
        try:
            lease = self._lease()
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                lease["spec"]["renewTime"] = None
                self.kube.replace(f"{self.leases}/{self.name}", lease)
        except (ApiError, Unreachable) as error:
            log.warning("could not release the Lease: %s", error)
