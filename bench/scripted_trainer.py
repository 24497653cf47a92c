"""A stand-in for ``ftstudy-trainer`` in ``bench/operator_latency.py``: the reporting protocol, without training.

It accepts the trainer's arguments (it uses ``--study``, ``--trial``, ``--output`` and the storage URL from
``--storage`` or ``$FTSTUDY_STORAGE_URL``; the rest are ignored) and writes to its Optuna trial what the trainer
writes, in the same order:

1. user attrs ``total_steps`` and ``early_step``; then a scripted "training to the early step" sleep; then user attrs
   ``early_accuracy`` and ``early_reported_at`` and, last, the intermediate value at the early step (the signal the
   operator acts on); the wall-clock time just after that write has committed is the moment the operator could
   first see it; then ``pg_notify``, as the trainer does (``ftstudy.notify``), which wakes the operator unless it
   runs with ``--no-notifications``;
2. it polls its trial every ``--poll-seconds`` (50 ms) with one light query (trial state and the ``ftstudy:decision``
   system attribute) on the connection it writes with (one per trainer, as the trainer holds), so the time it sees
   the decision is at most 50 ms late: PRUNED means cancelled (it exits 0, as the
   trainer does); ``continue``: it sleeps a scripted "rest of training", writes the final user attrs the engine
   needs (``outcome`` last) and exits 0;
3. it writes what it timed to ``<output>/bench.json``, which ``bench/operator_latency.py`` reads from the trials'
   volume.

How it writes (``--writer``):

- ``sql`` (the default): plain SQL on one psycopg2 connection, the same rows Optuna's RDBStorage writes
  (``trial_user_attributes``, ``trial_intermediate_values``, each write refused unless the trial, locked as Optuna
  locks it, is still RUNNING). About 0.1 CPU-s per trial.
- ``optuna``: ``ftstudy.trainer.reporting.OptunaReporter``, the trainer's own code. Its RDBStorage costs about
  1.5 CPU-s per process (importing SQLAlchemy, Optuna's models and alembic), which 120 trials turn into most of a
  core of a 2-core machine: CPU the trainers would spend on their GPU nodes, not on the operator's.
- ``https``: to the operator's report endpoint through the trainer's own ``ftstudy.trainer.reporting.HttpReporter``
  (docs/protocol.md: ``POST /v1/report`` with the pod's projected token, verified against the CA the Job gives, on
  one kept connection; ``--report-connections new`` for one per request), holding no database login at all. The
  decision is read as the trainer reads it there, by a ``status`` request every ``--poll-seconds``: "pruned" is a
  cancel; a continue is not visible to a trial (it trains on), so the trainer trains its "rest" while it keeps
  asking, and finishes unless pruned meanwhile. Needs the operator's ``--report-url`` (``bench/operator_latency.py
  --reports``).

Times and accuracies come from a RNG seeded with the study and trial, so a rerun draws the same ones.

With ``--writer sql`` it imports nothing of ftstudy's and nothing but psycopg2 (``https`` imports the trainer's
reporting module, light: 13 MiB RSS with it): a thousand of them at once (100 studies of 10 parallel trials) cost
about 8 MiB each instead of 11 (the attribute names are spelled out below, and
``bench/operator_latency.py`` checks them against ``ftstudy.trainer.reporting.UserAttr`` before it starts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

POLL_S = 0.05  # the default of --poll-seconds
TRAINING_STAGES = ("full", "screen")  # the trainer's --stage values that train a trial (the helper Jobs' do not)
GIVE_UP_S = 600.0
TOTAL_STEPS = 100
EARLY_STEP = 20
STORAGE_ENV = "FTSTUDY_STORAGE_URL"
DECISION = "ftstudy:decision"
CHANNEL = "ftstudy_trials"  # ftstudy.notify.CHANNEL (this script imports nothing of ftstudy's: it starts fast)
# ftstudy.trainer.reporting.UserAttr's names for what this script writes (checked by bench/operator_latency.py)
ATTRS = {
    "TOTAL_STEPS": "total_steps",
    "EARLY_STEP": "early_step",
    "EARLY_ACCURACY": "early_accuracy",
    "EARLY_REPORTED_AT": "early_reported_at",
    "FINAL_ACCURACY": "final_accuracy",
    "TEST_ACCURACY": "test_accuracy",
    "STEPS_DONE": "steps_done",
    "OUTCOME": "outcome",
}

POLL_SQL = """
SELECT t.state, a.value_json FROM trials t
LEFT JOIN trial_system_attributes a ON a.trial_id = t.trial_id AND a.key = %s
WHERE t.trial_id = %s
"""


class Writer(Protocol):
    trial_id: int

    def set_attrs(self, attrs: dict[str, Any]) -> None: ...

    def report_early(self, step: int, accuracy: float) -> None: ...

    def notify(self) -> None: ...

    def connect(self) -> Any:
        """A DB-API connection for polling (each poll ends with a commit)."""
        ...

    def release(self, connection: Any) -> None:
        """Done polling with ``connection``."""
        ...


class SqlWriter:
    """The rows Optuna's RDBStorage writes, through psycopg2 alone."""

    def __init__(self, url: str, study: str, trial: int) -> None:
        import psycopg2

        self.study = study
        parts = urlsplit(url)
        if not parts.scheme.startswith("postgresql"):
            raise SystemExit(f"--writer sql speaks PostgreSQL only, not {parts.scheme}: use --writer optuna")
        self.params = {
            "host": parts.hostname,
            "port": parts.port or 5432,
            "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
            "dbname": parts.path.lstrip("/"),
            "connect_timeout": 10,
            "application_name": "ftstudy-trainer",  # as the trainer's: the bench counts connections by it
        }
        self._connect: Callable[[], Any] = lambda: psycopg2.connect(**self.params)
        self.connection = self._connect()
        with self.connection, self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT t.trial_id FROM trials t JOIN studies s ON s.study_id = t.study_id "
                "WHERE s.study_name = %s AND t.number = %s",
                (study, trial),
            )
            row = cursor.fetchone()
        if row is None:
            raise SystemExit(f"study {study!r} has no trial number {trial}")
        self.trial_id = int(row[0])

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self.connection, self.connection.cursor() as cursor:  # one transaction
            cursor.execute("SELECT state FROM trials WHERE trial_id = %s FOR UPDATE", (self.trial_id,))
            (state,) = cursor.fetchone()
            if str(state) != "RUNNING":
                raise RuntimeError(f"trial {self.trial_id} is {state}: it can no longer be updated")
            cursor.execute(sql, params)

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self._write(
                "INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (%s, %s, %s) "
                "ON CONFLICT (trial_id, key) DO UPDATE SET value_json = EXCLUDED.value_json",
                (self.trial_id, str(key), json.dumps(value)),
            )
        if "outcome" in attrs:
            self.notify()

    def report_early(self, step: int, accuracy: float) -> None:
        self._write(
            "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) "
            "VALUES (%s, %s, %s, 'FINITE') ON CONFLICT (trial_id, step) DO UPDATE SET "
            "intermediate_value = EXCLUDED.intermediate_value, intermediate_value_type = 'FINITE'",
            (self.trial_id, step, accuracy),
        )

    def notify(self) -> None:
        """As the trainer does once a report is committed (``ftstudy.notify``): the operator wakes now."""
        with self.connection, self.connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.study))

    def connect(self) -> Any:
        """The writing connection itself (opened again if a failed poll closed it): a trainer holds one."""
        if self.connection.closed:
            self.connection = self._connect()
        return self.connection

    def release(self, connection: Any) -> None:
        """Kept: the final attributes are written on it."""


