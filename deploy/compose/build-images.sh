#!/usr/bin/env bash
# Builds the compose stack's images with no container registry: a private
# dockerd (dockerd.sh), a Debian base image made with debootstrap and
# imported, and small images FROM it holding binaries built or installed on
# the host (pilotfish by cargo; Envoy, Consul, etcd, kube-apiserver and
# kubectl by scripts/setup.sh). Idempotent: the base tarball is cached
# outside the clone and made only when missing; an image is rebuilt only
# when its inputs (Dockerfile, files, base) changed, so a second run takes
# seconds. Run as root from anywhere; leaves the daemon running (stop it
# with deploy/compose/dockerd.sh stop).
#
# Environment:
#   PILOTFISH_COMPOSE_CACHE  caches and daemon state (default /var/cache/pilotfish-compose)
#   PILOTFISH_TEST_ROOT      where setup.sh installed the tools (default /opt/pilotfish-test)
#   PILOTFISH_BIN            use this pilotfish binary instead of running cargo
#   PILOTFISH_CARGO_RELEASE  1: build pilotfish with --release (default: debug)
#   CARGO_TARGET_DIR         cargo's target dir (default: the repository's target/)
#   PILOTFISH_DEBIAN_MIRROR  for debootstrap (default http://deb.debian.org/debian)
#   PILOTFISH_IMAGE_PREFIX   image names (default pilotfish-compose/), tag :local
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMPOSE=$REPO/deploy/compose
CACHE=${PILOTFISH_COMPOSE_CACHE:-/var/cache/pilotfish-compose}
TEST_ROOT=${PILOTFISH_TEST_ROOT:-/opt/pilotfish-test}
MIRROR=${PILOTFISH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PREFIX=${PILOTFISH_IMAGE_PREFIX:-pilotfish-compose/}
TAG=local
DEBIAN_RELEASE=bookworm  # the host's release: host-built binaries need its glibc
BASE_IMAGE=${PREFIX}debian:$DEBIAN_RELEASE
# What every image needs beyond minbase: health probes (curl), traffic
# capture (iptables), certificates (openssl) and the sample app (python3).
# Installed by debootstrap, so no Dockerfile runs apt-get; the tarball's
# name carries the list, so changing it makes a new one.
BASE_PACKAGES=ca-certificates,curl,iptables,openssl,python3
# The stack's service users, name:uid(=gid):home, made once in the base so
# that every Dockerfile just says `USER uid:gid`. 1337 is the uid the
# capture rules leave alone (the proxies).
SERVICE_USERS="envoy:1337:/nonexistent pilotfish:10001:/nonexistent app:10002:/nonexistent jaeger:10003:/nonexistent consul:10004:/consul"
BASE_TAR=$CACHE/base/debian-$DEBIAN_RELEASE-minbase-$(echo "$BASE_PACKAGES $SERVICE_USERS" | sha256sum | cut -c1-12).tar
IMAGES=(pilotfish proxy consul kube-apiserver bookinfo jaeger)

# The legacy builder (no BuildKit, which newer clients want as the buildx
# plugin): every Dockerfile here is plain, and each context is a staged
# directory of a few files.
export DOCKER_BUILDKIT=0
export DOCKER_HOST=unix://$CACHE/dockerd/docker.sock

# The client packaged with dockerd (docker.io) matches the daemon's API;
# another `docker` earlier on PATH would warn that the legacy builder is
# deprecated.
docker() { if [[ -x /usr/bin/docker ]]; then /usr/bin/docker "$@"; else command docker "$@"; fi; }

total_start=$SECONDS
step() {
    local name=$1
    shift
    echo "==> $name"
    local start=$SECONDS
    "$@"
    echo "    $name: done in $((SECONDS - start)) s"
}

if [[ $(id -u) -ne 0 ]]; then
    echo "build-images.sh: must run as root (dockerd, debootstrap)" >&2
    exit 1
fi

# --- host packages -------------------------------------------------------------
install_packages() {
    "$REPO/scripts/install-docker.sh" | sed 's/^/    /'
}

# --- the pilotfish binary -------------------------------------------------------
PILOTFISH=
build_pilotfish() {
    if [[ -n ${PILOTFISH_BIN:-} ]]; then
        PILOTFISH=$PILOTFISH_BIN
        echo "    using PILOTFISH_BIN=$PILOTFISH (no cargo build)"
    else
        local target=${CARGO_TARGET_DIR:-$REPO/target} profile=debug flags=()
        if [[ ${PILOTFISH_CARGO_RELEASE:-0} == 1 ]]; then profile=release flags=(--release); fi
        (cd "$REPO" && CARGO_TARGET_DIR=$target cargo build "${flags[@]}" -p pilotfish-discovery --bin pilotfish)
        PILOTFISH=$target/$profile/pilotfish
    fi
    [[ -x $PILOTFISH ]] || { echo "no pilotfish binary at $PILOTFISH" >&2; exit 1; }
}

# --- base image -----------------------------------------------------------------
make_base_tarball() {
    if [[ -s $BASE_TAR ]]; then
        echo "    cached: $BASE_TAR"
        return
    fi
    command -v debootstrap >/dev/null || { echo "no debootstrap: apt-get install debootstrap" >&2; exit 1; }
    local rootfs=$CACHE/base/rootfs.tmp
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$DEBIAN_RELEASE" "$rootfs" "$MIRROR" >"$CACHE/base/debootstrap.log" 2>&1 ||
        { tail -n 20 "$CACHE/base/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    local entry name id home home_flag
    for entry in $SERVICE_USERS; do
        IFS=: read -r name id home <<<"$entry"
        home_flag=--no-create-home
        [[ $home == /nonexistent ]] || home_flag=--create-home
        chroot "$rootfs" groupadd --system --gid "$id" "$name"
        chroot "$rootfs" useradd --system --uid "$id" --gid "$id" "$home_flag" \
            --home-dir "$home" --shell /usr/sbin/nologin "$name"
    done
    # Images must not start services while apt installs into them.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    tar --numeric-owner -C "$rootfs" -cf "$BASE_TAR.tmp" .
    mv "$BASE_TAR.tmp" "$BASE_TAR"
    sha256sum "$BASE_TAR" | cut -d' ' -f1 >"$BASE_TAR.sha256"
    rm -rf "$rootfs"
    # Tarballs of other package or user lists are not used any more.
    find "$CACHE/base" -maxdepth 1 -name "debian-$DEBIAN_RELEASE-minbase*.tar*" \
        ! -name "$(basename "$BASE_TAR")*" -delete
    echo "    made $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
}

image_label() { docker image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }

import_base() {
    local key
    key=$(<"$BASE_TAR.sha256")
    if [[ $(image_label "$BASE_IMAGE" pilotfish.inputs) == "$key" ]]; then
        echo "    cached: $BASE_IMAGE"
        return
    fi
    docker import --change "LABEL pilotfish.inputs=$key" --change 'CMD ["/bin/bash"]' \
        "$BASE_TAR" "$BASE_IMAGE" >/dev/null
    echo "    imported $BASE_IMAGE"
}

# --- the images -------------------------------------------------------------------
# The files each image's Dockerfile COPYs: "source destination-name".
image_files() {
    case $1 in
        pilotfish) echo "$PILOTFISH pilotfish" ;;
        proxy) echo "$TEST_ROOT/bin/envoy envoy"
               echo "$PILOTFISH pilotfish"
               echo "$REPO/deploy/scripts/pilotfish-iptables.sh pilotfish-iptables.sh"
               echo "$COMPOSE/images/proxy/pilotfish-proxy.sh pilotfish-proxy.sh" ;;
        consul) echo "$TEST_ROOT/bin/consul consul" ;;
        kube-apiserver) echo "$(command -v etcd || echo /usr/bin/etcd) etcd"
                        echo "$TEST_ROOT/bin/kube-apiserver kube-apiserver"
                        echo "$TEST_ROOT/bin/kubectl kubectl"
                        echo "$COMPOSE/images/kube-apiserver/kube-entrypoint.sh kube-entrypoint.sh" ;;
        jaeger) echo "$TEST_ROOT/bin/jaeger jaeger" ;;
        bookinfo) echo "$COMPOSE/images/bookinfo/bookinfo.py bookinfo.py" ;;
    esac
}

