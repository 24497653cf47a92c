"""The report protocol's decisions (``ftstudy.report_protocol``), fed the shapes the API server answers with.

The same checks run against the real API server in tests/test_reports_cluster.py; here each refusal is pinned to
its status and reason, which are what the trainer's log and the operator's metric show.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import threading
import time
from typing import Any

import pytest

from ftstudy import report_protocol as rp
from ftstudy.kube import certs, report_server
from ftstudy.kube.report_server import expected_labels

REF = rp.TrialRef("team-a", "study", "uid-1", 3, 1)
WHO = rp.PodIdentity("team-a", "default", "study-t3-a1-xyz", "pod-uid")


def body(**fields: Any) -> bytes:
    base = {"namespace": "team-a", "study": "study", "studyUID": "uid-1", "trial": 3, "attempt": 1}
    return json.dumps({**base, **fields}).encode()


def refused(call: Any, *args: Any) -> rp.Refused:
    with pytest.raises(rp.Refused) as caught:
        call(*args)
    return caught.value


def test_requests_parse_and_bad_ones_are_refused_with_the_cause() -> None:
    early = rp.parse(body(kind="early", step=3, accuracy=0.5))
    assert (early.ref, early.kind, early.step, early.accuracy) == (REF, rp.Kind.EARLY, 3, 0.5)
    assert rp.parse(body(kind="attrs", attrs={"outcome": "completed"})).attrs == {"outcome": "completed"}
    assert rp.parse(body(kind="status")).kind is rp.Kind.STATUS
    cases = {
        b"not json": "not JSON",
        b"[1]": "JSON object",
        body(kind="delete"): "'kind'",
        body(kind="early", step=3, accuracy=float("nan")): "finite",
        body(kind="early", step=-1, accuracy=0.5): "'step'",
        body(kind="attrs", attrs={}): "'attrs'",
        body(kind="status", trial="3"): "'trial'",
        body(kind="status", studyUID=""): "'studyUID'",
    }
    for raw, words in cases.items():
        error = refused(rp.parse, raw)
        assert (error.status, error.reason) == (400, "malformed") and words in error.message, raw
    large = refused(rp.parse, body(kind="attrs", attrs={"x": "y" * rp.MAX_BODY_BYTES}))
    assert (large.status, large.reason) == (413, "too-large")


def review(**user: Any) -> dict[str, Any]:
    extra = {rp.POD_NAME_CLAIM: [WHO.pod_name], rp.POD_UID_CLAIM: [WHO.pod_uid]}
    return {"authenticated": True, "audiences": [rp.AUDIENCE],
            "user": {"username": "system:serviceaccount:team-a:default", "extra": extra, **user}}  # fmt: skip


def test_only_a_pod_bound_token_for_our_audience_is_someone() -> None:
    assert rp.identity(review()) == WHO
    assert refused(rp.identity, {"authenticated": False, "error": "token expired"}).message.endswith("token expired")
    assert refused(rp.identity, {**review(), "audiences": ["https://kubernetes.default.svc"]}).reason == "audience"
    assert refused(rp.identity, review(username="alice")).reason == "not-a-pod"
    assert refused(rp.identity, review(extra={})).reason == "not-a-pod"
    assert all(refused(rp.identity, r).status == 401 for r in ({"authenticated": False}, review(username="alice")))


def jwt(**claims: Any) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


class ReviewingApiServer:
    """The one call ``Reviews`` makes, answered as the API server answers a pod-bound token, and counted."""

    def __init__(self) -> None:
        self.reviews = 0

    def create(self, url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.reviews += 1
        return {"status": review()}


def test_a_review_is_kept_for_a_minute_and_never_past_the_tokens_expiry() -> None:
    now = time.time()
    assert report_server.seconds_left(jwt(exp=int(now) + 30), now) == pytest.approx(30, abs=1)
    assert report_server.seconds_left("not-a-jwt", now) is None
    api = ReviewingApiServer()
    reviews = report_server.Reviews(api)  # type: ignore[arg-type]
    long_lived, short_lived = jwt(exp=int(now) + 3600), jwt(exp=int(now) + 1)
    for _ in range(2):
        assert reviews.who(long_lived) == WHO
    assert api.reviews == 1, "kept"
    assert reviews.who(long_lived, fresh=True) == WHO and api.reviews == 2, "asked again when told to"
    reviews.who(short_lived)
    time.sleep(1.2)
    reviews.who(short_lived)
    assert api.reviews == 4, "a review is not kept past the token's expiry"


def trial_pod(**metadata: Any) -> dict[str, Any]:
    labels = expected_labels(REF)
    owner = {"kind": "Job", "name": labels["job-name"], "controller": True}
    return {"metadata": {"uid": WHO.pod_uid, "labels": labels, "ownerReferences": [owner], **metadata}}


def test_a_report_is_taken_only_from_the_pod_of_the_launch_it_names() -> None:
    labels = expected_labels(REF)
    rp.authorize(REF, WHO, trial_pod(), labels)
    other_trial = {**labels, "ftstudy.io/trial": "4"}
    cases = {
        "other-namespace": (rp.PodIdentity("team-b", "default", WHO.pod_name, WHO.pod_uid), trial_pod()),
        "pod-gone": (WHO, None),
        "pod-replaced": (WHO, trial_pod(uid="another")),
        "other-trial": (WHO, trial_pod(labels=other_trial)),
        "not-the-job": (WHO, trial_pod(ownerReferences=[{"kind": "Job", "name": "mine", "controller": True}])),
    }
    for reason, (who, pod) in cases.items():
        error = refused(rp.authorize, REF, who, pod, labels)
        assert (error.status, error.reason) == (403, reason)


def test_an_ended_trial_or_an_older_launch_takes_no_report() -> None:
    rp.check_launch(REF, finished=False, current_attempt=1)
    rp.check_launch(REF, finished=False, current_attempt=0)  # the launch is not recorded yet: the pod's checks stand
    assert refused(rp.check_launch, REF, True, 1).status == 409
    assert refused(rp.check_launch, REF, False, 2).reason == "stale-launch"


def test_only_the_early_accuracy_and_the_outcome_wake_the_study() -> None:
    from ftstudy.trainer.reporting import UserAttr

    assert UserAttr.OUTCOME.value == rp.OUTCOME_ATTR
    assert rp.wakes_the_study(rp.parse(body(kind="early", step=20, accuracy=0.5)))
    assert rp.wakes_the_study(rp.parse(body(kind="attrs", attrs={"steps_done": 100, "outcome": "completed"})))
    assert not rp.wakes_the_study(rp.parse(body(kind="attrs", attrs={"total_steps": 100, "early_step": 20})))
    assert not rp.wakes_the_study(rp.parse(body(kind="status")))


def test_a_trial_gone_in_the_middle_of_its_request_is_one_line_in_the_log(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    import ssl

    from ftstudy.kube import report_server

    server = object.__new__(report_server._Server)  # no socket needed: only what it does with the error
    try:
        raise ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    except ssl.SSLEOFError:
        with caplog.at_level("INFO", logger="ftstudy.kube.report_server"):
            server.handle_error(None, ("10.0.0.7", 41234))
    assert "report connection from 10.0.0.7 ended early: SSLEOFError" in caplog.text
    assert "Traceback" not in capsys.readouterr().err


def test_the_serving_certificate_is_renewed_before_it_expires_and_keeps_its_ca() -> None:
    now = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
    ca, ca_key = certs.make_ca(now)
    cert, key = certs.make_serving(ca, ca_key, ["ftstudy-operator.ftstudy.svc", "127.0.0.1"], now)
    bundle = certs.Bundle(ca, ca_key, cert, key)
    hosts = ["ftstudy-operator.ftstudy.svc", "127.0.0.1"]
    assert certs.renewal_due(bundle, hosts, now + dt.timedelta(days=59)) is None
    assert "expires" in (certs.renewal_due(bundle, hosts, now + dt.timedelta(days=61)) or "")
    assert "names" in (certs.renewal_due(bundle, ["other.svc"], now) or "")
    other_ca, other_key = certs.make_ca(now)
    assert "CA" in (certs.renewal_due(certs.Bundle(other_ca, other_key, cert, key), hosts, now) or "")


def endpoint(handler: Any, idle_seconds: float) -> tuple[report_server.ReportServer, str]:
    """The report endpoint's HTTPS server as it is, in front of ``handler`` (what it does with a report is not these
    tests'), with a fresh CA; not started yet. Returns it and the CA's certificate."""
    now = dt.datetime.now(dt.UTC)
    ca, ca_key = certs.make_ca(now)
    cert, key = certs.make_serving(ca, ca_key, ["127.0.0.1"], now)
    server = report_server.ReportServer(handler, certs.Bundle(ca, ca_key, cert, key), "127.0.0.1", 0)
    server.server.idle_seconds = idle_seconds
    return server, ca


def reporter_to(server: report_server.ReportServer, ca: str, tmp_path: Any, deadline: float) -> Any:
    """A trainer's reporter (trial 3) to ``server``, its token in ``tmp_path``, retrying writes for ``deadline`` s."""
    from ftstudy.retry import RetryPolicy
    from ftstudy.trainer.reporting import HttpReporter

    token = tmp_path / "token"
    token.write_text("the-token\n")
    return HttpReporter(f"https://127.0.0.1:{server.port}", ca, token, {"trial": 3},
                        RetryPolicy(deadline_seconds=deadline, first_delay=0.05))  # fmt: skip


