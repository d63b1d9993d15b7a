#!/usr/bin/env bash
# The project's test command: installs what the end-to-end tests need (see
# setup.sh), then runs every test of the workspace, with Envoy on delta ADS
# (the bootstrap's default), and the control plane's tests once more with
# Envoy on state-of-the-world ADS, so both variants carry every end-to-end
# test. Extra arguments go to `cargo test` and skip the second round, e.g.
# `scripts/test.sh -p pilotfish-discovery --test e2e_live_update`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --locked "$@"
if [ "$#" -eq 0 ]; then
  echo "== again with Envoy on state-of-the-world ADS =="
  PILOTFISH_TEST_XDS_PROTOCOL=sotw cargo test --locked -p pilotfish-discovery --tests
fi
