"""The chart and the trials on a real node (kubelet, containerd, runc; tests/cluster/real_node.py), from the images
scripts/images.sh builds, with the `restricted` Pod Security level enforced in every namespace.

One test, in the order a platform team meets it: the README's "In a cluster" commands as written (only the
Secret's URL filled in) install the operator from its image, whose probes must pass, and `helm test` passes; the
README's example study (SmolLM2, sized for a GPU) starts its trials in the trainer image on the node; then a small
study runs there to the end with its operator pod deleted mid-study, and the Deployment's new pod finishes it.
A second release tries ftstudy out with the chart's bundled PostgreSQL, which a study then uses; a third runs a
screened study whose checkpoints are in a real S3 server, with no shared volume.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from ftstudy.object_store import ObjectStore
from tests.cluster.fixtures import RealCluster
from tests.cluster.seaweedfs import BUCKET, SeaweedFS
from tests.studies import tiny_study
from tests.test_chart import Helm

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PLACEHOLDER_URL = "postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB"
NS, SYSTEM_NS, RELEASE = "ml", "ftstudy-system", "ftstudy"
EXAMPLE = "smollm2-lora"
UID = 10001

Json = dict[str, Any]


def readme_cluster_commands() -> list[str]:
    """The command lines of the README's "In a cluster" code block, as a user would paste them."""
    section = README.read_text().split("## In a cluster\n", 1)[1]
    block = section.split("```\n", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


def wait_for(what: str, check: Any, timeout: float, diagnose: Any = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnose()}")


class Cluster:
    """kubectl and helm as a user has them: on PATH, with KUBECONFIG set."""

    def __init__(self, real: RealCluster, helm: Helm) -> None:
        self.real, self.plane = real, real.plane
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join([str(self.plane.bin_dir), str(helm.binary.parent), os.environ["PATH"]]),
            "KUBECONFIG": str(self.plane.kubeconfig),
            "HELM_CACHE_HOME": str(helm.home / "cache"),
            "HELM_CONFIG_HOME": str(helm.home / "config"),
            "HELM_DATA_HOME": str(helm.home / "data"),
        }

    def shell(self, line: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(["bash", "-c", line], cwd=ROOT, env=self.env, capture_output=True, text=True,
                             timeout=timeout)  # fmt: skip
        assert run.returncode == 0, f"{line}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        return run

    def get(self, *args: str) -> Json:
        result: Json = json.loads(self.plane.kubectl("get", *args, "-o", "json").stdout)
        return result

    def pods(self, namespace: str, selector: str) -> list[Json]:
        items: list[Json] = self.get("pods", "-n", namespace, "-l", selector)["items"]
        return items

    def diagnosis(self) -> str:
        shown = self.plane.kubectl("get", "fts,jobs,pods,events", "-A", "-o", "wide", check=False).stdout
        logs = self.plane.kubectl("logs", "-n", SYSTEM_NS, f"deploy/{RELEASE}", "--tail=60", check=False)
        return f"{shown[-6000:]}\n--- operator ---\n{logs.stdout}{logs.stderr}\n{self.real.node.logs_tail(15)}"


def ready(pod: Json) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def provision_claim(cluster: Cluster, host_dir: Path) -> None:
    """The cluster's side of `ftstudy-artifacts`: a PersistentVolume reserved for the README's claim (here a
    directory of the node, owned by the trainer's UID as a provisioner honouring fsGroup would make it)."""
    host_dir.mkdir(parents=True)
    os.chown(host_dir, UID, UID)
    host_dir.chmod(0o2775)
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "ml-ftstudy-artifacts"},
        "spec": {
            "capacity": {"storage": "50Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": NS, "name": "ftstudy-artifacts"},
            "hostPath": {"path": str(host_dir), "type": "Directory"},
        },
    }
    cluster.plane.kubectl("apply", "-f", "-", input=json.dumps(volume))


