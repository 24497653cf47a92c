"""One more point of the data-efficiency curve beyond the CPU sweep's 1,600 samples, comparable with it.

``bench/paper.py``'s sweep generates its pages with ``train`` = 1,600, so its validation and test pages are the
generator's pages 1,600-1,791; a sweep generated with more training pages would score on other pages. This script
keeps the sweep's validation, test and independent-test pages and its first 1,600 training pages, and adds the
generator's next pages after the test split, up to ``--samples``: the larger point is then scored exactly as the
sweep's points were, with the sweep's trainer settings and fixed hyperparameters, as one trainer run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/efficiency_point.py --samples 3200   # about 15 minutes on one core
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ftstudy.task.generator import SplitSizes, generate_dataset

SWEEP_TRAIN, VALIDATION, TEST, LOCALES = 1600, 96, 96, ["de", "fr", "ch"]
HYPERPARAMETERS = {
    "batch_size": 8,
    "learning_rate": 0.0055,
    "lora_alpha": 87,
    "lora_r": 6,
    "target_modules": "attention",
}


def write_data(directory: Path, samples: int) -> None:
    held_out = SWEEP_TRAIN + VALIDATION + TEST
    pages = generate_dataset(0, SplitSizes(held_out + samples - SWEEP_TRAIN, 0, 0, 0), LOCALES)["train"]
    independent = generate_dataset(0, SplitSizes(SWEEP_TRAIN, VALIDATION, TEST, 96), LOCALES)["independent_test"]
    splits = {
        "train": pages[:SWEEP_TRAIN] + pages[held_out:],
        "validation": pages[SWEEP_TRAIN : SWEEP_TRAIN + VALIDATION],
        "test": pages[SWEEP_TRAIN + VALIDATION : held_out],
        "independent_test": independent,
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (directory / f"{name}.jsonl").write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=3200)
    p.add_argument("--workdir", type=Path, default=Path("runs") / "efficiency-point")
    args = p.parse_args()
    data, out = args.workdir / f"data-{args.samples}", args.workdir / f"trial-{args.samples}"
    write_data(data, args.samples)
    command = [sys.executable, "-m", "ftstudy.trainer.cli", "--model", "mini", "--data", str(data), "--output",
               str(out), "--epochs", "2", "--min-steps", "40", "--max-seq-len", "512", "--eval-samples", "96",
               "--test-samples", "96", "--eval-batch-size", "32", "--train-samples", str(args.samples),
               "--params", json.dumps(HYPERPARAMETERS)]  # fmt: skip
    subprocess.run(command, check=True)
    result = json.loads((out / "result.json").read_text())
    print(f"{args.samples} samples: validation {result['final_accuracy']:.3f}, test {result['test_accuracy']:.3f}, "
          f"{result['total_steps']} steps, {result['train_seconds'] / 60:.1f} min")  # fmt: skip


if __name__ == "__main__":
    main()
