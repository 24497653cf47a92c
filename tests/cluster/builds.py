"""The real parts built from Go modules, Debian packages or buildah by scripts/ (Kubernetes, helm, Kueue, SeaweedFS,
promtool and Prometheus, libfaketime, the images): each build script prints its cache directory (or its file), and
returns at once when the build is there.

scripts/test.sh runs the tests that need none of them while it builds them (``-m "not builds"``), then the rest
(``-m builds``). A test is in the second set when it uses one of ``BUILD_FIXTURES``, directly or through another
fixture (tests/conftest.py marks it). One that reaches a build some other way while the builds are still running
would start a second build beside the first: ``require_builds`` fails it instead, naming what to do.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

# The fixtures that hand a test something built: whoever uses one, directly or not, is marked ``builds``.
BUILD_FIXTURES = frozenset(
    {"k8s_bin_dir", "helm", "promtool", "prometheus", "kueue", "object_store", "own_store", "images"}
)
# Set by scripts/test.sh while the builds run beside the first set of tests.
BUILDS_RUNNING = "FTSTUDY_TEST_BUILDS_RUNNING"


class BuildError(RuntimeError):
    pass


def require_builds(what: str) -> None:
    """Fail the calling test while scripts/test.sh is still building: it reached ``what`` without one of
    ``BUILD_FIXTURES``, so it ran in the wrong set."""
    if os.environ.get(BUILDS_RUNNING):
        pytest.fail(
            f"this test needs {what}, which scripts/test.sh is still building: have it use one of the fixtures "
            f"{sorted(BUILD_FIXTURES)} (tests/cluster/builds.py) so that it runs after the builds"
        )


def cached_build(script: Path) -> Path:
    """The cache directory ``script`` prints (minutes the first time; test sessions side by side wait for one)."""
    require_builds(script.name)
    result = subprocess.run([str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{script} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])
