#!/usr/bin/env bash
# Builds Jaeger (the `jaeger` binary: collector, storage and query in one
# process, with a Zipkin receiver) from the Go module at a pinned release,
# for the docker-compose stack's trace collector. Slow on 2 cores, so cached
# outside the clone, keyed by version: $PILOTFISH_TEST_ROOT/jaeger/<version>/bin
# (default /opt/pilotfish-test/jaeger/v1.75.0/bin), symlinked into
# $PILOTFISH_TEST_ROOT/bin. Idempotent: a cached build is reused.
set -euo pipefail

JAEGER_VERSION=${JAEGER_VERSION:-v1.75.0}
ROOT=${PILOTFISH_TEST_ROOT:-/opt/pilotfish-test}
CACHE=$ROOT/jaeger/$JAEGER_VERSION
say() { echo "install-jaeger: $*"; }

if [[ -x $CACHE/bin/jaeger ]]; then
    say "jaeger $JAEGER_VERSION cached in $CACHE/bin"
else
    command -v go >/dev/null 2>&1 || { echo "install-jaeger: go is required" >&2; exit 1; }
    build=$CACHE/build
    rm -rf "$build"
    mkdir -p "$build" "$CACHE/bin"
    cd "$build"
    go mod init pilotfish.test/jaeger-build >/dev/null 2>&1
    say "resolving github.com/jaegertracing/jaeger@$JAEGER_VERSION"
    GOFLAGS=-mod=mod go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" >go-get.log 2>&1 ||
        { tail -n 20 go-get.log >&2; exit 1; }
    say "building jaeger (several minutes on 2 cores)"
    # The UI assets are not part of the module: the build serves a placeholder
    # page at /, while the query API (/api/traces) is complete.
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" \
        -o "$CACHE/bin/jaeger.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
    mv "$CACHE/bin/jaeger.tmp" "$CACHE/bin/jaeger"
    rm -rf "$build"
    say "built into $CACHE/bin"
fi
mkdir -p "$ROOT/bin"
ln -sf "$CACHE/bin/jaeger" "$ROOT/bin/jaeger"
say "$("$ROOT/bin/jaeger" version 2>/dev/null | head -c 300 || true)"