def small_study(name: str) -> Json:
    """The tiny study, screened (the default mode: trials checkpoint at the early step and the top 2, the baseline
    and one other, resume in a second pod), trials in the trainer image writing to the README's claim."""
    document = tiny_study(name, k=2, mode="screen")
    document["spec"] |= {
        "storage": {"secretRef": {"name": "ftstudy-db", "key": "url"}},
        "trialTemplate": {
            "image": "ftstudy/trainer:0.1.0",
            "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}},
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "volumes": [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "ftstudy-artifacts"}}],
            "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts"}],
            "outputDir": "/artifacts",
            "fsGroup": UID,
            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
        },
    }
    return document


# The first test on the node also waits for its start: importing every image into an empty node store (a fresh
# machine) takes about four minutes, and pytest-timeout counts fixtures.
@pytest.mark.timeout(1200)
def test_the_readme_install_and_a_study_on_a_real_node(real_cluster: RealCluster, helm: Helm, tmp_path: Path) -> None:
    cluster = Cluster(real_cluster, helm)
    artifacts = tmp_path / "artifacts"
    provision_claim(cluster, artifacts)

    # --- the README's commands, as written -------------------------------------------------------------------
    commands = readme_cluster_commands()
    assert sum(PLACEHOLDER_URL in line for line in commands) == 1, commands
    *setup, last = [line.replace(PLACEHOLDER_URL, real_cluster.pod_pg_url) for line in commands]
    assert last.endswith(" -w"), "the last command watches the study"
    for line in setup:
        cluster.shell(line)
    watch = subprocess.Popen(["bash", "-c", last], cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        # The operator's pod is Ready (its readiness probe is /metrics) and restarted by nothing (liveness).
        operator = "app.kubernetes.io/name=ftstudy,app.kubernetes.io/component=operator"
        [first] = wait_for("the operator pod Ready", lambda: [p for p in cluster.pods(SYSTEM_NS, operator) if ready(p)],
                           240, cluster.diagnosis)  # fmt: skip
        assert first["spec"]["containers"][0]["image"] == "ftstudy/operator:0.1.0"
        tested = cluster.shell(f"helm test {RELEASE} -n {SYSTEM_NS}", timeout=180)
        assert re.search(r"Phase:\s+Succeeded", tested.stdout), tested.stdout

        # The example's trials start in the trainer image: SmolLM2 loaded from the image's GGUF. A GPU's work: the
        # study is deleted then, as scoring the base model or a training step takes minutes on these cores.
        def started() -> bool:
            for pod in cluster.pods(NS, f"ftstudy.io/study={EXAMPLE}"):
                log = cluster.plane.kubectl("logs", "-n", NS, pod["metadata"]["name"], check=False).stdout
                if "smollm2 loaded on cpu" in log:
                    return True
            return False

        wait_for("a trial of the README's study with SmolLM2 loaded", started, 420, cluster.diagnosis)
        cluster.shell(f"kubectl delete fts {EXAMPLE} -n {NS} --wait=true", timeout=180)
        wait_for("the example's pods gone", lambda: not cluster.pods(NS, f"ftstudy.io/study={EXAMPLE}"), 180,
                 cluster.diagnosis)  # fmt: skip
    finally:
        watch.terminate()
        watched = watch.communicate(timeout=30)[0]
        # Whatever failed above, no SmolLM2 trial may keep the node's cores for the tests that follow.
        cluster.plane.kubectl("delete", "fts", EXAMPLE, "-n", NS, "--ignore-not-found", "--wait=false", check=False)
    assert EXAMPLE in watched, watched

    # --- a small study to the end, its operator pod deleted on the way -------------------------------------
    name = "tiny-real"
    cluster.plane.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(small_study(name)))
    wait_for("a trial Job", lambda: cluster.get("jobs", "-n", NS)["items"], 120, cluster.diagnosis)
    cluster.plane.kubectl("delete", "pod", "-n", SYSTEM_NS, first["metadata"]["name"], "--wait=false")
    replaced = wait_for(
        "a new operator pod Ready",
        lambda: [p for p in cluster.pods(SYSTEM_NS, operator)
                 if ready(p) and p["metadata"]["name"] != first["metadata"]["name"]],
        240, cluster.diagnosis,
    )  # fmt: skip
    assert replaced

    def finished() -> Json | None:
        study = cluster.get("fts", name, "-n", NS)
        return study if (study.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    study = wait_for(f"{name} to finish", finished, 600, cluster.diagnosis)
    status = study["status"]
    assert status["phase"] == "Succeeded", (status, cluster.diagnosis())
    assert status["trials"]["completed"] == 2 and status["trials"]["cancelled"] == 2, status["trials"]
    best = status["best"]
    adapter = Path(best["adapter"])
    assert adapter.is_relative_to("/artifacts"), best
    on_volume = artifacts / adapter.relative_to("/artifacts")
    assert (on_volume / "adapter_model.safetensors").is_file(), sorted(artifacts.rglob("*"))
    assert on_volume.stat().st_uid == UID, "written by the trainer image's user"

    # The replacement operator was never restarted: its liveness probe (kopf's /healthz) passed throughout.
    [operator_pod] = cluster.pods(SYSTEM_NS, operator)
    assert operator_pod["status"]["containerStatuses"][0]["restartCount"] == 0, operator_pod["status"]

    # Every trial pod ran on the node, in the trainer image, admitted under `restricted`.
    core = client.CoreV1Api(cluster.plane.api_client())
    events = core.list_namespaced_event(NS).items
    refused = [e.message for e in events if e.reason == "FailedCreate"]
    assert not refused, refused
    assert {"TrialPruned", "TrialResumed", "StudySucceeded"} <= {e.reason for e in events}


def test_the_bundled_postgresql_serves_a_study(real_cluster: RealCluster, helm: Helm) -> None:
    """`postgresql.enabled`: the chart's StatefulSet (here Debian's PostgreSQL with the official image's interface,
    scripts/images/postgresql; the official image is a registry's) and the Secret it writes, which a study names."""
    cluster = Cluster(real_cluster, helm)
    namespace, release_ns = "try-ml", "ftstudy-try"
    cluster.shell(f"kubectl create namespace {namespace}")
    cluster.shell(
        f"helm install try charts/ftstudy -n {release_ns} --create-namespace --set 'watchNamespaces={{{namespace}}}'"
        " --set postgresql.enabled=true --set postgresql.persistence.enabled=false --set-string postgresql.image.tag=15"
        " --set postgresql.image.repository=ftstudy/postgresql --wait --timeout 5m",
        timeout=360,
    )
    document = tiny_study("tiny-bundled", k=1, mode="online")
    document["spec"] |= {
        "storage": {"secretRef": {"name": "ftstudy-db", "key": "url"}},
        "trialTemplate": {
            "image": "ftstudy/trainer:0.1.0",
            "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}},
            "volumes": [{"name": "artifacts", "emptyDir": {}}],
            "volumeMounts": [{"name": "artifacts", "mountPath": "/artifacts"}],
            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
        },
    }
    cluster.plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))

    def finished() -> Json | None:
        study = cluster.get("fts", "tiny-bundled", "-n", namespace)
        return study if (study.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    study = wait_for("the study on the bundled PostgreSQL to finish", finished, 600, cluster.diagnosis)
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert study["status"]["trials"]["cancelled"] >= 1, study["status"]["trials"]
    url = cluster.get("secret", "ftstudy-db", "-n", namespace)["data"]["url"]
    assert ".ftstudy-try.svc:5432/" in base64.b64decode(url).decode(), "the Secret names the bundled server"

    # The operator's login (the one the study ran on) is no superuser and reaches its own database only, and the
    # server's superuser has no network login at all, even with the password the operator holds (the chart's
    # pg_hba.conf refuses both by rule).
    secret = cluster.get("secret", "try-ftstudy-postgresql", "-n", release_ns)["data"]
    [server] = cluster.pods(release_ns, "app.kubernetes.io/instance=try,app.kubernetes.io/component=postgresql")
    logins = bundled_logins(server["status"]["podIP"], base64.b64decode(secret["password"]).decode())
    assert logins == {"ftstudy is superuser": False, "ftstudy's COPY TO PROGRAM": "refused",
                      "ftstudy to another database": "pg_hba.conf rejects connection",
                      "postgres over the network": "pg_hba.conf rejects connection"}, logins  # fmt: skip

    # A study author's own command, in a trial pod: it tries the bundled database, and reports for the other
    # study's trial 0 with its own token. It holds no database login, and the operator refuses the report.
    victim = {"namespace": namespace, "study": "tiny-bundled", "studyUID": study["metadata"]["uid"], "trial": 0,
              "attempt": 1, "kind": "early", "step": 99_999, "accuracy": 1.0}  # fmt: skip
    intruder = tiny_study("intruder", k=1, mode="online", maxTrials=1, parallelism=1, maxFailedTrials=1,
                          retriesPerTrial=0)  # fmt: skip
    intruder["spec"] |= {
        "storage": document["spec"]["storage"],
        "trialTemplate": {
            **document["spec"]["trialTemplate"],
            "command": ["python", "-c", INTRUDER, json.dumps(victim)],
        },
    }
    cluster.plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(intruder))

    def tried() -> Json | None:
        for pod in cluster.pods(namespace, "ftstudy.io/study=intruder"):
            log = cluster.plane.kubectl("logs", "-n", namespace, pod["metadata"]["name"], check=False).stdout
            for line in log.splitlines():
                if line.startswith("INTRUDER "):
                    found: Json = json.loads(line.removeprefix("INTRUDER "))
                    return found
        return None

    outcome = wait_for("the intruding trial's attempts", tried, 300, cluster.diagnosis)
    assert outcome["storage_env"] == [], outcome
    assert "no password supplied" in outcome["database"], outcome
    assert outcome["report"] == "403 other-trial", outcome
    again = cluster.get("fts", "tiny-bundled", "-n", namespace)
    assert again["status"]["trials"] == study["status"]["trials"] and again["status"]["best"] == study["status"]["best"]


