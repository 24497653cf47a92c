"""Stand-in trainers for the operator's failure tests, run by the simulated GPU nodes as a trial's command.

    python tests/fake_trainer.py malformed ARGS...   report a string as the final accuracy, then exit 0
    python tests/fake_trainer.py linger ARGS...      run until SIGTERM, then take LINGER_SECONDS to stop

ARGS are what the operator passes the real trainer (``--study NAME --trial N`` among them); the storage URL comes
from ``$FTSTUDY_STORAGE_URL``, as for the real one.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

LINGER_SECONDS = 4.0


def _arg(name: str) -> str:
    return sys.argv[sys.argv.index(name) + 1]


def malformed() -> int:
    from optuna.storages import RDBStorage

    storage = RDBStorage(os.environ["FTSTUDY_STORAGE_URL"])
    study_id = storage.get_study_id_from_name(_arg("--study"))
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(_arg("--trial")))
    storage.set_trial_user_attr(trial_id, "final_accuracy", "abc")
    storage.set_trial_user_attr(trial_id, "outcome", "completed")
    storage.set_trial_intermediate_value(trial_id, 3, 0.5)
    return 0


def linger() -> int:
    def stop(signum: int, frame: FrameType | None) -> None:
        time.sleep(LINGER_SECONDS)  # a trainer saving its state before it goes
        sys.exit(143)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit({"malformed": malformed, "linger": linger}[sys.argv[1]]())
