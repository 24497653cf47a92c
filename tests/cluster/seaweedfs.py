"""A real S3-compatible object store for the checkpoint tests: SeaweedFS's ``weed server -s3``, built from Go modules
by scripts/seaweedfs-build.sh and cached, run as one process (master, volume server, filer and S3 gateway) with a
data directory of its own and credentials it requires, so a wrong key is refused as on a real bucket.

``host`` is where it listens: the node's address (``tests.cluster.real_node.node_ip``) serves both the trainer run as
a process here and trial pods on the real node."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.cluster.builds import cached_build
from tests.cluster.control_plane import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "seaweedfs-build.sh"
# The trainers' key may read, write and list objects of the tests' bucket only, as a platform team would scope it;
# only the admin key (the tests' setup) creates buckets. (SeaweedFS creates a missing bucket on a PUT from a key
# allowed to write anywhere, which AWS never does.)
ACCESS_KEY, SECRET_KEY = "ftstudy-test", "ftstudy-test-secret-key"
ADMIN_KEY, ADMIN_SECRET = "ftstudy-admin", "ftstudy-admin-secret-key"


class SeaweedError(RuntimeError):
    pass


def build() -> Path:
    """The cached ``weed`` binary (minutes the first time)."""
    return cached_build(BUILD_SCRIPT) / "bin" / "weed"


BUCKET = "ftstudy-tests"  # one bucket, as a platform team gives; tests keep to prefixes of their own


class SeaweedFS:
    def __init__(self, directory: Path, host: str = "127.0.0.1") -> None:
        self.dir = directory
        self.host = host
        self.access_key, self.secret_key = ACCESS_KEY, SECRET_KEY  # the trainers' identity (``crash_and_restart``)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "weed.log"
        # Every gRPC port too: weed's default is the HTTP port + 10000, past 65535 for a high free port.
        flags = ("master.port", "volume.port", "filer.port", "master.port.grpc", "volume.port.grpc", "filer.port.grpc",
                 "s3.port.grpc")  # fmt: skip
        self._ports = {flag: free_port() for flag in flags}

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """What a trainer needs to reach the store (what an artifact Secret holds in a cluster)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}  # fmt: skip

    def start(self) -> SeaweedFS:
        weed = build()
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        identities = {"identities": [
            {"name": "trainer", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
             "actions": [f"{action}:{BUCKET}" for action in ("Read", "Write", "List", "Tagging")]},
            {"name": "admin", "credentials": [{"accessKey": ADMIN_KEY, "secretKey": ADMIN_SECRET}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}  # fmt: skip
        (self.dir / "s3.json").write_text(json.dumps(identities))
        p = self._ports
        command = [str(weed), "server", f"-dir={self.dir / 'data'}", f"-ip={self.host}", f"-ip.bind={self.host}",
                   *(f"-{flag}={port}" for flag, port in p.items()),
                   "-s3", f"-s3.port={self.port}", f"-s3.config={self.dir / 's3.json'}", "-master.telemetry=false",
                   "-master.volumeSizeLimitMB=64", "-volume.max=32"]  # fmt: skip
        # Not the tests' AWS_* variables (a test that used the store has the trainers' key in its environment):
        # weed makes an admin identity of any key it finds there, and the trainers' key would become one.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=env)  # fmt: skip
        self._wait_ready(90)
        return self

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SeaweedError(f"weed exited ({self.process.returncode}):\n{self.log.read_text()[-4000:]}")
            with contextlib.suppress(Exception):
                self.create_bucket(BUCKET)
                self._put_object(BUCKET, "ready")  # volumes too: a bucket is only the filer's metadata
                return
            time.sleep(0.5)
        raise SeaweedError(f"SeaweedFS's S3 gateway not ready after {seconds:.0f} s:\n{self.log.read_text()[-4000:]}")

    def create_bucket(self, name: str) -> None:
        """CreateBucket through the S3 protocol, signed with the test credentials (obstore has no bucket API)."""
        _signed_put(self.endpoint, name)

    def _put_object(self, bucket: str, key: str) -> None:
        import obstore
        from obstore.store import S3Store

        config = {"endpoint": self.endpoint, "access_key_id": ADMIN_KEY, "secret_access_key": ADMIN_SECRET,
                  "region": "us-east-1"}  # fmt: skip
        store = S3Store(bucket, config=config, client_options={"allow_http": True, "timeout": "5s"},
                        retry_config={"max_retries": 0})  # fmt: skip
        obstore.put(store, key, b"ok")

    def pause(self) -> None:
        """Freeze the whole server (SIGSTOP to its process group): requests hang, as with a store that went away
        mid-upload. ``crash`` then loses what it had not answered; ``resume`` would let it answer late."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)

    def crash_and_restart(self, credentials: tuple[str, str] | None = None) -> None:
        """SIGKILL (a request it was holding dies with its connection), then start again on the same data and
        ports: what it had stored is back, what it had not answered never happened. ``credentials``: the trainers'
        new access key and secret (rotated meanwhile: the old ones are refused from then on)."""
        if credentials is not None:
            self.access_key, self.secret_key = credentials
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.start()

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 3 s: its master goes on for as long as it waits for a filer that has gone (20 s
        and more, seen), and nothing a test stored is needed afterwards."""
        self.resume()
        stop_process(self.process, 3)


def _signed_put(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` with a SigV4-signed PUT (AWS Signature Version 4, header form): botocore is not a
    dependency of the project, and a bucket is what a platform team creates, not the trainer."""
    import datetime
    import hashlib
    import hmac
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    host = urlsplit(endpoint).netloc
    now = datetime.datetime.now(datetime.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    canonical = "\n".join(["PUT", f"/{bucket}", "", f"host:{host}", f"x-amz-content-sha256:{payload}",
                           f"x-amz-date:{stamp}", "", "host;x-amz-content-sha256;x-amz-date", payload])  # fmt: skip
    scope = f"{day}/us-east-1/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{ADMIN_SECRET}".encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT", headers={
        "x-amz-date": stamp, "x-amz-content-sha256": payload,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={ADMIN_KEY}/{scope}, "
                         f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=5):
            return
    except urllib.error.HTTPError as error:
        if error.code == 409:  # BucketAlreadyOwnedByYou: created by an earlier call
            return
        raise
