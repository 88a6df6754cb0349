#!/usr/bin/env bash
# lariat vs HAProxy vs nginx on this machine, side by side in one run.
#
# Two nginx origins (1 worker each, `return 200`, plus a 64 MiB file for bulk runs) stand behind
# each proxy in turn. wrk and the origins share core 0; the proxy under test has core 1 to itself
# with one worker thread. Cells: L7 keep-alive (50 connections), L7 with a new connection per
# request, L4 bulk throughput (one iperf3 stream through tcp mode / stream / a tcp entrypoint;
# the "bulk" cell, not run by default, fetches the 64 MiB file over 4 connections instead), L4
# connection setup (a new TCP connection per request through the tcp entrypoint), HTTPS
# keep-alive and with a new TLS connection per request (one ECDSA P-256 certificate for all; wrk
# resumes sessions where the server allows, and all three allow it), one connection with
# everything on core 0 (added latency over the origin alone), and a fixed offered load (open loop).
# Each cell runs RUNS times (default 3) for DURATION seconds (default 10), proxies alternating;
# the median is reported with min..max, plus proxy CPU seconds per run and RSS after the runs.
#
#   bench/run.sh                     # full run, prints markdown tables
#   RUNS=1 DURATION=3 bench/run.sh   # quick look
#   CELLS="keepalive tls" bench/run.sh   # some cells only
#   RATE=20000 bench/run.sh          # the fixed-load cell's offered rate (requests/s)
#   FLOOR=1 bench/run.sh             # adds examples/kernel_floor.rs to the plain-HTTP cells: the
#                                    # system calls any proxy must make and nothing else, the
#                                    # kernel's share of a proxy's cost on this machine
# Needs: haproxy nginx wrk iperf3 libnginx-mod-stream openssl (apt-get install ...), and builds lariat
# (release) and examples/fixed_rate.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || true
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
WORK=$(mktemp -d /tmp/lariat-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -F "$WORK/origin.pid" 2>/dev/null || true; pkill -F "$WORK/nginx-proxy.pid" 2>/dev/null || true; sleep 0.3; rm -rf "$WORK"' EXIT

. bench/lib.sh
need bench "haproxy nginx wrk iperf3" haproxy nginx wrk taskset iperf3
scripts/setup.sh
cargo build --release --bin lariat >/dev/null 2>&1 || cargo build --release --bin lariat
LARIAT=target/release/lariat

O1=18001; O2=18002
declare -A HTTP_PORT=([lariat]=18101 [haproxy]=18201 [nginx]=18301 [floor]=18401)
declare -A TCP_PORT=([lariat]=18102 [haproxy]=18202 [nginx]=18302)
declare -A TLS_PORT=([lariat]=18103 [haproxy]=18203 [nginx]=18303)
declare -A IPERF_PORT=([lariat]=18104 [haproxy]=18204 [nginx]=18304)
O3=18003 # iperf3 server, the origin of the iperf cell
chmod 755 "$WORK"
head -c $((64*1024*1024)) /dev/urandom > "$WORK/big.bin"
chmod 644 "$WORK/big.bin"
# One ECDSA P-256 certificate for all three proxies.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj "/CN=bench.test" \
  -addext "subjectAltName=DNS:bench.test" -keyout "$WORK/tls.key" -out "$WORK/tls.pem" 2>/dev/null
cat "$WORK/tls.pem" "$WORK/tls.key" > "$WORK/tls-combined.pem"

# --- origins: one nginx worker for both origin ports; a single
# nginx master with 1 worker listening on both ports keeps core 0 free for wrk.
cat > "$WORK/origin.conf" <<NGX
worker_processes 1;
pid $WORK/origin.pid;
error_log $WORK/origin.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$O1 backlog=4096; location / { return 200 "ok\n"; } location /big { alias $WORK/big.bin; } }
  server { listen 127.0.0.1:$O2 backlog=4096; location / { return 200 "ok\n"; } location /big { alias $WORK/big.bin; } }
}
NGX
taskset -c 0 nginx -c "$WORK/origin.conf" -p "$WORK" -g 'daemon on;'
taskset -c 0 iperf3 -s -B 127.0.0.1 -p $O3 >/dev/null 2>&1 &

