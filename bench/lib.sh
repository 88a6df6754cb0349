# Shared by the bench scripts, sourced from the repository root.

# need WHO "PACKAGES" TOOL...: stop with a clear message when a tool is missing.
need() {
  local who=$1 packages=$2
  shift 2
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$who: $tool is missing (apt-get install $packages)" >&2; exit 1; }
  done
}

# Sets LARIAT_BIN: the binary under test, else a release build made now.
lariat_bin() {
  if [ -z "${LARIAT_BIN:-}" ]; then
    cargo build --release --bin lariat >/dev/null 2>&1 || cargo build --release --bin lariat
    LARIAT_BIN=target/release/lariat
  fi
}
