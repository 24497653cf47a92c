"""Trials that hold no credentials (``--report-url``), on the real control plane with the real trainer.

The operator serves the report endpoint over HTTPS with the certificate it made in its TLS Secret; trial pods get
the endpoint's URL, its CA and a projected service-account token for the report audience (minted by the simulated
kubelet through the real TokenRequest API, bound to the pod), and no storage URL. A study runs to the end that way.
Then requests are forged as a tenant would: with no token, a token for the API server's audience, a trial's token
claiming another trial, a pod of another namespace claiming this study's trial, an oversized body. Each is refused
with its status and reason, and nothing of the study changes.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ftstudy import report_protocol as rp
from ftstudy.kube import names
from tests.cluster.control_plane import free_port
from tests.cluster.gpu_nodes import GpuNodes
from tests.test_hardening import held_after
from tests.test_operator import (
    REPORT_TLS_SECRET,
    SA,
    Operators,
    apply,
    diagnosis,
    get_study,
    study_manifest,
    wait_for,
    wait_for_phase,
)

from .test_operator import optuna_trials

FORGED_STEP = 99_999


@pytest.fixture
def reporting_operators(operators: Operators) -> Iterator[Operators]:
    undo = operators.enable_reports()
    yield operators
    operators.stop_all()
    undo()


class Endpoint:
    """Requests to the operator's report endpoint, verified against the CA in its Secret."""

    def __init__(self, url: str, ca_pem: str) -> None:
        self.url = url + "/v1/report"
        self.context = ssl.create_default_context(cadata=ca_pem)

    def post(self, body: dict[str, Any] | bytes, token: str | None) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(self.url, data=data, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.context) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


def token(operators: Operators, namespace: str, pod: dict[str, Any], audience: str = rp.AUDIENCE) -> str:
    """A token bound to ``pod``, as the kubelet would project it (``kubectl create token``, the TokenRequest API)."""
    meta = pod["metadata"]
    return operators.plane.kubectl(
        "create", "token", pod["spec"].get("serviceAccountName") or "default", "-n", namespace,
        f"--audience={audience}", "--bound-object-kind=Pod", f"--bound-object-name={meta['name']}",
        f"--bound-object-uid={meta['uid']}", "--duration=10m",
    ).stdout.strip()  # fmt: skip


def pods(operators: Operators, namespace: str, selector: str) -> list[dict[str, Any]]:
    result = operators.plane.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items


