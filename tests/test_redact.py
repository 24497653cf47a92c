"""Storage passwords never shown: what ``ftstudy.redact`` hides, and what it leaves readable."""

from __future__ import annotations

from ftstudy.redact import redact


def test_passwords_in_urls_are_hidden_and_the_rest_stays_readable() -> None:
    text = "storage postgresql+psycopg2://alice:s3cret-pw@db.example:5432/optuna, trials in /runs"
    assert redact(text) == "storage postgresql+psycopg2://alice:***@db.example:5432/optuna, trials in /runs"
    assert redact("postgresql://h/db?user=a&password=s3cret-pw&x=1") == "postgresql://h/db?user=a&password=***&x=1"
    assert redact("sqlite:////work/runs/study.db") == "sqlite:////work/runs/study.db"
    assert redact("postgresql://alice@db/optuna") == "postgresql://alice@db/optuna"


def test_a_known_password_is_hidden_wherever_it_appears() -> None:
    url = "postgresql+psycopg2://alice:p%40ss-word@db:5432/optuna"
    assert redact("FATAL: password p@ss-word refused; p%40ss-word", url) == "FATAL: password *** refused; ***"
    assert redact("nothing to hide", None, "") == "nothing to hide"


PASSWORDS = ["Ab3/x+Yz9==", "p:a:ss", "with space", "sl/ash@at", "p+l=us", "a%2Fb", "tab\there"]


def test_passwords_with_any_url_character_are_hidden_raw_and_encoded() -> None:
    """SQLAlchemy accepts "/", ":", "+" and "=" unencoded in a password, and anything encoded; an error message may
    quote the URL or the password, raw or decoded."""
    from urllib.parse import quote

    for password in PASSWORDS:
        for written in {password.replace("@", "%40"), quote(password, safe="")}:
            if " " in written or "\t" in written:
                continue  # not a URL one can write unencoded
            url = f"postgresql+psycopg2://alice:{written}@db:5432/optuna"
            for text in (f"could not connect to {url}", f"password {password!r} refused", f"{written} refused"):
                hidden = redact(text, url)
                assert password not in hidden and written not in hidden, (password, text, hidden)
            assert redact(f"storage {url}") == "storage postgresql+psycopg2://alice:***@db:5432/optuna"
    spaced = "postgresql+psycopg2://alice:with%20space@db/optuna"
    assert "with space" not in redact("FATAL: password 'with space' refused", spaced)


def test_every_log_line_hides_the_secrets_read_so_far_messages_arguments_and_tracebacks() -> None:
    """What no call site redacts (a library's message, a traceback, kopf's per-object logger, whose handler posts
    Events) is hidden by the one filter on the log."""
    import io
    import logging
    from urllib.parse import quote

    from ftstudy.redact import install_log_filter, remember

    root, objects = logging.getLogger(), logging.getLogger("test.objects")
    out, events = io.StringIO(), io.StringIO()
    handler, event_handler = logging.StreamHandler(out), logging.StreamHandler(events)
    root.addHandler(handler)
    objects.addHandler(event_handler)
    objects.propagate = False  # as kopf's Event poster: a handler of its own
    try:
        log_filter = install_log_filter("test.objects")
        for password in PASSWORDS:
            url = f"postgresql+psycopg2://alice:{quote(password, safe='')}@db:5432/optuna"
            remember(url)
            logging.getLogger("some.library").warning("connecting with %s, password %r", url, password)
            try:
                raise ConnectionError(f"FATAL: password authentication failed for {password}")
            except ConnectionError:
                logging.getLogger("some.library").exception("pass failed")
            objects.warning("could not open %s", password)
        written = out.getvalue() + events.getvalue()
        assert "FATAL: password authentication failed for ***" in written and "Traceback" in written
        for password in PASSWORDS:
            assert password not in written and quote(password, safe="") not in written, (password, written)
    finally:
        for each in root.handlers:
            each.removeFilter(log_filter)
        root.removeHandler(handler)
        objects.removeHandler(event_handler)
        objects.removeFilter(log_filter)
        objects.propagate = True
