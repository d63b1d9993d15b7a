#!/usr/bin/env bash
# docker-compose for this stack: the private daemon (started if needed, see
# dockerd.sh) and docker-compose.yml, whatever the current directory. Uses
# compose v2 (`docker compose`) where present, else docker-compose 1.29.
#   deploy/compose/compose.sh up -d
#   deploy/compose/compose.sh exec -T kube-apiserver kubectl apply -f - < rule.yaml
#   deploy/compose/compose.sh down -v
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$HERE/dockerd.sh" status >/dev/null 2>&1 || "$HERE/dockerd.sh" start >&2
eval "$("$HERE/dockerd.sh" env)"
export DOCKER_HOST
docker=/usr/bin/docker
[[ -x $docker ]] || docker=docker
if "$docker" compose version >/dev/null 2>&1; then
    exec "$docker" compose -f "$HERE/docker-compose.yml" "$@"
fi
exec docker-compose -f "$HERE/docker-compose.yml" "$@"
