//! The Kubernetes provider end to end: a fake API server answering list and chunked watch like the
//! real one, the real kube-rs watchers, and real lariat routing to real backends on loopback
//! addresses (127.0.0.N, one per "pod").

mod common;
use common::kube::{ingress, rule, service, slice, FakeKube, Kind};
use common::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

async fn pod(name: &str, n: u8, port: u16) -> HttpBackend {
    let listener = tokio::net::TcpListener::bind(("127.0.0.".to_string() + &n.to_string(), port))
        .await
        .unwrap();
    http_backend_on(name, listener)
}

fn conf(extra: &str) -> String {
    format!(
        r#"
{PREAMBLE}[entrypoints.pg]
listen = "{{pg}}"
kind = "tcp"
[providers.kubernetes]
ingress_class = "lariat"
kubeconfig = "{{kubeconfig}}"
{extra}
"#
    )
}

async fn start(api: &FakeKube, extra: &str) -> Lariat {
    let mut l = Lariat::new(&[]);
    let kc = api.kubeconfig(l.path.parent().unwrap());
    l.extra.insert("kubeconfig".into(), kc);
    l.start(&conf(extra)).await
}

async fn route(l: &Lariat, host: &str, path: &str) -> (u16, String) {
    let (s, b, _) = get(&client(), &l.url("web", path), host).await;
    (s, b)
}

