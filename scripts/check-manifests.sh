#!/usr/bin/env bash
# Validates docker/kubernetes/*.yaml against the Kubernetes schemas (strict: unknown fields are
# errors), with kubernetes-validate from PyPI, installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install --quiet kubernetes-validate 2>/dev/null || python3 -m pip install --quiet --break-system-packages kubernetes-validate
fi
kubernetes-validate --strict --quiet -k 1.33.0 docker/kubernetes/*.yaml
echo "manifests: $(ls docker/kubernetes/*.yaml | wc -l) files valid against Kubernetes 1.33"