# --- proxies
cat > "$WORK/lariat.toml" <<TOML
[server]
threads = 1
grace_period = "0s"
access_log = false
log = "warn"
upgrade_sock = "$WORK/lariat.sock"
pid_file = "$WORK/lariat.pid"
[admin]
listen = "127.0.0.1:18100"
[entrypoints.web]
listen = "127.0.0.1:${HTTP_PORT[lariat]}"
kind = "http"
[entrypoints.websecure]
listen = "127.0.0.1:${TLS_PORT[lariat]}"
kind = "https"
[tls]
default_certificate = { cert = "$WORK/tls.pem", key = "$WORK/tls.key" }
[entrypoints.bulk]
listen = "127.0.0.1:${TCP_PORT[lariat]}"
kind = "tcp"
[[routes]]
service = "origin"
[entrypoints.iperf]
listen = "127.0.0.1:${IPERF_PORT[lariat]}"
kind = "tcp"
[[routes]]
entrypoints = ["bulk"]
service = "origin"
[[routes]]
entrypoints = ["iperf"]
service = "iperf"
[services.iperf]
backends = ["127.0.0.1:$O3"]
[services.origin]
backends = ["127.0.0.1:$O1", "127.0.0.1:$O2"]
[providers.file]
watch = false
TOML

cat > "$WORK/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 8000
defaults
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend web
  mode http
  bind 127.0.0.1:${HTTP_PORT[haproxy]}
  option http-keep-alive
  default_backend origin
backend origin
  mode http
  balance roundrobin
  http-reuse always
  server o1 127.0.0.1:$O1
  server o2 127.0.0.1:$O2
frontend websecure
  mode http
  bind 127.0.0.1:${TLS_PORT[haproxy]} ssl crt $WORK/tls-combined.pem alpn http/1.1
  option http-keep-alive
  default_backend origin
frontend bulk
  mode tcp
  bind 127.0.0.1:${TCP_PORT[haproxy]}
  default_backend origin_tcp
backend origin_tcp
  mode tcp
  server o1 127.0.0.1:$O1
  server o2 127.0.0.1:$O2
frontend iperf
  mode tcp
  bind 127.0.0.1:${IPERF_PORT[haproxy]}
  default_backend iperf_srv
backend iperf_srv
  mode tcp
  server i1 127.0.0.1:$O3
HAP

STREAM_MOD=/usr/lib/nginx/modules/ngx_stream_module.so
[ -f $STREAM_MOD ] || { echo "bench: nginx's stream module is missing (apt-get install libnginx-mod-stream)" >&2; exit 1; }
cat > "$WORK/nginx-proxy.conf" <<NGX
load_module $STREAM_MOD;
worker_processes 1;
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy.err warn;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:$O1; server 127.0.0.1:$O2; keepalive 128; }
  server {
    listen 127.0.0.1:${HTTP_PORT[nginx]} backlog=4096;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:${TLS_PORT[nginx]} ssl;
    ssl_certificate $WORK/tls.pem;
    ssl_certificate_key $WORK/tls.key;
    ssl_session_cache shared:SSL:10m;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
stream {
  upstream origin_tcp { server 127.0.0.1:$O1; server 127.0.0.1:$O2; }
  server { listen 127.0.0.1:${TCP_PORT[nginx]}; proxy_pass origin_tcp; }
  server { listen 127.0.0.1:${IPERF_PORT[nginx]}; proxy_pass 127.0.0.1:$O3; }
}
NGX

taskset -c 1 "$LARIAT" -c "$WORK/lariat.toml" >"$WORK/lariat.log" 2>&1 &
LARIAT_PID=$!
taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
taskset -c 1 nginx -c "$WORK/nginx-proxy.conf" -p "$WORK" -g 'daemon on;'
sleep 1
NGINX_MASTER=$(cat "$WORK/nginx-proxy.pid")
NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1)
declare -A PIDS=([lariat]="$LARIAT_PID" [haproxy]="$HAPROXY_PID" [nginx]="$NGINX_MASTER $NGINX_WORKER")
PROXIES="lariat haproxy nginx"
if [ "${FLOOR:-0}" = 1 ]; then
  cargo build --release --example kernel_floor >/dev/null 2>&1 || cargo build --release --example kernel_floor
  taskset -c 1 target/release/examples/kernel_floor "127.0.0.1:${HTTP_PORT[floor]}" "127.0.0.1:$O1" "127.0.0.1:$O2" >"$WORK/floor.log" 2>&1 &
  PIDS[floor]=$!
  PROXIES="$PROXIES floor"
  sleep 0.3
