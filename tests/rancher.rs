//! The Rancher provider end to end: a fake rancher-metadata answering in the real JSON field names
//! with long-poll semantics, the real provider, and real lariat routing to real backends on
//! loopback addresses (127.0.0.N, one per "container").

mod common;
use common::rancher::{FakeMetadata, Mode};
use common::*;
use lariat::upstream::BackendState;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// A "container": a real backend on 127.0.0.{n}:{port}.
async fn container(name: &str, n: u8, port: u16) -> HttpBackend {
    let listener = tokio::net::TcpListener::bind(("127.0.0.".to_string() + &n.to_string(), port))
        .await
        .unwrap();
    http_backend_on(name, listener)
}

fn c(n: u8, state: &str, health: &str) -> Value {
    json!({ "name": format!("shop-web-{n}"), "primary_ip": format!("127.0.0.{n}"), "state": state, "health_state": health,
            "service_name": "web", "stack_name": "shop", "labels": {}, "ports": [] })
}

fn svc(name: &str, labels: Value, containers: Vec<Value>, health_check: Value) -> Value {
    json!({ "name": name, "stack_name": "shop", "kind": "service", "state": "active", "system": false, "labels": labels,
            "ports": [], "containers": containers, "health_check": health_check, "scale": 1, "uuid": format!("uuid-{name}") })
}

fn conf(extra: &str) -> String {
    format!(
        r#"
{PREAMBLE}[entrypoints.pg]
listen = "{{pg}}"
kind = "tcp"
[providers.rancher]
endpoint = "{{endpoint}}"
domain = "rancher.internal"
long_poll = "5s"
{extra}
"#
    )
}

async fn backend_of(url: &str, host: &str) -> (u16, String) {
    let (s, b, _) = get(&client(), url, host).await;
    (s, b)
}