def bundled_logins(host: str, password: str) -> dict[str, Any]:
    """What the bundled PostgreSQL's two roles can do from outside its pod, with the password the operator holds."""
    import psycopg2

    found: dict[str, Any] = {}
    with contextlib.closing(psycopg2.connect(host=host, user="ftstudy", password=password, dbname="ftstudy",
                                             connect_timeout=10)) as connection:  # fmt: skip
        cursor = connection.cursor()
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        found["ftstudy is superuser"] = cursor.fetchone()[0]
        try:
            cursor.execute("COPY (SELECT 1) TO PROGRAM 'true'")
            found["ftstudy's COPY TO PROGRAM"] = "ran"
        except psycopg2.errors.InsufficientPrivilege:
            found["ftstudy's COPY TO PROGRAM"] = "refused"
    for what, user, database in (("ftstudy to another database", "ftstudy", "postgres"),
                                 ("postgres over the network", "postgres", "ftstudy")):  # fmt: skip
        try:
            psycopg2.connect(host=host, user=user, password=password, dbname=database, connect_timeout=10).close()
            found[what] = "connected"
        except psycopg2.OperationalError as error:
            refused = "pg_hba.conf rejects connection"  # by the chart's rule, whatever the password
            found[what] = refused if refused in str(error) else str(error).strip()
    return found