# Images whose Dockerfile runs apt-get: the private daemon's bridges have no
# NAT, so those builds use the host's network.
needs_network() { grep -q apt-get "$COMPOSE/images/$1/Dockerfile"; }

build_image() {
    local name=$1 image=${PREFIX}$1:$TAG dockerfile=$COMPOSE/images/$1/Dockerfile
    local src dest key
    # What the image is made of: the base, the Dockerfile, every file's content.
    key=$({
        docker image inspect --format '{{.Id}}' "$BASE_IMAGE"
        sha256sum "$dockerfile" | cut -d' ' -f1
        while read -r src dest; do
            [[ -r $src ]] || { echo "$name: missing $src (run scripts/setup.sh)" >&2; exit 1; }
            echo "$dest $(sha256sum "$(readlink -f "$src")" | cut -d' ' -f1)"
        done < <(image_files "$name")
    } | sha256sum | cut -d' ' -f1)
    if [[ $(image_label "$image" pilotfish.inputs) == "$key" ]]; then
        echo "    cached: $image"
        return
    fi
    # A staged context outside the clone: only what the Dockerfile copies
    # (hard links where possible; the binaries are large).
    local ctx=$CACHE/context/$name
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cp "$dockerfile" "$ctx/Dockerfile"
    while read -r src dest; do
        src=$(readlink -f "$src")
        ln "$src" "$ctx/$dest" 2>/dev/null || cp "$src" "$ctx/$dest"
    done < <(image_files "$name")
    local net=()
    if needs_network "$name"; then net=(--network host); fi
    docker build --quiet "${net[@]}" --build-arg "BASE=$BASE_IMAGE" \
        --label "pilotfish.inputs=$key" -t "$image" "$ctx" >/dev/null
    rm -rf "$ctx"
    echo "    built $image"
}

