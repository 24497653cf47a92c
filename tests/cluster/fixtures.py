"""Pytest fixtures for the Kubernetes harness.

A conftest imports them with ``from tests.cluster.fixtures import *``.

One control plane serves the whole session (it takes seconds to start); nodes and namespaces are per test, so a
test sees only its own pods and GPU capacity.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from tests.cluster.builds import require_builds
from tests.cluster.control_plane import ControlPlane
from tests.cluster.gpu_nodes import GpuNodes
from tests.cluster.real_node import IMAGE_STORE, RealNode, node_ip
from tests.cluster.seaweedfs import SeaweedFS
from tests.images import Images

__all__ = ["cluster_namespace", "control_plane", "gpu_nodes_factory", "k8s_bin_dir", "object_store", "real_cluster"]

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "k8s-build.sh"
PG_SCRIPT = ROOT / "scripts" / "postgres.sh"
# The real node's PostgreSQL: a server of its own, which also listens on the node's address for the pods.
REAL_NODE_PG_PORT = 55436


@pytest.fixture(scope="session")
def k8s_bin_dir() -> Path:
    """The pinned binaries: built on first use (many minutes), from the cache afterwards; FTSTUDY_K8S_BIN overrides."""
    require_builds("k8s", "the Kubernetes binaries")
    override = os.environ.get("FTSTUDY_K8S_BIN")
    if override:
        return Path(override)
    result = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"{BUILD_SCRIPT} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def control_plane(k8s_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(k8s_bin_dir, tmp_path_factory.mktemp("k8s"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def cluster_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists (pods are refused until it does); deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while control_plane.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail(f"no default ServiceAccount in {name}\n{control_plane.logs_tail()}")
        time.sleep(0.1)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def gpu_node_env() -> dict[str, str]:
    """The processes' base environment: this interpreter's venv first on PATH, this process's PYTHONPATH."""
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "PYTHONUNBUFFERED": "1",  # so the log and the termination message hold output up to the end
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    if "LANG" in os.environ:
        env["LANG"] = os.environ["LANG"]
    return env


@pytest.fixture
def gpu_nodes_factory(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Callable[[dict[str, int]], GpuNodes]]:
    """``factory({"gpu-a": 2, ...})`` starts simulated GPU nodes; every one is stopped (its processes killed,
    its Nodes deleted) when the test ends."""
    started: list[tuple[GpuNodes, ApiClient]] = []

    def factory(nodes: dict[str, int]) -> GpuNodes:
        api = control_plane.api_client()
        agent = GpuNodes(api, nodes, gpu_node_env(), tmp_path / f"gpu-nodes-{len(started)}")
        started.append((agent, api))
        return agent.start()

    yield factory
    for agent, api in reversed(started):
        with contextlib.closing(api):
            agent.stop()


@dataclass(frozen=True)
class RealCluster:
    """A control plane with one real node (``real_node``), and a PostgreSQL its pods reach: ``pod_pg_url`` from a
    pod, ``pg_url`` from this machine."""

    plane: ControlPlane
    node: RealNode
    pg_url: str
    pod_pg_url: str


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3-compatible server (SeaweedFS), on the node's address: trainers run here and trial pods on the real
    node both reach it. Tests take buckets of their own."""
    store = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), host=node_ip())
    try:
        yield store.start()
    finally:
        store.stop()


@pytest.fixture(scope="module")
def real_cluster(k8s_bin_dir: Path, images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    """Started once for the module that uses it (a minute, or four when the trainer image must be imported into
    containerd: scripts/test.sh does that beforehand, as its node-images build), and stopped after it: a second
    control plane, a node and a PostgreSQL left running would take CPU from every later test of the session
    (tests/test_real_node.py is its only user)."""
    require_builds("node-images", "the real node's image store")
    address = node_ip()
    pg_env = {**os.environ, "FTSTUDY_PG_PORT": str(REAL_NODE_PG_PORT), "FTSTUDY_PG_LISTEN": f"127.0.0.1,{address}"}
    started = subprocess.run([str(PG_SCRIPT), "start"], env=pg_env, capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"the real node's PostgreSQL did not start:\n{started.stderr[-3000:]}")
    # A database of this session's own: the server's data directory outlives the session, and a study of the same
    # name would otherwise carry on from an earlier session's Optuna records (a finished one launches nothing).
    name = f"realnode_{uuid.uuid4().hex[:10]}"
    created = subprocess.run([str(PG_SCRIPT), "database", name, uuid.uuid4().hex], env=pg_env, capture_output=True,
                             text=True)  # fmt: skip
    if created.returncode != 0:
        pytest.fail(f"the real node's database was not created:\n{created.stderr[-3000:]}")
    pg_url = created.stdout.strip()
    workdir = tmp_path_factory.mktemp("real-node")
    plane = ControlPlane(k8s_bin_dir, workdir / "k8s", node_ip=address, pod_security="restricted")
    node = RealNode(plane, images, workdir / "node", image_store=IMAGE_STORE)
    try:
        plane.start()
        node.start()
        yield RealCluster(plane, node, pg_url, pg_url.replace("@127.0.0.1:", f"@{address}:"))
    finally:
        node.stop()
        plane.stop()
        subprocess.run([str(PG_SCRIPT), "drop", name], env=pg_env, capture_output=True, check=False)
        subprocess.run([str(PG_SCRIPT), "stop"], env=pg_env, capture_output=True, check=False)
