#!/usr/bin/env bash
# Builds a real Kubernetes control plane for the tests from Go modules, pinned, and caches it by version:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
# and what the real node of tests/cluster/real_node.py runs: kubelet, kube-proxy and the cluster DNS, CoreDNS,
# into ~/.cache/ftstudy/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin (override with FTSTUDY_K8S_CACHE).
# A second run with the binaries present returns at once. Prints the bin directory.
#
# k8s.io/kubernetes is not meant to be a dependency: its go.mod replaces every staging module (k8s.io/api, ...) with
# a local path. The wrapper module here requires it and replaces each staging module with its published v0.X.Y, the
# same code. etcd's own go.mod has local replaces too, so it is built through a wrapper main that calls etcdmain.
# The release is stamped into the binaries with ldflags, so `kubectl version` reports the real version.
set -euo pipefail

K8S_VERSION="${FTSTUDY_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${FTSTUDY_ETCD_VERSION:-v3.6.16}"
COREDNS_VERSION="${FTSTUDY_COREDNS_VERSION:-v1.14.7}"
ROOT="${FTSTUDY_K8S_CACHE:-$HOME/.cache/ftstudy}"
BIN="$ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin"
BUILD="$ROOT/build/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
export GOPATH="$ROOT/go" GOMODCACHE="$ROOT/go/pkg/mod" GOCACHE="$ROOT/go/cache" GOFLAGS=-mod=mod CGO_ENABLED=0
export GOTOOLCHAIN=local

BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
have_all() {
    for b in etcd coredns "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}
if have_all; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "k8s-build.sh: Go is required (go.dev/dl, or Debian's golang)" >&2; exit 1; }
mkdir -p "$BIN" "$BUILD/kubernetes" "$BUILD/etcd"
# Test sessions may start side by side: one builds, the others wait for it and then find the binaries.
exec 9>"$BUILD/.lock"
flock 9
if have_all; then echo "$BIN"; exit 0; fi

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
patch="${K8S_VERSION##*.}"
staging="v0.$minor.$patch"

# --- Kubernetes ------------------------------------------------------------------------------------------------
cd "$BUILD/kubernetes"
if [ ! -f .module-ready ]; then
    rm -f go.mod go.sum tools.go
    go mod init ftstudy.local/k8sbuild >/dev/null 2>&1
    go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
    upstream="$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
    {
        echo "require k8s.io/kubernetes $K8S_VERSION"
        grep -E '=> \./staging/' "$upstream" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } >>go.mod
    # The tools import file pins the commands' packages into this module's dependency graph.
    cat >tools.go <<EOF
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
EOF
    go mod tidy -e >/dev/null 2>&1 || true
    touch .module-ready
fi
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
for b in "${BINARIES[@]}"; do
    if [ ! -x "$BIN/$b" ]; then
        echo "k8s-build.sh: building $b $K8S_VERSION (first time only; minutes)" >&2
        go build -trimpath -ldflags "-s -w $ldflags" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b"
        mv "$BIN/$b.tmp" "$BIN/$b"
    fi
done

# --- etcd ------------------------------------------------------------------------------------------------------
cd "$BUILD/etcd"
if [ ! -f .module-ready ]; then
    rm -f go.mod go.sum main.go
    go mod init ftstudy.local/etcdbuild >/dev/null 2>&1
    cat >main.go <<'EOF'
// Command etcd: the upstream server's entry point, built from the published module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
    go mod tidy >/dev/null 2>&1
    touch .module-ready
fi
if [ ! -x "$BIN/etcd" ]; then
    echo "k8s-build.sh: building etcd $ETCD_VERSION" >&2
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" .
    mv "$BIN/etcd.tmp" "$BIN/etcd"
fi
# --- CoreDNS ---------------------------------------------------------------------------------------------------
# Its module has no local replaces: it builds as published; coredns.version records which one is in BIN.
if [ ! -x "$BIN/coredns" ] || [ "$(cat "$BIN/coredns.version" 2>/dev/null)" != "$COREDNS_VERSION" ]; then
    echo "k8s-build.sh: building coredns $COREDNS_VERSION" >&2
    GOBIN="$BUILD/coredns-bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
    mv "$BUILD/coredns-bin/coredns" "$BIN/coredns"
    echo "$COREDNS_VERSION" >"$BIN/coredns.version"
fi
echo "$BIN"
