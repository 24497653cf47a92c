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
    # First what most of the second set needs (tests/cluster/builds.py's EARLY_BUILDS): libfaketime and Debian's
    # prometheus package (promtool and the server), then the control plane (Kubernetes and etcd from Go modules:
    # about 11 minutes on two quiet cores; on a fresh machine it ends after the first set). The tests that need
    # nothing else start then, beside the rest, in two chains: the images' (below), which waits on downloads and
    # the disk much of its time, and this one, CPU: SeaweedFS, the object store of the checkpoint tests (about 3
    # minutes of CPU), helm for the chart tests and Kueue's manager for the queueing tests (about 5 minutes).
    build faketime scripts/faketime.sh || return 1
    build promtool scripts/promtool.sh || return 1
    build k8s scripts/k8s-build.sh || return 1
    touch "$built/early"
    images_chain &
    local images=$!
    { build seaweedfs scripts/seaweedfs-build.sh && build helm scripts/helm-build.sh &&
        build kueue scripts/kueue-build.sh; } || { wait "$images"; return 1; }
    wait "$images"
}
images_chain() {
    # The operator, trainer, PostgreSQL and pause images, built with buildah on a Debian base made by mmdebstrap
    # (about 5 minutes the first time, mostly the trainer's torch; seconds when current), then imported into the
    # real node's image store (tests/cluster/real_node.py; about 3 minutes the first time, 6 GB of it the
    # trainer), which the first node would otherwise spend while the tests wait.
    build images scripts/images.sh && build node-images .venv/bin/python -m tests.cluster.real_node
}
# Its own process group (setsid), so that an early exit stops the whole build, not only this shell's child.
# $built/rc, once they have ended, holds their exit status.
setsid -w bash -c "$(declare -f build builds images_chain); built='$built'; builds; rc=\$?; echo \$rc >'$built/rc'; exit \$rc" &
builds_pid=$!
trap 'kill -- -"$builds_pid" 2>/dev/null || true; rm -rf "$built"' EXIT

.venv/bin/ruff check operator tests bench
.venv/bin/ruff format --check operator tests bench
.venv/bin/mypy

# Each set ends with its twelve slowest tests (what to look at when the command nears its hour).
status=0
run_tests() { # pytest ARGS...; code 5, "no test selected", is no failure: the files given may hold only some sets
    .venv/bin/pytest -q --durations=12 "$@" || { local rc=$?; [ "$rc" = 5 ] || status=$rc; }
}
building() { [ ! -e "$built/rc" ]; }
FTSTUDY_TEST_BUILDS_RUNNING=all run_tests -m "not builds" "$@"
while building && [ ! -e "$built/early" ]; do sleep 2; done
if [ -e "$built/early" ]; then # absent only where a build before it failed (reported below)
    export FTSTUDY_K8S_BIN="$(tail -n 1 "$built/k8s")" FTSTUDY_PROMTOOL="$(tail -n 1 "$built/promtool")"
fi
rest="builds"
if building; then
    # The late builds (tests/cluster/builds.py's LATE_BUILDS) still run, as on a fresh machine: the tests that need
    # only the early ones meanwhile, the rest once they are done.
    FTSTUDY_TEST_BUILDS_RUNNING="seaweedfs helm kueue images node-images" run_tests -m "builds and not late" "$@"
    rest="builds and late"
fi
if ! wait "$builds_pid"; then
    echo "scripts/test.sh: a build failed (above); the tests that need it were not run" >&2
    exit 1
fi
export FTSTUDY_HELM_BIN="$(tail -n 1 "$built/helm")"
run_tests -m "$rest" "$@"
exit "$status"