class OptunaWriter:
    """The trainer's own reporter (RDBStorage)."""

    def __init__(self, url: str, study: str, trial: int) -> None:
        from ftstudy.retry import RetryPolicy
        from ftstudy.trainer.reporting import OptunaReporter

        self.reporter = OptunaReporter(url, study, trial, RetryPolicy(deadline_seconds=60.0))
        self.trial_id = int(self.reporter.trial_id)

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        self.reporter.set_attrs(attrs)

    def report_early(self, step: int, accuracy: float) -> None:
        self.reporter.report_early(step, accuracy)  # notifies too, as in the trainer

    def notify(self) -> None:
        """``report_early`` did."""

    def connect(self) -> Any:
        return self.reporter.storage.engine.raw_connection()

    def release(self, connection: Any) -> None:
        connection.close()  # back to the reporter's pool


class Ended(Exception):
    """The study ended the trial before this report (the trainer's ``TrialEnded``)."""


class HttpsWriter:
    """The report endpoint's protocol (docs/protocol.md) through the trainer's own ``HttpReporter``: the URL, CA,
    token file and trial come from the environment the operator's Job sets (``ftstudy.trainer.reporting``'s
    ``FTSTUDY_REPORT_*``). ``new_connections``: close the connection after every request, as the trainer did before
    it kept one open (``--report-connections new``), to measure what keeping it saves."""

    trial_id = -1  # no database row: this trainer never sees one

    def __init__(self, new_connections: bool = False) -> None:
        from ftstudy.retry import RetryPolicy
        from ftstudy.trainer.reporting import HttpReporter

        self.reporter = HttpReporter(
            os.environ["FTSTUDY_REPORT_URL"],
            os.environ["FTSTUDY_REPORT_CA"],
            Path(os.environ["FTSTUDY_REPORT_TOKEN"]),
            json.loads(os.environ["FTSTUDY_REPORT_TRIAL"]),
            RetryPolicy(deadline_seconds=120.0, first_delay=0.2, target="the operator's report endpoint"),
        )
        self.new_connections = new_connections

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """The answer; refused connections and 503s (the operator starting, the study not loaded yet) retried with
        backoff, as the trainer retries them. ``Ended`` if the study ended the trial first (as the trainer, it
        stops then)."""
        from ftstudy.trainer.reporting import TrialEnded

        try:
            return self.reporter._call(str(body.get("kind")), body)
        except TrialEnded as error:
            raise Ended(str(error)) from None
        finally:
            if self.new_connections:
                self.reporter.close()

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        self.post({"kind": "attrs", "attrs": attrs})

    def report_early(self, step: int, accuracy: float) -> None:
        self.post({"kind": "early", "step": step, "accuracy": accuracy})  # written by the operator when it returns

    def notify(self) -> None:
        """The endpoint wakes the study itself."""

    def state(self) -> str:
        try:
            return self.reporter.status().value  # "running" when the endpoint cannot be reached, as in the trainer
        finally:
            if self.new_connections:
                self.reporter.close()

    def connect(self) -> Any:
        raise NotImplementedError("a trial reporting over HTTPS has no database connection")

    def release(self, connection: Any) -> None:
        raise NotImplementedError("a trial reporting over HTTPS has no database connection")


