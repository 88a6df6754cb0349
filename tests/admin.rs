//! The admin listener: /metrics after a known workload, the JSON API's shape, the token, and the
//! dashboard page.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (head, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let mut m = BTreeMap::new();
                // label values here never contain '",' so a split is enough
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    m.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (n.to_string(), m)
            }
            None => (head.to_string(), BTreeMap::new()),
        };
        out.push((name, labels, value.parse().unwrap_or_else(|_| panic!("bad value in {line}"))));
    }
    out
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(|x| x.as_str()) == Some(*v)))
        .map(|s| s.2)
}

fn conf(token: &str) -> String {
    format!(
        r#"
[server]
threads = 1
grace_period = "0s"
access_log = false
[admin]
listen = "{{admin}}"
{token}
[entrypoints.web]
listen = "{{web}}"
kind = "http"
[entrypoints.pg]
listen = "{{pg}}"
kind = "tcp"
[[routes]]
host = "app.test"
service = "app"
[[routes]]
entrypoints = ["pg"]
service = "db"
[services.app]
backends = ["{{b:a}}", "{{b:dead}}"]
[services.app.health_check]
request_line = "GET /healthz HTTP/1.1"
interval = "100ms"
timeout = "200ms"
healthy_threshold = 1
unhealthy_threshold = 1
initializing_timeout = "200ms"
strategy = "recreateOnQuorum"
quorum = 1
[services.db]
backends = ["{{b:echo}}"]
"#
    )
}

