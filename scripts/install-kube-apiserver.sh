#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from the k8s.io/kubernetes Go module at a
# pinned release with this machine's Go toolchain, and installs etcd from
# Debian: a real Kubernetes API server for the tests, with no controllers.
#
# The build is slow (several minutes on 2 cores), so the binaries are cached
# outside the clone, keyed by version: $PILOTFISH_TEST_ROOT/kube/<version>/bin
# (default /opt/pilotfish-test/kube/v1.36.3/bin), symlinked into
# $PILOTFISH_TEST_ROOT/bin. Idempotent: a cached build is reused.
#
# k8s.io/kubernetes replaces its k8s.io/* staging modules with local paths,
# which a consumer cannot follow; the build module pins each of them to the
# matching v0.x release instead.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ROOT=${PILOTFISH_TEST_ROOT:-/opt/pilotfish-test}
CACHE=$ROOT/kube/$KUBE_VERSION
say() { echo "install-kube-apiserver: $*"; }

# --- etcd ----------------------------------------------------------------------
if ! command -v etcd >/dev/null 2>&1; then
    say "installing etcd-server from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends etcd-server
fi
say "$(etcd --version 2>/dev/null | head -n 1)"

# --- kube-apiserver and kubectl --------------------------------------------------
# A cached build counts only if it reports the pinned version (an unstamped
# build says v0.0.0-master, which clients and `kubectl version` trip over).
cached_version() { "$CACHE/bin/kube-apiserver" --version 2>/dev/null | awk '{print $2}'; }
if [[ -x $CACHE/bin/kube-apiserver && -x $CACHE/bin/kubectl && "$(cached_version)" == "$KUBE_VERSION" ]]; then
    say "kube-apiserver $KUBE_VERSION cached in $CACHE/bin"
else
    command -v go >/dev/null 2>&1 || { echo "install-kube-apiserver: go is required" >&2; exit 1; }
    staging_version="v0.${KUBE_VERSION#v1.}"
    build=$CACHE/build
    rm -rf "$build"
    mkdir -p "$build" "$CACHE/bin"
    cd "$build"
    say "resolving k8s.io/kubernetes@$KUBE_VERSION (staging modules at $staging_version)"
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
    go mod init pilotfish.test/kube-build >/dev/null 2>&1
    go mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
    # Every `k8s.io/x => ./staging/src/k8s.io/x` becomes `k8s.io/x => k8s.io/x@v0.N.M`.
    sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*|\1|p' "$gomod" | while read -r module; do
        go mod edit -replace "$module=$module@$staging_version"
    done
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    say "downloading modules"
    GOFLAGS=-mod=mod go mod tidy >/dev/null
    # What Kubernetes' own build (hack/lib/version.sh) stamps into both
    # version packages; without it /version and `--version` say v0.0.0-master.
    major=${KUBE_VERSION#v}; minor=${major#*.}; major=${major%%.*}; minor=${minor%%.*}
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    done
    say "building kube-apiserver and kubectl (about 7 minutes on 2 cores)"
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$CACHE/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$CACHE/bin/kubectl" k8s.io/kubernetes/cmd/kubectl
    say "built into $CACHE/bin"
fi
mkdir -p "$ROOT/bin"
ln -sf "$CACHE/bin/kube-apiserver" "$ROOT/bin/kube-apiserver"
ln -sf "$CACHE/bin/kubectl" "$ROOT/bin/kubectl"
say "$("$ROOT/bin/kube-apiserver" --version)"
