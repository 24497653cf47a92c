"""Executors run trials; the engine only needs to start one, see what runs, and stop one.

``LocalExecutor`` runs each trial as a subprocess of the trainer (``ftstudy-trainer``) in its own process group,
bounded by the study's parallelism (the core never asks for more). It writes ``process.json`` beside each trial's
run directory, so a runner restarted after a crash adopts trainers that outlived it instead of starting them twice.
The storage URL reaches the trainers through their environment (``FTSTUDY_STORAGE_URL``), never their command line,
which any user of the machine can read (``ps``), nor ``process.json``.
The Kubernetes executor (one Job per trial) implements the same interface in the operator.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePath
from typing import Protocol, TypeVar

from optuna.trial import FrozenTrial

from ftstudy.core import Process
from ftstudy.object_store import ObjectStoreError, join
from ftstudy.trainer.cli import EXIT_ARTIFACTS, EXIT_PREEMPTED, EXIT_STORAGE, STORAGE_ENV
from ftstudy.trainer.reporting import CHECKPOINT_DIRECTORY

P = TypeVar("P", bound=PurePath)
log = logging.getLogger(__name__)
EXIT_BAD_INPUT = 2
KILL_GRACE_SECONDS = 15.0
# The trainer could not reach its database (or report endpoint), or could not use its object store, past its own
# retries: an outage, which the next trial would meet as well, not something wrong with this trial.
OUTAGE_EXITS = frozenset({EXIT_STORAGE, EXIT_ARTIFACTS})


@dataclass(frozen=True)
class TrialProcess:
    state: Process
    exit_code: int | None = None
    retryable: bool = True
    reason: str | None = None
    attempt: int | None = None  # the attempt this is (a Job's label, process.json): a launch the count lost is found
    resume: bool = False  # the launch resumes a screened trial from its checkpoint
    # Pods of this launch stopped from outside and replaced by its Job (a drain, a preemption): what each said; the
    # last is CAUSE_PENDING while the executor still looks for why (the study tells the preemption a pass later)
    preempted: tuple[str, ...] = ()
    outage: bool = False  # it failed with one of ``OUTAGE_EXITS``: relaunched after a back-off, no retry spent


CAUSE_PENDING = "(cause being looked up)"


class Cleanup(StrEnum):
    """Where deleting a pruned trial's checkpoint stands (``Executor.forget_checkpoint``)."""

    DONE = "done"  # deleted (or gone already)
    RUNNING = "running"  # under way (a cleanup Job runs): ask again next pass
    WAITING = "waiting"  # not started, for a reason that passes (a full ResourceQuota): ask again, no try spent
    FAILED = "failed"  # this try failed (the Job failed, or was refused): a later try starts afresh


@dataclass(frozen=True)
class Forgetting:
    state: Cleanup
    reason: str = ""  # why it failed or waits, as a person fixing it needs it


class Executor(Protocol):
    def launch(self, number: int, attempt: int, args: list[str], resume: bool = False) -> None:
        """Start launch ``attempt`` of the trial; ``resume`` marks it as a screened trial's resume, which
        ``observe`` reports back (``TrialProcess.resume``)."""
        ...

    def observe(self, trials: Sequence[FrozenTrial]) -> dict[int, TrialProcess]:
        """What runs for each trial; ``trials`` are the study's records, against which an executor may check that
        what it finds belongs to them (the operator's Jobs)."""
        ...

    def cancel(self, number: int) -> None: ...

    def record_decision(self, number: int, decision: str) -> None:
        """Leave the continue decision where a person looks at the trial (a Job's annotation); optional."""

    def forget_checkpoint(self, number: int) -> Forgetting:
        """Delete a pruned trial's checkpoint (``cleanup.prunedCheckpoints``), where the trial's files are, or say
        how far that got. Asked again every pass until it is DONE, so it must be idempotent: a second call while a
        deletion runs reports on it instead of starting another. A checkpoint left behind costs disk, never a
        result; the engine retries a failure and then tells a person where the checkpoint stays."""
        ...


