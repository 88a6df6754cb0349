#!/usr/bin/env bash
# Run every test of lariat: unit tests, the real-server integration tests and the fixture sweeps.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh --test
exec cargo test --all-targets "$@"
