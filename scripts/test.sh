#!/usr/bin/env bash
# The project's test command: installs what the end-to-end tests need (see
# setup.sh), then runs every test of the workspace, with Envoy on delta ADS
# (the bootstrap's default), and the control plane's tests once more with
# Envoy on state-of-the-world ADS over the secure xDS port (TLS, workload
# certificates from pilotfish's CA) wherever the test harness starts the
# Envoy, so both ADS variants and both ports carry the end-to-end tests;
# last, the docker-compose stack with real containers
# (deploy/compose/compose_test.py; PILOTFISH_COMPOSE_TEST=0 skips it, saying
# so). Extra arguments go to `cargo test` and skip the second round and the
# compose test, e.g. `scripts/test.sh -p pilotfish-discovery --test e2e_live_update`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --locked "$@"
if [ "$#" -eq 0 ]; then
  echo "== again with Envoy on state-of-the-world ADS, over TLS with verified identities =="
  PILOTFISH_TEST_XDS_PROTOCOL=sotw PILOTFISH_TEST_SECURE_XDS=1 cargo test --locked -p pilotfish-discovery --tests
  if [ "${PILOTFISH_COMPOSE_TEST:-1}" = 0 ]; then
    echo "== docker-compose stack test SKIPPED: PILOTFISH_COMPOSE_TEST=0 =="
  else
    echo "== the docker-compose stack: Bookinfo on Consul, real containers =="
    python3 deploy/compose/compose_test.py
  fi
fi
