"""Directories swapped into place whole: a reader (the study, a resumed trial, a person) sees the old one or the new
one, never a half-written one, whatever kills the writer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_directory(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` to ``target``, replacing what is there (through a sibling ``.old``, removed after)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
