#!/usr/bin/env bash
# Prints the path of `promtool` (Prometheus's rule checker), installing Debian's `prometheus` package first when it
# is missing (scripts/debian-install.sh, which starts no service: the package also ships the Prometheus server).
# Idempotent and quick once installed:
#
#   export FTSTUDY_PROMTOOL="$(scripts/promtool.sh)"
set -euo pipefail

found() { command -v promtool 2>/dev/null || { [ -x /usr/bin/promtool ] && echo /usr/bin/promtool; }; }

if ! path=$(found); then
    "$(dirname "$0")/debian-install.sh" prometheus
    path=$(found) || { echo "promtool.sh: the prometheus package installed no promtool" >&2; exit 1; }
fi
echo "$path"
