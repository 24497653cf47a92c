#!/usr/bin/env bash
# The project's test command: set up, start PostgreSQL, lint, type-check, run every test.
#
# The real parts are built (the first time; from ~/.cache/ftstudy and podman's store afterwards) in the background
# while the tests that need none of them run; then the rest run. The first set keeps about one core busy, so the
# builds gain what is left beside it and their download time, not their whole length. Which tests wait for the
# builds: those marked `builds` by tests/conftest.py (tests/cluster/builds.py says how).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export FTSTUDY_TEST_PG_URL="$(scripts/postgres.sh start)"

built="$(mktemp -d "${TMPDIR:-/tmp}/ftstudy-builds.XXXXXX")"
# Each build prints where it put its result; its log goes to $built/NAME.log, shown if it fails. Niced, so that the
# tests beside them keep the CPU they had when they ran alone.
build() { # NAME SCRIPT...
    local name=$1
    shift
    if ! nice -n 10 "$@" >"$built/$name" 2>"$built/$name.log"; then
        echo "scripts/test.sh: $* failed; its output:" >&2
        tail -n 60 "$built/$name.log" >&2
        return 1
    fi
}
builds() {
    # setsid (below) gives the builds a session of their own, and with the kernel's autogroup scheduling (on by
    # default) a session is scheduled as one group against the others whatever its processes' nice values: the
    # builds took half the CPU, and the tests' torch threads, waiting on each other, ran 10-20 times slower (fresh
    # machine, 2026-12-07). Lowering the group's own weight gives the tests back their CPU.
    echo 19 2>/dev/null >/proc/self/autogroup || true # silent where the kernel has no autogroup
    # The control plane (Kubernetes and etcd from Go modules: about 11 minutes on two quiet cores), helm for the
    # chart tests, Kueue's manager for the queueing tests (about 5 minutes of CPU).
    build k8s scripts/k8s-build.sh
    build helm scripts/helm-build.sh
    build kueue scripts/kueue-build.sh
    # SeaweedFS, the object store of the checkpoint tests (about 3 minutes of CPU), beside the two steps below,
    # which wait on downloads much of their time.
    build seaweedfs scripts/seaweedfs-build.sh &
    local seaweedfs=$!
    # promtool and the Prometheus server, from Debian's prometheus package.
    build promtool scripts/promtool.sh
    # libfaketime, from Debian: an operator whose clock is a day ahead of the API server's.
    build faketime scripts/faketime.sh
    # The operator, trainer and pause images, built with buildah on a Debian base made by mmdebstrap (about 5
    # minutes the first time, mostly the trainer's torch; seconds when current); the tests run them with podman and
    # on a node.
    build images scripts/images.sh
    wait "$seaweedfs"
}
# Its own process group (setsid), so that an early exit stops the whole build, not only this shell's child.
setsid -w bash -c "$(declare -f build builds); built='$built'; builds" &
builds_pid=$!
trap 'kill -- -"$builds_pid" 2>/dev/null || true; rm -rf "$built"' EXIT

.venv/bin/ruff check operator tests bench
.venv/bin/ruff format --check operator tests bench
.venv/bin/mypy

# Each set ends with its twelve slowest tests (what to look at when the command nears its hour).
# pytest's code 5 is "no test selected": a test file given as an argument may hold only one of the two sets.
status=0
FTSTUDY_TEST_BUILDS_RUNNING=1 .venv/bin/pytest -q --durations=12 -m "not builds" "$@" || { rc=$?; [ "$rc" = 5 ] || status=$rc; }
if ! wait "$builds_pid"; then
    echo "scripts/test.sh: a build failed (above); the tests that need it were not run" >&2
    exit 1
fi
export FTSTUDY_K8S_BIN="$(tail -n 1 "$built/k8s")"
export FTSTUDY_HELM_BIN="$(tail -n 1 "$built/helm")"
export FTSTUDY_PROMTOOL="$(tail -n 1 "$built/promtool")"
.venv/bin/pytest -q --durations=12 -m builds "$@" || { rc=$?; [ "$rc" = 5 ] || status=$rc; }
exit "$status"