/// Poll until `host` is routed to one of `want` (or, with an empty `want`, is not routed).
async fn wait_routed(l: &Lariat, host: &str, want: &[&str], limit: Duration) -> Duration {
    let t0 = Instant::now();
    let url = l.url("web", "/");
    loop {
        let (s, b) = backend_of(&url, host).await;
        if (want.is_empty() && s == 404) || (s == 200 && want.contains(&b.as_str())) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{host}: got {s} from {b:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_routes_scale_and_outages() {
    let port = free_port();
    let (w1, w2) = (container("w1", 11, port).await, container("w2", 12, port).await);
    let labels = json!({ "lariat.enable": "true", "lariat.port": port.to_string() });
    let meta = FakeMetadata::start(json!([svc("web", labels.clone(), vec![c(11, "running", "healthy")], Value::Null)])).await;
    let l = Lariat::new(&[("endpoint", meta.endpoint())]).start(&conf("")).await;
    let host = "web.shop.rancher.internal";
    wait_routed(&l, host, &["w1"], Duration::from_secs(5)).await;

    // Scale up: the new container is routed within the bound.
    meta.set(json!([svc(
        "web",
        labels.clone(),
        vec![c(11, "running", "healthy"), c(12, "running", "healthy")],
        Value::Null
    )]));
    let t0 = Instant::now();
    let url = l.url("web", "/");
    loop {
        if backend_of(&url, host).await.1 == "w2" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "scale-up not routed within 2 s");
    }
    eprintln!("rancher convergence, scale-up: {:?}", t0.elapsed());

    // Scale down: the removed container gets nothing more.
    meta.set(json!([svc("web", labels.clone(), vec![c(12, "running", "healthy")], Value::Null)]));
    let t0 = Instant::now();
    let mut streak = 0;
    while streak < 20 {
        streak = if backend_of(&url, host).await.1 == "w2" { streak + 1 } else { 0 };
        assert!(t0.elapsed() < Duration::from_secs(2), "scale-down not seen within 2 s");
    }
    eprintln!("rancher convergence, scale-down: {:?}", t0.elapsed());
    let w1_hits = w1.hits.load(Ordering::SeqCst);

    // Outage: metadata answers 500; routes stay, errors are counted.
    meta.mode(Mode::Down);
    let shared = l.running().shared.clone();
    wait_until(Duration::from_secs(5), || {
        let s = shared.clone();
        async move { s.providers().get("rancher").is_some_and(|p| p.errors >= 2) }
    })
    .await;
    for _ in 0..10 {
        assert_eq!(backend_of(&url, host).await, (200, "w2".into()), "an outage removed routes");
    }
    // Malformed answers: the same.
    meta.mode(Mode::Malformed);
    let errors = shared.providers()["rancher"].errors;
    wait_until(Duration::from_secs(5), || {
        let s = shared.clone();
        async move { s.providers()["rancher"].errors > errors }
    })
    .await;
    assert!(shared.providers()["rancher"].last_error.as_ref().unwrap().1.contains("malformed"));
    for _ in 0..10 {
        assert_eq!(
            backend_of(&url, host).await,
            (200, "w2".into()),
            "a malformed answer removed routes"
        );
    }
    // Recovery: a valid answer applies again, and only a valid answer removes routes.
    meta.mode(Mode::Ok);
    meta.set(json!([]));
    wait_routed(&l, host, &[], Duration::from_secs(10)).await;
    assert_eq!(w1.hits.load(Ordering::SeqCst), w1_hits);
    let _ = w2;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_labels_tcp_and_health_filter() {
    let port = free_port();
    let (a1, a2) = (container("a1", 21, port).await, container("a2", 22, port).await);
    let echo_port = free_port();
    let echo = tokio::net::TcpListener::bind(("127.0.0.23", echo_port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let traefik = json!({ "traefik.enable": "true", "traefik.port": port.to_string(),
                          "traefik.frontend.rule": "Host:shop.example.com;PathPrefix:/api" });
    let db = json!({ "lariat.enable": "true", "lariat.port": echo_port.to_string(), "lariat.protocol": "tcp", "lariat.entrypoint": "pg" });
    let meta = FakeMetadata::start(json!([
        svc(
            "api",
            traefik,
            vec![c(21, "running", "healthy"), c(22, "running", "unhealthy")],
            Value::Null
        ),
        svc(
            "db",
            db,
            vec![json!({"name": "db-1", "primary_ip": "127.0.0.23", "state": "running", "health_state": "healthy"})],
            Value::Null
        ),
    ]))
    .await;
    let l = Lariat::new(&[("endpoint", meta.endpoint())])
        .start(&conf("health_filter = true"))
        .await;
    let url = l.url("web", "/api/items");
    wait_until(Duration::from_secs(5), || {
        let url = url.clone();
        async move { get(&client(), &url, "shop.example.com").await.0 == 200 }
    })
    .await;
    for _ in 0..20 {
        assert_eq!(
            backend_of(&url, "shop.example.com").await,
            (200, "a1".into()),
            "health_filter must drop the unhealthy container"
        );
    }
    assert_eq!(
        backend_of(&l.url("web", "/other"), "shop.example.com").await.0,
        404,
        "PathPrefix:/api"
    );
    assert_eq!(a2.hits.load(Ordering::SeqCst), 0);
    // The tcp service on the pg entrypoint.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(l.addr("pg")).await.unwrap();
    s.write_all(b"select 1").await.unwrap();
    let mut buf = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"select 1");
    let _ = a1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_health_check_becomes_the_active_check() {
    let port = free_port();
    let (h1, h2) = (container("h1", 31, port).await, container("h2", 32, port).await);
    h2.health.store(503, Ordering::SeqCst);
    let check = json!({ "port": port, "request_line": "GET \"/healthz\" \"HTTP/1.0\"", "interval": 100, "response_timeout": 200,
                        "healthy_threshold": 1, "unhealthy_threshold": 1, "initializing_timeout": 300, "strategy": "recreate" });
    let labels = json!({ "lariat.enable": "true", "lariat.port": port.to_string() });
    let meta = FakeMetadata::start(json!([svc(
        "web",
        labels,
        vec![c(31, "running", "healthy"), c(32, "running", "healthy")],
        check
    )]))
    .await;
    let l = Lariat::new(&[("endpoint", meta.endpoint())]).start(&conf("")).await;
    let shared = l.running().shared.clone();
    wait_until(Duration::from_secs(5), || {
        let s = shared.clone();
        async move {
            let snap = s.registry.snapshot();
            let Some(svc) = snap.service(&lariat::desired::ServiceId("web.shop@rancher".into())) else {
                return false;
            };
            let now = Instant::now();
            svc.member_state(0, now) == BackendState::Healthy && svc.member_state(1, now) == BackendState::Unhealthy
        }
    })
    .await;
    let snap = shared.registry.snapshot();
    let svc = &snap.service(&lariat::desired::ServiceId("web.shop@rancher".into())).unwrap();
    let check = svc.spec.health_check.as_ref().unwrap();
    assert_eq!(
        (check.interval, check.timeout),
        (Duration::from_millis(100), Duration::from_millis(200))
    );
    for _ in 0..20 {
        assert_eq!(
            backend_of(&l.url("web", "/"), "web.shop.rancher.internal").await,
            (200, "h1".into())
        );
    }
    let _ = h1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_are_coalesced() {
    let port = free_port();
    let _b = container("b", 41, port).await;
    let labels = json!({ "lariat.enable": "true", "lariat.port": port.to_string() });
    let meta = FakeMetadata::start(json!([svc("web", labels.clone(), vec![c(41, "running", "healthy")], Value::Null)])).await;
    let l = Lariat::new(&[("endpoint", meta.endpoint())]).start(&conf("")).await;
    wait_routed(&l, "web.shop.rancher.internal", &["b"], Duration::from_secs(5)).await;
    let reads = meta.service_reads.load(Ordering::SeqCst);
    // 50 changes in a burst, each a new version.
    for i in 0..50 {
        meta.set(json!([svc(
            "web",
            labels.clone(),
            vec![c(41, "running", "healthy")],
            json!({ "port": port, "interval": 2000 + i })
        )]));
    }
    let last = meta.version().to_string();
    let shared = l.running().shared.clone();
    wait_until(Duration::from_secs(5), || {
        let (s, last) = (shared.clone(), last.clone());
        async move { s.providers()["rancher"].version.as_deref() == Some(last.as_str()) }
    })
    .await;
    let fetched = meta.service_reads.load(Ordering::SeqCst) - reads;
    assert!(fetched <= 5, "{fetched} reads of /services for a burst of 50 changes");
}
