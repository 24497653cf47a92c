"""Chaos at random moments, on the real control plane with the real trainer: the operator SIGKILLed twenty times
across a screened study (inside its multi-write sequences, through fault-injection points, and otherwise at a random
moment after it won the Lease, so while it acts; restarted under new identities that must wait for the Lease to
expire), every life also armed to die at the first prune, promotion or resume point no kill has reached yet; in a
study screening in rungs, PostgreSQL crashed three times, the operator killed inside three PostgreSQL outages, and
the API server restarted once.

What must hold afterwards, read from the simulated kubelet's record of every process it ran and from the study's
Optuna records: the study completes; every trial ran exactly once per recorded attempt; no two attempts of a trial
overlapped in time; no trial used a retry it did not need (nothing here makes a trainer fail, so every trial has
exactly one attempt). The seed is printed on failure; $FTSTUDY_CHAOS_SEED replays a run's moments.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from ftstudy.kube.main import EXIT_LOST_LEADERSHIP
from tests.cluster.control_plane import ControlPlane
from tests.cluster.gpu_nodes import GpuNodes
from tests.conftest import postgres_outage
from tests.test_operator import (
    Operators,
    apply,
    diagnosis,
    get_study,
    jobs,
    optuna_trials,
    study_manifest,
    wait_for,
    wait_for_phase,
)

ROOT = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("FTSTUDY_CHAOS_SEED", "20261201"))
# Inside the multi-write sequences: asked for, Job not yet created; Job created, launch not yet counted; decision
# recorded, Job not yet annotated; trial told PRUNED, Job not yet deleted; resume asked for, Job not yet created;
# resume Job created, not yet counted. (fail.between needs a failing trial.)
FAULTS = ("launch.before=1", "launch.between=1", "continue.between=1", "cancel.between=1", "launch.between=2",
          "cancel.between=1", "continue.between=1", "launch.before=2", "resume.before=1",
          "resume.between=1")  # fmt: skip
# Where a screened study decides (a prune, a promotion, a resume) depends on when its trials are scored, which the
# random moments do not control: every life, through the kills and after them, is also armed with those of these
# points no kill has reached yet, so that the first prune and the first two resume launches each meet a kill.
DECISION_POINTS = ("cancel.between", "continue.between", "resume.before", "resume.between")
MUST_HIT = ("cancel.between", "resume.before", "resume.between")  # those the kills had never reached before
KILLED_AT = re.compile(r"fault point (\S+): killed here")
LEASE_SECONDS = 3
TEST_TIMEOUT_S = 600  # pyproject.toml's pytest timeout
TRIALS = 8  # at first: raised while the kills go on, if the study would otherwise end before them


def assert_each_attempt_ran_once_and_none_overlapped(nodes: GpuNodes, ns: str, name: str, trials: list[Any]) -> None:
    """Every launch and every resume (screening: a resume is the next attempt number) ran once, none overlapping
    another of its trial; checkpoint-cleanup Jobs (``-forget``) are not trial attempts."""
    runs = [r for r in nodes.runs if r["namespace"] == ns and r["pod"].startswith(f"{name}-t")
            and not r["pod"].rsplit("-", 1)[0].endswith("-forget")]  # fmt: skip
    by_job: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_job.setdefault(run["pod"].rsplit("-", 1)[0], []).append(run)
    runs_of = {t.number: t.system_attrs["ftstudy:attempts"] + t.system_attrs.get("ftstudy:resumes", 0) for t in trials}
    recorded = {f"{name}-t{number}-a{a}" for number, count in runs_of.items() for a in range(1, count + 1)}
    assert set(by_job) == recorded, "every recorded attempt ran, and nothing else"
    assert all(len(found) == 1 for found in by_job.values()), {j: len(r) for j, r in by_job.items() if len(r) > 1}
    for trial in trials:
        own = sorted((r for r in runs if r["pod"].startswith(f"{name}-t{trial.number}-a")), key=lambda r: r["started"])
        for earlier, later in itertools.pairwise(own):
            assert earlier["ended"] is not None and later["started"] >= earlier["ended"], (earlier, later)


def created_trials(url: str, namespace: str, name: str) -> int:
    """The study's trials so far; 0 while no operator life has created the study yet (a kill after 1 s can come
    before the first life gets that far on a busy machine)."""
    try:
        return len(optuna_trials(url, namespace, name))
    except KeyError:
        return 0


def fault_that_killed(ops: Operators, identity: str, since: int) -> str | None:
    """The fault point that ended the life of ``identity`` whose log began at byte ``since``, if one did."""
    found = KILLED_AT.findall(ops.log(identity, since))
    return found[-1] if found else None


def leading(ops: Operators, identity: str, since: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Returns once the life of ``identity`` (its log from byte ``since``) has won the Lease, or has ended, or after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if f"leading as {identity}" in ops.log(identity, since):
            return
        time.sleep(0.1)


def armed(hit: list[str], fault: str | None = None) -> dict[str, str]:
    """A life's environment: its own fault point, if any, and the decision points no kill has reached yet (each
    the first time it is passed: the life dies at whichever comes first, and its log says which)."""
    points = [fault] if fault else []
    points += [f"{p}=1" for p in DECISION_POINTS if p not in hit and not (fault or "").startswith(f"{p}=")]
    return {"FTSTUDY_FAULTS": ",".join(points)} if points else {}


def test_an_operator_killed_at_twenty_random_moments_runs_each_attempt_once(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str
) -> None:
    """In screen mode, the default: trials stop at the early step and the promoted ones are resumed, and (as the
    chart sets it up by default) report over HTTPS to the operator, so every kill also leaves trainers retrying their
    reports until the next leader serves them. Every life is also armed with the decision points no kill has reached
    yet (``DECISION_POINTS``), so that the prune and resume sequences meet a kill whenever the study gets to them;
    the engine's own tests kill a local runner at each of them too (tests/test_screening.py). Online mode runs the
    same engine and fault points (tests/test_operator.py, tests/test_hardening.py)."""
    ops, plane, ns = operators, operators.plane, operators.namespace
    started = time.monotonic()
    rng = random.Random(SEED)
    short_lease = ["--lease-seconds", str(LEASE_SECONDS)]
    ops.extra_args = [*short_lease]
    undo = ops.enable_reports()
    nodes = gpu_nodes_factory({"gpu-a": 2})
    name = "chaos"
    promotion = {"policy": "topK", "k": 2, "mode": "screen", "auditFraction": 0.0}
    apply(plane, ns, study_manifest(name, budget={"maxTrials": TRIALS, "parallelism": 2, "retriesPerTrial": 1},
                                    promotion=promotion))  # fmt: skip
    max_trials, identity, kills, hit, timed = TRIALS, "chaos-0", [], [], []
    faults: list[str | None] = [*FAULTS, *[None] * (20 - len(FAULTS))]
    rng.shuffle(faults)
    for i, fault in enumerate(faults):
        changed = i % 4 == 3  # a new identity: it may lead only once the killed one's Lease has expired
        if changed:
            identity = f"chaos-{i}"
        ops.env = armed(hit, fault)
        since = ops.log_size(identity)
        proc = ops.start(identity)
        # a life with a fault point runs until it gets there (or 15 s: an operator's start takes seconds on a busy
        # machine, and a decision's point needs a trial at its early step); the others are killed at a random moment
        # of their leading (a kill before the Lease is won would test only the start)
        expiry = LEASE_SECONDS + 1 if changed else 0  # what a new identity waits before it may lead
        if fault:
            life = 15.0 + expiry
        else:
            leading(ops, identity, since, proc, 30.0 + expiry)
            life = rng.uniform(0.5, 2.5)
        try:
            proc.wait(life)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        point = fault_that_killed(ops, identity, since)
        if proc.returncode == EXIT_LOST_LEADERSHIP:  # a 3 s Lease lost to one slow renewal on a busy machine: by design
            how = "exited: lost its Lease"
        else:
            assert proc.returncode == -signal.SIGKILL, (proc.returncode, ops.log(identity)[-3000:])
            if point is not None:
                how = f"fault {point}"
                hit.append(point)
            elif fault:
                how = f"SIGKILL after {life:.1f}s ({fault} not reached)"
            else:
                assert f"leading as {identity}" in ops.log(identity, since), ("killed before it led", i, kills)
                how = f"SIGKILL {life:.1f}s into its leading"
                timed.append(life)
        kills.append(f"{i}: {identity}: {how}")
        # However fast this machine, the study must outlast the kills: its budget is raised as it nears the end (a
        # budget edit, allowed while it runs), so that every kill lands while trials remain to be created.
        if created_trials(postgres_url, ns, name) >= max_trials - 2:
            max_trials += 2
            patch = json.dumps({"spec": {"budget": {"maxTrials": max_trials}}})
            plane.kubectl("patch", "fts", name, "-n", ns, "--type=merge", "-p", patch)
    unfinished = [t for t in optuna_trials(postgres_url, ns, name) if not t.state.is_finished()]
    print(f"seed {SEED}; kills: {kills}; unfinished after them: {len(unfinished)}")
    assert any(".between" in point for point in hit), ("no kill inside a multi-write sequence", kills)
    assert len(timed) >= 5, ("most lives without a fault point were not killed at a random moment", kills)
    assert get_study(plane, ns, name)["status"]["phase"] != "Succeeded", "the kills landed across the study"
    assert len(optuna_trials(postgres_url, ns, name)) < max_trials, "trials were still to be created"
    # What the kills met is what the rest must finish: the budget is lowered to the trials created (no operator runs
    # now), so that the study ends with them rather than training new ones nothing will disturb.
    max_trials = max(created_trials(postgres_url, ns, name), 2)
    patch = json.dumps({"spec": {"budget": {"maxTrials": max_trials}}})
    plane.kubectl("patch", "fts", name, "-n", ns, "--type=merge", "-p", patch)
    # The last lives run the study to its end with the default Lease (a 3 s Lease is lost to one slow renewal on a
    # busy machine), restarted whenever one exits, as the Deployment would restart a leader that lost its Lease.
    # A life killed at a decision point is followed by one under the same identity (it leads at once).
    ops.extra_args = ops.extra_args[len(short_lease) :]
    final = "chaos-final"

    def start_final_life() -> subprocess.Popen[bytes]:
        ops.env = armed(hit)
        sizes.append(ops.log_size(final))
        return ops.start(final)

    sizes: list[int] = []
    lives = [start_final_life()]

    def ended() -> dict[str, Any] | None:
        if lives[-1].poll() is not None:
            point = fault_that_killed(ops, final, sizes[-1])
            if point is not None:
                hit.append(point)
                kills.append(f"final life {len(lives)}: fault {point}")
            lives.append(start_final_life())
        study = get_study(plane, ns, name)
        return study if (study.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    # what is left of the test's timeout, less a margin: a study that does not end prints its diagnosis, which
    # pytest-timeout's stack dump would not
    left = TEST_TIMEOUT_S - (time.monotonic() - started) - 30
    study = wait_for(f"{name} to end", ended, left, diagnosis(ops, name, nodes))
    print(f"final lives: {len(lives)}; kills: {kills}")
    assert study["status"]["phase"] == "Succeeded", (SEED, kills, study["status"])
    assert not set(MUST_HIT) - set(hit), ("decision points no kill reached", SEED, kills)

    trials = optuna_trials(postgres_url, ns, name)
    assert sorted(t.number for t in trials) == list(range(max_trials)), "one trial per number, none lost, none extra"
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    assert [t.system_attrs["ftstudy:attempts"] for t in trials] == [1] * max_trials, ("no retry", SEED, kills)
    assert_each_attempt_ran_once_and_none_overlapped(nodes, ns, name, trials)
    for log in ops.logs.glob("operator-chaos-*.log"):
        assert "Traceback" not in log.read_text(errors="replace"), (log.name, SEED, kills)
    # the trainers' reports went through the endpoint, across the kills: they had no URL
    env = {e["name"] for job in jobs(plane, ns) for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "FTSTUDY_REPORT_URL" in env and "FTSTUDY_STORAGE_URL" not in env, env
    undo()


@pytest.fixture
def supervised(operators: Operators) -> Iterator[Operators]:
    """The operator restarted whenever it exits, as its Deployment would (a leader that could not renew its Lease
    through an outage exits by design); trials report over HTTPS, as the chart sets it up by default."""
    stop = threading.Event()
    ops = operators
    undo = ops.enable_reports()

    def supervise() -> None:
        proc = ops.start()
        while not stop.wait(0.5):
            if proc.poll() is not None:
                proc = ops.start()

    thread = threading.Thread(target=supervise, daemon=True)
    thread.start()
    yield ops
    stop.set()
    thread.join()
    undo()


def operator_killed_during_an_outage(ops: Operators, rng: random.Random) -> str:
    """PostgreSQL down (a fast shutdown: every connection cut), the running operator SIGKILLed inside the outage
    (its supervisor starts another, which meets the outage from its first pass), PostgreSQL back seconds later."""
    killed: list[subprocess.Popen[bytes]] = []
    before, after = rng.uniform(0.5, 2.0), rng.uniform(2.0, 5.0)  # drawn in this order: a seed replays the moments

    def kill_the_operator() -> None:
        time.sleep(before)
        killed.extend(proc for proc in ops.procs if proc.poll() is None)
        for proc in killed:
            proc.send_signal(signal.SIGKILL)

    postgres_outage(after, during=kill_the_operator)
    return f"{len(killed)} operator(s) killed"


def test_the_study_completes_through_postgresql_crashes_operator_kills_in_outages_and_an_apiserver_restart(
    supervised: Operators,
    control_plane: ControlPlane,
    gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes],
    postgres_url: str,
) -> None:
    """Screening with rungs (the default mode, with its resumes) and reports over HTTPS: three PostgreSQL crashes,
    three operator kills inside PostgreSQL outages, one API server restart, in a random order. Every trial once, no
    duplicate, none lost, no retry spent."""
    ops, plane, ns = supervised, supervised.plane, supervised.namespace
    rng = random.Random(SEED + 1)
    nodes = gpu_nodes_factory({"gpu-a": 2})
    name = "storms"
    promotion = {"policy": "topK", "k": 2, "mode": "screen", "auditFraction": 0.0, "rungs": [0.2, 0.5]}
    apply(plane, ns, study_manifest(name, budget={"maxTrials": 6, "parallelism": 2}, promotion=promotion))
    wait_for("a running trial", lambda: nodes.running() > 0, 120, diagnosis(ops, name, nodes), every=0.2)
    events = ["postgresql", "postgresql", "postgresql", "outage-kill", "outage-kill", "outage-kill", "kube-apiserver"]
    rng.shuffle(events)
    done = []
    for event in events:
        time.sleep(rng.uniform(1.0, 6.0))
        what = ""
        if event == "postgresql":
            subprocess.run([str(ROOT / "scripts" / "postgres.sh"), "crash"], check=True, capture_output=True)
        elif event == "outage-kill":
            what = ": " + operator_killed_during_an_outage(ops, rng)
        else:
            control_plane.restart_apiserver()
        done.append(f"{event} at {time.monotonic():.0f}{what}")
    print(f"seed {SEED + 1}; events: {done}")
    assert sum("operator(s) killed" in d and not d.endswith(": 0 operator(s) killed") for d in done) == 3, done
    study = wait_for_phase(ops, name, ("Succeeded", "Failed"), 600, nodes)
    assert study["status"]["phase"] == "Succeeded", (SEED + 1, done, study["status"])
    trials = optuna_trials(postgres_url, ns, name)
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    assert [t.system_attrs["ftstudy:attempts"] for t in trials] == [1] * 6, (SEED + 1, done)
    assert_each_attempt_ran_once_and_none_overlapped(nodes, ns, name, trials)
