#!/usr/bin/env bash
# A private Docker daemon for the compose stack, which leaves the host alone:
# its own data/exec roots and socket, no iptables or sysctl changes (other
# tests on this machine use network namespaces, bridges and NAT at the same
# time), fixed address ranges. Containers reach each other and the host, not
# the outside world. See deploy/compose/README.md.
#
#   deploy/compose/dockerd.sh start|stop|status|env
#
# `env` prints the DOCKER_HOST line to eval. Settings (environment):
#   PILOTFISH_COMPOSE_CACHE  state and caches (default /var/cache/pilotfish-compose)
#   PILOTFISH_DOCKER_BIP     docker0 address (default 172.31.254.1/24)
#   PILOTFISH_DOCKER_POOL    user-defined network pool (default 172.30.0.0/16)
set -euo pipefail

CACHE=${PILOTFISH_COMPOSE_CACHE:-/var/cache/pilotfish-compose}
W=$CACHE/dockerd
SOCK=$W/docker.sock
PIDFILE=$W/dockerd.pid
BIP=${PILOTFISH_DOCKER_BIP:-172.31.254.1/24}
POOL=${PILOTFISH_DOCKER_POOL:-172.30.0.0/16}
STARTUP_SECONDS=60

say() { echo "dockerd.sh: $*"; }

daemon_pid() {
    [[ -f $PIDFILE ]] || return 1
    local pid
    pid=$(<"$PIDFILE")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# The client packaged with dockerd (docker.io) matches the daemon's API.
docker() { if [[ -x /usr/bin/docker ]]; then /usr/bin/docker "$@"; else command docker "$@"; fi; }

# The socket answers (not only: the process exists).
responding() { DOCKER_HOST=unix://$SOCK docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
    if daemon_pid >/dev/null && responding; then
        say "already running (pid $(daemon_pid)), DOCKER_HOST=unix://$SOCK"
        return
    fi
    command -v dockerd >/dev/null || { say "no dockerd: apt-get install docker.io (see README.md)" >&2; exit 1; }
    mkdir -p "$W/data" "$W/exec"
    # setsid: the daemon outlives this shell and its job control.
    setsid dockerd \
        --data-root "$W/data" --exec-root "$W/exec" --pidfile "$PIDFILE" \
        -H "unix://$SOCK" \
        --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        --bip "$BIP" --default-address-pool "base=$POOL,size=24" \
        --storage-driver overlay2 \
        >"$W/dockerd.log" 2>&1 </dev/null &
    local deadline=$((SECONDS + STARTUP_SECONDS))
    until responding; do
        if ((SECONDS > deadline)); then
            say "dockerd did not answer on $SOCK within ${STARTUP_SECONDS}s; last log lines:" >&2
            tail -n 20 "$W/dockerd.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    say "started (pid $(daemon_pid)), DOCKER_HOST=unix://$SOCK, log $W/dockerd.log"
}

stop() {
    local pid
    if pid=$(daemon_pid); then
        kill -TERM "$pid"
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null; do
            ((SECONDS > deadline)) && { say "dockerd $pid ignored TERM for 30s, sending KILL" >&2; kill -KILL "$pid"; }
            sleep 0.2
        done
        say "stopped (pid $pid)"
    else
        say "not running"
    fi
    # Both outlive dockerd.
    if mountpoint -q "$W/exec/netns/default" 2>/dev/null; then umount "$W/exec/netns/default"; fi
    if ip link show docker0 >/dev/null 2>&1 && ip -br addr show docker0 | grep -q "${BIP%/*}"; then
        ip link del docker0
    fi
}

status() {
    local pid
    if pid=$(daemon_pid) && responding; then
        say "running (pid $pid), DOCKER_HOST=unix://$SOCK"
    else
        say "not running"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export DOCKER_HOST=unix://$SOCK" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
