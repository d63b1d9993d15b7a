#!/usr/bin/env bash
# The project's test command: installs what the end-to-end tests need (see
# setup.sh), then runs every test of the workspace. Extra arguments go to
# `cargo test`, e.g. `scripts/test.sh -p pilotfish-discovery --test e2e_live_update`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo test --workspace --locked "$@"
