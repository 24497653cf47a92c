"""A problem with a study that a person must fix: a condition and a Warning Event on the study, never a crash loop.

Raised anywhere in a reconcile (reading the Secret, checking the trial policy, creating a Job); the reconcile loop
turns it into the study's condition and one Event, acts on nothing else in that pass, and tries again later.
"""

from __future__ import annotations


class Problem(Exception):
    """``reason`` is a CamelCase word for conditions and Events; ``permanent`` ends the study as Failed."""

    def __init__(self, reason: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent
