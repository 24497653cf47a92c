"""The operator's copy of its own Jobs and pods (ftstudy.kube.watch_cache) against the real API server: it follows
creations and deletions, holds nothing that is not the operator's, and is not read while its watch is broken, until
it has listed anew (a Job deleted while the watch was down is gone from it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ftstudy.kube import names
from ftstudy.kube.api import Kube, Unreachable, load_config, path
from ftstudy.kube.watch_cache import SELECTOR, TrialObjects
from tests.cluster.control_plane import ControlPlane

OURS = {names.MANAGED_BY: names.OPERATOR, names.STUDY_UID: "uid-1"}


def job(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A suspended Job (no pod is ever made for it)."""
    container = {"name": "c", "image": "none", "command": ["true"]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
            "spec": {"suspend": True, "template": {"metadata": {"labels": labels},
                     "spec": {"restartPolicy": "Never", "containers": [container]}}}}  # fmt: skip


def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod no node takes (the test plane has none): it stays Pending."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "none"}]}}  # fmt: skip


def eventually(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def names_in(found: list[dict[str, Any]] | None) -> set[str] | None:
    return None if found is None else {obj["metadata"]["name"] for obj in found}


@pytest.fixture
def kube(control_plane: ControlPlane) -> Kube:
    return Kube(load_config(str(control_plane.kubeconfig)))


def test_the_copy_follows_the_operators_jobs_and_pods_and_nothing_else(kube: Kube, cluster_namespace: str) -> None:
    ns = cluster_namespace
    jobs_path, pods_path = path("batch", "v1", "jobs", ns), path("", "v1", "pods", ns)
    kube.create(jobs_path, job("before", OURS))
    changed: list[str] = []
    objects = TrialObjects(kube, [ns], lambda obj: changed.append(obj["metadata"]["name"])).start()
    try:
        eventually("the first list", lambda: names_in(objects.jobs.items(ns, SELECTOR)) == {"before"})
        assert "before" in changed, "what the list found is handed on, as a Job's change"
        kube.create(jobs_path, job("after", OURS))
        kube.create(jobs_path, job("theirs", {"app": "someone-else"}))
        kube.create(pods_path, pod("trainer", OURS))
        kube.create(pods_path, pod("other", {}))
        eventually("the new Job", lambda: names_in(objects.jobs.items(ns, SELECTOR)) == {"before", "after"})
        eventually("the pod", lambda: names_in(objects.pods.items(ns, SELECTOR)) == {"trainer"})
        assert names_in(objects.jobs.items(ns, f"{SELECTOR},{names.STUDY_UID}=uid-2")) == set(), "by selector"
        assert names_in(objects.jobs.items("elsewhere", SELECTOR)) is None, "a namespace it does not watch"
        kube.delete(path("batch", "v1", "jobs", ns, "before"))
        eventually("the deletion", lambda: names_in(objects.jobs.items(ns, SELECTOR)) == {"after"})
        assert "theirs" not in changed and "after" in changed
    finally:
        objects.stop()


class BrokenOnce(Kube):
    """The real API server, whose first watch of Jobs breaks when the test says so (a dropped connection), and
    whose list after that waits for the test too."""

    def __init__(self, kube: Kube) -> None:
        self.__dict__.update(kube.__dict__)
        self.break_watch, self.answer_list = threading.Event(), threading.Event()
        self.broken = False

    def watch(self, resource_path: str, query: dict[str, str], timeout: float,
              stop: threading.Event) -> Iterator[dict[str, Any]]:  # fmt: skip
        if not self.broken and "/jobs" in resource_path:
            self.break_watch.wait(30)
            self.broken = True
            raise Unreachable("Kubernetes API unreachable (the test dropped the watch)")
        return super().watch(resource_path, query, timeout, stop)

    def request(self, method: str, resource_path: str, **kwargs: Any) -> Any:
        if self.broken and "/jobs" in resource_path:
            self.answer_list.wait(30)
        return super().request(method, resource_path, **kwargs)


def test_a_broken_watchs_copy_is_not_read_until_it_is_listed_anew(kube: Kube, cluster_namespace: str) -> None:
    """While the Job watch is down, the copy may miss anything (here a Job deleted meanwhile): passes do not read
    it (``items`` is None: they list from the API server) until the watch has listed anew, which drops the Job."""
    ns = cluster_namespace
    kube.create(path("batch", "v1", "jobs", ns), job("gone-while-down", OURS))
    broken = BrokenOnce(kube)
    objects = TrialObjects(broken, [ns], lambda obj: None).start()
    try:
        eventually("the first list", lambda: names_in(objects.jobs.items(ns, SELECTOR)) == {"gone-while-down"})
        kube.delete(path("batch", "v1", "jobs", ns, "gone-while-down"))
        broken.break_watch.set()
        eventually("the copy marked stale", lambda: objects.jobs.items(ns, SELECTOR) is None)
        assert objects.pods.items(ns, SELECTOR) == [], "the pod watch is another watch, still current"
        broken.answer_list.set()
        eventually("the list after it", lambda: names_in(objects.jobs.items(ns, SELECTOR)) == set())
    finally:
        broken.break_watch.set()
        broken.answer_list.set()
        objects.stop()
