"""Screening in a cluster (promotion.mode screen), on the real control plane with the real trainer: every trial's
Job completes at the early step with a checkpoint on the artifacts volume, and only the promoted trials get a second
Job, labelled as a resume, that trains them from that checkpoint to the end. An operator SIGKILLed while trials are
suspended, and inside the launch of a resume, neither loses a trial nor resumes one twice.

The tiny model scores every trial the same, so the ranking is by trial number: with K 2, the baseline (trial 0,
never screened) and trial 1 train to the end; trials 2 to 4 are pruned once all are screened."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from tests.cluster.gpu_nodes import GpuNodes
from tests.test_operator import (
    Operators,
    apply,
    diagnosis,
    events,
    jobs,
    optuna_trials,
    runs_per_attempt,
    study_manifest,
    wait_for,
    wait_for_phase,
)

SCREEN = {"policy": "topK", "k": 2, "mode": "screen", "auditFraction": 0.0}


def screening_manifest(name: str, tmp_path: Path) -> dict[str, Any]:
    return study_manifest(name, tmp_path / "artifacts", budget={"maxTrials": 5, "parallelism": 2}, promotion=SCREEN)


def check_outcome(operators: Operators, nodes: GpuNodes, postgres_url: str, name: str, study: dict[str, Any],
                  artifacts: Path,
                  expected_events: frozenset[str] = frozenset({"TrialPromoted", "TrialPruned", "TrialResumed"})
                  ) -> None:  # fmt: skip
    """``artifacts``: the host directory of the trials' volume."""
    plane, ns = operators.plane, operators.namespace
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    assert status["trials"] | {"created": 5} == {"created": 5, "running": 0, "completed": 2, "cancelled": 3,
                                                 "failed": 0, "screened": 4, "suspended": 0, "promoted": 1,
                                                 "audited": 0}  # fmt: skip
    trials = optuna_trials(postgres_url, ns, name)
    states = [t.state for t in sorted(trials, key=lambda t: t.number)]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, *[TrialState.PRUNED] * 3], states
    by_number = {t.number: t for t in trials}
    assert by_number[1].system_attrs["ftstudy:resumes"] == 1, "resumed once"
    assert by_number[1].user_attrs["steps_done"] == 15 and by_number[1].user_attrs["outcome"] == "completed"
    for number in (2, 3, 4):
        assert by_number[number].user_attrs["steps_done"] == 3, "a screening Job stops at 20% of 15 steps"
    # cleanup.prunedCheckpoints (default true): a small Job per pruned trial deletes its checkpoint on the volume
    trials_dir = artifacts / ns / f"{name}-{study['metadata']['uid'][:8]}"
    pruned = [trials_dir / f"trial-{number:04d}" for number in (2, 3, 4)]
    wait_for("the pruned trials' checkpoints deleted", lambda: not any((d / "checkpoint").exists() for d in pruned),
             120, diagnosis(operators, name, nodes))  # fmt: skip
    assert all((d / "early_adapter").is_dir() for d in pruned), "their early adapters stay"
    assert (trials_dir / "trial-0001" / "final_adapter").is_dir()
    ran = runs_per_attempt(nodes, ns)
    assert all(count == 1 for count in ran.values()), ran
    cleanups = {job for job in ran if job.endswith("-forget")}
    assert cleanups == {f"{name}-t{number}-forget" for number in (2, 3, 4)}, ran
    assert len(ran) - len(cleanups) == 6, "five first launches and one resume, each run once"
    remaining = {j["metadata"]["name"]: j["metadata"]["labels"] for j in jobs(plane, ns)}
    resumes = [n for n, labels in remaining.items() if labels.get("ftstudy.io/resume") == "true"]
    assert resumes == [f"{name}-t1-a2"], remaining
    reasons = {e["reason"] for e in events(plane, ns)}
    assert expected_events | {"StudySucceeded"} <= reasons, reasons


def test_screening_jobs_end_at_the_early_step_and_only_the_promoted_resume(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    nodes = gpu_nodes_factory({"gpu-a": 2})
    operators.start()
    name = "screen"
    apply(operators.plane, operators.namespace, screening_manifest(name, tmp_path))
    study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 420, nodes)
    check_outcome(operators, nodes, postgres_url, name, study, tmp_path / "artifacts")


