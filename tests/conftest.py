"""Shared fixtures: real PostgreSQL (started by scripts/postgres.sh) and a small generated dataset."""

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
from urllib.parse import quote

import pytest

from ftstudy.task.generator import SplitSizes, write_dataset
from tests.cluster.builds import BUILD_FIXTURES, LATE_FIXTURES
from tests.cluster.fixtures import *  # noqa: F403  (the real control plane and simulated GPU nodes)
from tests.images import Images, ImagesError, build_images
from tests.trainer_runs import trainer

ROOT = Path(__file__).resolve().parents[1]
PG_SCRIPT = ROOT / "scripts" / "postgres.sh"


def pytest_configure(config: pytest.Config) -> None:
    # here rather than beside ``builds`` in pyproject.toml, a change to which rebuilds the images
    config.addinivalue_line("markers", "late: uses a part scripts/test.sh builds last (tests/cluster/builds.py)")


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``builds`` every test that uses something built (tests/cluster/builds.py), so that scripts/test.sh can run
    the others while it builds, and ``late`` those of them that use a late build."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if BUILD_FIXTURES & used:
            item.add_marker(pytest.mark.builds)
        if LATE_FIXTURES & used:
            item.add_marker(pytest.mark.late)


@pytest.fixture(scope="session")
def images() -> Images:
    """The images scripts/images.sh builds (the test command has built them; here they are only checked)."""
    try:
        return build_images()
    except ImagesError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of the project's PostgreSQL; started here when the test command has not done it yet."""
    url = os.environ.get("FTSTUDY_TEST_PG_URL")
    if url:
        return url
    return subprocess.run([str(PG_SCRIPT), "start"], check=True, capture_output=True, text=True).stdout.strip()


@dataclass(frozen=True)
class PrivateDatabase:
    """A database and login role of its own, whose password appears nowhere else (to look for it in what a study
    leaves behind)."""

    name: str
    password: str
    url: str


@pytest.fixture
def private_database(postgres_url: str) -> Iterator[PrivateDatabase]:
    name, password = f"t_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    made = subprocess.run([str(PG_SCRIPT), "database", name, password], capture_output=True, text=True)
    if made.returncode != 0:  # what PostgreSQL said (a full disk, a server down), not only the exit code
        pytest.fail(f"postgres.sh database {name} failed ({made.returncode}): {made.stderr.strip()}")
    url = made.stdout.strip()
    yield PrivateDatabase(name, password, url)
    subprocess.run([str(PG_SCRIPT), "drop", name], check=False, capture_output=True)


# Every character a URL, libpq's password file or a redaction could trip on.
AWKWARD_PASSWORD = "Ab3/x+Yz9== p:a@ss\\w"


@pytest.fixture
def awkward_database(private_database: PrivateDatabase) -> PrivateDatabase:
    """The private database with ``AWKWARD_PASSWORD`` (set by its own role), URL-encoded in its URL: what is hidden
    must be looked for raw and encoded (``encoded``)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(private_database.url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("ALTER ROLE CURRENT_USER PASSWORD :p").bindparams(p=AWKWARD_PASSWORD))
    engine.dispose()
    url = private_database.url.replace(f":{private_database.password}@", f":{encoded(AWKWARD_PASSWORD)}@")
    return PrivateDatabase(private_database.name, AWKWARD_PASSWORD, url)


def encoded(password: str) -> str:
    return quote(password, safe="")


def command_lines() -> list[str]:
    """What ``ps`` would show of every process on this machine."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


@pytest.fixture
def study_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    write_dataset(directory, seed=1, sizes=SplitSizes(train=64, validation=8, test=8, independent_test=8))
    return directory


TRAINER_CMD = [sys.executable, "-m", "ftstudy.trainer.cli"]


@pytest.fixture
def trainer_cmd() -> Iterator[list[str]]:
    yield list(TRAINER_CMD)


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path) -> Path:
    """The run directory of tests/trainer_runs.py's run trained whole (stage full) on ``dataset_dir``, once per
    session: what a screened, preempted or resumed run of the same command must end exactly as. Read only."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = trainer(TRAINER_CMD, dataset_dir, out, "full")
    assert done.returncode == 0, done.stderr
    return out


def postgres_outage(seconds: float, during: Callable[[], object] = lambda: None) -> None:
    """Stop the project's PostgreSQL, do ``during`` (a fault inside the outage), wait ``seconds``, then start it again:
    a real outage for the code under test."""
    subprocess.run([str(PG_SCRIPT), "stop"], check=True, capture_output=True, text=True)
    try:
        during()
        time.sleep(seconds)
    finally:
        subprocess.run([str(PG_SCRIPT), "start"], check=True, capture_output=True, text=True)


# Fixtures other modules share: helm (tests/test_chart.py), the operator harness (tests/test_operator.py).
from tests.test_chart import helm  # noqa: E402, F401
from tests.test_operator import crd_installed, operators  # noqa: E402, F401