def test_a_trainer_keeps_one_connection_and_opens_another_when_the_endpoint_closed_it(tmp_path: Any) -> None:
    """Each TLS handshake cost the operator CPU (docs/benchmarks.md): a trainer's reports and state checks share one
    connection, and one the endpoint closed while idle is replaced without the request failing. A report refused
    because the study has ended the trial is ``TrialEnded``, which the trainer takes as an end, not a failure."""
    from ftstudy.trainer.reporting import TrialEnded, TrialStatus

    requests: list[dict[str, Any]] = []

    class Answering:  # the endpoint's HTTP and TLS as they are; what it does with a report is not this test's
        metrics = None

        def handle(self, authorization: str, request: bytes) -> tuple[int, bytes]:
            assert authorization == "Bearer the-token"
            requests.append(json.loads(request))
            if "outcome" in requests[-1].get("attrs", {}):  # the study pruned the trial while it trained on
                return 409, rp.answer(False, reason="trial-ended", error="trial 3 of team-a/study has ended")
            return 200, rp.answer(state="running", params={"lr": 0.001})

    server, ca = endpoint(Answering(), idle_seconds=0.5)
    accepted = []
    get_request = server.server.get_request
    server.server.get_request = lambda: accepted.append(1) or get_request()  # type: ignore[method-assign]
    server.start()
    try:
        reporter = reporter_to(server, ca, tmp_path, deadline=5.0)
        assert reporter.params() == {"lr": 0.001}
        for _ in range(5):
            assert reporter.status() is TrialStatus.RUNNING
        reporter.report_early(20, 0.5)
        reporter.set_attrs({"steps_done": 20})
        assert (len(requests), reporter.connections_opened, len(accepted)) == (8, 1, 1)
        time.sleep(1.0)  # the endpoint closes the idle connection: a state check (never retried) still gets through
        assert reporter.status() is TrialStatus.RUNNING and reporter.unreachable_since is None
        reporter.set_attrs({"steps_done": 40})
        assert requests[-1]["attrs"] == {"steps_done": 40}
        assert (len(requests), reporter.connections_opened, len(accepted)) == (10, 2, 2)
        with pytest.raises(TrialEnded):  # the trainer stops as a pruned trial does (exit 0), not as a failure
            reporter.set_attrs({"outcome": "completed"})
        reporter.close()
    finally:
        server.stop()


