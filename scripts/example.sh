#!/usr/bin/env bash
# The README's main command (until the study engine lands): set up, generate the bundled example dataset, and run
# one trial's trainer on it, printing where the early and final scores and adapters went.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=runs/example
.venv/bin/ftstudy data generate --out "$out/data" --seed 0 --train 400 --validation 40 --test 40 --independent-test 40
.venv/bin/ftstudy-trainer --model "${MODEL:-tiny}" --data "$out/data" --output "$out/trial" \
    --max-steps 100 --eval-samples 40 --test-samples 40 --params '{"learning_rate": 0.003, "lora_r": 16}'
cat "$out/trial/result.json"