def train_on_unless_pruned(writer: HttpsWriter, seconds: float, poll_seconds: float) -> str:
    """The rest of training, asking the endpoint every ``poll_seconds`` whether the trial is still wanted, as the
    trainer does: "cancel" as soon as it is pruned, "continue" if it never was (a continue is not visible to a
    trial), "complete"/"fail" if the study ended it."""
    end = time.monotonic() + seconds
    while True:
        state = writer.state()
        if state == "pruned":
            return "cancel"
        if state == "finished":
            return "complete"
        if time.monotonic() >= end:
            return "continue"
        time.sleep(min(poll_seconds, max(0.0, end - time.monotonic())))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="scripted ftstudy-trainer for bench/operator_latency.py")
    # The operator's helper Jobs run the trainer's command too: the data check (``--stage check-data``, before any
    # trial) and the checkpoint clean-ups (``forget``, ``forget-all``). There is no data and no checkpoint here.
    p.add_argument("--stage", default="full")  # TRAINING_STAGES train; any other does nothing
    p.add_argument("--study")
    p.add_argument("--trial", type=int)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--storage", default=os.environ.get(STORAGE_ENV))
    p.add_argument("--writer", choices=("sql", "optuna", "https"), default="sql")
    p.add_argument("--report-connections", choices=("kept", "new"), default="kept",
                   help="--writer https: one connection kept open (the trainer's way) or one per request")  # fmt: skip
    p.add_argument("--early-seconds", type=float, nargs=2, default=(1.0, 3.0), help="uniform range")
    p.add_argument("--rest-seconds", type=float, nargs=2, default=(0.5, 1.5), help="uniform range")
    p.add_argument("--poll-seconds", type=float, default=POLL_S, help="how often it reads its trial's state")
    args, _ignored = p.parse_known_args(argv)  # every other trainer argument is accepted and ignored
    training = args.stage in TRAINING_STAGES
    if training and (args.study is None or args.trial is None):
        p.error("--study and --trial are required")
    if training and not args.storage and args.writer != "https":
        p.error(f"no storage URL: give --storage or set ${STORAGE_ENV}")
    return args


