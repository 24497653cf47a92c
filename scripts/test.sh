#!/usr/bin/env bash
# The project's test command: set up, start PostgreSQL, lint, type-check, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export FTSTUDY_TEST_PG_URL="$(scripts/postgres.sh start)"
# The control plane for the operator tests: built from Go modules on the first run (about 11 minutes on two cores),
# from ~/.cache/ftstudy afterwards.
export FTSTUDY_K8S_BIN="$(scripts/k8s-build.sh)"
# helm, built from Go modules like Kubernetes, for the chart tests.
export FTSTUDY_HELM_BIN="$(scripts/helm-build.sh)"
# Kueue's manager, built from Go modules like Kubernetes, for the queueing tests (about 5 minutes of CPU the first
# time): built here rather than inside the first Kueue test, whose time limit would otherwise count the build.
scripts/kueue-build.sh >/dev/null
# SeaweedFS, the object store of the checkpoint tests, built from Go modules like Kubernetes (about 3 minutes on two
# cores the first time): beside the steps below, which wait on downloads much of their time.
scripts/seaweedfs-build.sh >/dev/null 2>"${TMPDIR:-/tmp}/ftstudy-seaweedfs-build.log" &
seaweedfs_build=$!
# promtool, from Debian's prometheus package, for the alert-rule tests.
export FTSTUDY_PROMTOOL="$(scripts/promtool.sh)"
# The operator, trainer and pause images, built with buildah on a Debian base made by mmdebstrap (about 5 minutes
# the first time, mostly the trainer's torch; seconds when current); the tests run them with podman and on a node.
scripts/images.sh >/dev/null
wait "$seaweedfs_build" || { cat "${TMPDIR:-/tmp}/ftstudy-seaweedfs-build.log" >&2; exit 1; }
.venv/bin/ruff check operator tests bench
.venv/bin/ruff format --check operator tests bench
.venv/bin/mypy
.venv/bin/pytest -q "$@"
