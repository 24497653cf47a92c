"""The bundled PostgreSQL's password reaches its one server and no other (``ftstudy.kube.db_password``).

A study's storage URL comes from a Secret in the study's namespace, which its author may edit; the operator connects
with whatever URL it finds there. libpq sends ``PGPASSWORD`` to any server that asks for a password, so a password
handed over that way went to a server of the author's choosing. These tests run libpq (through psycopg2 and
SQLAlchemy, as the operator does) against the project's real PostgreSQL and against such a server.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy

from ftstudy.kube import db_password
from tests.conftest import AWKWARD_PASSWORD, PrivateDatabase


class PasswordCatcher:
    """A server that speaks just enough of PostgreSQL's protocol to ask for a clear-text password and keep what it
    is sent: what a study's author could run and name in their URL Secret."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.asked = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                self._one(connection)

    def _one(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        try:
            while True:
                (length,) = struct.unpack("!i", _read(connection, 4))
                body = _read(connection, length - 4)
                if struct.unpack("!i", body[:4])[0] in (80877103, 80877104):  # SSL or GSS encryption: no
                    connection.sendall(b"N")
                    continue
                break
            self.asked += 1
            connection.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            kind = _read(connection, 1)
            (length,) = struct.unpack("!i", _read(connection, 4))
            message = _read(connection, length - 4)
            if kind == b"p":
                self.received.append(message.rstrip(b"\0"))
        except (OSError, struct.error):
            pass  # the client gave up without sending one

    def close(self) -> None:
        self.listener.close()


def _read(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


@pytest.fixture
def catcher() -> Iterator[PasswordCatcher]:
    server = PasswordCatcher()
    yield server
    server.close()


@pytest.fixture
def clean_environment() -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in ("PGPASSWORD", "PGPASSFILE")}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def connect(url: str) -> str:
    """Connect as the operator does; what the server answered."""
    engine = sqlalchemy.create_engine(url, connect_args={"sslmode": "disable", "connect_timeout": 10})
    try:
        with engine.connect() as connection:
            return str(connection.execute(sqlalchemy.text("SELECT current_user")).scalar())
    except sqlalchemy.exc.OperationalError as error:
        return f"refused: {error.orig}"
    finally:
        engine.dispose()


@pytest.fixture
def awkward_login(awkward_database: PrivateDatabase) -> db_password.Login:
    """A role of its own whose password holds every character the password file escapes."""
    parts = urlsplit(awkward_database.url)
    assert parts.hostname and parts.port
    return db_password.Login(parts.hostname, parts.port, awkward_database.name, awkward_database.name,
                             awkward_database.password)  # fmt: skip


@pytest.mark.usefixtures("clean_environment")
def test_the_password_goes_to_its_own_server_and_no_other(
    awkward_login: db_password.Login, catcher: PasswordCatcher, tmp_path: Path
) -> None:
    login = awkward_login
    file = db_password.install(login, str(tmp_path))
    assert os.stat(file).st_mode & 0o077 == 0, "libpq ignores a password file others may read"

    # The URL the chart writes, without a password: the real server takes the login from the file.
    own = f"postgresql+psycopg2://{login.user}@{login.host}:{login.port}/{login.database}"
    assert connect(own) == login.user

    # The same URL Secret edited to name another server: that server asks for the password and gets none.
    elsewhere = f"postgresql+psycopg2://{login.user}@127.0.0.1:{catcher.port}/{login.database}"
    answer = connect(elsewhere)
    assert catcher.asked == 1, answer
    assert catcher.received == [], "the password went to a server the study's author chose"
    assert "no password supplied" in answer, answer

    # Nor to the same server under another database or user.
    assert "no password supplied" in connect(own.replace(f"/{login.database}", "/postgres"))


@pytest.mark.usefixtures("clean_environment")
def test_pgpassword_would_have_given_it_to_any_server(
    awkward_login: db_password.Login, catcher: PasswordCatcher
) -> None:
    """Why the password file: the way the operator handed the password over before, shown on the same server."""
    os.environ["PGPASSWORD"] = awkward_login.password
    connect(f"postgresql+psycopg2://{awkward_login.user}@127.0.0.1:{catcher.port}/{awkward_login.database}")
    assert catcher.received == [AWKWARD_PASSWORD.encode()]


def test_a_password_file_line_escapes_what_libpq_splits_on() -> None:
    line = db_password.passfile_line(db_password.Login("db.ns.svc", 5432, "ftstudy", "ftstudy", "a:b\\c"))
    assert line == "db.ns.svc:5432:ftstudy:ftstudy:a\\:b\\\\c\n"
