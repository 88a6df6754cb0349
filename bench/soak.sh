#!/usr/bin/env bash
# Soak: mixed load on a running lariat while its world churns, reporting requests, errors, RSS and
# open file descriptors at every interval, and failing if RSS or fds keep growing.
#
#   bench/soak.sh                  # 10 minutes, a report line a minute
#   SOAK_SECONDS=60 bench/soak.sh  # the CI form: 1 minute, a line every 10 s
#
# Load: keep-alive and new-connection HTTP/1.1, h2c, TCP echo, and slow clients (a header byte a
# second). Churn: a backend killed and restarted every 15 s, membership changed every second (the
# config file rewritten), and a SIGHUP reload every 10 s. A live backend is always a member, so
# any answer but 200 (503 included) counts as an error. Everything is on 127.0.0.1 and stops by
# itself.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${SOAK_SECONDS:-600}
INTERVAL=$(( SECONDS_TOTAL >= 300 ? 60 : 10 ))
# The binary under test: LARIAT_BIN, else a debug build made now (use a release build for the
# figures in bench/RESULTS.md: LARIAT_BIN=target/release/lariat).
if [ -z "${LARIAT_BIN:-}" ]; then
  cargo build --bin lariat >/dev/null 2>&1 || cargo build --bin lariat
  BIN=target/debug/lariat
else
  BIN=$LARIAT_BIN
fi
command -v curl >/dev/null || { echo "soak: curl is missing (apt-get install curl)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/lariat-soak.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
python3 - "$BIN" "$WORK" "$SECONDS_TOTAL" "$INTERVAL" <<'PY'
import atexit, os, random, signal, socket, subprocess, sys, threading, time, http.client
BIN, WORK, TOTAL, INTERVAL = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
children = []
def reap():
    for c in children:
        if c.poll() is None:
            c.kill()
        try: c.wait(timeout=5)
        except Exception: pass
atexit.register(reap)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

# Backends: three HTTP servers (restartable) and one TCP echo server.
WWW = os.path.join(WORK, "www"); os.makedirs(WWW); open(os.path.join(WWW, "index.html"), "w").write("ok\n")
backend_ports = [port() for _ in range(3)]
backends = {}
def start_backend(p):
    # A threaded HTTP server with a real listen backlog (python -m http.server keeps 5).
    code = ("import http.server, functools, sys\n"
            "class S(http.server.ThreadingHTTPServer): request_queue_size = 1024\n"
            "class H(http.server.SimpleHTTPRequestHandler):\n"
            "    def log_message(self, *a): pass\n"
            "S(('127.0.0.1', int(sys.argv[1])), functools.partial(H, directory=sys.argv[2])).serve_forever()\n")
    backends[p] = subprocess.Popen([sys.executable, "-c", code, str(p), WWW], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children.append(backends[p])
for p in backend_ports: start_backend(p)
echo_port = port()
def echo_server():
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("127.0.0.1", echo_port)); srv.listen(128)
    def handle(c):
        try:
            while True:
                d = c.recv(4096)
                if not d: break
                c.sendall(d)
        except OSError: pass
        finally: c.close()
    while True:
        c, _ = srv.accept(); threading.Thread(target=handle, args=(c,), daemon=True).start()
threading.Thread(target=echo_server, daemon=True).start()

admin, web, tcp = port(), port(), port()
conf = os.path.join(WORK, "lariat.toml")
def write_conf(members, breaker_expr=False):
    backs = ", ".join(f'"127.0.0.1:{p}"' for p in members)
    text = f'''[server]
threads = 1
grace_period = "1s"
access_log = false
log = "error"
idle_timeout = "5s"
upgrade_sock = "{WORK}/upgrade.sock"
pid_file = "{WORK}/lariat.pid"
[admin]
listen = "127.0.0.1:{admin}"
[entrypoints.web]
listen = "127.0.0.1:{web}"
kind = "http"
[entrypoints.tcp]
listen = "127.0.0.1:{tcp}"
kind = "tcp"
[[routes]]
service = "app"
[[routes]]
entrypoints = ["tcp"]
service = "echo"
[services.app]
backends = [{backs}]
retries = 2
[services.app.health_check]
request_line = "GET / HTTP/1.0"
interval = "500ms"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 1
strategy = "recreate"
[services.echo]
backends = ["127.0.0.1:{echo_port}"]
[providers.file]
poll_interval = "200ms"
'''
    tmp = conf + ".tmp"; open(tmp, "w").write(text); os.replace(tmp, conf)
write_conf(backend_ports)
lariat = subprocess.Popen([BIN, "-c", conf], stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, "lariat.log"), "w"))
children.append(lariat)
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", admin), timeout=0.2).close(); break
    except OSError: time.sleep(0.05)
time.sleep(1.5)

stop = time.time() + TOTAL
lock = threading.Lock()
stats = {"requests": 0, "errors": 0, "tcp": 0, "slow": 0}
first_errors = []
def count(k, n=1):
    with lock: stats[k] += n
