"""Keep database passwords out of what people and logs see.

A storage URL carries its password (``postgresql+psycopg2://user:PASSWORD@host/db``). The URL itself travels only
where it must (a trainer's environment, from a Secret or from ``ftstudy run``); wherever a URL, or an error message
that might quote one, is printed, logged, posted as an Event or written into a status, it goes through here first.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

# The password runs from the user's colon to the next "@": SQLAlchemy reads it so, and accepts "/", ":", "+" and "="
# in it unencoded. In free text it stops at white space too (a known URL's password with spaces is hidden by value).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):(?P<password>[^@\s]*)@")
_QUERY = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&\s]*)", re.IGNORECASE)
HIDDEN = "***"


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with the password of every URL in it hidden, and every one of ``secrets`` (a known URL, or its
    password, raw or URL-encoded) replaced too: an error message may quote a password outside any URL."""
    for secret in secrets:
        for form in {p for s in _passwords(secret) for p in (s, unquote(s))}:
            if len(form) >= 4:  # hiding a one-letter password would garble the text and hide nothing
                text = text.replace(form, HIDDEN)
    text = _USERINFO.sub(lambda m: f"{m['head']}:{HIDDEN}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{HIDDEN}", text)


def _passwords(secret: str | None) -> list[str]:
    """The passwords a known secret holds: a URL's (as SQLAlchemy reads it, so one with spaces is found whole, and
    as the patterns read it), or the secret itself when it is no URL."""
    if not secret:
        return []
    found = [m["password"] for m in _USERINFO.finditer(secret)] + [m["password"] for m in _QUERY.finditer(secret)]
    if "://" in secret:
        found.append(_sqlalchemy_password(secret))
    return [p for p in found if p] or ([] if "://" in secret else [secret])


def _sqlalchemy_password(url: str) -> str:
    """The password the database driver will be given (decoded); empty when the URL cannot be read."""
    try:
        from sqlalchemy.engine import make_url
    except ImportError:  # the core without the storage extra: the patterns above must do
        return ""
    try:
        password = make_url(url).password
    except Exception:  # any malformed URL: nothing more to hide than the patterns found
        return ""
    return str(password) if password else ""
