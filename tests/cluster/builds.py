"""The real parts built from Go modules, Debian packages or buildah by scripts/ (Kubernetes, helm, Kueue, SeaweedFS,
promtool and Prometheus, libfaketime, the images): each build script prints its cache directory (or its file), and
returns at once when the build is there.

scripts/test.sh runs the tests that need none of them while it builds them (``-m "not builds"``), then the rest
(``-m builds``). A test is in the second set when it uses one of ``BUILD_FIXTURES``, directly or through another
fixture (tests/conftest.py marks it), and also ``late`` when one of them is ``LATE_FIXTURES``: on a fresh machine,
where the builds outlast the first set, the tests that are not ``late`` run as soon as ``EARLY_BUILDS`` are done,
beside the rest of the builds. One that reaches a build some other way while that build is still running would
start a second build beside the first: ``require_builds`` fails it instead, naming what to do.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

# scripts/test.sh's builds, by the names of their logs: first the Debian packages and the control plane (what most of
# the second set needs), then the rest; the images and their import into the real node's store are a chain of their
# own beside them.
EARLY_BUILDS = ("faketime", "promtool", "k8s")
LATE_BUILDS = ("seaweedfs", "helm", "kueue", "images", "node-images")
# The fixtures that hand a test something built: whoever uses one, directly or not, is marked ``builds``; one of
# a late build, also ``late``.
EARLY_FIXTURES = frozenset({"k8s_bin_dir", "promtool", "prometheus"})
LATE_FIXTURES = frozenset({"helm", "kueue", "object_store", "own_store", "images"})
BUILD_FIXTURES = EARLY_FIXTURES | LATE_FIXTURES
# Set by scripts/test.sh while builds run beside tests: the names of those still running, or "all".
BUILDS_RUNNING = "FTSTUDY_TEST_BUILDS_RUNNING"


class BuildError(RuntimeError):
    pass


def still_building() -> frozenset[str]:
    value = os.environ.get(BUILDS_RUNNING, "")
    return frozenset(EARLY_BUILDS + LATE_BUILDS) if value == "all" else frozenset(value.split())


def require_builds(build: str, what: str) -> None:
    """Fail the calling test while scripts/test.sh is still running ``build`` (one of ``EARLY_BUILDS`` or
    ``LATE_BUILDS``): it reached ``what`` without the fixture that would have put it in a later set."""
    if build in still_building():
        pytest.fail(
            f"this test needs {what}, which scripts/test.sh is still building: have it use the fixture of that "
            f"build ({sorted(BUILD_FIXTURES)}; tests/cluster/builds.py) so that it runs after it"
        )


def cached_build(script: Path) -> Path:
    """The cache directory (or file) ``script`` prints (minutes the first time; test sessions side by side wait for
    one). The script's name is its build's: scripts/NAME.sh or scripts/NAME-build.sh."""
    require_builds(script.name.removesuffix(".sh").removesuffix("-build"), script.name)
    result = subprocess.run([str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{script} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])
