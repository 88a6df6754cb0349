//! Convergence at scale (run by hand: `cargo bench --bench convergence`; results in
//! bench/RESULTS.md).
//!
//! 1. Snapshot apply time: a registry holding 10, 100 and 1,000 services of 10 backends (100,
//!    1,000 and 10,000 backends) applies a change to one service's membership; median and max.
//! 2. From a change in discovery to the first request routed accordingly, with 1,000 services of
//!    10 members each: a rancher-metadata version bump (fake metadata, long-poll), and an
//!    EndpointSlice event (fake API server, real kube-rs watch). Each of CHANGES changes moves one
//!    member of the measured service to a fresh real backend; the time is from publishing the
//!    change to the first response from that backend (requests sent back to back).
//!
//! CHANGES (default 60) sets the number of changes per provider.

#[path = "../tests/common/mod.rs"]
mod common;

use common::kube::{ingress, rule, service, slice, FakeKube, Kind};
use common::rancher::FakeMetadata;
use common::*;
use lariat::desired::{BackendSpec, Desired, HostMatch, HttpRoute, ServiceId, ServiceSpec};
use lariat::upstream::Registry;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SERVICES: usize = 1000;
const MEMBERS: usize = 10;
/// Real backends the measured service's members move through.
const POOL: usize = 20;

fn changes() -> usize {
    std::env::var("CHANGES").ok().and_then(|v| v.parse().ok()).unwrap_or(60)
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "n={} p50={:.3} ms p90={:.3} ms p99={:.3} ms max={:.3} ms",
        v.len(),
        p(0.5).as_secs_f64() * 1e3,
        p(0.9).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    )
}

fn desired(services: usize, shift: usize) -> Desired {
    let mut d = Desired::default();
    for s in 0..services {
        let off = if s == 0 { shift } else { 0 };
        let backends = (0..MEMBERS)
            .map(|m| BackendSpec {
                addr: format!("10.{}.{}.{}:8080", s / 256, s % 256, (m + off) % 250 + 1).parse().unwrap(),
                weight: 1,
            })
            .collect();
        let id = ServiceId(format!("s{s}@bench"));
        d.services.push(ServiceSpec::new(id.clone(), backends));
        d.http_routes.push(HttpRoute {
            entrypoints: vec!["web".into()],
            host: HostMatch::parse(&format!("s{s}.example.com")).unwrap(),
            path_prefix: "/".into(),
            exact: false,
            redirect_https: false,
            service: id,
        });
    }
    d
}

fn apply_times() {
    println!("## Snapshot apply: one service's membership changes");
    for services in [10, 100, 1000] {
        let r = Registry::default();
        let t = Instant::now();
        r.apply("bench", desired(services, 0));
        let first = t.elapsed();
        // The provider publishes its whole state (Rancher's answer is whole): every spec is
        // compared, the changed one swapped in its cell, no route table rebuilt.
        let mut whole = Vec::new();
        for i in 1..=50 {
            let d = desired(services, i);
            let t = Instant::now();
            let stats = r.apply("bench", d);
            whole.push(t.elapsed());
            assert_eq!((stats.services_rebuilt, stats.routes_rebuilt), (1, false));
        }
        // The provider names the changed service (a Kubernetes EndpointSlice event).
        let mut members = Vec::new();
        for i in 51..=100 {
            let mut d = desired(1, i);
            let backends = d.services.remove(0).backends;
            let t = Instant::now();
            let stats = r.update_members("bench", vec![(ServiceId("s0@bench".into()), backends)]).unwrap();
            members.push(t.elapsed());
            assert_eq!(stats.services_rebuilt, 1);
        }
        println!(
            "{:>6} backends ({services} services): first apply {:.2} ms; a change published whole: {}; a member update: {}",
            services * MEMBERS,
            first.as_secs_f64() * 1e3,
            percentiles(whole),
            percentiles(members)
        );
    }
}

/// Send requests for `host` back to back until one is answered by `want`.
async fn first_from(c: &reqwest::Client, url: &str, host: &str, want: &str, t0: Instant) -> Duration {
    for _ in 0..200_000 {
        let (s, b, _) = get(c, url, host).await;
        if s == 200 && b == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{host}: never routed to {want} (last {s} from {b})"
        );
    }
    panic!("{host}: never routed to {want}");
}

/// The real backends of the measured service: 127.0.0.{10+i}:port.
async fn pool(port: u16) -> Vec<HttpBackend> {
    let mut v = Vec::new();
    for i in 0..POOL {
        let l = tokio::net::TcpListener::bind((format!("127.0.0.{}", 10 + i), port)).await.unwrap();
        v.push(http_backend_on(&format!("p{i}"), l));
    }
    v
}

fn window(j: usize) -> Vec<usize> {
    (0..MEMBERS).map(|m| (j + m) % POOL).collect()
}

