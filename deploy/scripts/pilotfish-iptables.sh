#!/usr/bin/env bash
# Traffic capture for a Pilotfish sidecar: what Istio's proxy_init
# (istio-iptables) does, as one script. Run it in the pod's network namespace,
# e.g. `ip netns exec NS deploy/scripts/pilotfish-iptables.sh`.
#
# Outbound: every TCP connection the application opens is REDIRECTed to
# Envoy's virtualOutbound listener, except connections made by Envoy itself
# (uid/gid 1337), connections to 127.0.0.1 (admin, xDS and other control
# traffic) and excluded CIDRs. Inbound (only with -b): TCP arriving for the
# captured ports (PREROUTING) is REDIRECTed to Envoy's virtualInbound
# listener; with '*', every port except Envoy's own (15000 admin, 15001,
# 15006, 15020, 15021, 15090, and those given with -d), as in Istio.
#
# With inbound capture, Envoy's own connections to the pod's IP (over lo: a
# pod calling its own service, which Envoy's outbound side sent to this very
# pod) go to virtualInbound too, so that they pass the receiving side like
# any other caller's; only connections from 127.0.0.6, the source of
# Envoy's InboundPassthroughCluster, go straight through (as in Istio, this
# is what keeps passthrough from looping).
#
# DNS (only with --capture-dns): UDP queries to the namespace's nameservers
# (resolv.conf; every port-53 query with --capture-all-dns) from anything but
# Envoy are REDIRECTed to Envoy's DNS listener (15053), which answers mesh
# names with their service addresses and forwards the rest upstream; Envoy's
# own queries leave as they are. Conntrack zones (raw table) keep the two
# flows apart: Envoy's upstream queries and their answers in zone 1, the
# application's queries and Envoy's answers to them in zone 2. Without them
# an upstream query that happens to leave from a source port an earlier,
# redirected application query used matches that query's conntrack entry
# and is redirected back to Envoy itself (seen under Docker's resolver as
# about one lookup in fifty answered NXDOMAIN).
#
# The script is idempotent: it removes its own chains before installing them.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: pilotfish-iptables.sh [options]
  -p PORT    outbound redirect port (default 15001)
  -z PORT    inbound redirect port (default 15006)
  -u UID     uid of the proxy, whose traffic is never captured (default 1337)
  -g GID     gid of the proxy, whose traffic is never captured (default: the uid)
  -i CIDRS   comma-separated destination CIDRs to capture, or '*' (default '*')
  -x CIDRS   comma-separated destination CIDRs never to capture
  -b PORTS   comma-separated inbound ports to capture, or '*' (default: none)
  -d PORTS   comma-separated inbound ports never to capture
  --capture-dns [PORT]
             redirect the application's DNS (UDP 53 to the nameservers of
             /etc/resolv.conf) to PORT (default 15053)
  --capture-all-dns
             with --capture-dns: every UDP 53 query, whatever its server
  --clean    remove every rule and chain this script installs, then exit
  -h         this help
USAGE
}