# What a study author can run in a trial pod (its command is theirs): try the study database without credentials,
# list any storage variable, and post a report for another study's trial (argv[1]) with the pod's own token.
INTRUDER = """
import json, os, ssl, sys, urllib.error, urllib.request
out = {"storage_env": sorted(k for k in os.environ if "STORAGE" in k or "DATABASE" in k)}
try:
    import psycopg2
    psycopg2.connect(host="try-ftstudy-postgresql.ftstudy-try.svc", user="ftstudy", dbname="ftstudy",
                     connect_timeout=10)
    out["database"] = "connected"
except Exception as error:
    out["database"] = f"{type(error).__name__}: {error}".strip()
request = urllib.request.Request(os.environ["FTSTUDY_REPORT_URL"] + "/v1/report", data=sys.argv[1].encode(),
    headers={"Authorization": "Bearer " + open(os.environ["FTSTUDY_REPORT_TOKEN"]).read().strip()}, method="POST")
try:
    urllib.request.urlopen(request, context=ssl.create_default_context(cadata=os.environ["FTSTUDY_REPORT_CA"]))
    out["report"] = "accepted"
except urllib.error.HTTPError as error:
    out["report"] = f"{error.code} {json.loads(error.read())['reason']}"
print("INTRUDER " + json.dumps(out), flush=True)
"""


