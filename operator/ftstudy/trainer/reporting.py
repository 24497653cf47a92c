"""How a trial's trainer talks to its study: the reporting protocol shared with the study engine.

The trainer is given an Optuna storage URL, a study name and a trial number. It reads its hyperparameters from that
trial, writes the early accuracy as the trial's intermediate value at the early step, and everything else as trial
user attributes (names in ``UserAttr``). It never finishes the trial: the study engine does, after it has decided.
Every few steps it reads the trial's state; PRUNED means the study cancelled it and it must stop.

Two ways to the study (docs/protocol.md): in a cluster, ``HttpReporter`` posts each report to the operator's
endpoint over HTTPS and holds no database credentials; ``ftstudy run`` (and an operator started without
``--report-url``) gives the trainer the storage URL and ``OptunaReporter`` writes to the database itself. Both
retry through transient outages (``ftstudy.retry``).
"""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ftstudy.db import engine_kwargs
from ftstudy.notify import notify
from ftstudy.retry import RetryPolicy

log = logging.getLogger(__name__)


# A screened trial's checkpoint, inside its run directory (ftstudy.trainer.checkpoint writes it; the engine deletes a
# pruned trial's).
CHECKPOINT_DIRECTORY = "checkpoint"
# Each scored page's accuracy at the end of a full run, by split (a file in the trial's output directory, not a
# storage attribute): what the report and the benches resample for intervals on differences over the same pages.
PAGE_SCORES = "page_scores.json"


class UserAttr(StrEnum):
    """Names of the trial user attributes the trainer writes; the engine reads the same names."""

    EARLY_STEP = "early_step"
    EARLY_ACCURACY = "early_accuracy"
    EARLY_PER_ATTRIBUTE = "early_per_attribute"
    EARLY_ADAPTER = "early_adapter"
    CHECKPOINT = "checkpoint"  # a screened trial's checkpoint directory (promotion.mode screen)
    EARLY_REPORTED_AT = "early_reported_at"  # unix seconds, written just before the early accuracy is reported
    TOTAL_STEPS = "total_steps"
    STEPS_DONE = "steps_done"
    FINAL_ACCURACY = "final_accuracy"
    FINAL_PER_ATTRIBUTE = "final_per_attribute"
    TEST_ACCURACY = "test_accuracy"
    TEST_PER_ATTRIBUTE = "test_per_attribute"
    INDEPENDENT_TEST_ACCURACY = "independent_test_accuracy"
    INDEPENDENT_TEST_PER_ATTRIBUTE = "independent_test_per_attribute"
    BEST_EVAL_LOSS = "best_eval_loss"
    BEST_EVAL_LOSS_STEP = "best_eval_loss_step"
    FINAL_ADAPTER = "final_adapter"
    TRAIN_SECONDS = "train_seconds"  # wall time from the first evaluation or step to the end, scoring included
    EVAL_SECONDS = "eval_seconds"  # of which spent scoring (generation and validation loss)
    TRAIN_EXAMPLES = "train_examples"
    RUNG_ACCURACY = "rung_accuracy"  # {step: validation accuracy} at the rungs after the early one (promotion.rungs)
    ACCURACY_AT_STEP = "accuracy_at_step"  # {step: validation accuracy} at training.extraEvalFractions
    ZERO_SHOT_ACCURACY = "zero_shot_accuracy"  # the base model before training (trial 0 scores it)
    ZERO_SHOT_TEST_ACCURACY = "zero_shot_test_accuracy"
    ZERO_SHOT_INDEPENDENT_TEST_ACCURACY = "zero_shot_independent_test_accuracy"
    OUTCOME = "outcome"
    FAILURE_REASON = "failure_reason"
    PREEMPTED_AT_STEPS = "preempted_at_steps"  # the steps after which a SIGTERM from outside checkpointed the trial


class TrialStatus(StrEnum):
    """What the trainer needs to know about its trial: keep going, or stop because the study decided."""

    RUNNING = "running"
    PRUNED = "pruned"
    FINISHED = "finished"


class Reporter(Protocol):
    def params(self) -> dict[str, Any]: ...

    def report_early(self, step: int, accuracy: float) -> None: ...

    def set_attrs(self, attrs: dict[str, Any]) -> None: ...

    def status(self) -> TrialStatus: ...