def err(what):
    count("errors")
    with lock:
        if len(first_errors) < 10: first_errors.append(what)

def keepalive_client():
    conn = None
    while time.time() < stop:
        for attempt in (1, 2):
            try:
                if conn is None: conn = http.client.HTTPConnection("127.0.0.1", web, timeout=10)
                conn.request("GET", "/", headers={"Host": "soak.test"}); r = conn.getresponse(); r.read()
                count("requests")
                if r.status != 200: err(f"keep-alive status {r.status}")
                if r.getheader("connection", "").lower() == "close": conn.close(); conn = None
                break
            except (OSError, http.client.HTTPException) as e:
                # A kept-alive connection that the server closed while it sat idle is the usual
                # keep-alive race: retry once on a new connection; a second failure counts.
                conn = None
                if attempt == 2: count("requests"); err(f"keep-alive {type(e).__name__}: {e}")
        time.sleep(0.005)

def newconn_client(h2=False):
    while time.time() < stop:
        args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: soak.test", "--max-time", "10"]
        if h2: args.append("--http2-prior-knowledge")
        code = subprocess.run(args + [f"http://127.0.0.1:{web}/"], capture_output=True, text=True).stdout.strip()
        count("requests")
        if code != "200": err(f"{'h2' if h2 else 'new connection'} status {code!r}")
        time.sleep(0.02)

def tcp_client():
    while time.time() < stop:
        try:
            s = socket.create_connection(("127.0.0.1", tcp), timeout=10)
            msg = os.urandom(2048); s.sendall(msg); got = b""
            while len(got) < len(msg):
                d = s.recv(4096)
                if not d: break
                got += d
            s.close()
            count("tcp")
            if got != msg: err("tcp echo mismatch")
        except OSError as e: err(f"tcp {e}")
        time.sleep(0.02)

def slow_client():
    while time.time() < stop:
        try:
            s = socket.create_connection(("127.0.0.1", web), timeout=30)
            for b in b"GET / HTTP/1.1\r\nHost: slow.test\r\n":
                s.send(bytes([b])); time.sleep(0.2)
                if time.time() > stop: break
            s.close(); count("slow")
        except OSError: count("slow")

def rss_fds():
    pid = lariat.pid
    rss = int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]) // 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds

def churn():
    live = list(backend_ports); tick = 0
    while time.time() < stop:
        time.sleep(1); tick += 1
        # membership: two or three of the backends, changing every second
        members = random.sample(backend_ports, random.choice([2, 3]))
        write_conf(members)
        if tick % 10 == 0: lariat.send_signal(signal.SIGHUP)
        if tick % 15 == 0:
            victim = random.choice(backend_ports); backends[victim].kill(); backends[victim].wait()
            time.sleep(2); start_backend(victim)

threads = [threading.Thread(target=f, daemon=True) for f in [keepalive_client, keepalive_client, tcp_client, slow_client, churn]]
threads += [threading.Thread(target=newconn_client, daemon=True), threading.Thread(target=newconn_client, args=(True,), daemon=True)]
for t in threads: t.start()
start = time.time(); samples = []
print(f"soak: {TOTAL} s, a line every {INTERVAL} s (lariat pid {lariat.pid})")
print(f"{'t':>5} {'requests':>9} {'errors':>6} {'tcp':>6} {'slow':>5} {'RSS MiB':>8} {'fds':>5}")
while time.time() < stop:
    time.sleep(min(INTERVAL, max(0.1, stop - time.time())))
    if lariat.poll() is not None: print("soak: lariat exited"); sys.exit(1)
    rss, fds = rss_fds(); samples.append((rss, fds))
    with lock: s = dict(stats)
    print(f"{int(time.time()-start):>5} {s['requests']:>9} {s['errors']:>6} {s['tcp']:>6} {s['slow']:>5} {rss:>8} {fds:>5}", flush=True)
for t in threads: t.join(timeout=15)
ok = True
if stats["errors"]:
    print(f"soak: {stats['errors']} errors, first: {first_errors}"); ok = False
if stats["requests"] < 100:
    print("soak: too few requests to mean anything"); ok = False
# Level, not grow: the last sample within 25% (and 8 MiB / 32 fds) of the highest after warm-up.
if len(samples) >= 3:
    warm = samples[1:]
    rss_first, fds_first = warm[0]; rss_last, fds_last = warm[-1]
    if rss_last > max(rss_first * 1.25, rss_first + 8):
        print(f"soak: RSS grew from {rss_first} to {rss_last} MiB"); ok = False
    if fds_last > fds_first + 32:
        print(f"soak: open fds grew from {fds_first} to {fds_last}"); ok = False
print(f"soak: {stats['requests']} passed, {stats['errors']} failed" if ok else "soak: FAILED")
sys.exit(0 if ok else 1)
PY
