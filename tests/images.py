"""The project's container images, as scripts/images.sh builds them, and podman configured as that script says."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.builds import require_builds

ROOT = Path(__file__).resolve().parents[1]
IMAGES_SCRIPT = ROOT / "scripts" / "images.sh"


class ImagesError(RuntimeError):
    """scripts/images.sh failed; the message ends with what it printed."""


@dataclass(frozen=True)
class Images:
    """Local references (``localhost/ftstudy/NAME:TAG``) and the environment podman and buildah need here."""

    base: str
    pause: str
    operator: str
    trainer: str
    postgresql: str
    env: dict[str, str] = field(repr=False)


def build_images() -> Images:
    """Build what is missing or stale (seconds when everything is current; the first build takes minutes)."""
    require_builds("images", "the images")
    run = subprocess.run([str(IMAGES_SCRIPT)], capture_output=True, text=True)
    if run.returncode != 0:
        raise ImagesError(f"{IMAGES_SCRIPT} failed ({run.returncode}):\n{run.stderr[-4000:]}")
    refs = dict(line.split(" ", 1) for line in run.stdout.splitlines() if line.strip())
    shell = subprocess.run([str(IMAGES_SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    env = {**os.environ, **dict(line.split("=", 1) for line in shell.splitlines() if "=" in line)}
    return Images(refs["base"], refs["pause"], refs["operator"], refs["trainer"], refs["postgresql"], env)


def podman(images: Images, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``podman ARGS``; a failure raises with podman's stderr in the message when ``check``."""
    run = subprocess.run(["podman", *args], capture_output=True, text=True, env=images.env, timeout=timeout)
    if check and run.returncode != 0:
        raise ImagesError(f"podman {' '.join(args[:3])} ... failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return run
