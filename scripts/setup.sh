#!/usr/bin/env bash
# Installs what building lariat needs beyond Rust: cmake (pingora-core builds libz-ng-sys with it)
# and a C compiler; with --test also pebble (the ACME server the ACME test runs against) and
# openssl (the TLS tests write RSA and EC keys with it) and wrk (the zero-loss tests drive load
# with it).
# Debian/Ubuntu via apt-get (as root, or through sudo); elsewhere it says what is missing and stops.
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ "${1:-}" = "--test" ]; then
  command -v pebble >/dev/null 2>&1 || missing+=(pebble)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
echo "setup: installing ${missing[*]}" >&2
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: please install ${missing[*]} with your package manager, then run again" >&2
  exit 1
fi
