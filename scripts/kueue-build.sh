#!/usr/bin/env bash
# Builds Kueue's manager (sigs.k8s.io/kueue/cmd/kueue) for the queueing tests from Go modules, pinned, and caches it
# with the manifests the tests install (its CRDs, its ClusterRole, its admission webhooks), by version:
#   ~/.cache/ftstudy/kueue-$KUEUE_VERSION/{bin/kueue,config/crd/*.yaml,config/role.yaml,config/webhook.yaml}
# (override the root with FTSTUDY_KUEUE_CACHE, the release with FTSTUDY_KUEUE_VERSION). A second run with the binary
# present returns at once. Prints the cache directory.
#
# v0.17.0 is the newest release the Go module proxy here serves (docs/plans/kueue.md). Its go.mod has no replace
# directives, so `go install module@version` builds it as released; the version is stamped as Kueue's Makefile does.
# It shares GOPATH, GOMODCACHE and GOCACHE with the Kubernetes and helm builds. About 3 minutes on one core.
set -euo pipefail

KUEUE_VERSION="${FTSTUDY_KUEUE_VERSION:-v0.17.0}"
ROOT="${FTSTUDY_KUEUE_CACHE:-$HOME/.cache/ftstudy}"
DIR="$ROOT/kueue-$KUEUE_VERSION"
export GOPATH="$ROOT/go" GOMODCACHE="$ROOT/go/pkg/mod" GOCACHE="$ROOT/go/cache" CGO_ENABLED=0 GOTOOLCHAIN=local
export GOFLAGS=-mod=mod

ready() { [ -x "$DIR/bin/kueue" ] && [ -f "$DIR/config/role.yaml" ] && [ -f "$DIR/config/webhook.yaml" ]; }
if ready; then echo "$DIR"; exit 0; fi
if ! command -v go >/dev/null; then
    [ -x /usr/local/go/bin/go ] && PATH="/usr/local/go/bin:$PATH" ||
        { echo "kueue-build.sh: Go is required (go.dev/dl, or Debian's golang)" >&2; exit 1; }
fi
mkdir -p "$DIR/bin"
# Test sessions may start side by side: one builds, the others wait for it and then find the binary.
exec 9>"$DIR/.lock"
flock 9
if ready; then echo "$DIR"; exit 0; fi

if [ ! -x "$DIR/bin/kueue" ]; then
    echo "kueue-build.sh: building Kueue $KUEUE_VERSION (first time only; a few minutes)" >&2
    GOBIN="$DIR/bin.tmp" go install -trimpath \
        -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
        "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
    mv "$DIR/bin.tmp/kueue" "$DIR/bin/kueue"
    rmdir "$DIR/bin.tmp"
fi
# The manifests are in the module's source: its CRDs (v1beta2 stored, no conversion webhook in the bases), the
# manager's ClusterRole and its admission webhooks (pointing at a Service, which tests/cluster/kueue.py replaces by
# the manager's local address). Copied again (without a rebuild) into a cache made before the webhooks were.
src=$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
[ -d "$src/config/components/crd/bases" ] || { echo "kueue-build.sh: no CRDs in $src" >&2; exit 1; }
rm -rf "$DIR/config"
mkdir -p "$DIR/config/crd"
cp "$src"/config/components/crd/bases/*.yaml "$DIR/config/crd/"
cp "$src/config/components/rbac/role.yaml" "$DIR/config/role.yaml"
cp "$src/config/components/webhook/manifests.yaml" "$DIR/config/webhook.yaml"
chmod -R u+w "$DIR/config"
echo "$DIR"
