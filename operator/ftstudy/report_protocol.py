"""The trial report protocol over HTTPS, as pure decisions: what a request says, who sent it, and whether to take it.

In a cluster a trial holds no database credentials (docs/protocol.md): its trainer posts each report to the
operator's report endpoint, authenticated by a projected service-account token bound to its pod. This module does no
I/O; ``ftstudy.kube.report_server`` feeds it the request body, the API server's TokenReview answer, the pod the token
is bound to and the trial's state, and carries out what it decides. Every refusal is a ``Refused`` with the HTTP
status and a reason that names the cause, so the trainer's log and the operator's metric say why.

One request, one trial: the body names the trial it reports for (namespace, study, study UID, trial number and
launch), and the token's pod must be that trial's pod, created by the operator's Job for that very launch. Within
one namespace, whoever may create Jobs and pods there could forge a pod with those labels; that is no more than a
study's author can already do to their own study. Across namespaces nothing can: the pod's namespace comes from the
token, which the API server signed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# The audience of the projected token a trial pod presents: a token minted for the API server (or anything else)
# is refused, and ours is no use to anything else.
AUDIENCE = "ftstudy.io/reports"
MAX_BODY_BYTES = 256 * 1024  # a report is a few kilobytes; per-attribute mappings of the largest task fit easily
POD_NAME_CLAIM = "authentication.kubernetes.io/pod-name"
POD_UID_CLAIM = "authentication.kubernetes.io/pod-uid"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


class Kind(StrEnum):
    """What a request asks: the trial's parameters and state (``status``, also the cancellation check), or to
    record its early accuracy (``early``) or results (``attrs``)."""

    STATUS = "status"
    EARLY = "early"
    ATTRS = "attrs"


class Refused(Exception):
    """A request not taken: ``status`` is the HTTP status (401 who are you, 403 not yours, 404 no such study here,
    409 the trial is no longer running or the launch is stale, 413/400 the body, 503 not ready: retry), ``reason``
    a short word for the metric."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status == 503


@dataclass(frozen=True)
class TrialRef:
    """The trial a request is for: a launch (``attempt``, numbered over the trial's life) of one trial."""

    namespace: str
    study: str
    study_uid: str
    trial: int
    attempt: int


@dataclass(frozen=True)
class Request:
    ref: TrialRef
    kind: Kind
    step: int | None = None
    accuracy: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


# The user attribute that carries a trial's result or failure (ftstudy.trainer.reporting.UserAttr.OUTCOME).
OUTCOME_ATTR = "outcome"


def wakes_the_study(request: Request) -> bool:
    """Whether a written report should wake its study's pass now: only what a decision waits for, the early accuracy
    and the trial's outcome, as the database path's NOTIFY does (``OptunaReporter``). Every other attribute (the
    step counts, timings, the early scores of other splits) is read at the study's next pass; waking it for each
    would run a pass, with its Job and pod lists, per attribute (the bench saw a third more API requests per trial)."""
    return request.kind is Kind.EARLY or (request.kind is Kind.ATTRS and OUTCOME_ATTR in request.attrs)


