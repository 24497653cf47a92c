#!/usr/bin/env bash
# Prints the path of libfaketime's multithreaded preload library, installing Debian's `libfaketime` package first
# when it is missing (scripts/debian-install.sh). Idempotent and quick once installed. tests/test_hardening.py runs
# an operator with its wall clock a day ahead of the API server's through it (LD_PRELOAD, FAKETIME=+1d), as on a
# node whose clock is off.
set -euo pipefail

found() {
    local lib
    for lib in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1; do
        if [ -e "$lib" ]; then echo "$lib"; return 0; fi
    done
    return 1
}

if ! path=$(found); then
    "$(dirname "$0")/debian-install.sh" libfaketime
    path=$(found) || { echo "faketime.sh: the libfaketime package installed no libfaketimeMT.so.1" >&2; exit 1; }
fi
echo "$path"
