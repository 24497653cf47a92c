"""The progress display writes to standard output as it is when the display is made, so that a program running
several studies with their output redirected (bench/paper.py) does not write the second into the first's closed
file."""

from __future__ import annotations

import contextlib
import io

from ftstudy.progress import Progress
from ftstudy.runner import Event


def test_each_display_writes_to_stdout_as_it_is_when_made() -> None:
    first, second = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(first):
        Progress(2).event(Event(0, "launched", "TrialLaunched"))
    first.close()
    with contextlib.redirect_stdout(second):
        Progress(2).event(Event(1, "launched", "TrialLaunched"))
    assert "trial   1  launched" in second.getvalue()