# --- check: every binary runs in its image ------------------------------------------
# The first non-empty line a command prints (it still reads all of it:
# closing the pipe early would fail the docker client).
first_line() {
    local out
    out=$("$@")
    awk 'NF { print; exit }' <<<"$out"
}

smoke_test() {
    local run=(docker run --rm --network none)
    "${run[@]}" "${PREFIX}pilotfish:$TAG" --version
    first_line "${run[@]}" --entrypoint envoy "${PREFIX}proxy:$TAG" --version
    "${run[@]}" --entrypoint pilotfish "${PREFIX}proxy:$TAG" --version
    "${run[@]}" --user 0 --entrypoint iptables "${PREFIX}proxy:$TAG" --version
    "${run[@]}" --entrypoint test "${PREFIX}proxy:$TAG" -x /usr/local/bin/pilotfish-iptables.sh
    first_line "${run[@]}" "${PREFIX}consul:$TAG" version
    "${run[@]}" --entrypoint kube-apiserver "${PREFIX}kube-apiserver:$TAG" --version
    first_line "${run[@]}" --entrypoint etcd "${PREFIX}kube-apiserver:$TAG" --version
    "${run[@]}" --entrypoint kubectl "${PREFIX}kube-apiserver:$TAG" version --client
    first_line "${run[@]}" "${PREFIX}jaeger:$TAG" version
    "${run[@]}" --entrypoint python3 "${PREFIX}bookinfo:$TAG" -c 'import http.server; print("python3 http.server")'
    first_line "${run[@]}" --entrypoint curl "${PREFIX}bookinfo:$TAG" --version
}

mkdir -p "$CACHE/base"
step "host packages (docker.io, debootstrap)" install_packages
step "private dockerd" "$COMPOSE/dockerd.sh" start
step "pilotfish binary (cargo)" build_pilotfish
step "base tarball (debootstrap $DEBIAN_RELEASE minbase)" make_base_tarball
step "base image $BASE_IMAGE" import_base
for name in "${IMAGES[@]}"; do
    step "image ${PREFIX}$name:$TAG" build_image "$name"
done
# Images a rebuild replaced (untagged, still labelled); keeps the cache small.
prune_replaced() { docker image prune --force --filter label=pilotfish.inputs | tail -n 1; }
step "prune replaced images" prune_replaced
step "smoke test (each binary's version, in its image)" smoke_test
echo "==> all images ready in $((SECONDS - total_start)) s (DOCKER_HOST=$DOCKER_HOST)"
docker images --filter "reference=${PREFIX}*" --format '    {{.Repository}}:{{.Tag}}  {{.Size}}'
