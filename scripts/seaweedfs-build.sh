#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (its S3 gateway is the object store of the checkpoint tests) from Go modules, pinned,
# and caches it by version: ~/.cache/ftstudy/seaweedfs-$VERSION/bin/weed (override the root with
# FTSTUDY_SEAWEEDFS_CACHE). A second run with the binary present returns at once. Prints the cache directory.
#
# The module proxy here serves SeaweedFS only as a pseudo-version, and `go install module@version` refuses it (its
# go.mod has replace directives), so the module is copied out of the module cache and built as the main module
# (../shared/docs/real-parts.md). It shares GOPATH, GOMODCACHE and GOCACHE with the Kubernetes, helm and Kueue
# builds. About 3 minutes on two cores; the binary is about 230 MB.
set -euo pipefail

VERSION="${FTSTUDY_SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
ROOT="${FTSTUDY_SEAWEEDFS_CACHE:-$HOME/.cache/ftstudy}"
DIR="$ROOT/seaweedfs-$VERSION"
export GOPATH="$ROOT/go" GOMODCACHE="$ROOT/go/pkg/mod" GOCACHE="$ROOT/go/cache" CGO_ENABLED=0 GOTOOLCHAIN=local
export GOFLAGS=-mod=mod

if [ -x "$DIR/bin/weed" ]; then echo "$DIR"; exit 0; fi
if ! command -v go >/dev/null; then
    [ -x /usr/local/go/bin/go ] && PATH="/usr/local/go/bin:$PATH" ||
        { echo "seaweedfs-build.sh: Go is required (go.dev/dl, or Debian's golang)" >&2; exit 1; }
fi
mkdir -p "$DIR/bin"
# Test sessions may start side by side: one builds, the others wait for it and then find the binary.
exec 9>"$DIR/.lock"
flock 9
if [ -x "$DIR/bin/weed" ]; then echo "$DIR"; exit 0; fi

echo "seaweedfs-build.sh: building SeaweedFS $VERSION (first time only; a few minutes)" >&2
src=$(cd "$(mktemp -d)" && go mod download -json "github.com/seaweedfs/seaweedfs@$VERSION" |
    sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
[ -d "$src/weed" ] || { echo "seaweedfs-build.sh: no weed/ in $src" >&2; exit 1; }
work="$DIR/src.tmp"
rm -rf "$work"
cp -r "$src" "$work"
chmod -R u+w "$work"
(cd "$work" && go build -trimpath -ldflags "-s -w" -o "$DIR/bin/weed.tmp" ./weed)
mv "$DIR/bin/weed.tmp" "$DIR/bin/weed"
rm -rf "$work"
echo "$DIR"
