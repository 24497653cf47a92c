"""A small JSON client for the Kubernetes API: plain dicts in and out.

The operator reads and writes a handful of kinds (FineTuneStudies, Jobs, Pods, Secrets, Events, Leases) as the API
server's own JSON, which is what its pure functions and tests speak; the generated typed models of the official
client would only be converted back and forth. Authentication, TLS and the connection pool still come from the
official client's configuration (in-cluster service account or kubeconfig), so every login method it supports works.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import kubernetes
import urllib3

from ftstudy import __version__
from ftstudy.kube import fencing

MERGE_PATCH = "application/merge-patch+json"


class ApiError(RuntimeError):
    """The API server refused a request; ``status`` is its HTTP status, ``message`` its explanation."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Unreachable(RuntimeError):
    """No answer from the API server (connection refused, timeout): worth retrying, unlike most ``ApiError``s."""


def load_config(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """In-cluster service account first, then the kubeconfig (``$KUBECONFIG`` or the given file)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


def path(group: str, version: str, plural: str, namespace: str | None = None, name: str | None = None) -> str:
    """``/api/v1/...`` for the core group, ``/apis/<group>/<version>/...`` otherwise."""
    parts = ["/api/v1"] if group == "" else [f"/apis/{group}/{version}"]
    if namespace is not None:
        parts.append(f"namespaces/{quote(namespace)}")
    parts.append(plural)
    if name is not None:
        parts.append(quote(name))
    return "/".join(parts)


POOL_SIZE = 128  # HTTP connections to the API server kept open for reuse (not a limit on requests in flight)


class Kube:
    def __init__(self, configuration: kubernetes.client.Configuration, timeout: float = 30.0) -> None:
        # The reconcile threads, the Lease renewal and the notifications call the API server at once: a pool
        # smaller than the threads discards and reopens TLS connections under load (measured with a thread per
        # study and 100 studies: "Connection pool is full").
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, POOL_SIZE)
        self.api = kubernetes.client.ApiClient(configuration)
        self.timeout = timeout
        self.user_agent = f"ftstudy-operator/{__version__}"  # the operator adds its replica's name (leader election)
        self._server_clock: tuple[datetime, float] | None = None  # the last Date header, and when it came
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        resource_path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        fenced: bool = True,
    ) -> Any:
        """``timeout``: seconds for this request instead of the client's (leader election needs short ones).
        ``fenced``: a write first asks ``fencing.check()`` whether this replica may still write (the Lease's own
        requests are not fenced)."""
        if fenced and method != "GET":
            fencing.check()
        headers = {"Accept": "application/json", "Content-Type": content_type, "User-Agent": self.user_agent}
        with self._lock:  # the client refreshes expiring tokens (bound service-account tokens) in place
            self.api.update_params_for_auth(headers, None, ["BearerToken"], resource_path, method, body)
        url = self.api.configuration.host + resource_path + (f"?{urlencode(query)}" if query else "")
        payload = None if body is None else json.dumps(body).encode()
        # An explicit timeout bounds the whole request: urllib3 would otherwise retry a read timeout three times,
        # and split the time between connecting and reading (a Lease renewal must end by its deadline).
        bounded: dict[str, Any] = {"timeout": self.timeout}
        if timeout:
            bounded = {"timeout": urllib3.Timeout(total=timeout), "retries": False}
        try:
            response = self.api.rest_client.pool_manager.request(
                method, url, body=payload, headers=headers, preload_content=True, **bounded
            )
        except Exception as error:  # urllib3 raises its own hierarchy; all of it means "no answer"
            raise Unreachable(f"Kubernetes API unreachable ({type(error).__name__}: {error})") from error
        self._heard(response.headers.get("Date"))
        data = response.data
        if response.status >= 400:
            message = data.decode(errors="replace")
            with contextlib.suppress(json.JSONDecodeError, AttributeError):
                message = json.loads(data).get("message", message)
            raise ApiError(response.status, str(response.reason), message)
        return json.loads(data) if data else None

    def watch(
        self, resource_path: str, query: dict[str, str], timeout: float, stop: threading.Event
    ) -> Iterator[dict[str, Any]]:
        """The events of a watch (``?watch=true``), one JSON object per line as the API server streams them, until
        it ends the watch, ``timeout`` seconds pass without a byte, or ``stop`` is set."""
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        with self._lock:
            self.api.update_params_for_auth(headers, None, ["BearerToken"], resource_path, "GET", None)
        url = self.api.configuration.host + resource_path + "?" + urlencode({**query, "watch": "true"})
        try:
            response = self.api.rest_client.pool_manager.request(
                "GET", url, headers=headers, preload_content=False, retries=False,
                timeout=urllib3.Timeout(connect=10, read=timeout),
            )  # fmt: skip
        except Exception as error:
            raise Unreachable(f"Kubernetes API unreachable ({type(error).__name__}: {error})") from error
        try:
            if response.status >= 400:
                data = response.read()
                message = data.decode(errors="replace")
                with contextlib.suppress(json.JSONDecodeError, AttributeError):
                    message = json.loads(data).get("message", message)
                raise ApiError(response.status, str(response.reason), message)
            pending = b""
            for chunk in response.stream(65536):
                if stop.is_set():
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()

    def _heard(self, date: str | None) -> None:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            when = email.utils.parsedate_to_datetime(date)  # type: ignore[arg-type]
            if when.tzinfo is not None:
                self._server_clock = (when, time.monotonic())

    def server_now(self) -> datetime:
        """The API server's time now: its last answer's Date header plus the time elapsed since, on this process's
        monotonic clock; this machine's clock before any answer. Durations measured against the API server's
        timestamps (a pod's creation, a condition's transition) then do not depend on how far this machine's clock
        is from the server's (to the second: Date has no finer resolution)."""
        if self._server_clock is None:
            return datetime.now(UTC)
        when, at = self._server_clock
        return when + timedelta(seconds=time.monotonic() - at)

    def get(self, resource_path: str, timeout: float | None = None) -> Any:
        return self.request("GET", resource_path, timeout=timeout)

    def list(
        self, resource_path: str, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else {}
        if field_selector:
            query["fieldSelector"] = field_selector
        items: list[dict[str, Any]] = self.request("GET", resource_path, query=query or None)["items"]
        return items

    def create(
        self, resource_path: str, body: dict[str, Any], timeout: float | None = None, fenced: bool = True
    ) -> Any:
        return self.request("POST", resource_path, body=body, timeout=timeout, fenced=fenced)

    def merge_patch(self, resource_path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", resource_path, body=body, content_type=MERGE_PATCH)

    def replace(
        self, resource_path: str, body: dict[str, Any], timeout: float | None = None, fenced: bool = True
    ) -> Any:
        return self.request("PUT", resource_path, body=body, timeout=timeout, fenced=fenced)

    def delete(self, resource_path: str, propagation: str = "Background") -> None:
        """Deleting what is already gone is fine: the caller wanted it gone."""
        try:
            self.request("DELETE", resource_path, body={"propagationPolicy": propagation})
        except ApiError as error:
            if error.status != 404:
                raise
