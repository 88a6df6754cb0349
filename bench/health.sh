#!/usr/bin/env bash
# The cost of active health checks at scale: lariat with BACKENDS backends (default 10,000: 100
# services of 100), each checked every 2 s, against nginx listening on that many ports of
# 127.0.0.1. Reports lariat's CPU as a share of one core over DURATION seconds, for HTTP checks
# and for TCP checks, plus how many checks passed in that time; HAProxy (when installed) runs the
# same checks first (`check inter 2s`, `option httpchk GET /` for HTTP) for comparison.
#
#   bench/health.sh
#   BACKENDS=1000 DURATION=20 bench/health.sh
#   KINDS=tcp NO_HAPROXY=1 PERF=/tmp/checks bench/health.sh   # TCP only, and a profile of lariat
# Needs: nginx curl (apt-get install nginx curl), and a release build of lariat.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKENDS=${BACKENDS:-10000}
DURATION=${DURATION:-30}
PER_SERVICE=100
# Below the kernel's ephemeral port range (net.ipv4.ip_local_port_range, 32768-60999 by default):
# 10,000 listeners inside it would make every outgoing connect of the checker search past them
# for a free source port, a cost of this one-host setup that a checker of remote backends does
# not pay.
BASE_PORT=${BASE_PORT:-20000}
ulimit -n "$(ulimit -Hn)" # 10,000 listening sockets for the origin, and its connections
. bench/lib.sh
need "health bench" "nginx curl" nginx curl
lariat_bin
WORK=$(mktemp -d /tmp/lariat-health.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; for k in 0 1 2 3; do pkill -F "$WORK/origin$k.pid" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"' EXIT

python3 - "$WORK" "$BACKENDS" "$PER_SERVICE" "$BASE_PORT" <<'PY'
import sys
work, n, per, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
import resource
nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
# Four nginx instances of a quarter of the ports each: one process's descriptors would not hold
# 10,000 listening sockets and as many kept-alive check connections.
quarter = (n + 3) // 4
for k in range(4):
    listens = "\n".join(f"    listen 127.0.0.1:{base + i} backlog=1024;" for i in range(k * quarter, min(n, (k + 1) * quarter)))
    open(f"{work}/origin{k}.conf", "w").write(f"""worker_processes 1;
worker_rlimit_nofile {nofile};
pid {work}/origin{k}.pid;
error_log {work}/origin{k}.err warn;
events {{ worker_connections {nofile - 100}; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
{listens}
    location / {{ return 200 "ok\\n"; }}
  }}
}}
""")
for kind in ["http", "tcp"]:
    out = [f"""[server]
threads = 1
grace_period = "0s"
access_log = false
log = "warn"
[admin]
listen = "127.0.0.1:18500"
[providers.file]
watch = false
"""]
    for s in range(n // per):
        backs = ", ".join(f'"127.0.0.1:{base + s * per + i}"' for i in range(per))
        check = 'kind = "http"\nrequest_line = "GET / HTTP/1.1"' if kind == "http" else 'kind = "tcp"'
        out.append(f"""[services.s{s}]
backends = [{backs}]
[services.s{s}.health_check]
{check}
interval = "2s"
timeout = "2s"
""")
    open(f"{work}/lariat-{kind}.toml", "w").write("\n".join(out))
    # The same checks from HAProxy, for comparison.
    hap = ["global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout check 2s\n  timeout client 10s\n  timeout server 10s\nfrontend f\n  bind 127.0.0.1:18501\n  default_backend s0\n"]
    for s in range(n // per):
        hap.append(f"backend s{s}\n" + ("  option httpchk GET /\n" if kind == "http" else ""))
        hap.extend(f"  server b{i} 127.0.0.1:{base + s * per + i} check inter 2s\n" for i in range(per))
    open(f"{work}/haproxy-{kind}.cfg", "w").write("".join(hap))
PY
for k in 0 1 2 3; do taskset -c 0 nginx -c "$WORK/origin$k.conf" -p "$WORK" -g 'daemon on;'; done
HZ=$(getconf CLK_TCK)
for kind in ${KINDS:-http tcp}; do
  if [ -z "${NO_HAPROXY:-}" ] && command -v haproxy >/dev/null; then
    taskset -c 1 haproxy -db -f "$WORK/haproxy-$kind.cfg" >"$WORK/haproxy.log" 2>&1 &
    PID=$!
    sleep 6
    read -r u0 s0 < <(cut -d' ' -f14,15 /proc/$PID/stat)
    sleep "$DURATION"
    read -r u1 s1 < <(cut -d' ' -f14,15 /proc/$PID/stat)
    python3 -c "print(f'haproxy $kind checks: $BACKENDS backends every 2 s: CPU {(($u1 - $u0) + ($s1 - $s0)) / $HZ / $DURATION * 100:.1f}% of one core (user {($u1-$u0)/$HZ/$DURATION*100:.1f}%, sys {($s1-$s0)/$HZ/$DURATION*100:.1f}%)')"
    kill $PID; wait $PID 2>/dev/null || true
  fi
  taskset -c 1 "$LARIAT_BIN" -c "$WORK/lariat-$kind.toml" >"$WORK/lariat.log" 2>&1 &
  PID=$!
  sleep 6 # every member has been probed at least twice: the steady state
  checks() { curl -fsS http://127.0.0.1:18500/metrics | awk '/^lariat_health_checks_total/ && /result="ok"/ {s += $NF} END {print s + 0}'; }
  c0=$(checks)
  read -r u0 s0 < <(cut -d' ' -f14,15 /proc/$PID/stat)
  sleep "$DURATION"
  read -r u1 s1 < <(cut -d' ' -f14,15 /proc/$PID/stat)
  c1=$(checks)
  rss=$(awk '/VmRSS/{print $2}' /proc/$PID/status)
  python3 -c "
n, d, hz = $BACKENDS, $DURATION, $HZ
ticks = ($u1 - $u0) + ($s1 - $s0)
ok = $c1 - $c0
print(f'$kind checks: {n} backends every 2 s: lariat CPU {ticks / hz / d * 100:.1f}% of one core (user {($u1-$u0)/hz/d*100:.1f}%, sys {($s1-$s0)/hz/d*100:.1f}%), {ok / d:.0f} passing checks/s (expected {n / 2:.0f}), RSS {$rss / 1024:.1f} MiB')
"
  if [ -n "${PERF:-}" ]; then
    perf record -F 999 -g -p "$PID" -o "$PERF-$kind.data" -- sleep 10 >/dev/null 2>&1
  fi
  kill $PID; wait $PID 2>/dev/null || true
done
