#!/usr/bin/env bash
# Where lariat's CPU goes on the L7 keep-alive path (or with a new connection per request,
# CLOSE=1): the bench's setup (an nginx origin and wrk on core 0, lariat alone on core 1 with one
# worker thread), sampled with perf for DURATION seconds.
# Prints the top functions by self time and the share of each library; the samples stay in
# PERF_DATA (default /tmp/lariat-perf.data) for `perf report -i`.
#
#   bench/profile.sh                          # release build, 10 s
#   DURATION=5 TOP=40 bench/profile.sh
#   LARIAT_BIN=target/release/lariat bench/profile.sh   # a binary built elsewhere
#   CLOSE=1 bench/profile.sh                  # a new connection per request instead
# Needs: nginx wrk linux-perf (apt-get install nginx wrk linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
HDR=(); [ "${CLOSE:-0}" = 1 ] && HDR=(-H "Connection: close")
TOP=${TOP:-30}
. bench/lib.sh
need profile "nginx wrk linux-perf" nginx wrk perf taskset
lariat_bin
WORK=$(mktemp -d /tmp/lariat-profile.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -F "$WORK/origin.pid" 2>/dev/null || true; sleep 0.3; rm -rf "$WORK"' EXIT
O1=18401; O2=18402; WEB=18403
cat > "$WORK/origin.conf" <<NGX
worker_processes 1;
pid $WORK/origin.pid;
error_log $WORK/origin.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$O1 backlog=4096; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$O2 backlog=4096; location / { return 200 "ok\n"; } }
}
NGX
taskset -c 0 nginx -c "$WORK/origin.conf" -p "$WORK" -g 'daemon on;'
cat > "$WORK/lariat.toml" <<TOML
[server]
threads = 1
grace_period = "0s"
access_log = false
log = "warn"
[admin]
listen = "127.0.0.1:18400"
[entrypoints.web]
listen = "127.0.0.1:$WEB"
kind = "http"
[[routes]]
service = "origin"
[services.origin]
backends = ["127.0.0.1:$O1", "127.0.0.1:$O2"]
[providers.file]
watch = false
TOML
taskset -c 1 "$LARIAT_BIN" -c "$WORK/lariat.toml" >"$WORK/lariat.log" 2>&1 &
PID=$!
sleep 1
curl -fsS "http://127.0.0.1:$WEB/" >/dev/null || { echo "profile: lariat does not answer" >&2; cat "$WORK/lariat.log" >&2; exit 1; }
# Warm up, then sample while wrk runs.
taskset -c 0 wrk -t1 -c50 -d2s "${HDR[@]}" "http://127.0.0.1:$WEB/" >/dev/null
taskset -c 0 wrk -t1 -c50 -d"$((DURATION + 2))s" "${HDR[@]}" "http://127.0.0.1:$WEB/" > "$WORK/wrk.txt" &
WRK=$!
sleep 1
perf record -q -F 2999 -p "$PID" -o "$WORK/perf.data" -- sleep "$DURATION" 2>/dev/null
cp "$WORK/perf.data" "${PERF_DATA:-/tmp/lariat-perf.data}"
wait $WRK
grep -E "Requests/sec" "$WORK/wrk.txt"
echo "--- top $TOP functions by self time"
perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -"$TOP"
echo "--- by library"
perf report -i "$WORK/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -10
