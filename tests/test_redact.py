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
