"""The API server's two timestamp formats. Dependency-free, so the pure modules (status) can use them too."""

from __future__ import annotations

from datetime import UTC, datetime


def api_time(moment: datetime) -> str:
    """A ``Time`` field (RFC 3339, whole seconds, UTC): creationTimestamp, lastTransitionTime, an Event's times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_micro_time(moment: datetime) -> str:
    """A ``MicroTime`` field (microseconds): a Lease's renewTime and acquireTime."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_api_time(value: str | None) -> datetime | None:
    """Either form, as the API server writes it."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
