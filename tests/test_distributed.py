"""A trial on two processes (``--processes 2``: gloo on CPU, the code path NCCL takes on GPUs): the same steps as one
process of the same global batch; screened, or preempted by SIGTERM, and resumed on two processes, it ends
bit-identical to the uninterrupted two-process run (each rank's random generators are in the checkpoint); a rank
that dies fails the trial with that rank's exit code, and the other rank is stopped, not left waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ftstudy.trainer.cli import EXIT_PREEMPTED

from .test_preemption import HOLD, same_training

pytestmark = pytest.mark.timeout(1800)

PARAMS = {"learning_rate": 3e-3, "lora_r": 4, "lora_alpha": 8, "batch_size": 2, "grad_accum": 2}
RUN = ["--model", "tiny", "--max-steps", "15", "--eval-samples", "4", "--test-samples", "4", "--eval-batch-size",
       "4", "--max-seq-len", "1024"]  # fmt: skip


def trainer(trainer_cmd: list[str], data: Path, out: Path, processes: int, *more: str, dropout: float = 0.1,
            env: dict[str, str] | None = None) -> subprocess.Popen[str]:  # fmt: skip
    params = json.dumps({**PARAMS, "lora_dropout": dropout})
    command = [*trainer_cmd, *RUN, "--params", params, "--data", str(data), "--output", str(out),
               "--processes", str(processes), *more]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, log = process.communicate(timeout=900)
    return process.returncode, log


def preempted_at_hold(process: subprocess.Popen[str]) -> str:
    """SIGTERM to the launcher (what the kubelet sends the pod) once its fault point holds; it must exit preempted.
    Returns its log."""
    assert process.stderr is not None
    lines = []
    # A launcher that never ends would hold the reads below forever, and the whole test run with them (a trainer
    # deadlocked in its SIGTERM handler did, 2026-12-08): killed after 300 s, it fails this test instead.
    watchdog = threading.Timer(300, process.kill)
    watchdog.start()
    try:
        for line in process.stderr:
            lines.append(line)
            if HOLD in line:
                process.send_signal(signal.SIGTERM)
                break
        lines.extend(process.stderr)
    finally:
        watchdog.cancel()
    log = "".join(lines)
    assert process.wait(timeout=300) == EXIT_PREEMPTED, log
    return log


def losses(run: Path) -> list[float]:
    curve: list[float] = json.loads((run / "loss_curve.json").read_text())["train_loss"]
    return curve


def test_two_processes_train_as_one_and_resume_a_screened_or_preempted_trial_exactly(
    trainer_cmd: list[str], dataset_dir: Path, tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert finish(trainer(trainer_cmd, dataset_dir, one, 1, "--stage", "full", dropout=0.0))[0] == 0
    code, log = finish(trainer(trainer_cmd, dataset_dir, two, 2, "--stage", "full", dropout=0.0))
    assert code == 0, log
    assert "[rank 1]" in log, "a second process trained"
    assert losses(two) == pytest.approx(losses(one), abs=1e-5), "the same global batch: the same steps"
    final = [json.loads((run / "result.json").read_text())["final_accuracy"] for run in (one, two)]
    assert final[0] == final[1]

    # With dropout, each rank draws its own masks: the checkpoint must hold every rank's generators.
    whole, screened, preempted = tmp_path / "whole", tmp_path / "screened", tmp_path / "preempted"
    assert finish(trainer(trainer_cmd, dataset_dir, whole, 2, "--stage", "full"))[0] == 0
    code, log = finish(trainer(trainer_cmd, dataset_dir, screened, 2, "--stage", "screen"))
    assert code == 0, log
    meta = json.loads((screened / "checkpoint" / "checkpoint.json").read_text())
    assert meta["step"] == 3
    code, log = finish(trainer(trainer_cmd, dataset_dir, screened, 2, "--stage", "resume"))
    assert code == 0, log
    same_training(screened, whole)

    # SIGTERM to the launcher (what the kubelet sends the pod) after step 7: both ranks stop there together, rank 0
    # checkpoints, the launcher exits 75; the same command resumes and ends as the uninterrupted run.
    process = trainer(trainer_cmd, dataset_dir, preempted, 2, "--stage", "full", "--checkpoint-on-stop",
                      env={"FTSTUDY_FAULTS": "trainer.after-step.7=1:hold=600"})  # fmt: skip
    log = preempted_at_hold(process)
    assert "preempted after step 7: checkpointed" in log and "rank 1: stopping with rank 0 after step 7" in log
    assert len(json.loads((preempted / "checkpoint" / "checkpoint.json").read_text())["identity"]) > 0
    code, log = finish(trainer(trainer_cmd, dataset_dir, preempted, 2, "--stage", "full", "--checkpoint-on-stop"))
    assert code == 0, log
    assert "resumed from the checkpoint written when this trial was preempted at step 7" in log
    same_training(preempted, whole)

    # SIGTERM in the final scoring (the trial's second), after the last step: rank 1 has left the loop and hands in
    # no generators, yet the checkpoint resumes on two processes (no step is left to draw from them) and the trial
    # ends as the uninterrupted run. (It was refused on resume: "written by 1 process(es)", exit 2, a failure.)
    late = tmp_path / "late"
    process = trainer(trainer_cmd, dataset_dir, late, 2, "--stage", "full", "--checkpoint-on-stop",
                      env={"FTSTUDY_FAULTS": "trainer.scoring=2:hold=600"})  # fmt: skip
    log = preempted_at_hold(process)
    assert "preempted after step 15" in log, log
    code, log = finish(trainer(trainer_cmd, dataset_dir, late, 2, "--stage", "full", "--checkpoint-on-stop"))
    assert code == 0, log
    same_training(late, whole)

    # A checkpoint of two processes is not resumed on one: its generators are per rank.
    code, log = finish(trainer(trainer_cmd, dataset_dir, screened, 1, "--stage", "resume"))
    assert code == 2 and "written by 2 process(es)" in log, log


def test_a_rank_that_dies_fails_the_trial_with_its_exit_code_and_stops_the_other(
    trainer_cmd: list[str], dataset_dir: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    process = trainer(trainer_cmd, dataset_dir, tmp_path / "run", 2, "--stage", "full",
                      env={"FTSTUDY_FAULTS": "trainer.rank1.after-step.5=1"})  # fmt: skip
    code, log = finish(process)
    assert code == 128 + signal.SIGKILL, log
    assert f"rank 1 of 2 exited with code {128 + signal.SIGKILL}: stopping the other ranks" in log
    last = log.strip().splitlines()[-1]  # what the operator quotes as the trial's failure reason (its pod log's last)
    assert f"the trial failed: rank 1 of 2 exited with code {128 + signal.SIGKILL}" in last, log[-2000:]
    assert time.monotonic() - started < 300, "no rank left waiting for the dead one"
    assert not (tmp_path / "run" / "final_adapter").exists()

    # Preempted while rank 0 scores the base model, before any step: rank 1 already waits in the first step's
    # all-reduce, which rank 0 never joins. The trial is preempted (75), and rank 1 is stopped, not left waiting.
    process = trainer(trainer_cmd, dataset_dir, tmp_path / "early", 2, "--stage", "full", "--checkpoint-on-stop",
                      "--score-base-model", env={"FTSTUDY_FAULTS": "trainer.scoring=1:hold=600"})  # fmt: skip
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if HOLD in line:
            signaled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            break
    lines.extend(process.stderr)
    log = "".join(lines)
    assert process.wait(timeout=300) == EXIT_PREEMPTED, ("rank 0's outcome, whatever rank 1's end", log)
    assert "preempted before the first training step" in log
    assert time.monotonic() - signaled < 120, "rank 1 did not wait for its collective's timeout"


def test_ranks_left_waiting_after_rank_0_ended_are_stopped_and_rank_0s_code_stands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NCCL, unlike gloo, does not notice a peer that left: a rank waiting in a collective rank 0 never joins (rank
    0 preempted while it scored the base model) would wait for the collective's timeout, two hours. The launcher
    stops it once rank 0 has been gone for its grace, and the trial's code is rank 0's."""
    from ftstudy.trainer import launch

    monkeypatch.setattr(launch, "GRACE_SECONDS", 1.0)
    rank = (  # rank 0: preempted at once; the others: deaf to SIGTERM, waiting for ever
        "import os, signal, time\n"
        "if os.environ['RANK'] == '0': raise SystemExit(75)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "time.sleep(3600)\n"
    )
    started = time.monotonic()
    assert launch.launch(2, [], [sys.executable, "-c", rank]) == EXIT_PREEMPTED
    assert time.monotonic() - started < 30


def test_a_rank_that_ends_with_an_error_on_sigterm_does_not_turn_the_preemption_into_a_crash() -> None:
    """The kubelet's SIGTERM reaches every rank; rank 1 may end first, and with an error (its peer left a collective,
    which gloo reports at once), while rank 0 still writes its checkpoint: the trial was preempted (75), not crashed."""
    rank = (  # rank 0: checkpoints for a second, then exits 75; rank 1: ends with 1 at once
        "import os, signal, time\n"
        "def stop(*_): time.sleep(1.0) if os.environ['RANK'] == '0' else None; raise SystemExit("
        "75 if os.environ['RANK'] == '0' else 1)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "os.write(2, b'ready\\n')\n"
        "time.sleep(3600)\n"
    )
    launcher = ("import sys\nfrom ftstudy.trainer import launch\n"
                f"raise SystemExit(launch.launch(2, [], [sys.executable, '-c', {rank!r}]))\n")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", launcher], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    assert [process.stderr.readline() for _ in range(2)] == ["ready\n"] * 2
    process.send_signal(signal.SIGTERM)
    _, log = process.communicate(timeout=120)
    assert process.returncode == EXIT_PREEMPTED, log
    assert "stopping the other ranks" not in log