def intruder_pod(operators: Operators, namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod that never runs (no node matches), with ``labels``: a token can be bound to it all the same."""
    security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "intruder", "namespace": namespace, "labels": labels or {}},
        "spec": {
            "nodeSelector": {"ftstudy.io/nowhere": "true"},
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "ftstudy/trainer:test", "securityContext": security}],
        },
    }
    operators.plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    pod: dict[str, Any] = json.loads(
        operators.plane.kubectl("get", "pod", "intruder", "-n", namespace, "-o", "json").stdout
    )
    return pod


def test_trials_report_over_https_and_forged_reports_change_nothing(
    reporting_operators: Operators,
    gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes],
    postgres_url: str,
    tmp_path: Path,
) -> None:
    ops, plane, ns = reporting_operators, reporting_operators.plane, reporting_operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 2})
    metrics_port = free_port()
    ops.extra_args += ["--metrics-port", str(metrics_port)]  # after the harness's own --metrics-port 0: it wins
    ops.start()
    name = "reports"
    apply(plane, ns, study_manifest(name, tmp_path / "artifacts", budget={"maxTrials": 3, "parallelism": 2}))
    study = wait_for_phase(ops, name, ("Succeeded", "Failed"), 300, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert study["status"]["trials"]["completed"] >= 1

    # the trials reported through the endpoint: their pods had no way to the database
    trial_pods = pods(ops, ns, "app.kubernetes.io/component=trial")
    assert len(trial_pods) == 3
    for pod in trial_pods:
        container = pod["spec"]["containers"][0]
        env = {e["name"] for e in container["env"]}
        assert "FTSTUDY_STORAGE_URL" not in env and "FTSTUDY_REPORT_URL" in env, env
        assert not any("secretKeyRef" in (e.get("valueFrom") or {}) for e in container["env"])
        assert pod["spec"]["automountServiceAccountToken"] is False
    # each trainer's token was matched with its pod as the operator's pod watch keeps it, not by a list of its own
    # (one per pod before: the extra request per trial of docs/benchmarks.md); and the study's passes read its Jobs
    # and pods from the watches' copy, without a list each (ftstudy.kube.watch_cache)
    operator_requests = plane.requests_by(f"system:serviceaccount:{ns}:{SA}")
    by_name = [e for e in operator_requests
               if e["verb"] == "list" and (e.get("objectRef") or {}).get("resource") == "pods"
               and "metadata.name" in urllib.parse.unquote(e.get("requestURI", ""))]  # fmt: skip
    assert not by_name, [e["requestURI"] for e in by_name]
    per_study = [e["requestURI"] for e in operator_requests
                 if e["verb"] == "list" and (e.get("objectRef") or {}).get("resource") in ("jobs", "pods")
                 and names.STUDY_UID in urllib.parse.unquote(e.get("requestURI", ""))]  # fmt: skip
    assert len(per_study) <= 2, per_study  # one pass's, if the study came before the watches' first lists
    before = {t.number: (t.state, dict(t.intermediate_values), dict(t.user_attrs))
              for t in optuna_trials(postgres_url, ns, name)}  # fmt: skip
    assert all(values for _state, values, _attrs in before.values()), "each trial's early accuracy was reported"

    secret = json.loads(plane.kubectl("get", "secret", REPORT_TLS_SECRET, "-n", ns, "-o", "json").stdout)
    endpoint = Endpoint(ops.extra_args[ops.extra_args.index("--report-url") + 1],
                        base64.b64decode(secret["data"]["ca.crt"]).decode())  # fmt: skip
    uid = study["metadata"]["uid"]
    by_trial = {int(p["metadata"]["labels"]["ftstudy.io/trial"]): p for p in trial_pods}
    launch = {n: int(p["metadata"]["labels"]["ftstudy.io/attempt"]) for n, p in by_trial.items()}

    def claim(trial: int, **fields: Any) -> dict[str, Any]:
        return {"namespace": ns, "study": name, "studyUID": uid, "trial": trial, "attempt": launch[trial], **fields}

    own = token(ops, ns, by_trial[1])
    forged_early = {"kind": "early", "step": FORGED_STEP, "accuracy": 1.0}
    # its own trial: it may ask, but the trial has ended, so it may no longer write
    status, answer = endpoint.post(claim(1, kind="status"), own)
    assert (status, answer["state"]) == (200, "finished"), answer
    assert endpoint.post(claim(1, **forged_early), own)[1]["reason"] == "trial-ended"
    other = plane.kubectl("create", "namespace", f"{ns}-other")
    assert other.returncode == 0
    try:
        stranger = token(ops, f"{ns}-other", intruder_pod(ops, f"{ns}-other"))
        # a pod of this namespace with trial 0's labels, but not made by trial 0's Job (without the Job's
        # controller-uid, which would let the Job controller adopt it: whoever may create pods in the study's
        # namespace is trusted as much as its author, docs/operator.md)
        forged = {k: v for k, v in by_trial[0]["metadata"]["labels"].items() if "controller-uid" not in k}
        neighbour = token(ops, ns, intruder_pod(ops, ns, forged))
        refusals = {
            "no-token": (claim(0, **forged_early), None),
            "unauthenticated": (claim(1, **forged_early), token(ops, ns, by_trial[1], audience="https://kubernetes")),
            "other-trial": (claim(0, **forged_early), own),
            "other-namespace": (claim(0, **forged_early), stranger),
            "not-the-job": (claim(0, kind="attrs", attrs={"forged": True}), neighbour),
            "too-large": (claim(0, kind="attrs", attrs={"forged": "x" * rp.MAX_BODY_BYTES}), own),
            "malformed": (b"{not json", own),
        }
        for reason, (body, credential) in refusals.items():
            status, answer = endpoint.post(body, credential)
            assert answer["reason"] == reason, (reason, status, answer)
            assert status in (400, 401, 403, 413), (reason, status)
        # A token does not outlive its pod in the endpoint's caches: the neighbour's review is kept there now (for a
        # minute), and the API server refuses the token once the pod is gone (after its own 10 s cache of a
        # success); the endpoint asks again for a pod its watch does not hold, and is refused well within that minute.
        plane.kubectl("delete", "pod", "intruder", "-n", ns, "--grace-period=0", "--force", "--wait=true")

        def refused_once_gone() -> tuple[int, str] | None:
            status, answer = endpoint.post(claim(0, kind="attrs", attrs={"forged": True}), neighbour)
            return (status, answer["reason"]) if status == 401 else None

        assert wait_for("the deleted pod's token refused", refused_once_gone, 25, every=2) == (401, "unauthenticated")
    finally:
        plane.kubectl("delete", "namespace", f"{ns}-other", "--wait=false", check=False)
    after = {t.number: (t.state, dict(t.intermediate_values), dict(t.user_attrs))
             for t in optuna_trials(postgres_url, ns, name)}  # fmt: skip
    assert after == before, "no forged request changed the study"
    log = ops.log()
    assert "report refused (403 other-trial)" in log and "report refused (401 no-token)" in log
    # and each refusal is counted by its reason, for the rise an SRE would see (docs/observability.md)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        scraped = response.read().decode()
    counted: dict[str, float] = {}
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            if sample.name == "ftstudy_reports_total":
                result = sample.labels["result"]
                counted[result] = counted.get(result, 0.0) + sample.value
    assert {reason: counted.get(reason, 0.0) >= 1 for reason in refusals} == dict.fromkeys(refusals, True), counted
    assert counted.get("unauthenticated", 0.0) >= 2, "the audience's and the deleted pod's"
    assert counted.get("trial-ended", 0.0) >= 1 and counted.get("accepted", 0.0) >= 6, counted


def test_a_certificate_cert_manager_keeps_is_awaited_served_and_never_written(
    operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], tmp_path: Path
) -> None:
    """--report-tls-external, what the chart's reports.certManager runs: cert-manager, not the operator, writes the
    endpoint's TLS Secret. Until it exists the operator waits and says which Secret it waits for; once a Secret in
    cert-manager's layout appears (type kubernetes.io/tls, with ca.crt), the operator serves its certificate, the
    trials verify the endpoint against its ca.crt and a study runs to its end; the operator never wrote the Secret
    (its Role may only get it); a renewal cert-manager writes is served at the next read. cert-manager itself does
    not run here: the test writes what it would."""
    import datetime as dt

    from ftstudy.kube import certs

    ops, plane, ns = operators, operators.plane, operators.namespace
    undo = ops.enable_reports(external=True)
    ops.extra_args += ["--report-tls-check-seconds", "2"]  # (60 s by default)
    nodes = gpu_nodes_factory({"gpu-a": 1})
    ops.start()
    words = f"waiting for the report endpoint's certificate: Secret {ns}/{REPORT_TLS_SECRET} does not exist yet"
    wait_for("the operator to wait for the certificate", lambda: words in ops.log(), 60)
    now = dt.datetime.now(dt.UTC)
    ca, ca_key = certs.make_ca(now)
    host = ops.extra_args[ops.extra_args.index("--report-url") + 1].split("//")[1].split(":")[0]
    cert, key = certs.make_serving(ca, ca_key, [host], now)
    issued = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": REPORT_TLS_SECRET, "namespace": ns},
              "data": {k: base64.b64encode(v.encode()).decode()
                       for k, v in (("ca.crt", ca), ("tls.crt", cert), ("tls.key", key))}}  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=json.dumps(issued))
    written = json.loads(plane.kubectl("get", "secret", REPORT_TLS_SECRET, "-n", ns, "-o", "json").stdout)
    apply(plane, ns, study_manifest("managed", tmp_path / "artifacts", budget={"maxTrials": 1, "parallelism": 1}))
    study = wait_for_phase(ops, "managed", ("Succeeded", "Failed"), 300, nodes)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    served = ssl.get_server_certificate(("127.0.0.1", int(ops.extra_args[ops.extra_args.index("--report-port") + 1])))
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(cert), "the operator serves cert-manager's"
    after = json.loads(plane.kubectl("get", "secret", REPORT_TLS_SECRET, "-n", ns, "-o", "json").stdout)
    assert after["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"], "never written"
    writes = [e for e in plane.requests_by(f"system:serviceaccount:{ns}:{SA}")
              if (e.get("objectRef") or {}).get("resource") == "secrets"
              and e["verb"] not in ("get", "list")]  # fmt: skip
    assert not writes, [(e["verb"], e["requestURI"]) for e in writes]

    # cert-manager renews: a new certificate from the same CA in the same Secret, served without a restart
    renewed, renewed_key = certs.make_serving(ca, ca_key, [host], dt.datetime.now(dt.UTC))
    issued["data"] |= {"tls.crt": base64.b64encode(renewed.encode()).decode(),
                       "tls.key": base64.b64encode(renewed_key.encode()).decode()}  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=json.dumps(issued))
    port = int(ops.extra_args[ops.extra_args.index("--report-port") + 1])
    wait_for("the renewed certificate served", lambda: ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(
        ("127.0.0.1", port))) == ssl.PEM_cert_to_DER_cert(renewed), 30)  # fmt: skip
    assert "serving the report endpoint's renewed certificate" in ops.log()
    ops.stop_all()
    undo()


def resigned(token: str, key_pem: bytes, **claims: Any) -> str:
    """``token`` with ``claims`` changed, signed again with the API server's service-account key: the token the API
    server would have issued with those claims (its own TokenRequest refuses a life under ten minutes)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    def decode(part: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return decoded

    def encode(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()

    header, payload, _signature = token.split(".")
    signed = f"{header}.{encode(decode(payload) | claims)}"
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signed}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_a_replaced_launch_and_an_expired_token_write_nothing(
    reporting_operators: Operators, gpu_nodes_factory: Callable[[dict[str, int]], GpuNodes], postgres_url: str
) -> None:
    """Refusals that need a trial still running, on the real API server: a screened trial's first launch (its pod
    still there, its token still valid) reports after its resume took over, and is refused 409 ``stale-launch``
    (a state check tells it ``pruned``); a token past its expiry is refused 401 by the API server's review, and one
    the API server still takes just after its expiry is not kept by the endpoint, which keeps reviews for a minute.
    The tokens are the running trial's, re-signed with the API server's key (TokenRequest issues none shorter than
    ten minutes)."""
    ops, plane, ns = reporting_operators, reporting_operators.plane, reporting_operators.namespace
    nodes = gpu_nodes_factory({"gpu-a": 1})
    ops.start()
    manifest = study_manifest("replaced", trialTemplate={"env": held_after(7)},
                              budget={"maxTrials": 1, "parallelism": 1})  # fmt: skip
    # no baseline (it trains to the end unscreened): trial 0 is screened at step 3, resumed, held at step 7
    manifest["spec"]["promotion"] |= {"mode": "screen", "k": 1}
    del manifest["spec"]["baseline"]
    apply(plane, ns, manifest)

    def resumed() -> dict[str, Any] | None:
        held = [p for p in pods(ops, ns, "app.kubernetes.io/component=trial")
                if p["metadata"]["labels"]["ftstudy.io/attempt"] == "2"]  # fmt: skip
        return held[0] if held and "holding for" in nodes.log(ns, held[0]["metadata"]["name"]) else None

    current = wait_for("the resumed launch held after step 7", resumed, 300, diagnosis(ops, "replaced", nodes))
    (first,) = [p for p in pods(ops, ns, "app.kubernetes.io/component=trial")
                if p["metadata"]["labels"]["ftstudy.io/attempt"] == "1"]  # fmt: skip
    secret = json.loads(plane.kubectl("get", "secret", REPORT_TLS_SECRET, "-n", ns, "-o", "json").stdout)
    endpoint = Endpoint(ops.extra_args[ops.extra_args.index("--report-url") + 1],
                        base64.b64decode(secret["data"]["ca.crt"]).decode())  # fmt: skip
    uid = get_study(plane, ns, "replaced")["metadata"]["uid"]
    (before,) = optuna_trials(postgres_url, ns, "replaced")

    def claim(attempt: int, **fields: Any) -> dict[str, Any]:
        return {"namespace": ns, "study": "replaced", "studyUID": uid, "trial": 0, "attempt": attempt, **fields}

    old = token(ops, ns, first)
    forged_early = {"kind": "early", "step": FORGED_STEP, "accuracy": 1.0}
    status, answer = endpoint.post(claim(1, **forged_early), old)
    assert (status, answer["reason"]) == (409, "stale-launch"), (status, answer)
    assert "launch 1 of trial 0 is older than the current one (2)" in answer["error"], answer
    assert endpoint.post(claim(1, kind="status"), old)[1]["state"] == "pruned", "the old launch is told to stop"
    # the running launch's own token, past its expiry and signed by the API server's key: the review refuses it
    key = (plane.pki / "sa.key").read_bytes()
    live = token(ops, ns, current)
    assert endpoint.post(claim(2, kind="status"), live)[1]["state"] == "running"
    now = int(time.time())
    expired = resigned(live, key, iat=now - 700, nbf=now - 700, exp=now - 120)
    status, answer = endpoint.post(claim(2, **forged_early), expired)
    assert (status, answer["reason"]) == (401, "unauthenticated"), (status, answer)
    # one that expired 45 s ago: the API server still takes it (its validation allows a minute past ``exp``, and it
    # keeps a success 10 s), the endpoint does not keep it, and it is refused within 15-25 s, not after the minute
    # the endpoint keeps a review of a token with time left
    lapsing = resigned(live, key, exp=now - 45)
    assert endpoint.post(claim(2, kind="status"), lapsing)[0] == 200

    def refused_once_lapsed() -> tuple[int, str] | None:
        status, answer = endpoint.post(claim(2, kind="status"), lapsing)
        return (status, answer["reason"]) if status != 200 else None

    assert wait_for("the lapsed token refused", refused_once_lapsed, 40, every=1) == (401, "unauthenticated")
    assert time.time() < now + 45, "well within the minute a review is kept for"
    (after,) = optuna_trials(postgres_url, ns, "replaced")
    assert FORGED_STEP not in after.intermediate_values and after.intermediate_values == before.intermediate_values
    assert "report refused (409 stale-launch)" in ops.log()
    plane.kubectl("delete", "fts", "replaced", "-n", ns, "--wait=true", "--timeout=60s")
