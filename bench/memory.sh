#!/usr/bin/env bash
# Memory: lariat's and HAProxy's RSS idle (just started, the shipped-style config), and with
# CONNS (default 9,900) idle keep-alive client connections, each of which has made one request.
#
#   bench/memory.sh
#   CONNS=5000 bench/memory.sh
# Needs: haproxy nginx (apt-get install haproxy nginx), python3, and a release build of lariat.
set -euo pipefail
cd "$(dirname "$0")/.."
# 9,900: HAProxy reserves two descriptors per connection of maxconn, and this machine allows
# 20,000 per process.
CONNS=${CONNS:-9900}
ulimit -n "$(ulimit -Hn)"
. bench/lib.sh
need "memory bench" "haproxy nginx" haproxy nginx python3
lariat_bin
WORK=$(mktemp -d /tmp/lariat-memory.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -F "$WORK/origin.pid" 2>/dev/null || true; sleep 0.3; rm -rf "$WORK"' EXIT
O=18801; L=18802; H=18803
cat > "$WORK/origin.conf" <<NGX
worker_processes 1;
pid $WORK/origin.pid;
error_log $WORK/origin.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; server { listen 127.0.0.1:$O backlog=4096; location / { return 200 "ok\n"; } } }
NGX
nginx -c "$WORK/origin.conf" -p "$WORK" -g 'daemon on;'
cat > "$WORK/lariat.toml" <<TOML
[server]
threads = 1
grace_period = "0s"
access_log = false
log = "warn"
[admin]
listen = "127.0.0.1:18800"
[entrypoints.web]
listen = "127.0.0.1:$L"
kind = "http"
[[routes]]
service = "origin"
[services.origin]
backends = ["127.0.0.1:$O"]
[providers.file]
watch = false
TOML
cat > "$WORK/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 9990

defaults
  mode http
  timeout connect 2s
  timeout client 300s
  timeout server 60s
  timeout http-keep-alive 300s
frontend web
  bind 127.0.0.1:$H
  option http-keep-alive
  default_backend origin
backend origin
  http-reuse always
  server o1 127.0.0.1:$O
HAP
rss() { awk '/VmRSS/{printf "%.1f", $2 / 1024}' /proc/$1/status; }
for proxy in lariat haproxy; do
  if [ $proxy = lariat ]; then
    "$LARIAT_BIN" -c "$WORK/lariat.toml" >"$WORK/lariat.log" 2>&1 & PID=$!; PORT=$L
  else
    haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 & PID=$!; PORT=$H
  fi
  sleep 2
  idle=$(rss $PID)
  python3 - "$PORT" "$CONNS" > "$WORK/held.$proxy" 2>&1 <<'PY' &
import asyncio, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
async def main():
    held = []
    sem = asyncio.Semaphore(500)
    async def one():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"); await w.drain()
            await r.readuntil(b"\r\n\r\n"); await r.readexactly(3)
            held.append((r, w))
    await asyncio.gather(*(one() for _ in range(n)))
    print(len(held), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
PY
  HOLDER=$!
  for _ in $(seq 1 120); do [ -s "$WORK/held.$proxy" ] && break; sleep 1; done
  sleep 2
  echo "$proxy: idle RSS $idle MiB; with $(cat "$WORK/held.$proxy") idle keep-alive connections: $(rss $PID) MiB"
  kill $HOLDER; wait $HOLDER 2>/dev/null || true
  kill $PID; wait $PID 2>/dev/null || true
done