@dataclass(frozen=True)
class PodIdentity:
    """Who the token is: a service account, and the pod it is bound to."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str


def _bad(message: str) -> Refused:
    return Refused(400, "malformed", message)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > 253:
        raise _bad(f"{key!r} must be a non-empty string")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(f"{key!r} must be a whole number >= 0")
    return value


def parse(body: bytes) -> Request:
    """The request in ``body`` (JSON), or ``Refused`` 413/400 naming what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise Refused(413, "too-large", f"the report is {len(body)} bytes; at most {MAX_BODY_BYTES} are taken")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _bad(f"the report is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise _bad("the report must be a JSON object")
    try:
        kind = Kind(str(data.get("kind")))
    except ValueError:
        raise _bad(f"'kind' must be one of {', '.join(k.value for k in Kind)}") from None
    ref = TrialRef(_text(data, "namespace"), _text(data, "study"), _text(data, "studyUID"), _count(data, "trial"),
                   _count(data, "attempt"))  # fmt: skip
    if kind is Kind.EARLY:
        accuracy = data.get("accuracy")
        if not isinstance(accuracy, int | float) or isinstance(accuracy, bool) or not math.isfinite(accuracy):
            raise _bad("'accuracy' must be a finite number")
        return Request(ref, kind, step=_count(data, "step"), accuracy=float(accuracy))
    if kind is Kind.ATTRS:
        attrs = data.get("attrs")
        if not isinstance(attrs, dict) or not attrs or not all(isinstance(k, str) and k for k in attrs):
            raise _bad("'attrs' must be a non-empty JSON object")
        return Request(ref, kind, attrs=attrs)
    return Request(ref, kind)


def identity(review_status: dict[str, Any]) -> PodIdentity:
    """Who a TokenReview's ``status`` says the token is; ``Refused`` 401 unless it is a service account's token,
    for our audience, bound to a pod."""
    if not review_status.get("authenticated"):
        error = review_status.get("error") or "the API server did not authenticate it"
        raise Refused(401, "unauthenticated", f"the token was refused: {error}")
    if AUDIENCE not in (review_status.get("audiences") or []):
        raise Refused(401, "audience", f"the token is not for audience {AUDIENCE!r}")
    user = review_status.get("user") or {}
    username = str(user.get("username") or "")
    if not username.startswith(SERVICE_ACCOUNT_PREFIX) or username.count(":") != 3:
        raise Refused(401, "not-a-pod", f"the token is {username!r}'s, not a service account's")
    namespace, account = username[len(SERVICE_ACCOUNT_PREFIX) :].split(":")
    extra = user.get("extra") or {}
    pod_name = next(iter(extra.get(POD_NAME_CLAIM) or []), "")
    pod_uid = next(iter(extra.get(POD_UID_CLAIM) or []), "")
    if not pod_name or not pod_uid:
        raise Refused(401, "not-a-pod", "the token is not bound to a pod (a projected service-account token is)")
    return PodIdentity(namespace, account, pod_name, pod_uid)


def check_namespace(ref: TrialRef, who: PodIdentity) -> None:
    """First, before the pod is read: a pod reports only for studies of its own namespace."""
    if who.namespace != ref.namespace:
        raise Refused(403, "other-namespace", f"a pod of namespace {who.namespace} reported for {ref.namespace}")


def authorize(ref: TrialRef, who: PodIdentity, pod: dict[str, Any] | None, labels: dict[str, str]) -> None:
    """Is ``who`` the pod of the trial launch ``ref`` names? ``pod``: the pod of that name in the token's namespace
    as the API server has it now (None: gone); ``labels``: the labels the operator puts on that launch's Job and pod
    (``ftstudy.kube.names.labels``), with ``job-name``, the launch's Job. ``Refused`` 403 if not."""
    check_namespace(ref, who)
    if pod is None:
        raise Refused(403, "pod-gone", f"pod {who.namespace}/{who.pod_name} no longer exists")
    metadata = pod.get("metadata") or {}
    if metadata.get("uid") != who.pod_uid:
        raise Refused(403, "pod-replaced", f"pod {who.namespace}/{who.pod_name} is not the one the token is bound to")
    found = metadata.get("labels") or {}
    wrong = sorted(key for key, value in labels.items() if found.get(key) != value)
    if wrong:
        raise Refused(403, "other-trial", f"pod {who.pod_name} is not trial {ref.trial} (launch {ref.attempt}) of "
                      f"study {ref.namespace}/{ref.study}: its labels {', '.join(wrong)} differ")  # fmt: skip
    owners = [o for o in metadata.get("ownerReferences") or [] if o.get("controller")]
    if [(o.get("kind"), o.get("name")) for o in owners] != [("Job", labels.get("job-name"))]:
        job = labels.get("job-name")
        raise Refused(403, "not-the-job", f"pod {who.pod_name} was not made by the trial's Job {job}")


def check_launch(ref: TrialRef, finished: bool, current_attempt: int) -> None:
    """A report is taken only while the trial runs, and not from a launch older than the current one: a late report
    of a cancelled or replaced launch must not overwrite what its successor reports. ``current_attempt``: the
    newest launch the study's storage records (a launch is recorded just after its Job is created, so a newer
    one may not be yet: the pod's checks stand for it)."""
    if finished:
        raise Refused(409, "trial-ended", f"trial {ref.trial} of {ref.namespace}/{ref.study} has ended")
    if ref.attempt < current_attempt:
        raise Refused(409, "stale-launch", f"launch {ref.attempt} of trial {ref.trial} is older than the current "
                      f"one ({current_attempt})")  # fmt: skip


def answer(ok: bool = True, **data: Any) -> bytes:
    return json.dumps({"ok": ok, **data}, sort_keys=True).encode()
