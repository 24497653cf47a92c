"""Where a trial's files end up: its directory (``--output /artifacts/...``) or an object store (``--output
s3://bucket/prefix/...``). One interface, two plug-ins.

The trainer always writes into a local directory first, with the atomic renames that keep a reader from seeing half a
file; an ``Artifacts`` then publishes what was written. For a directory that is nothing. For an object store, each
file is uploaded, and a checkpoint is made atomic the way object stores allow (each PUT is atomic, a set of them is
not): the state goes to a new key named by its SHA-256 (``checkpoint/state-<digest>.pt``), and only then the manifest
``checkpoint/checkpoint.json``, which names that key with its size and digest. A writer stopped at any moment leaves
the previous manifest naming the previous state, which is deleted only after the new manifest is in place; a reader
takes the manifest, fetches the state it names and checks size and digest before using it, so a half-written
checkpoint is never resumed from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Protocol

from ftstudy import faults
from ftstudy.object_store import Missing, ObjectStore, join
from ftstudy.trainer.atomic import replace_directory
from ftstudy.trainer.checkpoint import DIRECTORY, META_FILE, STATE_FILE, CheckpointError

log = logging.getLogger(__name__)

MANIFEST = f"{DIRECTORY}/{META_FILE}"
STATE_PREFIX = f"{DIRECTORY}/state-"


class Artifacts(Protocol):
    """What the trainer calls after writing into its local run directory."""

    def fetch(self, run_dir: Path) -> None:
        """Before training: bring what an earlier run of this trial published (its checkpoint, its result.json) into
        ``run_dir``, verified, so a resume reads it as it would from a shared volume."""

    def publish(self, run_dir: Path, name: str) -> str:
        """``run_dir/name`` (a file or a directory) was written: make it durable; returns where it now is."""

    def publish_checkpoint(self, run_dir: Path) -> str:
        """``run_dir/checkpoint`` was written: make it durable, atomically; returns where it now is."""

    def forget_checkpoint(self, run_dir: Path) -> None:
        """Delete the checkpoint (a pruned trial's; ``cleanup.prunedCheckpoints``). Gone already is done."""

    def forget_all(self, run_dir: Path) -> None:
        """Delete everything under the output (a deleted study's; ``cleanup.deleteArtifacts``)."""


class LocalArtifacts:
    """``--output`` is a directory (a volume in a cluster): the files are already where they belong."""

    def fetch(self, run_dir: Path) -> None:
        return None

    def publish(self, run_dir: Path, name: str) -> str:
        return str(run_dir / name)

    def publish_checkpoint(self, run_dir: Path) -> str:
        return str(run_dir / DIRECTORY)

    def forget_checkpoint(self, run_dir: Path) -> None:
        shutil.rmtree(run_dir / DIRECTORY, ignore_errors=True)
        if (run_dir / DIRECTORY).exists():
            raise OSError(f"could not delete {run_dir / DIRECTORY}")

    def forget_all(self, run_dir: Path) -> None:
        shutil.rmtree(run_dir, ignore_errors=True)
        if run_dir.exists():
            raise OSError(f"could not delete {run_dir}")


class ObjectArtifacts:
    """``--output`` is a URL: ``store`` holds this trial's objects (its prefix is the trial's)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def fetch(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.store.probe()  # a missing bucket or a refused write fails the run now, not after its first steps
        # The store is the truth: what the local directory holds from an earlier run here goes (ftstudy run
        # keeps one between processes; a pod's scratch starts empty).
        result = self.store.get("result.json")
        if isinstance(result, Missing):
            (run_dir / "result.json").unlink(missing_ok=True)
        else:
            _write_atomic(run_dir / "result.json", result)
        manifest = self.store.get(MANIFEST)
        if isinstance(manifest, Missing):
            shutil.rmtree(run_dir / DIRECTORY, ignore_errors=True)
            return
        where = join(self.store.url, MANIFEST)
        try:
            meta = json.loads(manifest)
            key, size, digest = str(meta["state_key"]), int(meta["state_bytes"]), str(meta["state_sha256"])
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"checkpoint manifest {where} is unreadable or not ftstudy's ({error})") from None
        state = self.store.get(key)
        if isinstance(state, Missing):
            raise CheckpointError(f"checkpoint object {join(self.store.url, key)}, named by {where}, is missing")
        if len(state) != size or hashlib.sha256(state).hexdigest() != digest:
            raise CheckpointError(
                f"checkpoint object {join(self.store.url, key)} is corrupt: {len(state)} bytes, and its size or "
                f"SHA-256 differs from what {where} says"
            )
        tmp = run_dir / f".{DIRECTORY}.fetched"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / STATE_FILE).write_bytes(state)
        (tmp / META_FILE).write_bytes(manifest)
        replace_directory(tmp, run_dir / DIRECTORY)
        log.info("fetched the checkpoint of step %s from %s", meta.get("step"), join(self.store.url, DIRECTORY))

    def publish(self, run_dir: Path, name: str) -> str:
        path = run_dir / name
        if path.is_dir():
            written = []
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                key = f"{name}/{file.relative_to(path).as_posix()}"
                self.store.put(key, file.read_bytes())
                written.append(key)
            self.store.delete([key for key in self.store.keys(f"{name}/") if key not in written])
        else:
            self.store.put(name, path.read_bytes())
        return join(self.store.url, name)

    def publish_checkpoint(self, run_dir: Path) -> str:
        directory = run_dir / DIRECTORY
        meta = json.loads((directory / META_FILE).read_text())
        key = f"{STATE_PREFIX}{meta['state_sha256'][:16]}.pt"
        self.store.put(key, (directory / STATE_FILE).read_bytes())
        faults.point("artifacts.before-manifest")  # a test stops the store here: the old checkpoint must stand
        meta["state_key"] = key
        self.store.put(MANIFEST, json.dumps(meta, indent=2, sort_keys=True).encode())  # the commit point
        # (A listing's prefix is a path, whole segments: list the directory, then pick.)
        stale = [k for k in self.store.keys(DIRECTORY) if k.startswith(STATE_PREFIX) and k != key]
        self.store.delete(stale)
        return join(self.store.url, DIRECTORY)

    def forget_checkpoint(self, run_dir: Path) -> None:
        # The manifest first: from then on no reader resumes from this trial, whatever is left of the state.
        self.store.delete([MANIFEST])
        self.store.delete_prefix(DIRECTORY)
        shutil.rmtree(run_dir / DIRECTORY, ignore_errors=True)

    def forget_all(self, run_dir: Path) -> None:
        self.store.delete_prefix("")
        shutil.rmtree(run_dir, ignore_errors=True)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.fetched")
    tmp.write_bytes(data)
    os.replace(tmp, path)
