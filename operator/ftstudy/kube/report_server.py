"""The operator's report endpoint: trials post their reports here over HTTPS instead of writing to the database.

``POST /v1/report`` with ``Authorization: Bearer <projected service-account token>`` and a JSON body
(``ftstudy.report_protocol``). For each request: the body is parsed, the token reviewed by the API server
(TokenReview, our audience), the pod it is bound to read and matched with the trial the body names, and only then
is the report written to the study's Optuna storage, through the operator's own connection pool, and the study's
loop woken (the notified path: no poll in between). Reports are idempotent: a value is set, never added, so a
retried request does no harm.

Only the leader serves: it is the one process that writes trial state (a report that lands while the leader prunes
the same trial is ordered by one database, and refused once the trial has ended), and it already holds every
study's storage and loop. A standby does not listen, so the Service's endpoints (readiness on this port) lead to the
leader only; a trainer whose request finds no leader retries with backoff until the next one serves.

TokenReviews and pods are cached briefly (a trainer reports a handful of times, and checks its state every few
steps): a token's review for a minute, never past the token's own expiry. A token stays valid only while its pod
exists (the API server checks the bound object), so a cached review is trusted only for a pod the operator's pod
watch still holds; for any other (deleted, or not seen yet) the token is reviewed again, and the API server refuses
it once its pod is gone. ``check_launch`` refuses a report for an ended trial or an older launch whatever the
caches say.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from ftstudy import report_protocol as rp
from ftstudy.kube import names
from ftstudy.kube.api import ApiError, Kube, Unreachable, path
from ftstudy.kube.certs import Bundle
from ftstudy.kube.metrics import METRICS, OperatorMetrics
from ftstudy.study_store import StudyStore

log = logging.getLogger(__name__)

REPORT_PATH = "/v1/report"
REVIEW_CACHE_SECONDS = 60.0
UNKNOWN_STUDY_GRACE_SECONDS = 120.0  # after start-up, an unknown study may be one kopf has not listed yet: retry


@dataclass(frozen=True)
class Target:
    """A study the operator reconciles, as the endpoint needs it: its name, its storage (None until the first
    pass opened it), how to wake its loop, and the operator's pods by UID as its pod watch keeps them (or as the
    study's last pass listed them), so that a trainer's token is matched with its pod without a list of pods."""

    namespace: str
    name: str
    store: StudyStore | None
    wake: Callable[[], None]
    pod: Callable[[str], dict[str, Any] | None] = lambda uid: None


def seconds_left(token: str, now: float) -> float | None:
    """The token's remaining life by its ``exp`` claim (read, not verified: the API server verified the token),
    or None if it names none."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"]) - now if isinstance(claims, dict) and "exp" in claims else None
    except (IndexError, ValueError, TypeError, binascii.Error):
        return None


class Reviews:
    """TokenReviews through the API server, each answer kept by the token's hash for ``REVIEW_CACHE_SECONDS`` or
    until the token expires, whichever comes first."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._cache: dict[str, tuple[float, rp.PodIdentity]] = {}  # until (monotonic), who
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> str:
        """Kept by hash: the cache never holds a token a heap dump could lift."""
        return hashlib.sha256(token.encode()).hexdigest()

    def kept(self, token: str) -> rp.PodIdentity | None:
        """The answer kept for ``token``, if it has not run out."""
        with self._lock:
            cached = self._cache.get(self._key(token))
        return cached[1] if cached is not None and time.monotonic() < cached[0] else None

    def who(self, token: str, fresh: bool = False) -> rp.PodIdentity:
        """``fresh``: ask the API server even if an answer is kept (the pod may be gone)."""
        kept = None if fresh else self.kept(token)
        if kept is not None:
            return kept
        now = time.monotonic()
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [rp.AUDIENCE]},
        }
        try:
            answer = self.kube.create("/apis/authentication.k8s.io/v1/tokenreviews", review, timeout=10)
        except (ApiError, Unreachable) as error:
            raise rp.Refused(503, "review-failed", f"the API server could not review the token: {error}") from None
        found = rp.identity(answer.get("status") or {})
        left = seconds_left(token, time.time())
        keep = REVIEW_CACHE_SECONDS if left is None else min(REVIEW_CACHE_SECONDS, left)
        with self._lock:
            if len(self._cache) > 10_000:  # expired entries of long-gone pods
                self._cache = {k: v for k, v in self._cache.items() if now < v[0]}
            self._cache[self._key(token)] = (now + keep, found)
        return found


class Pods:
    """The pods tokens are bound to, by UID (listed by name: the operator's Role lists pods, it gets none)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._cache: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def of(self, who: rp.PodIdentity, seen: Callable[[str], dict[str, Any] | None] = lambda uid: None
           ) -> dict[str, Any] | None:  # fmt: skip
        """``seen``: the pods the operator already holds (``Target.pod``), asked before the API server."""
        with self._lock:
            cached = self._cache.get(who.pod_uid)
        if cached is None:
            cached = seen(who.pod_uid)
        if cached is not None:
            return cached
        try:
            items = self.kube.list(
                path("", "v1", "pods", who.namespace), field_selector=f"metadata.name={who.pod_name}"
            )
        except (ApiError, Unreachable) as error:
            raise rp.Refused(503, "pod-unreadable", f"could not read pod {who.pod_name}: {error}") from None
        pod = next((p for p in items if (p.get("metadata") or {}).get("uid") == who.pod_uid), None)
        if pod is not None:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[who.pod_uid] = pod
        return pod if pod is not None else next(iter(items), None)


