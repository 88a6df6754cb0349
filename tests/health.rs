//! Active checks, strategies, breakers, retries and limits with real backends through the real
//! proxy. Timer logic itself is tested in paused time next to the code; here the bounds are
//! generous, since these machines are shared.

mod common;
use common::*;
use lariat::upstream::BackendState;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn base(service: &str) -> String {
    format!(
        r#"
{PREAMBLE}[providers.file]
poll_interval = "50ms"
[[routes]]
service = "app"
[services.app]
{service}
"#
    )
}

const CHECK: &str = r#"
[services.app.health_check]
request_line = "GET /healthz HTTP/1.1"
interval = "100ms"
timeout = "200ms"
healthy_threshold = 1
unhealthy_threshold = 2
"#;

fn states(l: &Lariat, id: &str) -> Vec<(String, BackendState)> {
    let snap = l.running().shared.registry.snapshot();
    let svc = &snap.service(&lariat::desired::ServiceId(id.into())).unwrap();
    let now = Instant::now();
    svc.members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.addr.to_string(), svc.member_state(i, now)))
        .collect()
}

async fn wait_state(l: &Lariat, addr: std::net::SocketAddr, want: BackendState, limit: Duration) {
    let addr = addr.to_string();
    let t0 = Instant::now();
    while states(l, "app@file").iter().find(|(a, _)| *a == addr).map(|s| s.1) != Some(want) {
        assert!(
            t0.elapsed() < limit,
            "{addr} not {want:?} within {limit:?}: {:?}",
            states(l, "app@file")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Run `n` GETs from 4 tasks; returns (ok, failed) counts and the backends seen.
async fn bounded_load(url: String, n: usize, during: impl std::future::Future<Output = ()>) -> (usize, usize) {
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (url, ok, failed, next) = (url.clone(), ok.clone(), failed.clone(), next.clone());
            tokio::spawn(async move {
                let c = client();
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                        other => {
                            eprintln!("failed: {:?}", other.map(|r| r.status()));
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    during.await;
    for t in tasks {
        t.await.unwrap();
    }
    (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst))
}

fn three(a: &HttpBackend, b: &HttpBackend, c: &HttpBackend) -> Vec<(&'static str, String)> {
    vec![
        ("b:a", a.addr.to_string()),
        ("b:b", b.addr.to_string()),
        ("b:c", c.addr.to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_mid_loop_fails_no_request() {
    let (a, b, c) = (http_backend("a").await, http_backend("b").await, http_backend("c").await);
    let conf = base(&format!("backends = [\"{{b:a}}\", \"{{b:b}}\", \"{{b:c}}\"]\n{CHECK}"));
    let l = Lariat::new(&three(&a, &b, &c)).start(&conf).await;
    for m in [a.addr, b.addr, c.addr] {
        wait_state(&l, m, BackendState::Healthy, Duration::from_secs(5)).await;
    }
    let killed_at = Arc::new(std::sync::Mutex::new(None));
    let k = killed_at.clone();
    let (ok, failed) = bounded_load(l.url("web", "/"), 600, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.kill();
        *k.lock().unwrap() = Some(Instant::now());
        wait_state(&l, b.addr, BackendState::Unhealthy, Duration::from_secs(5)).await;
    })
    .await;
    assert_eq!(failed, 0, "{ok} ok");
    let hits_b = b.hits.load(Ordering::SeqCst);
    assert!(
        a.hits.load(Ordering::SeqCst) > hits_b && c.hits.load(Ordering::SeqCst) > hits_b,
        "b kept traffic after it died"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_path_leaves_and_rejoins_rotation() {
    let (a, b, c) = (http_backend("a").await, http_backend("b").await, http_backend("c").await);
    let conf = base(&format!("backends = [\"{{b:a}}\", \"{{b:b}}\", \"{{b:c}}\"]\n{CHECK}"));
    let l = Lariat::new(&three(&a, &b, &c)).start(&conf).await;
    wait_state(&l, b.addr, BackendState::Healthy, Duration::from_secs(5)).await;
    b.health.store(500, Ordering::SeqCst);
    wait_state(&l, b.addr, BackendState::Unhealthy, Duration::from_secs(5)).await;
    let before = b.hits.load(Ordering::SeqCst);
    for _ in 0..60 {
        assert_eq!(get(&client(), &l.url("web", "/"), "x").await.0, 200);
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), before, "an unhealthy backend got traffic");
    b.health.store(200, Ordering::SeqCst);
    wait_state(&l, b.addr, BackendState::Healthy, Duration::from_secs(5)).await;
    for _ in 0..60 {
        get(&client(), &l.url("web", "/"), "x").await;
    }
    assert!(b.hits.load(Ordering::SeqCst) > before, "b did not return to rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_backend_is_ejected_by_timeouts() {
    let (a, _hung_task) = (http_backend("a").await, ());
    let (hung, _task) = hung_backend().await;
    let conf = base(
        "backends = [\"{b:a}\", \"{b:hung}\"]\nread_timeout = \"300ms\"\nretries = 1\n[services.app.circuit_breaker]\nconsecutive_failures = 2\nbase_ejection = \"30s\"\n",
    );
    let l = Lariat::new(&[("b:a", a.addr.to_string()), ("b:hung", hung.to_string())])
        .start(&conf)
        .await;
    for i in 0..12 {
        let (status, backend, _) = get(&client(), &l.url("web", "/"), "x").await;
        assert_eq!(
            (status, backend.as_str()),
            (200, "a"),
            "request {i}: a GET after a timeout goes to another backend"
        );
    }
    wait_state(&l, hung, BackendState::Ejected, Duration::from_secs(1)).await;
    // Ejected: requests no longer wait for it.
    let t0 = Instant::now();
    for _ in 0..10 {
        get(&client(), &l.url("web", "/"), "x").await;
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "requests still waited for the hung backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_with_a_slow_starter_costs_no_errors() {
    let a = http_backend("a").await;
    // The new backend's port refuses connections until it "starts" 800 ms later.
    let (guard, slow_addr) = refusing_addr();
    let mut l = Lariat::new(&[("b:a", a.addr.to_string()), ("b:s", slow_addr.to_string())])
        .start(&base(&format!("backends = [\"{{b:a}}\"]\n{CHECK}")))
        .await;
    wait_state(&l, a.addr, BackendState::Healthy, Duration::from_secs(5)).await;
    let slow = Arc::new(std::sync::Mutex::new(None));
    let s2 = slow.clone();
    let url = l.url("web", "/");
    let conf2 = base(&format!("backends = [\"{{b:a}}\", \"{{b:s}}\"]\n{CHECK}"));
    let (ok, failed) = bounded_load(url, 500, async {
        assert!(l.rewrite(&conf2).await);
        tokio::time::sleep(Duration::from_millis(800)).await;
        drop(guard);
        let listener = tokio::net::TcpListener::bind(slow_addr).await.unwrap();
        *s2.lock().unwrap() = Some(http_backend_on("s", listener));
        wait_state(&l, slow_addr, BackendState::Healthy, Duration::from_secs(5)).await;
    })
    .await;
    assert_eq!(failed, 0, "{ok} ok");
    for _ in 0..30 {
        get(&client(), &l.url("web", "/"), "x").await;
    }
    assert!(
        slow.lock().unwrap().as_ref().unwrap().hits.load(Ordering::SeqCst) > 0,
        "the new backend never got traffic"
    );
}

async fn all_unhealthy(strategy: &str) -> (Lariat, HttpBackend, HttpBackend) {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    a.health.store(500, Ordering::SeqCst);
    b.health.store(500, Ordering::SeqCst);
    let check = CHECK.replace(
        "unhealthy_threshold = 2",
        &format!("unhealthy_threshold = 1\ninitializing_timeout = \"300ms\"\n{strategy}"),
    );
    let l = Lariat::new(&[("b:a", a.addr.to_string()), ("b:b", b.addr.to_string())])
        .start(&base(&format!("backends = [\"{{b:a}}\", \"{{b:b}}\"]\n{check}")))
        .await;
    wait_state(&l, a.addr, BackendState::Unhealthy, Duration::from_secs(5)).await;
    wait_state(&l, b.addr, BackendState::Unhealthy, Duration::from_secs(5)).await;
    (l, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_failing_per_strategy() {
    // recreateOnQuorum: fail open, the backends still serve.
    let (l, _a, _b) = all_unhealthy("strategy = \"recreateOnQuorum\"\nquorum = 1").await;
    for _ in 0..10 {
        assert_eq!(get(&client(), &l.url("web", "/"), "x").await.0, 200);
    }
    let snap = l.running().shared.registry.snapshot();
    let svc = snap.services().next().unwrap();
    wait_until(Duration::from_secs(2), || {
        let f = svc.fail_open.clone();
        async move { f.load(Ordering::Relaxed) }
    })
    .await;
    drop(l);
    // recreate: 503 with Retry-After.
    let (l, _a, _b) = all_unhealthy("strategy = \"recreate\"").await;
    let r = client().get(l.url("web", "/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    drop(l);
    // none: states are reported, traffic still flows.
    let (l, _a, _b) = all_unhealthy("strategy = \"none\"").await;
    for _ in 0..10 {
        assert_eq!(get(&client(), &l.url("web", "/"), "x").await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_keeps_healthy_ones_only_while_met() {
    let (a, b, c) = (http_backend("a").await, http_backend("b").await, http_backend("c").await);
    let check = CHECK.replace(
        "unhealthy_threshold = 2",
        "unhealthy_threshold = 1\nstrategy = \"recreateOnQuorum\"\nquorum = 2",
    );
    let l = Lariat::new(&three(&a, &b, &c))
        .start(&base(&format!("backends = [\"{{b:a}}\", \"{{b:b}}\", \"{{b:c}}\"]\n{check}")))
        .await;
    for m in [a.addr, b.addr, c.addr] {
        wait_state(&l, m, BackendState::Healthy, Duration::from_secs(5)).await;
    }
    c.health.store(500, Ordering::SeqCst);
    wait_state(&l, c.addr, BackendState::Unhealthy, Duration::from_secs(5)).await;
    let before = c.hits.load(Ordering::SeqCst);
    for _ in 0..30 {
        get(&client(), &l.url("web", "/"), "x").await;
    }
    assert_eq!(c.hits.load(Ordering::SeqCst), before, "quorum met (2 of 3): c must get nothing");
    b.health.store(500, Ordering::SeqCst);
    wait_state(&l, b.addr, BackendState::Unhealthy, Duration::from_secs(5)).await;
    for _ in 0..60 {
        assert_eq!(get(&client(), &l.url("web", "/"), "x").await.0, 200);
    }
    assert!(c.hits.load(Ordering::SeqCst) > before, "below quorum: the service must fail open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expression_breaker_opens_on_5xx_and_recovers() {
    let a = http_backend("a").await;
    let conf = base(
        "backends = [\"{b:a}\"]\n[services.app.circuit_breaker]\nconsecutive_failures = 0\nexpression = \"ResponseCodeRatio(500, 600, 0, 600) > 0.5\"\nfallback_duration = \"400ms\"\nrecovery_duration = \"400ms\"\n",
    );
    let l = Lariat::new(&[("b:a", a.addr.to_string())]).start(&conf).await;
    // The breaker evaluates its window on a tick: it may open while these are sent, so the
    // backend's 500 and lariat's own 503 are both right here; the first one reaches the backend.
    for i in 0..10 {
        let (status, backend, _) = get(&client(), &l.url("web", "/status/500"), "x").await;
        assert!(
            status == 500 || (i > 0 && status == 503 && backend.is_empty()),
            "request {i}: {status} from {backend:?}"
        );
    }
    // Open: lariat answers the fallback itself.
    let url = l.url("web", "/");
    wait_until(Duration::from_secs(2), || {
        let url = url.clone();
        async move {
            let (s, backend, _) = get(&client(), &url, "x").await;
            s == 503 && backend.is_empty()
        }
    })
    .await;
    // Then recovering, then closed: everything reaches the backend again.
    let ok = Arc::new(AtomicBool::new(false));
    wait_until(Duration::from_secs(5), || {
        let (url, ok) = (url.clone(), ok.clone());
        async move {
            for _ in 0..20 {
                if get(&client(), &url, "x").await.0 != 200 {
                    return false;
                }
            }
            ok.store(true, Ordering::SeqCst);
            true
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_skips_a_dead_backend() {
    let (e1, e2) = (tcp_echo().await, tcp_echo().await);
    let (guard, dead) = refusing_addr();
    let conf = r#"
[server]
threads = 1
grace_period = "0s"
access_log = false
[admin]
listen = "{admin}"
[entrypoints.pg]
listen = "{pg}"
kind = "tcp"
[[routes]]
entrypoints = ["pg"]
service = "db"
[services.db]
backends = ["{b:1}", "{b:dead}", "{b:2}"]
retries = 0
[services.db.health_check]
kind = "tcp"
interval = "100ms"
timeout = "200ms"
healthy_threshold = 1
unhealthy_threshold = 1
initializing_timeout = "300ms"
"#;
    let l = Lariat::new(&[
        ("b:1", e1.addr.to_string()),
        ("b:2", e2.addr.to_string()),
        ("b:dead", dead.to_string()),
    ])
    .start(conf)
    .await;
    // With no retries, only the health check keeps connections away from the dead backend.
    let snap = l.running().shared.registry.snapshot();
    let svc = snap.services().next().unwrap().clone();
    wait_until(Duration::from_secs(5), || {
        let svc = svc.clone();
        async move {
            svc.member_state(1, Instant::now()) == BackendState::Unhealthy && svc.member_state(0, Instant::now()) == BackendState::Healthy
        }
    })
    .await;
    for i in 0..30 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(l.addr("pg")).await.unwrap();
        s.write_all(format!("m{i}").as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, format!("m{i}"));
    }
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_retry_idempotent_requests_only() {
    let a = http_backend("a").await;
    let (r, swallowed, _task) = resetting_backend().await;
    let conf = base("backends = [\"{b:r}\", \"{b:a}\"]\nretries = 1\n[services.app.circuit_breaker]\nconsecutive_failures = 0\n");
    let l = Lariat::new(&[("b:a", a.addr.to_string()), ("b:r", r.to_string())])
        .start(&conf)
        .await;
    for _ in 0..10 {
        assert_eq!(
            get(&client(), &l.url("web", "/"), "x").await.0,
            200,
            "GET after a reset must go to another backend"
        );
    }
    let before = swallowed.load(Ordering::SeqCst);
    assert!(before > 0, "round robin never tried the resetting backend");
    let mut failed_posts = 0;
    for _ in 0..10 {
        let r = client().post(l.url("web", "/")).body("pay once").send().await.unwrap();
        if r.status() == 502 {
            failed_posts += 1;
        } else {
            assert_eq!(r.status(), 200);
        }
    }
    let after = swallowed.load(Ordering::SeqCst);
    assert_eq!(
        failed_posts,
        after - before,
        "a POST that reached the resetting backend was replayed elsewhere"
    );
    assert!(failed_posts > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_per_backend_and_per_service() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let extra = [("b:a", a.addr.to_string()), ("b:b", b.addr.to_string())];
    async fn concurrent(url: String, n: usize) -> Vec<u16> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn({
                    let url = url.clone();
                    async move { client().get(&url).send().await.unwrap().status().as_u16() }
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out.sort();
        out
    }
    let l = Lariat::new(&extra)
        .start(&base("backends = [\"{b:a}\", \"{b:b}\"]\nmax_connections = 1\n"))
        .await;
    assert_eq!(
        concurrent(l.url("web", "/sleep/500"), 3).await,
        vec![200, 200, 503],
        "max_connections = 1 on 2 backends"
    );
    drop(l);
    let l = Lariat::new(&extra)
        .start(&base("backends = [\"{b:a}\", \"{b:b}\"]\nmax_requests = 3\n"))
        .await;
    assert_eq!(
        concurrent(l.url("web", "/sleep/500"), 5).await,
        vec![200, 200, 200, 503, 503],
        "max_requests = 3"
    );
}

/// A check backend that counts connections and requests. `close_after`: it closes each connection
/// after that many responses, without saying so (as a server that drops idle connections does).
async fn counting_backend(close_after: usize) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (conns, reqs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (conns.clone(), reqs.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                let mut answered = 0;
                while answered < close_after {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..i + 4);
                        r.fetch_add(1, Ordering::SeqCst);
                        answered += 1;
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n").await;
                    }
                }
            });
        }
    });
    (addr, conns, reqs)
}

/// HTTP/1.1 checks keep their connection between probes; a backend that drops kept connections
/// costs a new connection, never a failed check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_reuse_their_connection() {
    // A generous timeout and interval: a probe slowed by a busy machine must neither fail nor
    // overlap the next one (which would open a second connection meanwhile).
    let check = CHECK
        .replace("unhealthy_threshold = 2", "unhealthy_threshold = 1")
        .replace("interval = \"100ms\"", "interval = \"200ms\"")
        .replace("timeout = \"200ms\"", "timeout = \"2s\"");
    // Without reuse every check is a new connection; with it, one (two if a probe ever overlapped).
    for (close_after, max_conns) in [(usize::MAX, 2), (1, usize::MAX)] {
        let (addr, conns, reqs) = counting_backend(close_after).await;
        let conf = base(&format!("backends = [\"{{b:a}}\"]\n{check}"));
        let l = Lariat::new(&[("b:a", addr.to_string())]).start(&conf).await;
        wait_until(Duration::from_secs(10), || {
            let reqs = reqs.clone();
            async move { reqs.load(Ordering::SeqCst) >= 8 }
        })
        .await;
        let (c, r) = (conns.load(Ordering::SeqCst), reqs.load(Ordering::SeqCst));
        assert!(c <= max_conns, "close_after {close_after}: {c} connections for {r} checks");
        if close_after == 1 {
            assert!(c >= r - 1, "a closed connection was reused: {c} connections for {r} checks");
        }
        let snap = l.running().shared.registry.snapshot();
        let svc = &snap.service(&lariat::desired::ServiceId("app@file".into())).unwrap();
        assert_eq!(
            svc.members[0].health.checks_failed.load(Ordering::SeqCst),
            0,
            "close_after {close_after}: a check failed"
        );
    }
}
