#!/usr/bin/env bash
# Prints the path of `promtool` (Prometheus's rule checker), installing Debian's `prometheus` package first when it
# is missing. Idempotent and quick once installed:
#
#   export FTSTUDY_PROMTOOL="$(scripts/promtool.sh)"
#
# The package also ships the Prometheus server; its maintainer scripts would start it as a service, so the install
# runs under a policy-rc.d that forbids starting services (Docker images have one already; otherwise one is put in
# place for the install and removed afterwards). Nothing is left running.
set -euo pipefail

found() { command -v promtool 2>/dev/null || { [ -x /usr/bin/promtool ] && echo /usr/bin/promtool; }; }

if path=$(found); then
    echo "$path"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "promtool.sh: not root and no sudo: install Debian's prometheus" >&2; exit 1; }
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

echo "promtool.sh: installing Debian's prometheus package (for promtool)" >&2
export DEBIAN_FRONTEND=noninteractive
install() { $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
if ! install; then
    $SUDO apt-get update -qq
    install
fi

path=$(found) || { echo "promtool.sh: the prometheus package installed no promtool" >&2; exit 1; }
echo "$path"