def expected_labels(ref: rp.TrialRef) -> dict[str, str]:
    """The labels of the pod of launch ``ref.attempt`` of trial ``ref.trial``, as the operator's Job gives them."""
    return {
        names.MANAGED_BY: names.OPERATOR,
        names.COMPONENT: names.TRIAL_COMPONENT,
        names.STUDY: ref.study,
        names.STUDY_UID: ref.study_uid,
        names.TRIAL: str(ref.trial),
        names.ATTEMPT: str(ref.attempt),
        "job-name": names.job_name(ref.study, ref.trial, ref.attempt),
    }


class ReportHandler:
    """One request, start to end: what ``handle`` returns is the HTTP status and the JSON answer."""

    def __init__(self, kube: Kube, lookup: Callable[[str], Target | None], metrics: OperatorMetrics = METRICS) -> None:
        self.reviews = Reviews(kube)
        self.pods = Pods(kube)
        self.lookup = lookup
        self.metrics = metrics
        self.started = time.monotonic()

    def handle(self, authorization: str, body: bytes) -> tuple[int, bytes]:
        kind = "unknown"
        try:
            request = rp.parse(body)
            kind = request.kind.value
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise rp.Refused(401, "no-token", "no bearer token: a trial presents its projected token")
            token = token.strip()
            kept = self.reviews.kept(token)
            who = kept or self.reviews.who(token, fresh=True)
            rp.check_namespace(request.ref, who)
            target = self._target(request.ref)
            if kept is not None and target.pod(who.pod_uid) is None:  # deleted, or not watched yet: still so?
                who = self.reviews.who(token, fresh=True)
            rp.authorize(request.ref, who, self.pods.of(who, target.pod), expected_labels(request.ref))
            answer = self._apply(request, target)
        except rp.Refused as refused:
            self.metrics.reports.labels(kind, refused.reason).inc()
            (log.debug if refused.retryable else log.warning)(
                "report refused (%d %s): %s", refused.status, refused.reason, refused.message
            )
            return refused.status, rp.answer(False, reason=refused.reason, error=refused.message,
                                              retry=refused.retryable)  # fmt: skip
        except Exception as error:  # the database, most likely: the trainer retries
            self.metrics.reports.labels(kind, "error").inc()
            log.warning("report failed: %s: %s", type(error).__name__, error)
            return 503, rp.answer(False, reason="error", error=f"could not record it ({type(error).__name__}); retry",
                                  retry=True)  # fmt: skip
        self.metrics.reports.labels(kind, "accepted").inc()
        return 200, answer

    def _target(self, ref: rp.TrialRef) -> Target:
        target = self.lookup(ref.study_uid)
        if target is None or (target.namespace, target.name) != (ref.namespace, ref.study):
            if target is None and time.monotonic() - self.started < UNKNOWN_STUDY_GRACE_SECONDS:
                raise rp.Refused(503, "not-ready", "the operator has not loaded this study yet")
            raise rp.Refused(404, "no-such-study", f"no study {ref.namespace}/{ref.study} with UID {ref.study_uid}")
        if target.store is None:
            raise rp.Refused(503, "not-ready", "the operator has not opened this study's storage yet")
        return target

    def _apply(self, request: rp.Request, target: Target) -> bytes:
        store = target.store
        assert store is not None
        ref = request.ref
        standing = store.standing(ref.trial)  # from the store's memory: a state check every few steps costs no read
        launch = standing.launch  # recorded just after the launch: a newer one may not be yet
        stale = ref.attempt < launch
        if request.kind is rp.Kind.STATUS:
            state = "running"
            if standing.state == TrialState.PRUNED or stale:
                state = "pruned"
            elif standing.state.is_finished():
                state = "finished"
            return rp.answer(state=state, params=dict(standing.params))
        rp.check_launch(ref, standing.state.is_finished(), launch)
        try:
            if request.kind is rp.Kind.EARLY:
                assert request.step is not None and request.accuracy is not None
                store.record_early(ref.trial, request.step, request.accuracy)
            else:
                store.record_attrs(ref.trial, request.attrs)
        except UpdateFinishedTrialError:  # the study ended it between the check and the write: as if checked after
            rp.check_launch(ref, True, launch)
        if rp.wakes_the_study(request):
            target.wake()  # the decision follows now, not at the next poll
        return rp.answer()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    # a trainer keeps its connection between requests (a state check every few steps); one idle this long is closed,
    # so a trainer scoring for minutes holds no thread here (it opens a new connection for its next report)
    idle_seconds = 30.0

    def __init__(self, address: tuple[str, int], handler: ReportHandler, context: ssl.SSLContext) -> None:
        self.report_handler = handler
        self.context = context
        super().__init__(address, _HTTPHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed outside the handler's own answers: most often a trial pod stopped (cancelled,
        preempted) while its request was in flight, which is no fault of anyone's. One line, not socketserver's
        traceback on stderr; a refused or failed report has its own warning in ``ReportHandler``."""
        error = sys.exc_info()[1]
        log.info("report connection from %s ended early: %s: %s", client_address[0] if client_address else "?",
                 type(error).__name__, error)  # fmt: skip

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        sock.settimeout(self.idle_seconds)
        # the handshake runs in the request's thread (on its first read), so a slow client holds no one else up;
        # each connection takes the context current now, so a renewed certificate is served without a restart
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


class _HTTPHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        if self.path != REPORT_PATH:
            self._send(404, rp.answer(False, reason="not-found", error=f"POST {REPORT_PATH}"))
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(411, rp.answer(False, reason="no-length", error="Content-Length is required"))
            return
        if length < 0 or length > rp.MAX_BODY_BYTES:
            self.server.report_handler.metrics.reports.labels("unknown", "too-large").inc()
            if length <= 4 * rp.MAX_BODY_BYTES:  # read it, so the client hears the answer instead of a reset
                self.rfile.read(length)
            self._send(413, rp.answer(False, reason="too-large", error=f"at most {rp.MAX_BODY_BYTES} bytes"))
            self.close_connection = True
            return
        body = self.rfile.read(length)
        status, answer = self.server.report_handler.handle(self.headers.get("Authorization", ""), body)
        self._send(status, answer)

    def do_GET(self) -> None:
        if self.path == "/readyz":  # the leader is serving: the Service may send trials here
            self._send(200, rp.answer())
        else:
            self._send(404, rp.answer(False, reason="not-found", error=f"POST {REPORT_PATH}"))

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # every request in the log would drown the rest
        log.debug("%s " + format, self.address_string(), *args)


def server_context(bundle: Bundle) -> ssl.SSLContext:
    """TLS 1.2 or newer with the bundle's serving certificate (its chain: the certificate itself, signed by the CA
    the trainers were given)."""
    import os
    import tempfile

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads files only: a private directory, removed at once
    with tempfile.TemporaryDirectory(prefix="ftstudy-tls-") as directory:
        cert, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        for file, text in ((cert, bundle.cert_pem), (key, bundle.key_pem)):
            with open(os.open(file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as out:
                out.write(text)
        context.load_cert_chain(cert, key)
    return context


class ReportServer:
    """The endpoint on ``address:port``, in a thread of its own; ``renew(bundle)`` serves a new certificate."""

    def __init__(self, handler: ReportHandler, bundle: Bundle, address: str, port: int) -> None:
        self.server = _Server((address, port), handler, server_context(bundle))
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="ftstudy-reports", daemon=True)

    def start(self) -> ReportServer:
        self._thread.start()
        return self

    def renew(self, bundle: Bundle) -> None:
        self.server.context = server_context(bundle)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
