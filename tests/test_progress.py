"""The progress display writes to standard output as it is when the display is made, so that a program running
several studies with their output redirected (bench/paper.py) does not write the second into the first's closed
file."""

from __future__ import annotations

import contextlib
import io

import optuna
from optuna.trial import TrialState, create_trial

from ftstudy.progress import Progress
from ftstudy.runner import Event, summary_line
from ftstudy.study_store import AUDIT


def test_each_display_writes_to_stdout_as_it_is_when_made() -> None:
    first, second = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(first):
        Progress(2).event(Event(0, "launched", "TrialLaunched"))
    first.close()
    with contextlib.redirect_stdout(second):
        Progress(2).event(Event(1, "launched", "TrialLaunched"))
    assert "trial   1  launched" in second.getvalue()


def test_the_status_line_counts_audited_trials() -> None:
    def trial(number: int, audited: bool) -> optuna.trial.FrozenTrial:
        made = create_trial(state=TrialState.RUNNING, system_attrs={AUDIT: True} if audited else {})
        made.number = number
        return made

    line = summary_line([trial(0, False), trial(1, True), trial(2, True)], 10)
    assert line.startswith("trials 3/10: running 3,") and ", audited 2;" in line, line
    assert "audited" not in summary_line([trial(0, False)], 10), "nothing to say when no trial is audited"