fi

for p in $PROXIES; do
  curl -fsS "http://127.0.0.1:${HTTP_PORT[$p]}/" >/dev/null || { echo "bench: $p does not answer" >&2; cat "$WORK"/*.log >&2; exit 1; }
done

cpu_ticks() { local t=0; for pid in $1; do set -- $(cut -d' ' -f14,15 /proc/$pid/stat); t=$((t + $1 + $2)); done; echo $t; }
rss_kb() { local t=0; for pid in $1; do t=$((t + $(awk '/VmRSS/{print $2}' /proc/$pid/status))); done; echo $t; }
HZ=$(getconf CLK_TCK)

# one cell run: prints "proxy cell req_s p50_ms p99_ms cpu_s transfer_MBps"
run_cell() {
  local proxy=$1 cell=$2 url args=()
  case $cell in
    keepalive) url="http://127.0.0.1:${HTTP_PORT[$proxy]}/"; args=(-t1 -c50) ;;
    newconn)   url="http://127.0.0.1:${HTTP_PORT[$proxy]}/"; args=(-t1 -c50 -H "Connection: close") ;;
    bulk)      url="http://127.0.0.1:${TCP_PORT[$proxy]}/big"; args=(-t1 -c4) ;;
    tls)       url="https://127.0.0.1:${TLS_PORT[$proxy]}/"; args=(-t1 -c50) ;;
    tlsnew)    url="https://127.0.0.1:${TLS_PORT[$proxy]}/"; args=(-t1 -c50 -H "Connection: close") ;;
    tcpnew)    url="http://127.0.0.1:${TCP_PORT[$proxy]}/"; args=(-t1 -c50 -H "Connection: close") ;;
    one)       url="http://127.0.0.1:${HTTP_PORT[$proxy]}/"; args=(-t1 -c1) ;;
    fixed)     fixed_cell "$proxy"; return ;;
    iperf)     iperf_cell "$proxy"; return ;;
  esac
  # "one": everything on one core (the proxy joins wrk and the origin on core 0 for the run).
  [ "$cell" = one ] && for pid in ${PIDS[$proxy]}; do taskset -a -p -c 0 "$pid" >/dev/null; done
  local before after out
  before=$(cpu_ticks "${PIDS[$proxy]}")
  out=$(taskset -c 0 wrk "${args[@]}" -d"${DURATION}s" --latency "$url")
  after=$(cpu_ticks "${PIDS[$proxy]}")
  [ "$cell" = one ] && for pid in ${PIDS[$proxy]}; do taskset -a -p -c 1 "$pid" >/dev/null; done
  python3 - "$proxy" "$cell" "$(( after - before ))" "$HZ" "$out" <<'PY'
import re, sys
proxy, cell, ticks, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = sys.argv[5]
def dur(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)", s)
    if not m:
        sys.exit(f"bench: cannot read wrk's output for {proxy} {cell}:\n{out}")
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[m.group(2)]
if not re.search(r"Requests/sec:", out) or not re.search(r"^\s+50%", out, re.M):
    sys.exit(f"bench: cannot read wrk's output for {proxy} {cell}:\n{out}")
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
# Anchored: a latency line's "+/- Stdev" column may also end in "50%".
p50 = dur(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)); p99 = dur(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
tr = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
mb = float(tr.group(1)) * {"B": 1/2**20, "KB": 1/1024, "MB": 1, "GB": 1024}[tr.group(2)]
errs = re.search(r"Socket errors: (.*)", out); non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
print(proxy, cell, rps, p50, p99, ticks / hz, mb, (errs.group(1).replace(" ", "") if errs else "-"), non2xx.group(1) if non2xx else 0)
PY
}

# The fixed-load cell: RATE requests/s (default 20000) over 50 keep-alive connections, open loop
# (examples/fixed_rate.rs, latency counted from each request's scheduled time).
RATE=${RATE:-20000}
cargo build --release --example fixed_rate >/dev/null 2>&1 || cargo build --release --example fixed_rate
fixed_cell() {
  local proxy=$1 before after out
  before=$(cpu_ticks "${PIDS[$proxy]}")
  out=$(taskset -c 0 target/release/examples/fixed_rate "http://127.0.0.1:${HTTP_PORT[$proxy]}/" "$RATE" "$DURATION" 50)
  after=$(cpu_ticks "${PIDS[$proxy]}")
  set -- $out
  # requests errors p50 p90 p99 p999 max -> the common line, p999 in the transfer column
  echo "$proxy fixed $(python3 -c "print($1 / $DURATION)") $3 $5 $(python3 -c "print($(( after - before )) / $HZ)") $6 $([ "$2" = 0 ] && echo - || echo "errors$2") 0"
}

# The iperf cell: one iperf3 stream for DURATION seconds through the proxy's tcp port to an
# iperf3 server (both ends on core 0): L4 bulk as the targets state it.
iperf_cell() {
  local proxy=$1 before after out
  before=$(cpu_ticks "${PIDS[$proxy]}")
  out=$(taskset -c 0 iperf3 -c 127.0.0.1 -p "${IPERF_PORT[$proxy]}" -t "$DURATION" -J)
  after=$(cpu_ticks "${PIDS[$proxy]}")
  python3 - "$proxy" "$(( after - before ))" "$HZ" "$out" <<'PY'
import json, sys
proxy, ticks, hz, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
bps = out["end"]["sum_received"]["bits_per_second"]
print(proxy, "iperf", 0, 0, 0, ticks / hz, bps / 8 / 2**20, "-", 0)
PY
}

RESULTS="$WORK/results.txt"
# The origin's own latency at one connection, for the "one" cell's added latency.
if [[ " ${CELLS:-one} " == *" one "* ]]; then
  direct=$(taskset -c 0 wrk -t1 -c1 -d"${DURATION}s" --latency "http://127.0.0.1:$O1/" | awk '/^ +50%/{print $2}')
  echo "direct one $direct" >> "$RESULTS"
fi
for cell in ${CELLS:-keepalive newconn iperf tcpnew tls tlsnew one fixed}; do
  for r in $(seq 1 "$RUNS"); do
    for proxy in $PROXIES; do
      # The floor forwards plain HTTP only.
      [ "$proxy" = floor ] && [[ " keepalive newconn one fixed " != *" $cell "* ]] && continue
      run_cell "$proxy" "$cell" | tee -a "$RESULTS" >&2
    done
  done
done
for p in $PROXIES; do echo "rss $p $(rss_kb "${PIDS[$p]}")" >> "$RESULTS"; done

python3 - "$RESULTS" "$DURATION" "$RUNS" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list); rss = {}; direct = None
def ms(s):
    v = float(s.rstrip("usm")); return v / 1000 if s.endswith("us") else v * 1000 if s.endswith("s") and not s.endswith("ms") else v
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "rss": rss[f[1]] = int(f[2]) / 1024; continue
    if f[0] == "direct": direct = ms(f[2]); continue
    rows[(f[0], f[1])].append(dict(rps=float(f[2]), p50=float(f[3]), p99=float(f[4]), cpu=float(f[5]), mb=float(f[6]), err=f[7], non2xx=int(f[8])))
dur = float(sys.argv[2])
ALL = ["lariat", "haproxy", "nginx", "floor"]
def proxies(cell): return [p for p in ALL if (p, cell) in rows]
def med(v): return statistics.median(v)
def rng(v, fmt): return f"{fmt.format(med(v))} ({fmt.format(min(v))}..{fmt.format(max(v))})"
print(f"runs per cell: {sys.argv[3]}, {sys.argv[2]} s each; median (min..max)\n")
for cell, title in [("keepalive", "L7 keep-alive, 50 connections"), ("newconn", "L7 new connection per request, 50 concurrent"), ("bulk", "L4 bulk, 4 connections fetching 64 MiB (wrk and the origin saturate core 0 here: a ceiling of the setup more than of the proxies)"), ("iperf", "L4 bulk, one iperf3 stream (client and server on core 0)"), ("tcpnew", "L4 connection setup: a new TCP connection (and backend connection) per request, 50 concurrent"), ("tls", "HTTPS keep-alive, 50 connections (ECDSA P-256)"), ("tlsnew", "HTTPS with a new TLS connection per request, 50 concurrent (wrk resumes sessions; all three allow resumption)"), ("one", "L7, one connection, everything on one core"), ("fixed", f"L7 at a fixed offered load, open loop (latency from each request's scheduled time)")]:
    if ("haproxy", cell) not in rows:
        continue
    print(f"### {title}\n")
    if cell == "one":
        print(f"origin alone at one connection: p50 {direct:.3f} ms\n" if direct is not None else "")
        print("| proxy | req/s | p50 ms | p99 ms | added p50 ms | vs HAProxy | errors |\n|---|---|---|---|---|---|---|")
        bp50 = med([x["p50"] for x in rows[("haproxy", cell)]])
        for p in proxies(cell):
            r = rows[(p, cell)]; p50 = med([x["p50"] for x in r])
            added = p50 - direct if direct is not None else float("nan"); badded = bp50 - direct if direct is not None else float("nan")
            errs = ",".join(sorted({x["err"] for x in r} - {"-"})) or "0"
            print(f"| {p} | {med([x['rps'] for x in r]):.0f} | {p50:.3f} | {med([x['p99'] for x in r]):.3f} | {added:.3f} | {added / badded:.2f}× | {errs} |")
        print(); continue
    if cell == "fixed":
        print("| proxy | req/s achieved | p50 ms | p99 ms | p99.9 ms | proxy CPU µs/req | errors |\n|---|---|---|---|---|---|---|")
        for p in proxies(cell):
            r = rows[(p, cell)]
            errs = ",".join(sorted({x["err"] for x in r} - {"-"})) or "0"
            us = [x["cpu"] * 1e6 / (x["rps"] * dur) for x in r]
            print(f"| {p} | {med([x['rps'] for x in r]):.0f} | {med([x['p50'] for x in r]):.3f} | {rng([x['p99'] for x in r], '{:.3f}')} | {med([x['mb'] for x in r]):.3f} | {med(us):.1f} | {errs} |")
        print(); continue
    if cell in ("bulk", "iperf"):
        print("| proxy | MiB/s | vs HAProxy | proxy CPU s per GiB | vs HAProxy | errors |\n|---|---|---|---|---|---|")
    else:
        print("| proxy | req/s | vs HAProxy | p50 ms | p99 ms | proxy CPU µs/req | vs HAProxy | errors |\n|---|---|---|---|---|---|---|---|")
    base = rows[("haproxy", cell)]
    for p in proxies(cell):
        r = rows[(p, cell)]
        errs = ",".join(sorted({x["err"] for x in r} - {"-"})) or "0"
        non = sum(x["non2xx"] for x in r)
        if non: errs += f" ({non} non-2xx)"
        if cell in ("bulk", "iperf"):
            mb = [x["mb"] for x in r]; cpu = [x["cpu"] / (x["mb"] * dur / 1024) for x in r]
            bmb = med([x["mb"] for x in base]); bcpu = med([x["cpu"] / (x["mb"] * dur / 1024) for x in base])
            print(f"| {p} | {rng(mb, '{:.0f}')} | {med(mb)/bmb:.2f}× | {rng(cpu, '{:.2f}')} | {med(cpu)/bcpu:.2f}× | {errs} |")
        else:
            rps = [x["rps"] for x in r]; us = [x["cpu"] * 1e6 / (x["rps"] * dur) for x in r]
            brps = med([x["rps"] for x in base]); bus = med([x["cpu"] * 1e6 / (x["rps"] * dur) for x in base])
            print(f"| {p} | {rng(rps, '{:.0f}')} | {med(rps)/brps:.2f}× | {med([x['p50'] for x in r]):.3f} | {med([x['p99'] for x in r]):.3f} | {rng(us, '{:.1f}')} | {med(us)/bus:.2f}× | {errs} |")
    print()
print("### Memory after the runs (RSS)\n\n| proxy | RSS MiB |\n|---|---|")
for p in ALL:
    if p in rss: print(f"| {p} | {rss[p]:.1f} |")
PY
