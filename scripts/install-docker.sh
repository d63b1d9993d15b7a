#!/usr/bin/env bash
# Installs what the docker-compose stack and its test need on the host, as
# root, on Debian bookworm: dockerd and its client (docker.io), Compose
# (docker-compose) and debootstrap (the images' base is built locally: the
# project machines reach no container registry). Idempotent: installs only
# what is missing.
#
# docker.io's postinst would start a system dockerd with default flags,
# which rewrite the host's iptables; service starts are forbidden while it
# installs. The stack runs its own private dockerd (deploy/compose/dockerd.sh).
set -euo pipefail

say() { echo "install-docker: $*"; }

if [[ $(id -u) -ne 0 ]]; then
    say "not root: skipped (the docker-compose test needs root anyway)"
    exit 0
fi
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[[ -x /usr/bin/docker-compose ]] || missing+=(docker-compose)
if [[ ${#missing[@]} -eq 0 ]]; then
    say "installed: dockerd, docker-compose, debootstrap"
    exit 0
fi
guard=
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$guard"
    chmod 0755 "$guard"
fi
status=0
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || status=$?
[[ -z $guard ]] || rm -f "$guard"
((status == 0)) || exit "$status"
say "installed ${missing[*]}"
