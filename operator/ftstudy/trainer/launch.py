"""``ftstudy-trainer --processes N``: one trainer process per device, in one pod (``trialTemplate.gpus``).

It does what ``torchrun --standalone --nproc-per-node N`` does for this trainer (a rendezvous on loopback: ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), and one thing torchrun does not: it keeps the
trainer's exit codes, which the study and the Job read (``ftstudy.trainer.cli``: 75 preempted, which the Job's
podFailurePolicy ignores; 2 bad input, never retried; 4 object store). torchrun reports any failed worker as its own
exit code 1. Here the launcher forwards SIGTERM and SIGINT to every rank, and when a rank ends with an error it
stops the others (their collectives would otherwise wait for the dead rank) and exits with that rank's code, after
saying which rank it was; unless the launcher was itself told to stop: then a rank that ends with an error (its own
SIGTERM handler, or gloo noticing a peer that stopped first) is part of the stop, not a failure. When all end, it
exits with rank 0's code (rank 0 decides the trial's outcome, so a rank that fails after rank 0 ended, its peer gone
from a collective, changes nothing). Ranks still running 30 s after rank 0 ended (waiting in a collective rank 0 left
before, which gloo notices at once and NCCL only at its timeout) are stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

log = logging.getLogger("ftstudy.trainer")

GRACE_SECONDS = 30.0  # for the other ranks to leave once one has failed, before SIGKILL


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(processes: int, argv: list[str], program: list[str] | None = None) -> int:
    """Run ``ftstudy-trainer argv`` (or ``program argv``) as ``processes`` ranks; the exit code as above."""
    port = _free_port()
    children = []
    for rank in range(processes):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(processes),
               "LOCAL_WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
        trainer = program or [sys.executable, "-m", "ftstudy.trainer.cli"]
        children.append(subprocess.Popen([*trainer, *argv], env=env))

    stopping: list[int] = []  # the signals forwarded: once stopped, only rank 0's code says how the trial ended

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _supervise(processes, children, stopping)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _supervise(processes: int, children: list[subprocess.Popen[bytes]], stopping: list[int]) -> int:
    failed: tuple[int, int] | None = None  # (rank, exit code) of the first rank that ended with an error
    main_ended: float | None = None  # when rank 0 ended: the others follow within seconds, or are stopped
    while any(child.poll() is None for child in children):
        if main_ended is None and children[0].poll() is not None:
            main_ended = time.monotonic()
        if failed is None and main_ended is not None and time.monotonic() - main_ended > GRACE_SECONDS:
            # rank 0 left before a collective the others wait in (a SIGTERM while it scored the base model): its
            # code is the trial's, whatever stopping the others makes them exit with
            log.warning("rank 0 ended %.0f s ago: stopping the other ranks", GRACE_SECONDS)
            _stop(children)
            break
        if failed is None:
            for rank, child in enumerate(children):
                code = child.poll()
                if rank > 0 and (main_ended is not None or stopping):
                    break  # rank 0 has ended or is stopping: the outcome is its, whatever the others' end
                if code not in (None, 0) and not (rank == 0 and code in _OUTCOMES):
                    failed = (rank, _exit_code(code))
                    log.error("rank %d of %d exited with code %d: stopping the other ranks", rank, processes,
                              failed[1])  # fmt: skip
                    _stop(children)
                    break
        time.sleep(0.2)
    if failed is not None:
        # Last, so that it is the pod log's last line, which the operator quotes as the trial's failure reason
        # (the other ranks, once stopped, write their own ends after the first error line).
        log.error("the trial failed: rank %d of %d exited with code %d (its own lines above say why)", failed[0],
                  processes, failed[1])  # fmt: skip
        return failed[1]
    return _exit_code(children[0].returncode)


# Rank 0's exit codes that are an outcome, not a rank's failure: the others end with it on their own.
_OUTCOMES = frozenset({75, 143})


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by a signal: as a shell reports it


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + GRACE_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
