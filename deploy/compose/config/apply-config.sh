#!/usr/bin/env bash
# The compose stack's one-shot config job: Pilotfish's CRDs, then the routing
# rules under /etc/pilotfish/rules, applied with kubectl to the compose API
# server (which serves only as the config store).
set -euo pipefail
export KUBECONFIG=${KUBECONFIG:-/var/run/pilotfish-kube/kubeconfig}
kubectl apply -f /etc/pilotfish/crds.yaml
kubectl wait --for=condition=Established --timeout=60s \
    crd/virtualservices.networking.istio.io crd/destinationrules.networking.istio.io \
    crd/gateways.networking.istio.io crd/serviceentries.networking.istio.io
kubectl apply -f /etc/pilotfish/rules/
