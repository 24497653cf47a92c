#!/usr/bin/env bash
# Installs Debian packages for the tests' real parts: `scripts/debian-install.sh PACKAGE...`. As root, or through
# sudo; tries the package lists at hand first and updates them only if that fails. Under a policy-rc.d that forbids
# starting services (a package such as prometheus would otherwise start its server): Docker images have one already;
# otherwise one is put in place for the install and removed afterwards. Nothing is left running.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "debian-install.sh: not root and no sudo: install Debian's $*" >&2; exit 1; }
    SUDO="sudo"
fi

POLICY=/usr/sbin/policy-rc.d
placed=""
cleanup() { if [ -n "$placed" ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    placed=1
fi

echo "debian-install.sh: installing Debian's $*" >&2
export DEBIAN_FRONTEND=noninteractive
install() { $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
if ! install "$@"; then
    $SUDO apt-get update -qq
    install "$@"
fi
