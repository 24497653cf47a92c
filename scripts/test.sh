#!/usr/bin/env bash
# The project's test command: set up, start PostgreSQL, lint, type-check, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export FTSTUDY_TEST_PG_URL="$(scripts/postgres.sh start)"
.venv/bin/ruff check operator tests bench
.venv/bin/ruff format --check operator tests bench
.venv/bin/mypy
.venv/bin/pytest -q "$@"