def test_a_screened_study_keeps_its_checkpoints_in_a_bucket_with_no_shared_volume(
    real_cluster: RealCluster, helm: Helm, object_store: SeaweedFS
) -> None:
    """trialTemplate.outputDir s3://...: no claim, no volume but the pods' scratch; the screening Jobs leave their
    checkpoints in a real S3 server (SeaweedFS, on the node's address) and the resume Jobs, new pods, read them back.
    The preflight Job wrote to the bucket before any trial; the pruned trials' checkpoints are gone from it at the
    end, their early adapters kept; status.best.adapter is the bucket's URL; deleted (cleanup.deleteArtifacts), the
    study leaves nothing in the bucket. A second study whose key may not write there is stopped before its first
    trial, with the store's answer and not the secret."""
    cluster = Cluster(real_cluster, helm)
    namespace, release_ns = "s3-ml", "ftstudy-s3"
    cluster.shell(f"kubectl create namespace {namespace}")
    cluster.shell(
        f"kubectl create secret generic ftstudy-db -n {namespace} --from-literal=url='{real_cluster.pod_pg_url}'"
    )
    keys = " ".join(f"--from-literal={k}={v}" for k, v in object_store.env().items())
    cluster.shell(f"kubectl create secret generic ftstudy-object-store -n {namespace} {keys}")
    wrong = {**object_store.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret-0123456789"}
    cluster.shell(f"kubectl create secret generic wrong-keys -n {namespace} "
                  + " ".join(f"--from-literal={k}={v}" for k, v in wrong.items()))  # fmt: skip
    cluster.shell(
        f"helm install s3 charts/ftstudy -n {release_ns} --create-namespace --set 'watchNamespaces={{{namespace}}}'"
        " --set 'trialPolicy.artifactSecrets={ftstudy-object-store,wrong-keys}' --wait --timeout 5m",
        timeout=360,
    )
    prefix = f"real-node-{uuid.uuid4().hex[:8]}"
    output = f"s3://{BUCKET}/{prefix}"
    document = tiny_study("tiny-s3", k=2, mode="screen", maxTrials=3)
    template = {
        "image": "ftstudy/trainer:0.1.0",
        "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}},
        "outputDir": output,
        "artifactSecret": "ftstudy-object-store",
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
    }
    document["spec"] |= {"storage": {"secretRef": {"name": "ftstudy-db", "key": "url"}}, "trialTemplate": template,
                         "cleanup": {"deleteArtifacts": True}}  # fmt: skip
    refused = tiny_study("tiny-s3-refused", k=2, mode="screen", maxTrials=3)
    refused["spec"] |= {"storage": document["spec"]["storage"],
                        "trialTemplate": {**template, "artifactSecret": "wrong-keys"}}  # fmt: skip
    for study in (document, refused):
        cluster.plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(study))

    def ended(name: str) -> Any:
        def check() -> Json | None:
            study = cluster.get("fts", name, "-n", namespace)
            done = (study.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            return study if done else None

        return check

    stopped = wait_for("the study with the wrong key to stop", ended("tiny-s3-refused"), 300, cluster.diagnosis)
    why = {c["type"]: c for c in stopped["status"]["conditions"]}["Failed"]  # for good: a Problem that is permanent
    assert (stopped["status"]["phase"], why["reason"]) == ("Failed", "ObjectStoreUnusable"), stopped["status"]
    assert "SignatureDoesNotMatch" in why["message"] and "not-the-secret" not in json.dumps(stopped), why
    assert not cluster.pods(namespace, "ftstudy.io/study=tiny-s3-refused,app.kubernetes.io/component=trial")

    study = wait_for("the study in the bucket to finish", ended("tiny-s3"), 600, cluster.diagnosis)
    status = study["status"]
    assert status["phase"] == "Succeeded", (status, cluster.diagnosis())
    assert status["trials"]["completed"] == 2 and status["trials"]["cancelled"] == 1, status["trials"]
    trials = f"{output}/{namespace}/tiny-s3-{study['metadata']['uid'][:8]}"
    assert status["trialsRoot"] == trials, status
    assert status["best"]["adapter"].startswith(f"{trials}/trial-"), status["best"]

    jobs = cluster.get("jobs", "-n", namespace, "-l", "ftstudy.io/study=tiny-s3")["items"]
    resumed = [j for j in jobs if (j["metadata"].get("labels") or {}).get("ftstudy.io/resume") == "true"]
    assert resumed, "a promoted trial resumed in a Job of its own"
    for job in jobs:  # no claim, no volume but the operator's own
        volumes = job["spec"]["template"]["spec"].get("volumes") or []
        assert {v["name"] for v in volumes} <= {"ftstudy-scratch", "ftstudy-report-token"}, volumes

    os.environ.update(object_store.env())
    bucket = ObjectStore(trials)
    keys = bucket.keys()
    finals = {k.split("/")[0] for k in keys if k.endswith("final_adapter/adapter_model.safetensors")}
    screened = {k.split("/")[0] for k in keys if k.endswith("early_adapter/adapter_model.safetensors")}
    checkpoints = {k.split("/")[0] for k in keys if k.endswith("checkpoint/checkpoint.json")}
    assert len(finals) == 2 and len(screened) >= 2, keys
    pruned = screened - finals
    assert pruned and not (pruned & checkpoints), ("the pruned trials' checkpoints are deleted", keys)
    assert ".ftstudy-probe" not in keys, "the preflight's object is gone"

    # Neither secret key, the right one or the wrong one, in anything the studies left: Events, the studies, Jobs and
    # pods as stored, every pod's log in the namespace, the operator's log.
    secrets_ = (object_store.env()["AWS_SECRET_ACCESS_KEY"], wrong["AWS_SECRET_ACCESS_KEY"])
    stored = cluster.plane.kubectl("get", "events,fts,jobs,pods", "-n", namespace, "-o", "yaml").stdout
    operator_log = cluster.plane.kubectl("logs", "-n", release_ns, "deploy/s3-ftstudy", "--tail=-1", check=False)
    assert operator_log.returncode == 0 and operator_log.stdout, operator_log.stderr
    shown = {"Events, studies, Jobs, pods": stored, "the operator's log": operator_log.stdout}
    for pod in cluster.get("pods", "-n", namespace)["items"]:
        name = pod["metadata"]["name"]
        shown[name] = cluster.plane.kubectl("logs", "-n", namespace, name, "--all-containers", check=False).stdout
    assert len(shown) > 3 and "tiny-s3" in shown["Events, studies, Jobs, pods"]
    leaking = [what for what, text in shown.items() if any(secret in text for secret in secrets_)]
    assert not leaking, leaking

    # cleanup.deleteArtifacts: deleting the study deletes what its trials wrote, by a Job that outlives it
    cluster.shell(f"kubectl delete fts tiny-s3 -n {namespace} --wait --timeout 60s", timeout=90)
    wait_for("the study's objects to be deleted", lambda: not bucket.keys(), 120, cluster.diagnosis)
    (cleanup,) = cluster.get("jobs", "-n", namespace, "-l", "app.kubernetes.io/component=artifacts-cleanup")["items"]
    assert cleanup["metadata"]["name"] == f"tiny-s3-delete-{study['metadata']['uid'][:8]}"
    assert "ownerReferences" not in cleanup["metadata"], "it outlives the study"
