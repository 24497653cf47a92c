#!/usr/bin/env bash
# Builds the `helm` CLI for the chart tests from Go modules, pinned, and caches it by version:
#   ~/.cache/ftstudy/helm-$HELM_VERSION/bin/helm (override the root with FTSTUDY_HELM_CACHE, the release with
#   FTSTUDY_HELM_VERSION). A second run with the binary present returns at once. Prints the bin directory.
#
# helm.sh/helm/v3's go.mod has no replace directives, so a plain `go build` of the published module works; it is
# built inside a small wrapper module (as scripts/k8s-build.sh does) so that the version is pinned by go.mod and the
# module downloads are shared with the Kubernetes build (same GOPATH, GOMODCACHE and GOCACHE). The release and the
# Kubernetes version of its client libraries are stamped with ldflags, as helm's Makefile does, so `helm version`
# reports the real release and `helm lint` checks against the right Kubernetes version.
set -euo pipefail

HELM_VERSION="${FTSTUDY_HELM_VERSION:-v3.22.0}"
ROOT="${FTSTUDY_HELM_CACHE:-$HOME/.cache/ftstudy}"
BIN="$ROOT/helm-$HELM_VERSION/bin"
BUILD="$ROOT/build/helm-$HELM_VERSION"
export GOPATH="$ROOT/go" GOMODCACHE="$ROOT/go/pkg/mod" GOCACHE="$ROOT/go/cache" GOFLAGS=-mod=mod CGO_ENABLED=0
export GOTOOLCHAIN=local

if [ -x "$BIN/helm" ]; then echo "$BIN"; exit 0; fi
if ! command -v go >/dev/null; then
    [ -x /usr/local/go/bin/go ] && PATH="/usr/local/go/bin:$PATH" ||
        { echo "helm-build.sh: Go is required (go.dev/dl, or Debian's golang)" >&2; exit 1; }
fi
mkdir -p "$BIN" "$BUILD"
# Test sessions may start side by side: one builds, the others wait for it and then find the binary.
exec 9>"$BUILD/.lock"
flock 9
if [ -x "$BIN/helm" ]; then echo "$BIN"; exit 0; fi

cd "$BUILD"
if [ ! -f .module-ready ]; then
    rm -f go.mod go.sum tools.go
    go mod init ftstudy.local/helmbuild >/dev/null 2>&1
    cat >tools.go <<'EOF'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
EOF
    go get "helm.sh/helm/v3@$HELM_VERSION" >/dev/null 2>&1
    go mod tidy -e >/dev/null 2>&1 || true
    touch .module-ready
fi

# The Kubernetes minor version helm's libraries were released with (k8s.io/client-go v0.N.x is Kubernetes 1.N).
client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
k8s_minor="${client_go#v0.}"; k8s_minor="${k8s_minor%%.*}"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
echo "helm-build.sh: building helm $HELM_VERSION (first time only; a few minutes)" >&2
go build -trimpath -ldflags "$ldflags" -o "$BIN/helm.tmp" helm.sh/helm/v3/cmd/helm
mv "$BIN/helm.tmp" "$BIN/helm"
echo "$BIN"
