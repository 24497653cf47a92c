"""SQLAlchemy engine settings for the study storage, shared by the engine and every trainer.

Pools stay small and bounded (a study of 200 trials must not open 200 connections), broken connections are
replaced before use (a PostgreSQL restart), and SQLite waits for its file lock instead of failing at once, since
local trainers write to the same file concurrently.
"""

from __future__ import annotations

from typing import Any


def engine_kwargs(url: str, pool_size: int = 2, application: str = "ftstudy") -> dict[str, Any]:
    """``application``: the connections' ``application_name`` on PostgreSQL, so that ``pg_stat_activity`` tells the
    operator's connections from the trainers' (a DBA counting them, ``bench/operator_latency.py``), unless the URL
    names one itself (``?application_name=...``), which wins."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        connect_args: dict[str, Any] = {"connect_timeout": 10}
        if "application_name=" not in url.partition("?")[2]:
            connect_args["application_name"] = application
        kwargs.update(pool_size=pool_size, max_overflow=2, pool_timeout=30, connect_args=connect_args)
    elif url.startswith("sqlite"):
        kwargs.update(connect_args={"timeout": 60})
    return kwargs