OUT_PORT=15001
IN_PORT=15006
PROXY_UID=1337
PROXY_GID=
INCLUDE_CIDRS='*'
EXCLUDE_CIDRS=
INBOUND_PORTS=
EXCLUDE_INBOUND_PORTS=
CLEAN_ONLY=0
DNS_PORT=
CAPTURE_ALL_DNS=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        -p) OUT_PORT=$2; shift 2 ;;
        -z) IN_PORT=$2; shift 2 ;;
        -u) PROXY_UID=$2; shift 2 ;;
        -g) PROXY_GID=$2; shift 2 ;;
        -i) INCLUDE_CIDRS=$2; shift 2 ;;
        -x) EXCLUDE_CIDRS=$2; shift 2 ;;
        -b) INBOUND_PORTS=$2; shift 2 ;;
        -d) EXCLUDE_INBOUND_PORTS=$2; shift 2 ;;
        --clean) CLEAN_ONLY=1; shift ;;
        --capture-dns)
            if [[ $# -gt 1 && "$2" =~ ^[0-9]+$ ]]; then DNS_PORT=$2; shift 2; else DNS_PORT=15053; shift; fi ;;
        --capture-all-dns) CAPTURE_ALL_DNS=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "pilotfish-iptables: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
PROXY_GID=${PROXY_GID:-$PROXY_UID}

IPT=${IPTABLES:-iptables}
nat() { "$IPT" -w -t nat "$@"; }
raw() { "$IPT" -w -t raw "$@"; }

# Split a comma-separated list into words (empty input gives nothing).
split() { tr ',' ' ' <<<"$1"; }

# Envoy's ports, never captured inbound with '-b *' (admin, outbound,
# inbound, Istio's status/health/Prometheus ports).
SIDECAR_PORTS="15000 15020 15021 15090"
# Source address of Envoy's InboundPassthroughCluster.
PASSTHROUGH_SOURCE=127.0.0.6

clean() {
    # Jumps first: a chain that is still referenced cannot be deleted.
    while nat -D OUTPUT -p tcp -j PILOTFISH_OUTPUT 2>/dev/null; do :; done
    while nat -D PREROUTING -p tcp -j PILOTFISH_INBOUND 2>/dev/null; do :; done
    while nat -D OUTPUT -p udp --dport 53 -j PILOTFISH_DNS 2>/dev/null; do :; done
    while raw -D OUTPUT -p udp -j PILOTFISH_DNS_ZONES 2>/dev/null; do :; done
    while raw -D PREROUTING -p udp -j PILOTFISH_DNS_ANSWERS 2>/dev/null; do :; done
    local chain
    for chain in PILOTFISH_OUTPUT PILOTFISH_INBOUND PILOTFISH_REDIRECT PILOTFISH_IN_REDIRECT PILOTFISH_DNS; do
        nat -F "$chain" 2>/dev/null || true
        nat -X "$chain" 2>/dev/null || true
    done
    for chain in PILOTFISH_DNS_ZONES PILOTFISH_DNS_ANSWERS; do
        raw -F "$chain" 2>/dev/null || true
        raw -X "$chain" 2>/dev/null || true
    done
}

install_outbound() {
    nat -N PILOTFISH_REDIRECT
    nat -A PILOTFISH_REDIRECT -p tcp -j REDIRECT --to-ports "$OUT_PORT"

    nat -N PILOTFISH_OUTPUT
    if [[ -n "$INBOUND_PORTS" ]]; then
        # Inbound passthrough to the pod's own IP goes straight to the app...
        nat -A PILOTFISH_OUTPUT -o lo -s "$PASSTHROUGH_SOURCE/32" -j RETURN
        # ...while Envoy's other connections to the pod's own IP (a call to
        # its own service) go through virtualInbound.
        nat -A PILOTFISH_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner "$PROXY_UID" -j PILOTFISH_IN_REDIRECT
        nat -A PILOTFISH_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --gid-owner "$PROXY_GID" -j PILOTFISH_IN_REDIRECT
    fi
    # Envoy's own upstream connections must leave as they are, or they loop.
    nat -A PILOTFISH_OUTPUT -m owner --uid-owner "$PROXY_UID" -j RETURN
    nat -A PILOTFISH_OUTPUT -m owner --gid-owner "$PROXY_GID" -j RETURN
    # Control traffic (Envoy admin, xDS, the app's own localhost calls).
    nat -A PILOTFISH_OUTPUT -d 127.0.0.1/32 -j RETURN
    local cidr
    for cidr in $(split "$EXCLUDE_CIDRS"); do
        nat -A PILOTFISH_OUTPUT -d "$cidr" -j RETURN
    done
    if [[ "$INCLUDE_CIDRS" == '*' ]]; then
        nat -A PILOTFISH_OUTPUT -j PILOTFISH_REDIRECT
    else
        for cidr in $(split "$INCLUDE_CIDRS"); do
            nat -A PILOTFISH_OUTPUT -d "$cidr" -j PILOTFISH_REDIRECT
        done
    fi
    nat -A OUTPUT -p tcp -j PILOTFISH_OUTPUT
}

install_inbound_redirect() {
    [[ -n "$INBOUND_PORTS" ]] || return 0
    nat -N PILOTFISH_IN_REDIRECT
    nat -A PILOTFISH_IN_REDIRECT -p tcp -j REDIRECT --to-ports "$IN_PORT"
}

install_inbound() {
    [[ -n "$INBOUND_PORTS" ]] || return 0
    nat -N PILOTFISH_INBOUND
    local port
    if [[ "$INBOUND_PORTS" == '*' ]]; then
        # Envoy's own ports are never captured, as in Istio.
        for port in $SIDECAR_PORTS "$OUT_PORT" "$IN_PORT" $(split "$EXCLUDE_INBOUND_PORTS"); do
            nat -A PILOTFISH_INBOUND -p tcp --dport "$port" -j RETURN
        done
        nat -A PILOTFISH_INBOUND -p tcp -j PILOTFISH_IN_REDIRECT
    else
        for port in $(split "$EXCLUDE_INBOUND_PORTS"); do
            nat -A PILOTFISH_INBOUND -p tcp --dport "$port" -j RETURN
        done
        for port in $(split "$INBOUND_PORTS"); do
            nat -A PILOTFISH_INBOUND -p tcp --dport "$port" -j PILOTFISH_IN_REDIRECT
        done
    fi
    nat -A PREROUTING -p tcp -j PILOTFISH_INBOUND
}

install_dns() {
    [[ -n "$DNS_PORT" ]] || return 0
    local servers server
    servers=$(dns_servers)
    nat -N PILOTFISH_DNS
    # Envoy's own upstream queries must reach the real resolvers.
    nat -A PILOTFISH_DNS -m owner --uid-owner "$PROXY_UID" -j RETURN
    nat -A PILOTFISH_DNS -m owner --gid-owner "$PROXY_GID" -j RETURN
    for server in $servers; do
        # shellcheck disable=SC2046 # no word or two: the match and its value
        nat -A PILOTFISH_DNS -p udp $(destination "$server") -j REDIRECT --to-ports "$DNS_PORT"
    done
    # First in OUTPUT: a container runtime's own DNS rules (Docker DNATs
    # queries to its embedded resolver) would otherwise take them before us.
    nat -I OUTPUT 1 -p udp --dport 53 -j PILOTFISH_DNS
    install_dns_zones "$servers"
}

# The namespace's nameservers (IPv4, from resolv.conf; glibc's 127.0.0.1
# when it names none), or `all` with --capture-all-dns. Queries to other
# servers are not the application's resolver lookups: Docker's embedded
# resolver, for one, forwards names it does not know from inside the
# container's namespace, and capturing that would loop it through Envoy.
dns_servers() {
    if [[ "$CAPTURE_ALL_DNS" == 1 ]]; then
        echo all
        return
    fi
    local servers
    servers=$(awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ { print $2 }' /etc/resolv.conf 2>/dev/null || true)
    echo "${servers:-127.0.0.1}"
}

# `-d SERVER`, nothing for `all`.
destination() { [[ "$1" == all ]] || echo "-d $1"; }

install_dns_zones() {
    local servers=$1 server owner
    raw -N PILOTFISH_DNS_ZONES
    # The first CT target a packet meets sets its zone; later ones do nothing.
    for owner in "--uid-owner $PROXY_UID" "--gid-owner $PROXY_GID"; do
        # shellcheck disable=SC2086 # two words: the match and its value
        raw -A PILOTFISH_DNS_ZONES -p udp --dport 53 -m owner $owner -j CT --zone 1
        # shellcheck disable=SC2086
        raw -A PILOTFISH_DNS_ZONES -p udp --sport "$DNS_PORT" -m owner $owner -j CT --zone 2
    done
    for server in $servers; do
        # shellcheck disable=SC2046
        raw -A PILOTFISH_DNS_ZONES -p udp $(destination "$server") --dport 53 -j CT --zone 2
    done
    raw -N PILOTFISH_DNS_ANSWERS
    for server in $servers; do
        case "$server" in
            all) raw -A PILOTFISH_DNS_ANSWERS -p udp --sport 53 -j CT --zone 1 ;;
            127.0.0.1) raw -A PILOTFISH_DNS_ZONES -p udp -s "$server" --sport 53 -j CT --zone 1 ;;
            # A resolver on loopback answers from here (OUTPUT), and
            # Docker's from another port than 53.
            127.*) raw -A PILOTFISH_DNS_ZONES -p udp -s "$server" -j CT --zone 1 ;;
            *) raw -A PILOTFISH_DNS_ANSWERS -p udp -s "$server" --sport 53 -j CT --zone 1 ;;
        esac
    done
    raw -A OUTPUT -p udp -j PILOTFISH_DNS_ZONES
    raw -A PREROUTING -p udp -j PILOTFISH_DNS_ANSWERS
}

clean
if [[ "$CLEAN_ONLY" == 1 ]]; then
    echo "pilotfish-iptables: removed"
    exit 0
fi
install_inbound_redirect
install_outbound
install_inbound
install_dns
echo "pilotfish-iptables: outbound TCP -> :$OUT_PORT (uid/gid $PROXY_UID/$PROXY_GID and 127.0.0.1 excluded)${INBOUND_PORTS:+; inbound ports $INBOUND_PORTS -> :$IN_PORT}${DNS_PORT:+; DNS (UDP 53) -> :$DNS_PORT}"