fn rancher_services(port: u16, j: usize) -> Value {
    let labels = json!({ "lariat.enable": "true", "lariat.port": port.to_string() });
    let container = |name: String, ip: String| json!({ "name": name, "primary_ip": ip, "state": "running", "health_state": "healthy", "labels": {}, "ports": [] });
    let svc = |name: String, containers: Vec<Value>| {
        json!({ "name": name, "stack_name": "shop", "kind": "service", "state": "active", "system": false, "labels": labels,
                "ports": [], "containers": containers, "health_check": null, "scale": MEMBERS, "uuid": format!("uuid-{name}") })
    };
    let mut all = vec![svc(
        "web".into(),
        window(j)
            .iter()
            .map(|i| container(format!("web-{i}"), format!("127.0.0.{}", 10 + i)))
            .collect(),
    )];
    for s in 1..SERVICES {
        all.push(svc(
            format!("s{s}"),
            (0..MEMBERS)
                .map(|m| container(format!("s{s}-{m}"), format!("10.{}.{}.{}", s / 256, s % 256, m + 1)))
                .collect(),
        ));
    }
    Value::Array(all)
}

async fn rancher() {
    let port = free_port();
    let backends = pool(port).await;
    let meta = FakeMetadata::start(rancher_services(port, 0)).await;
    let conf = "[server]\nthreads = 1\ngrace_period = \"0s\"\naccess_log = false\nlog = \"warn\"\n[admin]\nlisten = \"{admin}\"\n[entrypoints.web]\nlisten = \"{web}\"\nkind = \"http\"\n[providers.rancher]\nendpoint = \"{endpoint}\"\ndomain = \"rancher.internal\"\nlong_poll = \"30s\"\n";
    let l = Lariat::new(&[("endpoint", meta.endpoint())]).start(conf).await;
    let (c, url, host) = (client(), l.url("web", "/"), "web.shop.rancher.internal");
    first_from(&c, &url, host, "p0", Instant::now()).await;
    let mut times = Vec::new();
    for j in 1..=changes() {
        let newest = window(j)[MEMBERS - 1];
        let services = rancher_services(port, j);
        let t0 = Instant::now();
        meta.set(services);
        times.push(first_from(&c, &url, host, &backends[newest].name, t0).await);
    }
    println!(
        "rancher-metadata version bump -> first request routed ({SERVICES} services x {MEMBERS}): {}",
        percentiles(times)
    );
}

async fn kubernetes() {
    let port = free_port();
    let backends = pool(port).await;
    let api = FakeKube::start().await;
    let web_slice = |j: usize| {
        let ips: Vec<String> = window(j).iter().map(|i| format!("127.0.0.{}", 10 + i)).collect();
        let eps: Vec<(&str, bool)> = ips.iter().map(|ip| (ip.as_str(), true)).collect();
        slice("shop", "web-abc", "web", "http", port, &eps)
    };
    let mut rules = vec![rule("web.example.com", "/", "Prefix", "web", json!({"name": "http"}))];
    api.put(
        Kind::Service,
        service("shop", "web", json!([{"name": "http", "port": 80, "targetPort": port}]), json!({})),
    );
    api.put(Kind::EndpointSlice, web_slice(0));
    for s in 1..SERVICES {
        let name = format!("s{s}");
        api.put(
            Kind::Service,
            service("shop", &name, json!([{"name": "http", "port": 80, "targetPort": 8080}]), json!({})),
        );
        let ips: Vec<String> = (0..MEMBERS).map(|m| format!("10.{}.{}.{}", s / 256, s % 256, m + 1)).collect();
        let eps: Vec<(&str, bool)> = ips.iter().map(|ip| (ip.as_str(), true)).collect();
        api.put(
            Kind::EndpointSlice,
            slice("shop", &format!("{name}-abc"), &name, "http", 8080, &eps),
        );
        rules.push(rule(&format!("{name}.example.com"), "/", "Prefix", &name, json!({"name": "http"})));
    }
    api.put(Kind::Ingress, ingress("shop", "all", "lariat", Value::Array(rules)));
    let mut l = Lariat::new(&[]);
    let kc = api.kubeconfig(l.path.parent().unwrap());
    l.extra.insert("kubeconfig".into(), kc);
    let conf = "[server]\nthreads = 1\ngrace_period = \"0s\"\naccess_log = false\nlog = \"warn\"\n[admin]\nlisten = \"{admin}\"\n[entrypoints.web]\nlisten = \"{web}\"\nkind = \"http\"\n[providers.kubernetes]\ningress_class = \"lariat\"\nkubeconfig = \"{kubeconfig}\"\n";
    let l = l.start(conf).await;
    let (c, url, host) = (client(), l.url("web", "/"), "web.example.com");
    first_from(&c, &url, host, "p0", Instant::now()).await;
    let mut times = Vec::new();
    for j in 1..=changes() {
        let newest = window(j)[MEMBERS - 1];
        let s = web_slice(j);
        let t0 = Instant::now();
        api.put(Kind::EndpointSlice, s);
        times.push(first_from(&c, &url, host, &backends[newest].name, t0).await);
    }
    println!(
        "EndpointSlice event -> first request routed ({SERVICES} services x {MEMBERS}): {}",
        percentiles(times)
    );
}

fn main() {
    apply_times();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("## Discovery change -> first request routed");
    rt.block_on(rancher());
    rt.block_on(kubernetes());
}
