"""The two images, built by scripts/images.sh, run with podman as a cluster would run them.

The operator image starts ``ftstudy operator`` against the test control plane and answers its liveness and metrics
endpoints; the trainer image runs a ``tiny`` trial against the test PostgreSQL as UID 10001 with a read-only root
file system, no capabilities and a writable /artifacts volume, and leaves its adapters there. Containers share the
host's network (the control plane and PostgreSQL listen on loopback); everything else is the container's own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from ftstudy.trainer.reporting import UserAttr
from tests.cluster.control_plane import ControlPlane, free_port
from tests.images import Images, podman

from .test_trainer import FAST, new_trial

UID = 10001


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:  # not listening yet
        return 0, ""


@contextlib.contextmanager
def container(images: Images, *args: str) -> Iterator[str]:
    """A detached container, removed (with its logs shown on failure) when the block ends."""
    name = f"ftstudy-test-{uuid.uuid4().hex[:8]}"
    podman(images, "run", "-d", "--name", name, *args)
    try:
        yield name
    finally:
        podman(images, "rm", "-f", "-t", "2", name, check=False)


def locked_down(images: Images) -> list[str]:
    """What the chart and the operator's trial Jobs ask of a container: not root, nothing to escalate to, no
    capabilities, a read-only root with /tmp as the only scratch space."""
    return ["--network=host", f"--user={UID}:{UID}", "--read-only", "--read-only-tmpfs=false", "--tmpfs=/tmp",
            "--cap-drop=ALL", "--security-opt=no-new-privileges", "--env=HOME=/tmp"]  # fmt: skip


def test_operator_image_serves_health_and_metrics(
    images: Images, control_plane: ControlPlane, cluster_namespace: str, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(control_plane.kubeconfig.read_text())
    kubeconfig.chmod(0o644)  # read by UID 10001 through the bind mount
    health, metrics = free_port(), free_port()
    args = [
        *locked_down(images),
        f"--volume={kubeconfig}:/etc/ftstudy/kubeconfig:ro",
        images.operator,
        "--kubeconfig=/etc/ftstudy/kubeconfig",
        f"--namespace={cluster_namespace}",
        f"--lease-namespace={cluster_namespace}",
        f"--liveness=http://0.0.0.0:{health}/healthz",
        f"--metrics-port={metrics}",
    ]
    with container(images, *args) as name:
        deadline = time.monotonic() + 120
        while _get(f"http://127.0.0.1:{health}/healthz")[0] != 200:
            state = podman(images, "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if state != "running" or time.monotonic() > deadline:
                logs = podman(images, "logs", name, check=False)
                pytest.fail(f"the operator container is {state}, /healthz never answered:\n{logs.stderr[-3000:]}")
            time.sleep(0.5)
        status, body = _get(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200 and "ftstudy_leader 1.0" in body, body[-2000:]
        user = podman(images, "exec", name, "id", "-u").stdout.strip()
        assert user == str(UID)


def test_trainer_image_runs_a_trial_as_non_root_on_a_read_only_root(
    images: Images, postgres_url: str, study_name: str, dataset_dir: Path, tmp_path: Path
) -> None:
    study = new_trial(postgres_url, study_name)
    data = tmp_path / "data"  # pytest's own directories are private to root; a volume's files are readable
    shutil.copytree(dataset_dir, data)
    data.chmod(0o755)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    os.chown(artifacts, UID, UID)  # as fsGroup makes a fresh volume writable in a pod
    args = [
        "--rm",
        *locked_down(images),
        f"--env=FTSTUDY_STORAGE_URL={postgres_url}",
        f"--volume={data}:/data:ro",
        f"--volume={artifacts}:/artifacts",
        images.trainer,
        *FAST,
        *["--study", study_name, "--trial", "0", "--data", "/data", "--output", "/artifacts/trial-0"],
        *["--max-steps", "10"],
    ]
    run = podman(images, "run", *args, check=False, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    [trial] = study.get_trials(deepcopy=False)
    assert trial.state == TrialState.RUNNING  # finishing it is the engine's business
    attrs = trial.user_attrs
    assert attrs[UserAttr.OUTCOME] == "completed"
    for key in (UserAttr.EARLY_ADAPTER, UserAttr.FINAL_ADAPTER):
        inside = Path(attrs[key])
        assert inside.is_relative_to("/artifacts/trial-0"), inside
        on_volume = artifacts / inside.relative_to("/artifacts")
        assert (on_volume / "adapter_model.safetensors").is_file()
        assert on_volume.stat().st_uid == UID
