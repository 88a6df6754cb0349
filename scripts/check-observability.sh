#!/usr/bin/env bash
# Checks that need Debian packages, run by .ci/run: `promtool check metrics` on lariat's /metrics,
# a real Prometheus server scraping lariat (target up, lariat_requests_total present), and the
# dashboard rendered by headless Chromium with one healthy and one unhealthy backend (its DOM is
# asserted on and a screenshot saved as target/dashboard.png). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --bin lariat >/dev/null 2>&1 || cargo build --bin lariat
WORK=$(mktemp -d /tmp/lariat-obs.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ADMIN=$(port); WEB=$(port); BACKEND=$(port); DEAD=$(port); PROM=$(port)

mkdir -p "$WORK/www" && echo hello > "$WORK/www/index.html"
python3 -m http.server "$BACKEND" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
PIDS+=($!)
cat > "$WORK/lariat.toml" <<TOML
[server]
threads = 1
grace_period = "0s"
access_log = false
upgrade_sock = "$WORK/upgrade.sock"
pid_file = "$WORK/lariat.pid"
[admin]
listen = "127.0.0.1:$ADMIN"
[entrypoints.web]
listen = "127.0.0.1:$WEB"
kind = "http"
[[routes]]
host = "shop.example.com"
service = "shop"
[services.shop]
backends = ["127.0.0.1:$BACKEND", "127.0.0.1:$DEAD"]
[services.shop.health_check]
request_line = "GET / HTTP/1.0"
interval = "200ms"
healthy_threshold = 1
unhealthy_threshold = 1
initializing_timeout = "1s"
TOML
target/debug/lariat -c "$WORK/lariat.toml" >"$WORK/lariat.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$ADMIN/healthz" >/dev/null || { cat "$WORK/lariat.log"; exit 1; }
sleep 2   # the dead backend leaves initializing for unhealthy
for _ in $(seq 1 20); do curl -fsS -o /dev/null -H 'Host: shop.example.com' "http://127.0.0.1:$WEB/"; done
curl -sS -o /dev/null -H 'Host: nowhere.example.com' "http://127.0.0.1:$WEB/" || true

echo "observability: promtool check metrics"
curl -fsS "http://127.0.0.1:$ADMIN/metrics" > "$WORK/metrics.txt"
if ! promtool check metrics < "$WORK/metrics.txt" > "$WORK/promtool.out" 2>&1 || [ -s "$WORK/promtool.out" ]; then
  echo "promtool found problems:"; cat "$WORK/promtool.out"; exit 1
fi

echo "observability: Prometheus scrapes lariat"
cat > "$WORK/prometheus.yml" <<YML
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: lariat
    static_configs: [ { targets: ["127.0.0.1:$ADMIN"] } ]
YML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
ok=""
for _ in $(seq 1 60); do
  up=$(curl -fsS "http://127.0.0.1:$PROM/api/v1/targets" 2>/dev/null | python3 -c 'import json,sys; t=json.load(sys.stdin)["data"]["activeTargets"]; print(t[0]["health"] if t else "")' 2>/dev/null || true)
  n=$(curl -fsS "http://127.0.0.1:$PROM/api/v1/query?query=lariat_requests_total" 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))' 2>/dev/null || echo 0)
  if [ "$up" = "up" ] && [ "$n" -gt 0 ]; then ok=1; break; fi
  sleep 1
done
[ -n "$ok" ] || { echo "Prometheus: target health '${up:-}', lariat_requests_total series: ${n:-0}"; tail -20 "$WORK/prometheus.log"; exit 1; }

echo "observability: the dashboard in headless Chromium"
CHROME=(chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$WORK/chrome")
"${CHROME[@]}" --virtual-time-budget=5000 --dump-dom "http://127.0.0.1:$ADMIN/dashboard/" > "$WORK/dom.html" 2>"$WORK/chrome.log" || true
fail() { echo "dashboard: $1"; head -c 3000 "$WORK/dom.html"; exit 1; }
grep -q 'data-loaded="[1-9]' "$WORK/dom.html" || fail "never loaded its data"
grep -q 'data-service="shop@file"' "$WORK/dom.html" || fail "no shop@file service shown"
grep -q "data-state=\"healthy\"[^>]*>127.0.0.1:$BACKEND<" "$WORK/dom.html" || fail "the live backend is not shown healthy"
grep -q "data-state=\"unhealthy\"[^>]*>127.0.0.1:$DEAD<" "$WORK/dom.html" || fail "the dead backend is not shown unhealthy"
grep -q 'data-provider="file"' "$WORK/dom.html" || fail "no provider status"
mkdir -p target
"${CHROME[@]}" --virtual-time-budget=5000 --window-size=390,1100 --screenshot="$PWD/target/dashboard.png" \
  "http://127.0.0.1:$ADMIN/dashboard/" >/dev/null 2>&1 || true
[ -s target/dashboard.png ] || { echo "dashboard: no screenshot"; exit 1; }
echo "observability: 3 passed, 0 failed"