/// Poll until (host, path) answers as `want` ("" backend: any); returns how long it took.
async fn wait_route(l: &Lariat, host: &str, path: &str, want: (u16, &str), limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let got = route(l, host, path).await;
        if got.0 == want.0 && (want.1.is_empty() || got.1 == want.1) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{host}{path}: {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait until 20 requests in a row to shop.example.com are answered by `pod`: `other` no longer
/// gets traffic. Panics after `limit`.
async fn only_routed_to(l: &Lariat, pod: &str, limit: Duration, other: &str) -> Duration {
    let t0 = Instant::now();
    let mut streak = 0;
    while streak < 20 {
        streak = if route(l, "shop.example.com", "/").await.1 == pod {
            streak + 1
        } else {
            0
        };
        assert!(t0.elapsed() < limit, "{other} still routed after {limit:?}");
    }
    t0.elapsed()
}

fn web_objects(api: &FakeKube, port: u16, endpoints: &[(&str, bool)]) {
    api.put(
        Kind::Service,
        service("shop", "web", json!([{"name": "http", "port": 80, "targetPort": port}]), json!({})),
    );
    api.put(Kind::EndpointSlice, slice("shop", "web-abc", "web", "http", port, endpoints));
    api.put(
        Kind::Ingress,
        ingress(
            "shop",
            "web",
            "lariat",
            json!([rule("shop.example.com", "/", "Prefix", "web", json!({"name": "http"}))]),
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_routes_and_readiness_flips() {
    let port = free_port();
    let (p1, p2) = (pod("p1", 51, port).await, pod("p2", 52, port).await);
    let api = FakeKube::start().await;
    web_objects(&api, port, &[("127.0.0.51", true), ("127.0.0.52", false)]);
    let l = start(&api, "").await;
    wait_route(&l, "shop.example.com", "/", (200, "p1"), Duration::from_secs(10)).await;
    for _ in 0..10 {
        assert_eq!(
            route(&l, "shop.example.com", "/x").await,
            (200, "p1".into()),
            "a not-ready endpoint got traffic"
        );
    }
    // Slice events change members only: the provider hands the registry just those services
    // (no new snapshot, no whole mapping), from here to the Ingress's removal.
    let registry = &l.running().shared.registry;
    let (snap0, updates0, version0) = (registry.snapshot(), registry.member_updates(), registry.version());
    // p2 turns ready: routed within the bound.
    api.put(
        Kind::EndpointSlice,
        slice(
            "shop",
            "web-abc",
            "web",
            "http",
            port,
            &[("127.0.0.51", true), ("127.0.0.52", true)],
        ),
    );
    let t0 = Instant::now();
    while route(&l, "shop.example.com", "/").await.1 != "p2" {
        assert!(t0.elapsed() < Duration::from_secs(2), "ready endpoint not routed within 2 s");
    }
    eprintln!("kubernetes convergence, endpoint ready: {:?}", t0.elapsed());
    // p1 turns unready (terminating): no new requests within the bound.
    api.put(
        Kind::EndpointSlice,
        slice(
            "shop",
            "web-abc",
            "web",
            "http",
            port,
            &[("127.0.0.51", false), ("127.0.0.52", true)],
        ),
    );
    let took = only_routed_to(&l, "p2", Duration::from_secs(2), "the unready endpoint").await;
    eprintln!("kubernetes convergence, endpoint unready: {took:?}");
    // Scale down to nothing: 503; scale up with a second slice: both.
    api.put(Kind::EndpointSlice, slice("shop", "web-abc", "web", "http", port, &[]));
    wait_route(&l, "shop.example.com", "/", (503, ""), Duration::from_secs(5)).await;
    api.put(
        Kind::EndpointSlice,
        slice("shop", "web-abc", "web", "http", port, &[("127.0.0.51", true)]),
    );
    api.put(
        Kind::EndpointSlice,
        slice("shop", "web-def", "web", "http", port, &[("127.0.0.52", true)]),
    );
    wait_route(&l, "shop.example.com", "/", (200, ""), Duration::from_secs(5)).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(route(&l, "shop.example.com", "/").await.1);
    }
    assert_eq!(seen.len(), 2, "two slices of one service merge: {seen:?}");
    // A slice deleted: its endpoints leave.
    api.delete(Kind::EndpointSlice, "shop", "web-def");
    only_routed_to(&l, "p1", Duration::from_secs(5), "a deleted slice's endpoint").await;
    assert!(Arc::ptr_eq(&snap0, &registry.snapshot()), "a slice event made a new snapshot");
    let (updates, changes) = (registry.member_updates() - updates0, registry.version() - version0);
    assert!(updates >= 5, "{updates} member updates for 6 slice events");
    assert_eq!(updates, changes, "a slice event mapped the whole state");
    // The Ingress goes away: 404.
    api.delete(Kind::Ingress, "shop", "web");
    wait_route(&l, "shop.example.com", "/", (404, ""), Duration::from_secs(5)).await;
    let _ = (p1, p2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_filter_paths_annotations_and_tcp() {
    let port = free_port();
    let (a, b) = (pod("a", 61, port).await, pod("b", 62, port).await);
    let echo = tokio::net::TcpListener::bind(("127.0.0.63", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    b.health.store(500, Ordering::SeqCst);
    let api = FakeKube::start().await;
    // An annotated service with an active check; b fails it.
    api.put(
        Kind::Service,
        service(
            "shop",
            "api",
            json!([{"name": "http", "port": 8080}]),
            json!({
            "lariat.io/health-check": "GET /healthz HTTP/1.1", "lariat.io/health-check-interval": "100ms",
            "lariat.io/healthy-threshold": "1", "lariat.io/unhealthy-threshold": "1", "lariat.io/balance": "least_conn"}),
        ),
    );
    api.put(
        Kind::EndpointSlice,
        slice("shop", "api-1", "api", "http", port, &[("127.0.0.61", true), ("127.0.0.62", true)]),
    );
    api.put(
        Kind::Ingress,
        ingress(
            "shop",
            "api",
            "lariat",
            json!([rule("api.example.com", "/v1", "Exact", "api", json!({"number": 8080}))]),
        ),
    );
    api.put(
        Kind::Ingress,
        ingress(
            "shop",
            "other",
            "nginx",
            json!([rule("other.example.com", "/", "Prefix", "api", json!({"number": 8080}))]),
        ),
    );
    // A tcp service on the pg entrypoint.
    api.put(
        Kind::Service,
        service(
            "db",
            "pg",
            json!([{"name": "pg", "port": 5432}]),
            json!({"lariat.io/tcp-entrypoint": "pg"}),
        ),
    );
    api.put(Kind::EndpointSlice, slice("db", "pg-1", "pg", "pg", port, &[("127.0.0.63", true)]));
    let l = start(&api, "").await;
    wait_route(&l, "api.example.com", "/v1", (200, "a"), Duration::from_secs(10)).await;
    let shared = l.running().shared.clone();
    wait_until(Duration::from_secs(5), || {
        let s = shared.clone();
        async move {
            let snap = s.registry.snapshot();
            let svc = &snap
                .service(&lariat::desired::ServiceId("shop/api:8080@kubernetes".into()))
                .unwrap();
            // b fails every check, so it never leaves initializing (and takes no traffic).
            let now = Instant::now();
            svc.member_state(0, now) == lariat::upstream::BackendState::Healthy
                && svc.member_state(1, now) == lariat::upstream::BackendState::Initializing
                && svc.members[1].health.checks_failed.load(Ordering::Relaxed) >= 2
        }
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            route(&l, "api.example.com", "/v1").await,
            (200, "a".into()),
            "the annotated check must keep b out"
        );
    }
    assert_eq!(route(&l, "api.example.com", "/v1/x").await.0, 404, "pathType Exact");
    assert_eq!(route(&l, "other.example.com", "/").await.0, 404, "another class's ingress");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(l.addr("pg")).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    let _ = a;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watch_410_and_outage_keep_routes() {
    let port = free_port();
    let (p1, p2) = (pod("p1", 71, port).await, pod("p2", 72, port).await);
    let api = FakeKube::start().await;
    web_objects(&api, port, &[("127.0.0.71", true)]);
    let l = start(&api, "").await;
    wait_route(&l, "shop.example.com", "/", (200, "p1"), Duration::from_secs(10)).await;

    // A dropped watch: the watcher comes back and sees later changes.
    api.drop_watches();
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.put(
        Kind::EndpointSlice,
        slice("shop", "web-abc", "web", "http", port, &[("127.0.0.72", true)]),
    );
    wait_route(&l, "shop.example.com", "/", (200, "p2"), Duration::from_secs(10)).await;

    // 410 Expired: history is gone; the watcher relists without flushing routes.
    let lists_before = api.count("list");
    api.compact();
    for _ in 0..20 {
        assert_eq!(
            route(&l, "shop.example.com", "/").await,
            (200, "p2".into()),
            "routes flushed by a relist"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.put(
        Kind::EndpointSlice,
        slice("shop", "web-abc", "web", "http", port, &[("127.0.0.71", true)]),
    );
    wait_route(&l, "shop.example.com", "/", (200, "p1"), Duration::from_secs(10)).await;
    assert!(api.count("list") > lists_before, "no relist after 410");

    // An outage: routes stay, errors are counted; then the API returns and changes apply.
    api.set_down(true);
    let shared = l.running().shared.clone();
    wait_until(Duration::from_secs(10), || {
        let s = shared.clone();
        async move { s.providers().get("kubernetes").is_some_and(|p| p.errors >= 1) }
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            route(&l, "shop.example.com", "/").await,
            (200, "p1".into()),
            "an API outage removed routes"
        );
    }
    api.set_down(false);
    api.put(
        Kind::EndpointSlice,
        slice("shop", "web-abc", "web", "http", port, &[("127.0.0.72", true)]),
    );
    wait_route(&l, "shop.example.com", "/", (200, "p2"), Duration::from_secs(20)).await;
    let _ = (p1, p2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_published_before_every_list_is_complete_and_namespaces_filter() {
    let port = free_port();
    let _p = pod("p", 81, port).await;
    let api = FakeKube::start().await;
    web_objects(&api, port, &[("127.0.0.81", true)]);
    api.put(
        Kind::Service,
        service("other", "web", json!([{"name": "http", "port": 80}]), json!({})),
    );
    api.put(
        Kind::EndpointSlice,
        slice("other", "web-1", "web", "http", port, &[("127.0.0.81", true)]),
    );
    api.put(
        Kind::Ingress,
        ingress(
            "other",
            "web",
            "lariat",
            json!([rule("other.example.com", "/", "Prefix", "web", json!({"number": 80}))]),
        ),
    );
    // EndpointSlices list slowly: Ingresses and Services are known long before. Publishing then
    // would route shop.example.com to a service with no members (503).
    api.slow_list(Kind::EndpointSlice, Duration::from_millis(1500));
    let l = start(&api, "namespaces = [\"shop\"]").await;
    let t0 = Instant::now();
    let mut saw_404 = false;
    loop {
        let (status, backend) = route(&l, "shop.example.com", "/").await;
        match status {
            404 => saw_404 = true,
            200 if backend == "p" => break,
            other => panic!("{other} from {backend:?} before the initial lists completed: a half-empty table was published"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "never routed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_404, "the slow list was not slow enough to test anything");
    assert!(t0.elapsed() >= Duration::from_millis(1000));
    assert_eq!(route(&l, "other.example.com", "/").await.0, 404, "a namespace not listed");
    let requests = api.requests.lock().unwrap().clone();
    assert!(
        requests.iter().all(|r| r.contains("/namespaces/shop/")),
        "watched beyond the listed namespace: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_tls_secrets_rotation_and_ssl_redirect() {
    use common::certs::{ca, issue, issue_pem, served_names_at};
    use common::kube::tls_secret;
    let port = free_port();
    let _p = pod("p", 91, port).await;
    let ca = ca();
    let api = FakeKube::start().await;
    web_objects(&api, port, &[("127.0.0.91", true)]);
    let (crt, key) = issue_pem(&ca, &["secure.example.com"]);
    api.put(Kind::Secret, tls_secret("shop", "secure-tls", &crt, &key));
    // An opaque Secret of the same name elsewhere must not be read (only kubernetes.io/tls ones are watched).
    api.put(
        Kind::Secret,
        json!({"metadata": {"name": "opaque", "namespace": "shop"}, "type": "Opaque", "data": {"password": "c2VjcmV0"}}),
    );
    let mut ing = ingress(
        "shop",
        "secure",
        "lariat",
        json!([rule("secure.example.com", "/", "Prefix", "web", json!({"name": "http"}))]),
    );
    ing["spec"]["tls"] =
        json!([{"hosts": ["secure.example.com"], "secretName": "secure-tls"}, {"hosts": ["missing.example.com"], "secretName": "nope"}]);
    ing["metadata"]["annotations"] = json!({"lariat.io/ssl-redirect": "true"});
    api.put(Kind::Ingress, ing);
    let mut l = Lariat::new(&[]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let kc = api.kubeconfig(&dir);
    l.extra.insert("kubeconfig".into(), kc);
    let (dc, dk) = issue(&ca, &dir, "default", &["default.example.net"]);
    let extra = format!("[entrypoints.websecure]\nlisten = \"{{websecure}}\"\nkind = \"https\"\n[tls]\ndefault_certificate = {{ cert = \"{dc}\", key = \"{dk}\" }}\n");
    let l = l.start(&conf(&extra)).await;
    let secure = l.addr("websecure");
    wait_until(Duration::from_secs(10), || {
        let ca = &ca;
        async move {
            served_names_at(secure, ca, "secure.example.com")
                .await
                .is_ok_and(|n| n == ["DNSName(secure.example.com)"])
        }
    })
    .await;
    // A missing Secret: that host gets the default certificate.
    let err = served_names_at(secure, &ca, "missing.example.com").await.unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    // Rotation: a new certificate in the Secret is served within a second.
    let (crt2, key2) = issue_pem(&ca, &["secure.example.com", "rotated.example.com"]);
    api.put(Kind::Secret, tls_secret("shop", "secure-tls", &crt2, &key2));
    let t0 = Instant::now();
    while served_names_at(secure, &ca, "secure.example.com").await.unwrap().len() != 2 {
        assert!(t0.elapsed() < Duration::from_secs(2), "rotated Secret not served within 2 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("kubernetes secret rotation served after {:?}", t0.elapsed());
    // ssl-redirect: plain http for the TLS host is redirected; the other host is not.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(l.url("web", "/x?y=1"))
        .header("host", "secure.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://secure.example.com:{}/x?y=1", secure.port())
    );
    assert_eq!(route(&l, "shop.example.com", "/").await.0, 200);
    let certs: serde_json::Value = client()
        .get(format!("http://{}/api/certificates", l.addr("admin")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        certs
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["source"] == "kubernetes" && c["origin"] == "secret shop/secure-tls"),
        "{certs}"
    );
    let requests = api.requests.lock().unwrap().clone();
    assert!(
        requests.iter().filter(|r| r.contains("Secret")).all(|r| r.contains("secrets")),
        "{requests:?}"
    );
}
