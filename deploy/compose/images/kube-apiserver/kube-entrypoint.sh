#!/usr/bin/env bash
# etcd plus kube-apiserver in one container, for the compose stack's config
# store. On first start it makes, under $KUBE_DIR (a volume shared with the
# containers that need the API): a CA, a serving certificate for the names
# this container is reached by, a service-account key, a random admin token
# and `kubeconfig` (server https://kube-apiserver:6443). Both processes stop
# on SIGTERM; the container exits when either one does.
set -euo pipefail

KUBE_DIR=${KUBE_DIR:-/var/run/pilotfish-kube}
ETCD_DIR=${ETCD_DIR:-/var/lib/etcd}
SERVER_NAME=${KUBE_SERVER_NAME:-kube-apiserver}
mkdir -p "$KUBE_DIR" "$ETCD_DIR"
cd "$KUBE_DIR"

if [[ ! -s kubeconfig ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=pilotfish-compose-kube-ca" \
        -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$SERVER_NAME" \
        -keyout serving.key -out serving.csr 2>/dev/null
    printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' \
        "$SERVER_NAME" >serving.ext
    openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile serving.ext -out serving.crt 2>/dev/null
    openssl genpkey -algorithm RSA -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub
    token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    printf '%s,admin,admin,"system:masters"\n' "$token" >tokens.csv
    cat >kubeconfig.tmp <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: compose
  cluster:
    server: https://$SERVER_NAME:6443
    certificate-authority-data: $(base64 -w0 ca.crt)
users:
- name: admin
  user:
    token: $token
contexts:
- name: compose
  context: {cluster: compose, user: admin, namespace: default}
current-context: compose
KUBECONFIG
    chmod 0644 kubeconfig.tmp
    mv kubeconfig.tmp kubeconfig
    echo "kube-entrypoint: made certificates and $KUBE_DIR/kubeconfig" >&2
fi

etcd --name=compose --data-dir="$ETCD_DIR" \
    --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
    --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
    --initial-cluster=compose=http://127.0.0.1:2380 --logger=zap --log-level=warn &
etcd_pid=$!

kube-apiserver --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --secure-port=6443 \
    --cert-dir="$KUBE_DIR/apiserver-certs" \
    --tls-cert-file=serving.crt --tls-private-key-file=serving.key \
    --client-ca-file=ca.crt --token-auth-file=tokens.csv \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file=sa.pub --service-account-signing-key-file=sa.key \
    --authorization-mode=RBAC --service-cluster-ip-range=10.96.0.0/16 \
    --disable-admission-plugins=ServiceAccount --endpoint-reconciler-type=none \
    --profiling=false --v=0 &
apiserver_pid=$!

stop() {
    kill -TERM "$apiserver_pid" 2>/dev/null || true
    wait "$apiserver_pid" 2>/dev/null || true
    kill -TERM "$etcd_pid" 2>/dev/null || true
}
trap stop TERM INT
status=0
wait -n "$etcd_pid" "$apiserver_pid" || status=$?
stop
wait || true
exit "$status"