class OptunaReporter:
    """Reports into a trial of an Optuna RDB study (PostgreSQL through psycopg2, or SQLite)."""

    def __init__(
        self,
        url: str,
        study_name: str,
        trial_number: int,
        retry: RetryPolicy,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        import optuna
        from optuna.storages import RDBStorage

        self.retry = retry
        self.study_name = study_name
        self.defaults = dict(defaults or {})
        self._trial_state = optuna.trial.TrialState
        # A trainer needs one connection; pre-ping replaces connections a database restart has broken.
        kwargs = engine_kwargs(url, pool_size=1, application="ftstudy-trainer")
        self.storage = retry.call(
            "open the study storage", lambda: RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=True)
        )
        try:
            study_id = retry.call("find the study", lambda: self.storage.get_study_id_from_name(study_name))
        except KeyError:
            raise LookupError(f"study {study_name!r} does not exist in the storage") from None
        try:
            self.trial_id = retry.call(
                "find the trial",
                lambda: self.storage.get_trial_id_from_study_id_trial_number(study_id, trial_number),
            )
        except KeyError:
            raise LookupError(f"study {study_name!r} has no trial number {trial_number}") from None

    def params(self) -> dict[str, Any]:
        """The study's fixed hyperparameters, overridden by the ones this trial searched."""
        params: dict[str, Any] = self.retry.call(
            "read the trial's parameters", lambda: self.storage.get_trial_params(self.trial_id)
        )
        return {**self.defaults, **params}

    def report_early(self, step: int, accuracy: float) -> None:
        self.retry.call(
            "report the early accuracy",
            lambda: self.storage.set_trial_intermediate_value(self.trial_id, step, accuracy),
        )
        notify(self.storage.engine, self.study_name)  # committed: the operator decides now, not at its next poll

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self._set_attr(str(key), value)
        if UserAttr.OUTCOME.value in attrs:  # the trial's result is in (or its failure reason)
            notify(self.storage.engine, self.study_name)

    def _set_attr(self, key: str, value: Any) -> None:
        self.retry.call(f"record {key}", lambda: self.storage.set_trial_user_attr(self.trial_id, key, value))

    def status(self) -> TrialStatus:
        state = self.retry.call("read the trial's state", lambda: self.storage.get_trial(self.trial_id).state)
        if state == self._trial_state.PRUNED:
            return TrialStatus.PRUNED
        if state.is_finished():
            return TrialStatus.FINISHED
        return TrialStatus.RUNNING


# In a cluster the trainer reports to the operator over HTTPS (ftstudy.report_protocol); the Job gives it these.
REPORT_URL_ENV = "FTSTUDY_REPORT_URL"  # https://<operator service>:8443
REPORT_CA_ENV = "FTSTUDY_REPORT_CA"  # the CA's certificate, PEM (public): what the endpoint's certificate must chain to
REPORT_TOKEN_ENV = "FTSTUDY_REPORT_TOKEN"  # the projected service-account token's file (the kubelet renews it)
REPORT_TRIAL_ENV = "FTSTUDY_REPORT_TRIAL"  # JSON: namespace, study, studyUID, trial, attempt


class EndpointBusy(ConnectionError):
    """The report endpoint answered "not now" (503: no leader yet, the database away): retried like a refused
    connection."""


class ReportRefused(RuntimeError):
    """The operator refused the report for good (401, 403, 404, 409, 4xx): retrying cannot help."""


class TrialEnded(ReportRefused):
    """The study ended the trial, or launched it anew, before this report arrived (409 ``trial-ended`` or
    ``stale-launch``): a trainer that finished training while the operator was still deciding at the early point, then
    pruned it. Nothing the study wants is lost; the trainer stops as a pruned trial does, not as a failure."""


