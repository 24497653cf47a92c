"""A trial's files in object storage (``trialTemplate.outputDir: s3://bucket/prefix``, ``gs://``, ``az://``).

Why: screening resumes a trial in a new Job, possibly on another node, from the checkpoint its screening Job wrote.
With a directory that needs a volume every node can mount (ReadWriteMany), which many GPU clusters do not have or
have slow; they keep checkpoints and adapters in object storage instead, as Ray Tune and Hugging Face's Trainer do.

The client is ``obstore`` (Rust's ``object_store``, one wheel, no dependencies): S3 and S3-compatible servers, GCS and
Azure behind one small API. Credentials come from the environment the way each cloud's SDK reads them (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``, or a
workload identity's ``AWS_WEB_IDENTITY_TOKEN_FILE``): in a cluster from the Secret the trial policy allows
(``trialTemplate.artifactSecret``), never from the manifest. Errors name the URL and the key, never a credential.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

# What a URL may start with; anything else is a path in the trial's file system.
SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "file", "memory")
# How long one request may be retried before the trainer gives up on the store and fails the attempt cleanly:
# enough for a gateway restart, far less than a pod's grace period.
RETRY_SECONDS = 30.0


class ObjectStoreError(RuntimeError):
    """The store refused or could not be reached; the message says which URL, which operation and why."""


def is_url(output: str) -> bool:
    """``s3://bucket/prefix`` and the like, as opposed to a directory."""
    scheme, sep, _ = output.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts if p.strip("/"))])


@dataclass(frozen=True)
class Missing:
    """``get`` of a key that is not there (not an error: a trial that has no checkpoint yet)."""

    key: str


class ObjectStore:
    """The objects under one URL prefix: put, get, list and delete by key relative to it."""

    def __init__(self, url: str, retry_seconds: float = RETRY_SECONDS) -> None:
        from obstore.store import from_url

        self.url = url.rstrip("/")
        # Client options given here replace what the client would read from the environment, so the one that
        # matters for a plain-HTTP endpoint (an in-cluster gateway) is carried over by hand.
        allow_http = any(
            os.environ.get(n, "").lower() in ("1", "true", "yes") for n in ("AWS_ALLOW_HTTP", "ALLOW_HTTP")
        )
        try:
            self._store: Any = from_url(
                self.url,
                client_options={
                    "timeout": f"{max(1, int(retry_seconds))}s",
                    "connect_timeout": "5s",
                    "allow_http": allow_http,
                },
                retry_config={
                    "max_retries": 10,
                    "retry_timeout": _duration(retry_seconds),
                    "backoff": {"init_backoff": _duration(0.1), "max_backoff": _duration(2.0), "base": 2.0},
                },
            )
        except Exception as error:
            raise ObjectStoreError(f"object store {self.url}: {_reason(error)}") from None

    def put(self, key: str, data: bytes) -> None:
        import obstore

        try:
            obstore.put(self._store, key, data)
        except Exception as error:
            raise ObjectStoreError(f"could not write {join(self.url, key)}: {_reason(error)}") from None

    def get(self, key: str) -> bytes | Missing:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return bytes(obstore.get(self._store, key).bytes())
        except (FileNotFoundError, NotFoundError):  # obstore raises the former for a missing key
            return Missing(key)
        except Exception as error:
            raise ObjectStoreError(f"could not read {join(self.url, key)}: {_reason(error)}") from None

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, a path of whole segments (``checkpoint``, not ``checkpoint/sta``)."""
        import obstore

        try:
            return sorted(str(meta["path"]) for batch in obstore.list(self._store, prefix or None) for meta in batch)
        except Exception as error:
            raise ObjectStoreError(f"could not list {join(self.url, prefix)}: {_reason(error)}") from None

    def delete(self, keys: list[str]) -> None:
        import obstore

        if not keys:
            return
        try:
            obstore.delete(self._store, keys)
        except Exception as error:
            raise ObjectStoreError(f"could not delete under {self.url}: {_reason(error)}") from None

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many there were (0: already gone, which is done)."""
        found = self.keys(prefix)
        self.delete(found)
        return len(found)

    def probe(self) -> None:
        """Write, read back and delete a small object: what a trial will need, checked before any trial takes a GPU
        (a bucket that does not exist, refuses writes or whose credentials are wrong says so here)."""
        key = ".ftstudy-probe"
        self.put(key, b"ftstudy")
        if self.get(key) != b"ftstudy":
            raise ObjectStoreError(f"{join(self.url, key)} did not read back what was written")
        self.delete([key])


def _duration(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


def _reason(error: Exception) -> str:
    """What a person needs from the client's message: the HTTP status and the server's error code and message
    (NoSuchBucket, AccessDenied, SignatureDoesNotMatch...) when the server answered, else the client's first line
    (a timeout, a refused connection); never the debug dump after it."""
    text = str(error).strip() or type(error).__name__
    code, message = re.search(r"<Code>([^<]+)</Code>", text), re.search(r"<Message>([^<]+)</Message>", text)
    if code is not None:
        status = re.search(r"status code: (\d{3}[^:<]*)", text)
        said = f"{code[1]}: {message[1]}" if message is not None else code[1]
        return f"{status[1].strip()}, {said}" if status is not None else said
    first = text.split("Debug source", 1)[0].strip()
    return " ".join(first.split())[:400]
