"""Keep database passwords out of what people and logs see.

A storage URL carries its password (``postgresql+psycopg2://user:PASSWORD@host/db``). The URL itself travels only
where it must (a trainer's environment, from a Secret or from ``ftstudy run``); wherever a URL, or an error message
that might quote one, is printed, logged, posted as an Event or written into a status, it goes through here first.

Call sites pass the URL they hold; the log also goes through ``LogFilter``, which hides every secret ``remember``ed
so far (each storage URL and password the process has read), so that a traceback, a library's message or a kopf
handler's log line that quotes one is hidden too, where no call site could have passed it.
"""

from __future__ import annotations

import logging
import re
import threading
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


_known: tuple[str, ...] = ()
_known_lock = threading.Lock()


def remember(*secrets: str | None) -> None:
    """Hide these (URLs or passwords) in every log record from now on (``LogFilter``)."""
    global _known
    with _known_lock:
        _known = tuple(dict.fromkeys((*_known, *(s for s in secrets if s))))


class LogFilter(logging.Filter):
    """Redacts a record's message and its exception's text against every ``remember``ed secret and every URL's
    password. On a handler it sees every record that reaches that handler; on a logger, those logged there."""

    def filter(self, record: logging.LogRecord) -> bool:
        known = _known
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it itself; hide what can be hidden of the template
            message = str(record.msg)
        clean = redact(message, *known)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, *known)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, *known)
        return True


def install_log_filter(*loggers: str) -> LogFilter:
    """Put one ``LogFilter`` on every handler of the root logger (what propagates there) and on ``loggers`` (those
    whose records go to handlers of their own, as kopf's per-object logger posts Events)."""
    log_filter = next((f for h in logging.getLogger().handlers for f in h.filters if isinstance(f, LogFilter)),
                      LogFilter())  # fmt: skip
    for handler in logging.getLogger().handlers:
        if log_filter not in handler.filters:
            handler.addFilter(log_filter)
    for name in loggers:
        logger = logging.getLogger(name)
        if log_filter not in logger.filters:
            logger.addFilter(log_filter)
    return log_filter