def wait_for_decision(writer: Writer, poll_seconds: float = POLL_S) -> str | None:
    """Poll the trial until the study decided: "cancel", "continue" (or "complete"/"fail"); None past GIVE_UP_S.

    One connection held open: a poll is a round trip and a commit, ~0.1 ms of CPU, where SQLAlchemy's
    connect-with-pre-ping per poll costs ~0.8 ms, which 40 trainers at 20 polls/s would turn into most of a core of
    a 2-core machine, slowing down the very operator being measured. A lost connection is opened again.
    """
    deadline = time.monotonic() + GIVE_UP_S
    connection = None
    while time.monotonic() < deadline:
        time.sleep(poll_seconds)
        try:
            if connection is None:
                connection = writer.connect()
            cursor = connection.cursor()
            cursor.execute(POLL_SQL, (DECISION, writer.trial_id))
            state, value = cursor.fetchone()
            connection.commit()  # a fresh snapshot for the next poll
        except Exception as error:  # the database restarting: try again
            print(f"poll failed ({type(error).__name__}); retrying", file=sys.stderr)
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()
            connection = None
            time.sleep(0.5)
            continue
        state = str(state).rsplit(".", 1)[-1]
        if state == "PRUNED":
            seen = "cancel"
        elif value and json.loads(value) == "continue":
            seen = "continue"
        elif state in ("COMPLETE", "FAIL"):
            seen = state.lower()
        else:
            continue
        writer.release(connection)
        return seen
    return None


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.stage not in TRAINING_STAGES:
        print(f"--stage {args.stage}: nothing to do for a scripted trainer", flush=True)
        return 0
    record: dict[str, Any] = {"study": args.study, "trial": args.trial, "started_at": time.time()}
    out = args.output
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        tmp = out / "bench.json.tmp"
        tmp.write_text(json.dumps(record, sort_keys=True))
        tmp.replace(out / "bench.json")

    def terminated(signum: int, _frame: FrameType | None) -> None:
        record["signal"] = signum
        record["signal_at"] = time.time()
        save()
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, terminated)
    writer: Writer
    if args.writer == "https":
        writer = HttpsWriter(new_connections=args.report_connections == "new")
    else:
        writer = (SqlWriter if args.writer == "sql" else OptunaWriter)(args.storage, args.study, args.trial)
    record["connected_at"] = time.time()
    rng = random.Random(f"{args.study.split('.', 1)[-1]}/{args.trial}")  # not the namespace: reruns draw the same
    writer.set_attrs({ATTRS["TOTAL_STEPS"]: TOTAL_STEPS, ATTRS["EARLY_STEP"]: EARLY_STEP})
    time.sleep(rng.uniform(*args.early_seconds))

    early = round(rng.uniform(0.3, 0.9), 4)
    # as the trainer does: the time just before the report (the operator's own decision-latency metric reads it)
    writer.set_attrs({ATTRS["EARLY_ACCURACY"]: early, ATTRS["EARLY_REPORTED_AT"]: round(time.time(), 3)})
    writer.report_early(EARLY_STEP, early)  # committed when it returns
    record["early_accuracy"] = early
    record["reported_at"] = time.time()
    writer.notify()
    save()

    rest = rng.uniform(*args.rest_seconds)
    if isinstance(writer, HttpsWriter):
        seen: str | None = train_on_unless_pruned(writer, rest, args.poll_seconds)
        rest = 0.0  # trained meanwhile
        record["seen_at"] = time.time()
        record["seen"] = seen if seen != "continue" else "trained-on"  # a continue is not seen: no latency to it
    else:
        seen = wait_for_decision(writer, args.poll_seconds)
        record["seen_at"] = time.time()
        record["seen"] = seen or "nothing"
    save()
    if seen is None:
        print(f"no decision within {GIVE_UP_S:.0f} s", file=sys.stderr)
        return 1
    print(f"early accuracy {early:.4f}: decision {seen}", flush=True)
    if seen != "continue":
        return 0

    time.sleep(rest)
    final = round(min(1.0, early + rng.uniform(0.0, 0.1)), 4)
    try:
        writer.set_attrs(
            {
                ATTRS["FINAL_ACCURACY"]: final,
                ATTRS["TEST_ACCURACY"]: round(final - rng.uniform(0.0, 0.03), 4),
                ATTRS["STEPS_DONE"]: TOTAL_STEPS,
                ATTRS["OUTCOME"]: "completed",  # last: with it the engine may finish the trial
            }
        )
    except Ended as error:  # trained on past a decision not made yet, which then pruned it (HTTPS only)
        print(f"{error}: stopping", file=sys.stderr)
        record["seen"] = "ended-before-its-results"
        save()
        return 0
    record["finished_at"] = time.time()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