async fn start(token: &str) -> (Lariat, HttpBackend, TcpEcho, tokio::net::TcpSocket) {
    let a = http_backend("a").await;
    let echo = tcp_echo().await;
    let (guard, dead) = refusing_addr();
    let l = Lariat::new(&[
        ("b:a", a.addr.to_string()),
        ("b:echo", echo.addr.to_string()),
        ("b:dead", dead.to_string()),
    ])
    .start(&conf(token))
    .await;
    // Wait until the dead backend is known unhealthy and the live one healthy.
    let admin = l.addr("admin");
    let tok = token.split('"').nth(1).unwrap_or("").to_string();
    wait_until(Duration::from_secs(5), || {
        let tok = tok.clone();
        async move {
            let r = client()
                .get(format!("http://{admin}/api/services/app@file"))
                .bearer_auth(&tok)
                .send()
                .await
                .unwrap();
            let v: serde_json::Value = r.json().await.unwrap();
            v["backend_states"]["healthy"] == 1 && v["backend_states"]["unhealthy"] == 1
        }
    })
    .await;
    (l, a, echo, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_workload() {
    let (l, _a, _echo, _g) = start("").await;
    let c = client();
    // The start-up readiness probe opened one TCP connection through the pg entrypoint.
    let admin = l.addr("admin");
    let tcp_count = move |n: f64| async move {
        let text = client()
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        value(&parse_metrics(&text), "lariat_tcp_connections_total", &[("service", "db@file")]) == Some(n)
    };
    wait_until(Duration::from_secs(2), || tcp_count(1.0)).await;
    for _ in 0..7 {
        assert_eq!(get(&c, &l.url("web", "/"), "app.test").await.0, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(&c, &l.url("web", "/status/404"), "app.test").await.0, 404);
    }
    for _ in 0..2 {
        assert_eq!(get(&c, &l.url("web", "/"), "nothing.test").await.0, 404);
    }
    for _ in 0..2 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(l.addr("pg")).await.unwrap();
        s.write_all(b"0123456789").await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back.len(), 10);
    }
    // TCP byte counters are written when the connection ends, just after the client sees EOF.
    wait_until(Duration::from_secs(2), || async move {
        let text = client()
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        value(
            &parse_metrics(&text),
            "lariat_tcp_bytes_total",
            &[("service", "db@file"), ("direction", "tx")],
        ) == Some(20.0)
    })
    .await;
    assert!(tcp_count(3.0).await);

    let r = c.get(format!("http://{admin}/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    let m = parse_metrics(&text);
    let req = |svc: &str, code: &str| {
        value(
            &m,
            "lariat_requests_total",
            &[("entrypoint", "web"), ("service", svc), ("code", code)],
        )
    };
    assert_eq!(req("app@file", "200"), Some(7.0), "{text}");
    assert_eq!(req("app@file", "404"), Some(3.0));
    assert_eq!(req("none", "404"), Some(2.0));
    let h = |suffix: &str, le: Option<&str>| {
        let mut labels = vec![("entrypoint", "web"), ("service", "app@file")];
        if let Some(le) = le {
            labels.push(("le", le));
        }
        value(&m, &format!("lariat_request_duration_seconds{suffix}"), &labels)
    };
    assert_eq!(h("_count", None), Some(10.0));
    assert_eq!(h("_bucket", Some("+Inf")), Some(10.0));
    assert_eq!(h("_bucket", Some("10")), Some(10.0));
    assert!(h("_bucket", Some("0.001")).unwrap() <= h("_bucket", Some("0.1")).unwrap());
    assert!(h("_sum", None).unwrap() > 0.0);
    assert_eq!(
        value(&m, "lariat_tcp_bytes_total", &[("service", "db@file"), ("direction", "rx")]),
        Some(20.0)
    );
    assert_eq!(
        value(&m, "lariat_tcp_bytes_total", &[("service", "db@file"), ("direction", "tx")]),
        Some(20.0)
    );
    let dead_state = m
        .iter()
        .find(|(n, l, v)| n == "lariat_backend_state" && l["service"] == "app@file" && *v == 1.0 && l["state"] == "unhealthy");
    assert!(dead_state.is_some(), "no unhealthy backend in {text}");
    assert_eq!(
        m.iter()
            .filter(|(n, l, v)| n == "lariat_backend_up" && l["service"] == "app@file" && *v == 1.0)
            .count(),
        1
    );
    assert_eq!(value(&m, "lariat_service_fail_open", &[("service", "app@file")]), Some(0.0));
    assert!(value(&m, "lariat_health_checks_total", &[("service", "app@file"), ("result", "fail")]).unwrap() >= 1.0);
    assert_eq!(value(&m, "lariat_provider_updates_total", &[("provider", "file")]), Some(1.0));
    assert_eq!(value(&m, "lariat_config_reloads_total", &[("result", "error")]), Some(0.0));
    assert!(value(&m, "lariat_open_connections", &[("entrypoint", "web"), ("protocol", "http")]).is_some());
    // Every family of the interface is declared, each once.
    for name in lariat::metrics::FAMILIES.iter().map(|f| f.0) {
        assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
    }
    // No raw host, path or client address in any label.
    for (_, labels, _) in &m {
        for v in labels.values() {
            assert!(
                !v.contains("nothing.test") && !v.contains("/status") && !v.contains("127.0.0.1:") || labels.contains_key("backend"),
                "{labels:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_shapes() {
    let (l, a, _echo, _g) = start("").await;
    let c = client();
    let admin = l.addr("admin");
    let j = |p: &'static str| {
        let c = c.clone();
        async move {
            let r = c.get(format!("http://{admin}{p}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{p}");
            assert_eq!(r.headers()["content-type"], "application/json");
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let ov = j("/api/overview").await;
    assert_eq!(ov["services"], 2);
    assert_eq!(ov["routes"], 2);
    assert_eq!(ov["entrypoints"], 2);
    assert_eq!(ov["backends"]["unhealthy"], 1);
    let eps = j("/api/entrypoints").await;
    assert_eq!(eps.as_array().unwrap().len(), 2);
    assert!(eps.as_array().unwrap().iter().any(|e| e["name"] == "pg" && e["kind"] == "tcp"));
    let routes = j("/api/routes").await;
    assert!(routes
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["host"] == "app.test" && r["service"] == "app@file" && r["service_exists"] == true));
    let services = j("/api/services").await;
    assert_eq!(services.as_array().unwrap().len(), 2);
    let app = j("/api/services/app%40file").await;
    assert_eq!(app["strategy"], "recreateOnQuorum");
    let backends = app["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    let live = backends.iter().find(|b| b["address"] == a.addr.to_string()).unwrap();
    for key in [
        "address",
        "weight",
        "state",
        "in_flight",
        "requests",
        "failures",
        "last_check",
        "ejected_until",
        "provider",
    ] {
        assert!(live.get(key).is_some(), "backend lacks {key}: {live}");
    }
    assert_eq!(live["state"], "healthy");
    assert_eq!(live["last_check"]["ok"], true);
    assert_eq!(live["last_check"]["detail"], "200");
    assert!(live["last_check"]["at"].as_str().unwrap().ends_with('Z'));
    let r = c.get(format!("http://{admin}/api/services/nope@file")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let providers = j("/api/providers").await;
    let file = &providers[0];
    assert_eq!(file["name"], "file");
    assert!(file["last_sync"].is_string() && file["version"].is_string());
    let page = c.get(format!("http://{admin}/dashboard/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/api/services") && !html.contains("http://") && !html.contains("https://"),
        "the page must be self-contained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guards_everything_but_healthz() {
    let (l, _a, _echo, _g) = start("token = \"s3cret\"").await;
    let c = client();
    let admin = l.addr("admin");
    assert_eq!(c.get(format!("http://{admin}/healthz")).send().await.unwrap().status(), 200);
    for p in [
        "/metrics",
        "/api/overview",
        "/api/services",
        "/api/services/app@file",
        "/api/routes",
        "/api/providers",
        "/api/entrypoints",
    ] {
        assert_eq!(
            c.get(format!("http://{admin}{p}")).send().await.unwrap().status(),
            401,
            "{p} without token"
        );
        assert_eq!(
            c.get(format!("http://{admin}{p}"))
                .bearer_auth("wrong")
                .send()
                .await
                .unwrap()
                .status(),
            401,
            "{p} with a wrong token"
        );
        assert_eq!(
            c.get(format!("http://{admin}{p}"))
                .bearer_auth("s3cret")
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{p} with the token"
        );
    }
    // Nothing the API returns carries the token.
    for p in ["/api/overview", "/api/services/app@file", "/api/providers", "/metrics"] {
        let body = c
            .get(format!("http://{admin}{p}"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains("s3cret"), "{p} leaks the token");
    }
}
