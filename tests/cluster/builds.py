"""The real parts built from Go modules by scripts/*-build.sh and cached by version (Kueue, SeaweedFS): each script
prints its cache directory, and returns at once when the build is there."""

from __future__ import annotations

import subprocess
from pathlib import Path


class BuildError(RuntimeError):
    pass


def cached_build(script: Path) -> Path:
    """The cache directory ``script`` prints (minutes the first time; test sessions side by side wait for one)."""
    result = subprocess.run([str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{script} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])