class HttpReporter:
    """Reports to the operator's report endpoint over HTTPS with the pod's projected token; holds no database
    credentials. Writes are retried through an unreachable operator (a restart, a leader change) until
    ``retry``'s deadline; a state check that cannot reach it says "running" (the next check asks again), so an
    operator away for minutes costs no training.

    One connection is kept open between requests (HTTP/1.1 keep-alive): a trainer checks its state every few
    steps, and a TLS handshake per check cost the operator more CPU than the check itself (docs/benchmarks.md).
    The endpoint closes a connection idle for a while; a request that finds its kept connection closed is sent
    once more on a new one, which is safe because every report sets a value and a state check reads."""

    def __init__(self, url: str, ca_pem: str, token_path: Path, trial: dict[str, Any], retry: RetryPolicy,
                 defaults: dict[str, Any] | None = None, timeout: float = 15.0) -> None:  # fmt: skip
        import ssl
        import urllib.parse

        if not url.startswith("https://"):
            raise ValueError(f"${REPORT_URL_ENV} must be an https:// URL, got {url!r}")
        parsed = urllib.parse.urlsplit(url.rstrip("/") + "/v1/report")
        if not parsed.hostname:
            raise ValueError(f"${REPORT_URL_ENV} names no host: {url!r}")
        self.host, self.port, self.path = parsed.hostname, parsed.port or 443, parsed.path
        self.context = ssl.create_default_context(cadata=ca_pem)  # verification on, against the operator's CA only
        self.token_path = token_path
        self.trial = dict(trial)
        self.retry = retry
        self.defaults = dict(defaults or {})
        self.timeout = timeout
        self._params: dict[str, Any] | None = None
        self._connection: Any = None  # http.client.HTTPSConnection, kept between requests
        self.connections_opened = 0
        self.unreachable_since: float | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _exchange(self, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """One request and its answer, on the kept connection if there is one (once more on a new one if the
        endpoint had closed it), else on a new one."""
        import http.client
        import ssl

        for _ in range(2):
            kept = self._connection is not None
            if not kept:
                self._connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                               context=self.context)  # fmt: skip
                self.connections_opened += 1
            try:
                self._connection.request("POST", self.path, body=data, headers=headers)
                response = self._connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as error:
                self.close()  # nothing left on this connection to trust
                if kept and not isinstance(error, TimeoutError):  # closed while idle (its timeout, a restart)
                    continue
                if isinstance(error, http.client.HTTPException | ssl.SSLEOFError | ssl.SSLZeroReturnError):
                    raise ConnectionError(f"the operator's endpoint broke the connection: "
                                          f"{type(error).__name__}: {error}") from None  # fmt: skip
                raise  # refused, a timeout (both retried), or a certificate not to trust (not retried)
            if response.will_close:
                self.close()
            return response.status, answer
        raise AssertionError("unreachable: the second try is on a new connection")

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        token = self.token_path.read_text().strip()  # read each time: the kubelet rotates it
        data = json.dumps({**self.trial, **body}).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        status, raw = self._exchange(data, headers)
        try:
            answer: dict[str, Any] = json.loads(raw) if raw else {}
        except ValueError:
            answer = {}
        if status == 200:
            return answer
        message = f"{status} {answer.get('reason', 'error')}: {answer.get('error', '')}"
        # A study the operator does not hold (yet: an operator slow to start after its grace) is waited for as a
        # busy endpoint is; past the retries that is an outage (exit 3), which the study, once loaded, relaunches.
        if status in (502, 503, 504) or answer.get("retry") or answer.get("reason") == "no-such-study":
            raise EndpointBusy(message)
        if status == 409 and answer.get("reason") in ("trial-ended", "stale-launch"):
            raise TrialEnded(f"the operator refused the report: {message}")
        raise ReportRefused(f"the operator refused the report: {message}")

    def _call(self, what: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.retry.call(what, lambda: self._post(body))

    def params(self) -> dict[str, Any]:
        if self._params is None:
            answer = self._call("read the trial's parameters", {"kind": "status"})
            if answer.get("state") != TrialStatus.RUNNING.value:
                raise ReportRefused(f"the trial is {answer.get('state')}, not running")
            self._params = dict(answer.get("params") or {})
        return {**self.defaults, **self._params}

    def report_early(self, step: int, accuracy: float) -> None:
        self._call("report the early accuracy", {"kind": "early", "step": step, "accuracy": accuracy})

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        self._call("report results", {"kind": "attrs", "attrs": attrs})

    def status(self) -> TrialStatus:
        import time

        try:
            answer = self._post({"kind": "status"})
        except (OSError, EndpointBusy) as error:
            if self.unreachable_since is None:
                self.unreachable_since = time.monotonic()
                log.warning("cannot reach the operator to check the trial's state (%s); training on", error)
            return TrialStatus.RUNNING
        self.unreachable_since = None
        return TrialStatus(answer.get("state", "running"))


class FollowerReporter:
    """A rank other than 0 of a trial on several devices (``ftstudy.trainer.distributed``): rank 0 reads the
    trial's parameters and reports for all; this one says nothing."""

    def params(self) -> dict[str, Any]:
        return {}

    def report_early(self, step: int, accuracy: float) -> None:
        return None

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        return None

    def status(self) -> TrialStatus:
        return TrialStatus.RUNNING


class LocalReporter:
    """No study: parameters come from the command line and results go only to the run directory.

    Used for a single trainer run (and the benchmarks); never pruned.
    """

    def __init__(self, params: dict[str, Any], directory: Path) -> None:
        self._params = params
        self.path = directory / "reported.json"
        self.reported: dict[str, Any] = {"intermediate": {}, "user_attrs": {}}

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def report_early(self, step: int, accuracy: float) -> None:
        self.reported["intermediate"][str(step)] = accuracy
        self._save()

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        self.reported["user_attrs"].update(attrs)
        self._save()

    def status(self) -> TrialStatus:
        return TrialStatus.RUNNING

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.reported, indent=2, sort_keys=True))
        tmp.replace(self.path)
