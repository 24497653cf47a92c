"""The live progress display of ``ftstudy run``: one line per event, and a status line when counts change."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from optuna.trial import FrozenTrial

from ftstudy.runner import Event, summary_line


class Progress:
    def __init__(self, max_trials: int, out: TextIO | None = None, every_seconds: float = 30.0) -> None:
        self.max_trials = max_trials
        # sys.stdout as it is now, not as it was when this module was imported (a caller may have redirected it)
        self.out = out if out is not None else sys.stdout
        self.every = every_seconds
        self.last_line = ""
        self.last_time = 0.0

    def event(self, event: Event) -> None:
        who = f"trial {event.trial:>3}" if event.trial is not None else "study    "
        print(f"{time.strftime('%H:%M:%S')} {who}  {event.text}", file=self.out, flush=True)

    def tick(self, trials: list[FrozenTrial]) -> None:
        line = summary_line(trials, self.max_trials)
        now = time.monotonic()
        if line != self.last_line or now - self.last_time > self.every:
            print(f"{time.strftime('%H:%M:%S')}           {line}", file=self.out, flush=True)
            self.last_line, self.last_time = line, now
