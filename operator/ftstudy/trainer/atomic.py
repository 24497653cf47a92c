"""Directories swapped into place whole: a reader (the study, a resumed trial, a person) sees the old one or the new
one, never a half-written one, whatever kills the writer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def replace_directory(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` to ``target``, replacing what is there (through a sibling ``.old``, removed after;
    a writer killed between the two renames leaves only that sibling, which ``recover_directory`` puts back)."""
    if target.exists():
        old = _old(target)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def recover_directory(target: Path) -> None:
    """Before reading ``target``: if a replace was killed between its two renames, ``target`` is gone and its
    sibling ``.old`` is the last whole one; put it back. (Killed before the first rename or after the second, there
    is nothing to do: ``target`` is whole.)"""
    old = _old(target)
    if not target.exists() and old.is_dir():
        os.replace(old, target)