def trial_dir(root: P, number: int) -> P:
    return root / f"trial-{number:04d}"


def trial_output(root: PurePath | str, number: int) -> str:
    """The trial's ``--output``: its directory under ``root``, or its prefix when ``root`` is an object store URL
    (a string: a URL is no path, ``//`` must stay)."""
    if isinstance(root, str):
        return join(root, f"trial-{number:04d}")
    return str(trial_dir(root, number))


def exit_reason(code: int) -> str:
    if code < 0:
        return f"the trainer was killed by signal {signal.Signals(-code).name}"
    meaning = {1: "crashed", 2: "refused its input", 3: "could not reach the database",
               EXIT_ARTIFACTS: "could not use its object store", EXIT_PREEMPTED: "was preempted",
               143: "was terminated"}  # fmt: skip
    return f"the trainer {meaning.get(code, 'failed')} (exit code {code})"


def last_line(text: str | None) -> str:
    """The last line a trainer wrote (a pod's termination message, a local attempt's log): why it failed."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the trainer and anything it started (it leads its own process group); gone already is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _alive(pid: int, marker: str) -> bool:
    """Is ``pid`` still our trainer? (Checking the command line guards against a recycled pid.)"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return marker in cmdline and status != "Z"


class LocalExecutor:
    """Trials as local processes; ``root`` holds one directory per trial (logs, adapters, result.json).
    ``artifacts``: the study's object store URL when its trials' files go there (``trialTemplate.outputDir``); each
    trial's directory is then its working copy (``--scratch``), which this runner reads as it reads a local one."""

    def __init__(
        self,
        root: Path,
        parallelism: int = 1,
        python: str = sys.executable,
        storage_url: str | None = None,
        artifacts: str | None = None,
    ) -> None:
        self.root = root
        self.artifacts = artifacts
        self.python = python
        self.storage_url = storage_url
        # Trials share this machine's cores: without a cap every trainer starts one thread per core and, run side
        # by side, they thrash (measured: ten times slower steps with two trainers on two cores).
        # The cores this process may use (taskset, a cgroup's cpuset), not the machine's: a study pinned to one core
        # of two runs one thread a trainer.
        self.threads = max(1, len(os.sched_getaffinity(0)) // max(1, parallelism))
        self.root.mkdir(parents=True, exist_ok=True)
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.attempts: dict[int, int] = {}
        self.resumes: set[int] = set()
        self.cancelled: dict[int, float] = {}

    def launch(self, number: int, attempt: int, args: list[str], resume: bool = False) -> None:
        directory = trial_dir(self.root, number)
        directory.mkdir(parents=True, exist_ok=True)
        log = (directory / f"attempt-{attempt}.log").open("ab")
        command = [self.python, "-m", "ftstudy.trainer.cli", *args]
        if self.artifacts is not None:
            command += ["--scratch", str(directory)]
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}  # fmt: skip
        if self.storage_url is not None:
            env[STORAGE_ENV] = self.storage_url
        child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
        )
        log.close()
        self.children[number] = child
        self.attempts[number] = attempt
        if resume:
            self.resumes.add(number)
        else:
            self.resumes.discard(number)
        self.cancelled.pop(number, None)
        record = {"pid": child.pid, "attempt": attempt, "resume": resume, "started": time.time(), "command": command}
        tmp = directory / ".process.json.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, directory / "process.json")

    def _adopted(self, number: int) -> TrialProcess | None:
        """A trainer started by an earlier runner: alive, or ended with what its result.json says."""
        directory = trial_dir(self.root, number)
        try:
            record = json.loads((directory / "process.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        attempt, resume = int(record.get("attempt", 1)), bool(record.get("resume", False))
        if _alive(int(record["pid"]), str(directory)):
            return TrialProcess(Process.RUNNING, attempt=attempt, resume=resume)
        try:
            outcome = json.loads((directory / "result.json").read_text()).get("outcome")
        except (OSError, json.JSONDecodeError):
            outcome = None
        if outcome in {"completed", "diverged", "pruned"} or (outcome == "screened" and not resume):
            return TrialProcess(Process.SUCCEEDED, exit_code=0, attempt=attempt, resume=resume)
        reason = "the trainer ended while no runner was watching it"
        return TrialProcess(Process.FAILED, reason=reason, attempt=attempt, resume=resume)

    def observe(self, trials: Sequence[FrozenTrial] = ()) -> dict[int, TrialProcess]:
        seen: dict[int, TrialProcess] = {}
        for number, child in self.children.items():
            code = child.poll()
            attempt, resume = self.attempts.get(number), number in self.resumes
            if code is None:
                self._escalate(number, child.pid)
                seen[number] = TrialProcess(Process.RUNNING, attempt=attempt, resume=resume)
            elif code == 0:
                seen[number] = TrialProcess(Process.SUCCEEDED, exit_code=0, attempt=attempt, resume=resume)
            else:
                reason = exit_reason(code)
                last = last_line(self._log_tail(number, attempt))
                reason = f"{reason}: {last}" if last else reason
                seen[number] = TrialProcess(Process.FAILED, exit_code=code, retryable=code != EXIT_BAD_INPUT,
                                            reason=reason, attempt=attempt, resume=resume,
                                            outage=code in OUTAGE_EXITS)  # fmt: skip
        for directory in sorted(self.root.glob("trial-*")):
            number = int(directory.name.removeprefix("trial-"))
            if number not in seen:
                adopted = self._adopted(number)
                if adopted is not None:
                    seen[number] = adopted
        return seen

    def _log_tail(self, number: int, attempt: int | None) -> str:
        """The end of the attempt's log, which says why its trainer failed: what a pod's termination message gives
        the operator."""
        try:
            with (trial_dir(self.root, number) / f"attempt-{attempt}.log").open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def adopt_pid(self, number: int) -> int | None:
        try:
            return int(json.loads((trial_dir(self.root, number) / "process.json").read_text())["pid"])
        except (OSError, json.JSONDecodeError, KeyError):
            return None

    def record_decision(self, number: int, decision: str) -> None:
        """Local trials keep decisions in the study's storage only."""

    def forget_checkpoint(self, number: int) -> Forgetting:
        """Synchronous: the checkpoint directory (and, with an object store, its objects) is gone on return, or
        the failure says why (an object store that refuses, a directory the runner may not delete)."""
        directory = trial_dir(self.root, number)
        if self.artifacts is not None:
            from ftstudy.object_store import ObjectStore
            from ftstudy.trainer.artifacts import ObjectArtifacts

            try:
                ObjectArtifacts(ObjectStore(trial_output(self.artifacts, number))).forget_checkpoint(directory)
            except ObjectStoreError as error:
                return Forgetting(Cleanup.FAILED, f"the object store refused: {error}")
        try:
            shutil.rmtree(directory / CHECKPOINT_DIRECTORY)
        except FileNotFoundError:
            pass
        except OSError as error:
            return Forgetting(Cleanup.FAILED, f"could not delete {directory / CHECKPOINT_DIRECTORY}: {error}")
        return Forgetting(Cleanup.DONE)

    def cancel(self, number: int) -> None:
        """SIGTERM the trainer's process group now; SIGKILL it if it is still there after a grace period."""
        pid = self.children[number].pid if number in self.children else self.adopt_pid(number)
        if pid is None:
            return
        if number not in self.children and not _alive(pid, str(trial_dir(self.root, number))):
            return
        self.cancelled[number] = time.monotonic()
        _signal_group(pid, signal.SIGTERM)

    def _escalate(self, number: int, pid: int) -> None:
        since = self.cancelled.get(number)
        if since is not None and time.monotonic() - since > KILL_GRACE_SECONDS:
            _signal_group(pid, signal.SIGKILL)
