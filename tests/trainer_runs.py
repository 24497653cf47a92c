"""The small trainer run that the screening, preemption and object-store tests stop, resume and compare: ``tiny``,
15 steps, dropout and gradient accumulation on (so that the random generators and the data-order position must both
come back from a checkpoint). Its uninterrupted run is trained once per session (``uninterrupted`` in conftest.py):
each of those tests compares its own interrupted runs against the same reference."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from safetensors.torch import load_file

PARAMS = {"learning_rate": 3e-3, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "batch_size": 2, "grad_accum": 2}
RUN = ["--model", "tiny", "--max-steps", "15", "--eval-samples", "4", "--test-samples", "4", "--eval-batch-size",
       "4", "--max-seq-len", "1024", "--params", json.dumps(PARAMS)]  # fmt: skip


def trainer(trainer_cmd: list[str], data: Path, out: Path, stage: str, *more: str) -> subprocess.CompletedProcess[str]:
    command = [*trainer_cmd, *RUN, "--data", str(data), "--output", str(out), "--stage", stage, *more]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)  # a busy one-core machine


def adapter(run_dir: Path) -> dict[str, object]:
    return load_file(str(run_dir / "final_adapter" / "adapter_model.safetensors"))
