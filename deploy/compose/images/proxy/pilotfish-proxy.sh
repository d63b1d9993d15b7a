#!/usr/bin/env bash
# Starts Envoy as a Pilotfish sidecar or gateway: writes the bootstrap with
# `pilotfish bootstrap` (node id from this container's IP, labels from the
# environment), then execs Envoy, which gets SIGTERM straight from the
# container's init.
#
# Environment:
#   PILOTFISH_XDS_ADDRESS  Pilotfish's ADS address (default pilotfish:15010)
#   PROXY_TYPE             sidecar (default) or router (a gateway)
#   POD_NAME, POD_NAMESPACE  the workload (default: the hostname, default)
#   PROXY_LABELS           space-separated KEY=VALUE workload labels
#   DNS_PROXY              1 (default): answer the app's DNS (bootstrap
#                          --dns-proxy; the capture runs with --capture-dns)
#   PROXY_ARGS             more `pilotfish bootstrap` flags
set -euo pipefail

# The first address of this network namespace other than loopback.
ip=$(hostname -I | awk '{print $1}')
[[ -n $ip ]] || { echo "pilotfish-proxy: no IP address in this network namespace" >&2; exit 1; }

args=(bootstrap
    --xds-address "${PILOTFISH_XDS_ADDRESS:-pilotfish:15010}"
    --proxy-type "${PROXY_TYPE:-sidecar}"
    --ip "$ip"
    --name "${POD_NAME:-$(hostname)}"
    --namespace "${POD_NAMESPACE:-default}")
for label in ${PROXY_LABELS:-}; do
    args+=(--label "$label")
done
[[ ${DNS_PROXY:-1} == 1 ]] && args+=(--dns-proxy)
# shellcheck disable=SC2206 # word splitting of extra flags is intended
args+=(${PROXY_ARGS:-})

bootstrap=/tmp/envoy-bootstrap.json
/usr/local/bin/pilotfish "${args[@]}" >"$bootstrap"
echo "pilotfish-proxy: ${PROXY_TYPE:-sidecar} ${POD_NAME:-$(hostname)} at $ip, labels: ${PROXY_LABELS:-none}" >&2
exec /usr/local/bin/envoy -c "$bootstrap" --log-level "${ENVOY_LOG_LEVEL:-warning}" \
    --drain-time-s 2 --drain-strategy immediate --parent-shutdown-time-s 3
