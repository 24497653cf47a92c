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