def test_an_operator_killed_while_trials_are_suspended_and_inside_a_resume_loses_nothing(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    nodes = gpu_nodes_factory({"gpu-a": 2})
    name = "screen-kills"
    ns = operators.namespace
    apply(operators.plane, ns, screening_manifest(name, tmp_path))

    def suspended() -> bool:
        try:
            trials = optuna_trials(postgres_url, ns, name)
        except KeyError:
            return False
        return sum(t.user_attrs.get("outcome") == "screened" for t in trials) >= 2

    proc = operators.start()
    wait_for("two suspended trials", suspended, 300, diagnosis(operators, name, nodes), every=0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    operators.env = {"FTSTUDY_FAULTS": "resume.between=1"}  # dies with the resume Job created, not yet counted
    proc = operators.start()
    assert proc.wait(timeout=300) == -signal.SIGKILL, diagnosis(operators, name, nodes)()
    operators.env = {}
    operators.start()
    study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 420, nodes)
    # The operator that created the resume Job died before its TrialResumed Event; the next one adopted the Job.
    check_outcome(operators, nodes, postgres_url, name, study, tmp_path / "artifacts",
                  frozenset({"TrialPromoted", "TrialPruned"}))  # fmt: skip


def test_screening_in_rungs_resumes_a_job_per_rung_and_shows_each_rung(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str, tmp_path: Path
) -> None:
    """promotion.rungs [0.2, 0.5], reduction 2, K 1, four trials, no baseline (as tests/test_screening.py's study in
    two rungs with ``ftstudy run``). The tiny model scores every trial the same, so ranks go by trial number: at
    rung 0 (step 3 of 15) trials 0 and 1 go on, each with a resume Job that stops at rung 1 (step 8), where K 1 keeps
    trial 0, whose third Job trains it to the end. Kills of the operator around the promotions are the chaos tests'
    (the fault points are the same code in both shells)."""
    nodes = gpu_nodes_factory({"gpu-a": 2})
    operators.start()
    name = "rungs"
    ns = operators.namespace
    manifest = study_manifest(name, tmp_path / "artifacts",
                              promotion={**SCREEN, "k": 1, "rungs": [0.2, 0.5], "reduction": 2})  # fmt: skip
    del manifest["spec"]["baseline"]
    apply(operators.plane, ns, manifest)
    study = wait_for_phase(operators, name, ("Succeeded", "Failed"), 600, nodes)
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    assert status["rungs"] == [
        {"fraction": 0.2, "scored": 4, "promoted": 2, "pruned": 2},
        {"fraction": 0.5, "scored": 2, "promoted": 1, "pruned": 1},
    ], status
    found = sorted(optuna_trials(postgres_url, ns, name), key=lambda t: t.number)
    assert [t.state for t in found] == [TrialState.COMPLETE, *[TrialState.PRUNED] * 3]
    assert [t.system_attrs.get("ftstudy:passed", 0) for t in found] == [1, 1, 0, 0]
    assert found[0].system_attrs["ftstudy:resumes"] == 2 and found[0].user_attrs["steps_done"] == 15
    assert found[1].user_attrs["steps_done"] == 8, "pruned at rung 1"
    assert [found[n].user_attrs["steps_done"] for n in (2, 3)] == [3, 3], "pruned at rung 0"
    ran = runs_per_attempt(nodes, ns)
    assert all(count == 1 for count in ran.values()), ran
    trainers = {job for job in ran if not job.endswith("-forget")}
    assert trainers == {f"{name}-t0-a1", f"{name}-t0-a2", f"{name}-t0-a3", f"{name}-t1-a1", f"{name}-t1-a2",
                        f"{name}-t2-a1", f"{name}-t3-a1"}, ran  # fmt: skip
    promoted = [e for e in events(operators.plane, ns) if e["reason"] == "TrialPromotedPastRung"]
    assert sorted(e["message"].rsplit(":", 1)[0] for e in promoted) == [
        "trial 0: promoted past rung 0 (20%)",
        "trial 1: promoted past rung 0 (20%)",
    ], promoted
    assert {e["type"] for e in promoted} == {"Normal"}
