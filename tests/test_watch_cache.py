"""The operator's copy of its own Jobs and pods (ftstudy.kube.watch_cache) against the real API server: it follows
creations and deletions, holds nothing that is not the operator's, and is not read while its watch is broken, until
it has listed anew (a Job deleted while the watch was down is gone from it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftstudy.kube import names
from ftstudy.kube.api import Kube, Unreachable, load_config, path
from ftstudy.kube.watch_cache import SELECTOR, TrialObjects, WatchCache, _matches, _terms
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


@given(st.lists(st.tuples(st.sampled_from(["put", "ADDED", "MODIFIED", "DELETED", "relist"]),
                          st.integers(0, 5), st.sampled_from(["uid-1", "uid-2", None]),
                          st.sampled_from(["job-a", "job-b", None]), st.sampled_from(["ml", "other"])),
                max_size=40))  # fmt: skip
def test_an_indexed_read_returns_what_a_scan_of_the_whole_copy_would(
    steps: list[tuple[str, int, str | None, str | None, str]],
) -> None:
    """Reads that name a study's UID or a Job's name go through an index instead of matching every object the
    operator holds (issue 21: with 100 studies each pass scanned them all). Whatever the sequence of writes, watch
    events and relists (objects relabelled, moved, deleted), the indexed read equals a scan of the copy."""
    cache = WatchCache(None, "batch", "v1", "jobs", ["ml", "other"])  # type: ignore[arg-type]
    cache._synced |= {"ml", "other"}
    for version, (kind, n, study, job_name, namespace) in enumerate(steps, start=1):
        labels = {names.MANAGED_BY: names.OPERATOR} | ({names.STUDY_UID: study} if study else {})
        labels |= {"job-name": job_name} if job_name else {}
        obj = {"metadata": {"uid": f"o{n}", "namespace": namespace, "labels": labels,
                            "resourceVersion": str(version)}}  # fmt: skip
        if kind == "put":
            cache.put(obj)
        elif kind == "relist":
            cache._replace(namespace, [obj])
        else:
            cache._apply(kind, obj)
        for namespace_read in ("ml", "other"):
            for selector in (names.study_selector("uid-1").replace(f"{names.COMPONENT}=trial,", ""),
                             f"{names.MANAGED_BY}={names.OPERATOR},job-name=job-a", SELECTOR):  # fmt: skip
                terms = _terms(selector)
                scanned = [o for o in cache._objects.values()
                           if o["metadata"]["namespace"] == namespace_read and _matches(o, terms)]  # fmt: skip
                read = cache.items(namespace_read, selector)
                assert read is not None
                assert sorted(o["metadata"]["uid"] for o in read) == sorted(o["metadata"]["uid"] for o in scanned)
