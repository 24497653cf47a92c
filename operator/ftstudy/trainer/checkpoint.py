"""A screened trial's checkpoint: everything needed to resume training exactly where it stopped.

Screening (``promotion.mode: screen``) stops every trial at its early step and frees its accelerator; the study
later resumes only the promoted ones, in a new process (a new Job in a cluster). For the resumed run to be the run
that would have happened without the pause (same adapter, same loss curve), the checkpoint holds more than the
adapter: the optimiser's moments, the scheduler's position, every random generator's state and how many
micro-batches of the shuffled data were consumed.

Layout (``<trial>/checkpoint/``): ``state.pt`` (torch tensors and states) and ``checkpoint.json`` (the step, the
hyperparameters it was written for, the size and SHA-256 of ``state.pt``, and why it was written: ``screened``
at a screening point, ``preempted`` when a SIGTERM from outside stopped the run, which the same command then resumes
from by itself). The directory is written under a
temporary name and renamed into place, so a reader sees a complete checkpoint or none; the digest catches a
truncated or altered file, and every failure to read names the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftstudy.trainer.atomic import recover_directory, replace_directory
from ftstudy.trainer.reporting import CHECKPOINT_DIRECTORY

DIRECTORY = CHECKPOINT_DIRECTORY
FORMAT = 1
STATE_FILE = "state.pt"
META_FILE = "checkpoint.json"
SCREENED, PREEMPTED = "screened", "preempted"  # why a checkpoint was written


class CheckpointError(ValueError):
    """The checkpoint cannot be used; the message names the file and what is wrong with it."""


@dataclass
class Checkpoint:
    step: int  # the optimiser steps done
    micro_batches: int  # micro-batches drawn from the shuffled stream (the data-order position)
    identity: dict[str, Any]  # what the run was (hyperparameters, total and early step): a resume must match it
    state: dict[str, Any]  # adapter tensors, optimiser, scheduler, random states, the loss curve so far


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(run_dir: Path, checkpoint: Checkpoint, reason: str = SCREENED) -> Path:
    """Write ``run_dir/checkpoint`` atomically (a sibling temporary directory, then a rename); returns its path."""
    target = run_dir / DIRECTORY
    tmp = run_dir / f".{DIRECTORY}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state_path = tmp / STATE_FILE
    torch.save(checkpoint.state, state_path)
    meta = {
        "format": FORMAT,
        "step": checkpoint.step,
        "micro_batches": checkpoint.micro_batches,
        "identity": checkpoint.identity,
        "state_bytes": state_path.stat().st_size,
        "state_sha256": _sha256(state_path),
        "reason": reason,
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    for path in (state_path, tmp / META_FILE):
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    replace_directory(tmp, target)  # a screening attempt retried after a crash replaces the older one whole
    return target


def preempted_at(run_dir: Path) -> int | None:
    """The step of the checkpoint a preempted run left in ``run_dir``, if that is what is there (a screening
    checkpoint is resumed only when the study says so: stage ``resume``). A file that cannot be read is not ignored:
    ``load`` then names it."""
    recover_directory(run_dir / DIRECTORY)
    try:
        meta = json.loads((run_dir / DIRECTORY / META_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint file {run_dir / DIRECTORY / META_FILE} is unreadable ({error})") from None
    return int(meta["step"]) if isinstance(meta, dict) and meta.get("reason") == PREEMPTED else None


def load(run_dir: Path, identity: dict[str, Any]) -> Checkpoint:
    """Read and check the checkpoint; ``identity`` is what this run is, which the checkpoint must have been
    written for."""
    directory = run_dir / DIRECTORY
    recover_directory(directory)
    meta_path, state_path = directory / META_FILE, directory / STATE_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {meta_path} is missing: the trial cannot be resumed") from None
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint file {meta_path} is unreadable or corrupt ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint file {meta_path} is not a format-{FORMAT} ftstudy checkpoint")
    if not state_path.exists():
        raise CheckpointError(f"checkpoint file {state_path} is missing: the trial cannot be resumed")
    if _sha256(state_path) != meta.get("state_sha256"):
        raise CheckpointError(
            f"checkpoint file {state_path} is corrupt: its SHA-256 differs from the one in {meta_path}"
        )
    if meta.get("identity") != identity:
        raise CheckpointError(
            f"checkpoint {directory} was written for another run ({meta.get('identity')}), not this one ({identity})"
        )
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
    except Exception as error:  # the digest matched, so this is a bug or a foreign file: still name it
        raise CheckpointError(f"checkpoint file {state_path} cannot be loaded ({error})") from None
    return Checkpoint(int(meta["step"]), int(meta["micro_batches"]), identity, state)
