"""The bundled PostgreSQL's password: generated once by the operator into a Secret the chart creates without it.

A chart that generates a password itself (Helm's ``randAlphaNum``, kept by ``lookup``) renders a new one at every
``helm template``, which is what GitOps tools run: each sync would change the password the data directory was
initialised with. So, as for the report endpoint's certificate (``ftstudy.kube.certs``), the chart renders the
Secret with the user, the database and the server's address only, and the operator fills in a random password the
first time it starts (a password given to the chart is rendered there and read back); Helm's three-way merge and
server-side apply leave a key the chart never rendered alone. The PostgreSQL pod waits for the key (its
``secretKeyRef`` is retried by the kubelet), and the storage URLs the chart writes for studies carry no password:
the operator alone connects (trials report to it).

libpq takes the password from a password file naming that one server, port, database and user, never from
``PGPASSWORD``: libpq sends ``PGPASSWORD`` to *any* server that asks, and the URL comes from a Secret in the
study's namespace, which the study's author may edit. Pointed at a server of their own, it would have received the
bundled database's password.

The operator's Role may get and update this one Secret by name and create none. Replicas that start together are
ordered by the Secret's resourceVersion: one fills it, the other reads what it wrote.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass

from ftstudy import redact
from ftstudy.kube.api import ApiError, Kube, path

log = logging.getLogger(__name__)

KEY = "password"
ENV = "PGPASSFILE"
DEFAULT_PORT = 5432


@dataclass(frozen=True)
class Login:
    """The one server, port, database and user the password is for."""

    host: str
    port: int
    database: str
    user: str
    password: str


def login(kube: Kube, namespace: str, name: str) -> Login:
    """The password in the Secret, generated and written first if it has none (``ApiError`` 404 if the Secret does
    not exist; 409 if another replica wrote it meanwhile: call again), with what it is for: the Secret's ``host``
    (else the Service of the Secret's name, as the chart names both), ``port``, ``database`` and ``username``."""
    secret_path = path("", "v1", "secrets", namespace, name)
    secret = kube.get(secret_path)
    data = secret.get("data") or {}

    def field(key: str, default: str) -> str:
        return base64.b64decode(data[key]).decode() if data.get(key) else default

    if data.get(KEY):
        password = field(KEY, "")
    else:
        password = secrets.token_urlsafe(24)  # 32 characters, none that a URL or a shell would need quoted
        log.info("generating the bundled PostgreSQL's password into Secret %s/%s", namespace, name)
        encoded = base64.b64encode(password.encode()).decode()
        kube.replace(secret_path, {**secret, "type": secret.get("type", "Opaque"), "data": {**data, KEY: encoded}})
    return Login(
        host=field("host", f"{name}.{namespace}.svc"),
        port=int(field("port", str(DEFAULT_PORT))),
        database=field("database", "ftstudy"),
        user=field("username", "ftstudy"),
        password=password,
    )


def passfile_line(login: Login) -> str:
    """One line of libpq's password file: ``host:port:database:user:password``, with ``:`` and ``\\`` escaped."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace(":", "\\:")

    fields = (login.host, str(login.port), login.database, login.user, login.password)
    return ":".join(escape(field) for field in fields) + "\n"


def install(login: Login, directory: str | None = None) -> str:
    """Write the password file (mode 0600, which libpq requires) and point libpq at it; drop any ``PGPASSWORD``,
    which libpq would send to every other server. Returns the file's path."""
    folder = directory or tempfile.mkdtemp(prefix="ftstudy-pg-")
    file = os.path.join(folder, "pgpass")
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(passfile_line(login))
    os.environ[ENV] = file
    os.environ.pop("PGPASSWORD", None)
    return file


def use(kube: Kube, namespace: str, name: str) -> None:
    """``login`` (again after a conflict: the other replica's password is then read), then hand libpq the password
    for that one server, database and user."""
    for attempt in range(4):
        try:
            found = login(kube, namespace, name)
            redact.remember(found.password)
            install(found)
            log.info("the bundled PostgreSQL's password is for %s:%d/%s as %s only", found.host, found.port,
                     found.database, found.user)  # fmt: skip
            return
        except ApiError as error:
            if error.status != 409 or attempt == 3:
                raise
