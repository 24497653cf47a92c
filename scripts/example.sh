#!/usr/bin/env bash
# The README's main command: set up .venv, then run the bundled example study on this machine (the mini model
# fine-tuned for European shops, trials as local processes, SQLite in runs/example/; about 8 minutes on two cores,
# setup included) and write its report (leaderboard, summary.json, plots in runs/example/report).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ftstudy run examples/study.yaml "$@"
.venv/bin/ftstudy report example