def test_a_study_the_operator_does_not_hold_yet_is_waited_for_and_a_refusal_for_good_is_not(tmp_path: Any) -> None:
    """404 ``no-such-study`` from an operator slow to load its studies (past its grace) is retried as a busy
    endpoint is (past the retries, exit 3: an outage); 403 is refused for good at once (exit 2)."""
    from ftstudy.trainer.reporting import ReportRefused

    answers = [(404, "no-such-study"), (404, "no-such-study"), (200, ""), (403, "other-trial")]
    asked: list[str] = []

    class Loading:
        metrics = None

        def handle(self, authorization: str, request: bytes) -> tuple[int, bytes]:
            status, reason = answers.pop(0)
            asked.append(reason or "ok")
            return status, rp.answer(status == 200, reason=reason, error="" if status == 200 else reason)

    server, ca = endpoint(Loading(), idle_seconds=5)
    server.start()
    try:
        reporter = reporter_to(server, ca, tmp_path, deadline=10.0)
        reporter.report_early(3, 0.5)
        with pytest.raises(ReportRefused, match="403 other-trial"):
            reporter.report_early(3, 0.5)
        assert asked == ["no-such-study", "no-such-study", "ok", "other-trial"]
        reporter.close()
    finally:
        server.stop()


def trainer_reporting_to(server: report_server.ReportServer, ca: str, trainer_cmd: list[str], dataset_dir: Any,
                         tmp_path: Any) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The real trainer, run to the end as trial 3 of a study, its reports going to ``server`` over HTTPS."""
    from ftstudy.trainer.reporting import REPORT_CA_ENV, REPORT_TOKEN_ENV, REPORT_TRIAL_ENV, REPORT_URL_ENV
    from tests.trainer_runs import RUN

    token = tmp_path / "token"
    token.write_text("the-token\n")
    trial = {"namespace": "team-a", "study": "study", "studyUID": "uid-1", "trial": 3, "attempt": 1}
    env = {**os.environ, REPORT_URL_ENV: f"https://127.0.0.1:{server.port}", REPORT_CA_ENV: ca,
           REPORT_TOKEN_ENV: str(token), REPORT_TRIAL_ENV: json.dumps(trial)}  # fmt: skip
    command = [*trainer_cmd, *RUN, "--data", str(dataset_dir), "--output", str(tmp_path / "run"), "--stage", "full",
               "--report-retry-seconds", "4"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_a_trainer_whose_report_is_refused_for_good_exits_2_which_the_study_does_not_retry(
    trainer_cmd: list[str], dataset_dir: Any, tmp_path: Any
) -> None:
    """A report the endpoint refuses for good (here 403 ``other-trial``: a token of another trial's pod) would be
    refused the same way on every launch: the trainer exits 2, which the study never retries, not 3, which it would
    take for an outage and launch again."""
    from ftstudy.trainer.cli import EXIT_BAD_INPUT

    class Refusing:
        metrics = None

        def handle(self, authorization: str, request: bytes) -> tuple[int, bytes]:
            if json.loads(request)["kind"] == "status":
                return 200, rp.answer(state="running", params={"learning_rate": 0.001, "lora_r": 4})
            return 403, rp.answer(False, reason="other-trial", error="the token is trial 4's pod's, not trial 3's")

    server, ca = endpoint(Refusing(), idle_seconds=5)
    server.start()
    try:
        ran = trainer_reporting_to(server, ca, trainer_cmd, dataset_dir, tmp_path)
    finally:
        server.stop()
    assert ran.returncode == EXIT_BAD_INPUT, ran.stderr[-3000:]
    last = ran.stderr.strip().splitlines()[-1]
    assert "the operator refused the report: 403 other-trial: the token is trial 4's pod's" in last, last


def test_a_trainer_whose_operator_goes_away_trains_on_and_fails_naming_the_endpoint_when_its_report_never_lands(
    trainer_cmd: list[str], dataset_dir: Any, tmp_path: Any
) -> None:
    """The real trainer, reporting over HTTPS: the endpoint answers its parameters, then is gone (an operator
    down for longer than ``--report-retry-seconds``). Its state checks say "running", so it trains on; its next
    report is retried until the deadline, and then the trainer exits 3 (the study could not be told) with the
    reason as its last line, which is what the operator quotes as the trial's failure: not hung."""
    from ftstudy.trainer.cli import EXIT_STORAGE

    server: Any = None
    checks: list[int] = []

    class GoneOnceTraining:  # the parameters and what the trainer says before it trains; then the operator is gone
        metrics = None

        def handle(self, authorization: str, request: bytes) -> tuple[int, bytes]:
            if json.loads(request)["kind"] == "status":
                checks.append(1)
                if len(checks) == 2:  # the first state check while training (the first read the parameters)
                    threading.Thread(target=server.stop, daemon=True).start()
            return 200, rp.answer(state="running", params={"learning_rate": 0.001, "lora_r": 4})

    server, ca = endpoint(GoneOnceTraining(), idle_seconds=0.2)  # the kept connection goes too, as the process
    server.start()
    started = time.monotonic()
    ran = trainer_reporting_to(server, ca, trainer_cmd, dataset_dir, tmp_path)
    assert ran.returncode == EXIT_STORAGE, ran.stderr[-3000:]
    assert time.monotonic() - started < 300
    assert "cannot reach the operator to check the trial's state" in ran.stderr and "training on" in ran.stderr
    assert " train loss " in ran.stderr or "step 3/15" in ran.stderr, "it trained while the operator was away"
    last = ran.stderr.strip().splitlines()[-1]
    assert "the operator's report endpoint unreachable while trying to report" in last, last


def test_a_report_delivered_twice_is_recorded_once(private_database: Any) -> None:
    """A trainer retries a write whose answer it did not get (a timeout, a broken connection): the endpoint may then
    see the same report twice. Each is a write of the same value to the same key, so the second changes nothing."""
    from ftstudy.retry import RetryPolicy
    from ftstudy.spec import FineTuneStudy
    from ftstudy.study_store import StudyStore
    from tests.studies import tiny_study

    study = FineTuneStudy.model_validate(tiny_study("twice"))
    store = StudyStore(private_database.url, "ml.twice", study.spec, RetryPolicy(deadline_seconds=10))
    number, _params = store.ask(False)
    store.record_attempt(number, 1)
    woken: list[int] = []
    target = report_server.Target("ml", "twice", store, lambda: woken.append(1))
    handler = object.__new__(report_server.ReportHandler)  # what it does once a request is authorized: ``_apply``
    trial = {"namespace": "ml", "study": "twice", "studyUID": "uid-1", "trial": number, "attempt": 1}
    early = rp.parse(json.dumps({**trial, "kind": "early", "step": 3, "accuracy": 0.5}).encode())
    result = {"outcome": "completed", "final_accuracy": 0.625, "steps_done": 15}
    final = rp.parse(json.dumps({**trial, "kind": "attrs", "attrs": result}).encode())
    for request in (early, early, final, final):
        assert json.loads(handler._apply(request, target)) == {"ok": True}
    [recorded] = store.trials()
    assert recorded.intermediate_values == {3: 0.5}
    assert {k: recorded.user_attrs[k] for k in result} == result
    assert len(woken) == 4, "each delivery wakes the study; deciding twice on the same record decides the same"
