#!/usr/bin/env bash
# Build lariat and run it on the shipped conf/lariat.toml (or on the arguments given, e.g.
# `./run.sh -c my.toml`). Then: curl http://localhost:8080/
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-c conf/lariat.toml)
exec cargo run --release --bin lariat -- "${args[@]}"
