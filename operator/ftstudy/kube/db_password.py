"""The bundled PostgreSQL's password: generated once by the operator into a Secret the chart creates without it.

A chart that generates a password itself (Helm's ``randAlphaNum``, kept by ``lookup``) renders a new one at every
``helm template``, which is what GitOps tools run: each sync would change the password the data directory was
initialised with. So, as for the report endpoint's certificate (``ftstudy.kube.certs``), the chart renders the
Secret with the user and the database only, and the operator fills in a random password the first time it starts;
Helm's three-way merge and server-side apply leave a key the chart never rendered alone. The PostgreSQL pod waits
for the key (its ``secretKeyRef`` is retried by the kubelet), and the storage URLs the chart writes for studies
carry no password: the operator alone connects (trials report to it), and it hands libpq the password through
``PGPASSWORD``, which libpq uses for a URL without one.

The operator's Role may get and update this one Secret by name and create none. Replicas that start together are
ordered by the Secret's resourceVersion: one fills it, the other reads what it wrote.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets

from ftstudy.kube.api import ApiError, Kube, path

log = logging.getLogger(__name__)

KEY = "password"
ENV = "PGPASSWORD"


def ensure(kube: Kube, namespace: str, name: str) -> str:
    """The password in the Secret, generated and written first if it has none (``ApiError`` 404 if the Secret does
    not exist; 409 if another replica wrote it meanwhile: call again)."""
    secret_path = path("", "v1", "secrets", namespace, name)
    secret = kube.get(secret_path)
    data = secret.get("data") or {}
    if data.get(KEY):
        return base64.b64decode(data[KEY]).decode()
    password = secrets.token_urlsafe(24)  # 32 characters, none that a URL or a shell would need quoted
    log.info("generating the bundled PostgreSQL's password into Secret %s/%s", namespace, name)
    encoded = base64.b64encode(password.encode()).decode()
    kube.replace(secret_path, {**secret, "type": secret.get("type", "Opaque"), "data": {**data, KEY: encoded}})
    return password


def use(kube: Kube, namespace: str, name: str) -> None:
    """``ensure`` (again after a conflict: the other replica's password is then read), then hand the password to
    libpq for every storage URL that carries none."""
    for attempt in range(4):
        try:
            os.environ[ENV] = ensure(kube, namespace, name)
            return
        except ApiError as error:
            if error.status != 409 or attempt == 3:
                raise
