//! L7 through the real proxy: vhost precedence, 404/503, forwarding headers, weights, stickiness,
//! dead backends, h2c, WebSocket upgrade and streamed responses.

mod common;
use common::*;
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_precedence_and_longest_prefix() {
    let (exact, wild, any, api, v2) = (
        http_backend("exact").await,
        http_backend("wild").await,
        http_backend("any").await,
        http_backend("api").await,
        http_backend("v2").await,
    );
    let extra = [
        ("b:exact", exact.addr.to_string()),
        ("b:wild", wild.addr.to_string()),
        ("b:any", any.addr.to_string()),
        ("b:api", api.addr.to_string()),
        ("b:v2", v2.addr.to_string()),
    ];
    let conf = format!(
        "{PREAMBLE}{}",
        r#"
[[routes]]
service = "any"
[[routes]]
host = "*.example.com"
service = "wild"
[[routes]]
host = "a.example.com"
service = "exact"
[[routes]]
host = "a.example.com"
path_prefix = "/api"
service = "api"
[[routes]]
host = "a.example.com"
path_prefix = "/api/v2"
service = "v2"
[services.exact]
backends = ["{b:exact}"]
[services.wild]
backends = ["{b:wild}"]
[services.any]
backends = ["{b:any}"]
[services.api]
backends = ["{b:api}"]
[services.v2]
backends = ["{b:v2}"]
"#
    );
    let l = Lariat::new(&extra).start(&conf).await;
    let c = client();
    let url = |p: &str| l.url("web", p);
    for (host, path, want) in [
        ("a.example.com", "/", "exact"),
        ("A.EXAMPLE.com:8080", "/x", "exact"),
        ("a.example.com", "/api", "api"),
        ("a.example.com", "/api/v1", "api"),
        ("a.example.com", "/api/v2/users", "v2"),
        ("b.example.com", "/api/v2", "wild"),
        ("x.y.example.com", "/", "wild"),
        ("example.com", "/", "any"),
        ("other.org", "/api", "any"),
    ] {
        let (status, backend, _) = get(&c, &url(path), host).await;
        assert_eq!((status, backend.as_str()), (200, want), "Host {host} path {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_and_no_backend_is_503() {
    let conf = format!(
        "{PREAMBLE}{}",
        r#"
[[routes]]
host = "empty.test"
service = "empty"
[[routes]]
host = "elsewhere.test"
service = "ghost@rancher"
[services.empty]
backends = []
"#
    );
    let l = Lariat::new(&[]).start(&conf).await;
    let c = client();
    let r = c.get(l.url("web", "/")).header("host", "nothing.test").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no route"));
    for host in ["empty.test", "elsewhere.test"] {
        let r = c.get(l.url("web", "/")).header("host", host).send().await.unwrap();
        assert_eq!(r.status(), 503, "{host}");
        assert_eq!(r.headers()["retry-after"], "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set() {
    let b = http_backend("b").await;
    let conf = format!("{PREAMBLE}[[routes]]\nservice = \"s\"\n[services.s]\nbackends = [\"{{b:s}}\"]\n");
    let l = Lariat::new(&[("b:s", b.addr.to_string())]).start(&conf).await;
    let c = client();
    // A GET is the fast lane's; a POST with a body is Pingora's path, which learns the client's
    // address from the connection's socket digest (made for it on demand).
    for post in [false, true] {
        let req = if post {
            c.post(l.url("web", "/p?q=1")).body("x=1")
        } else {
            c.get(l.url("web", "/p?q=1"))
        };
        let r = req
            .header("host", "shop.test")
            .header("x-forwarded-for", "6.6.6.6")
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        let h = &v["headers"];
        assert_eq!(
            h["x-forwarded-for"], "127.0.0.1",
            "a client-sent X-Forwarded-For is not trusted (post: {post})"
        );
        assert_eq!(h["x-real-ip"], "127.0.0.1", "post: {post}");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.test");
        assert_eq!(h["host"], "shop.test");
        assert_eq!(v["path"], "/p");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_honoured() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    for balance in ["round_robin", "random"] {
        let conf = format!(
            "{PREAMBLE}[[routes]]\nservice = \"s\"\n[services.s]\nbalance = \"{balance}\"\nbackends = [\"{{b:a}}\", {{ addr = \"{{b:b}}\", weight = 3 }}]\n"
        );
        let l = Lariat::new(&[("b:a", a.addr.to_string()), ("b:b", b.addr.to_string())])
            .start(&conf)
            .await;
        let c = client();
        let mut count: HashMap<String, usize> = HashMap::new();
        for _ in 0..400 {
            let (s, backend, _) = get(&c, &l.url("web", "/"), "w.test").await;
            assert_eq!(s, 200);
            *count.entry(backend).or_default() += 1;
        }
        let share_b = count["b"] as f64 / 400.0;
        assert!(
            (0.65..=0.85).contains(&share_b),
            "{balance}: b got {share_b} of requests, want ~0.75 ({count:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_is_sticky() {
    let backends = [http_backend("a").await, http_backend("b").await, http_backend("c").await];
    let extra: Vec<(&str, String)> = vec![
        ("b:a", backends[0].addr.to_string()),
        ("b:b", backends[1].addr.to_string()),
        ("b:c", backends[2].addr.to_string()),
    ];
    let conf = format!(
        "{PREAMBLE}[[routes]]\nservice = \"s\"\n[services.s]\nbalance = \"consistent_hash\"\nhash_key = \"header:X-User\"\nbackends = [\"{{b:a}}\", \"{{b:b}}\", \"{{b:c}}\"]\n"
    );
    let l = Lariat::new(&extra).start(&conf).await;
    let c = client();
    let mut seen = std::collections::HashSet::new();
    for user in 0..30 {
        let mut first = None;
        for _ in 0..5 {
            let r = c
                .get(l.url("web", "/"))
                .header("x-user", format!("user{user}"))
                .send()
                .await
                .unwrap();
            let b = r.headers()["x-backend"].to_str().unwrap().to_string();
            assert_eq!(first.get_or_insert(b.clone()), &b, "user{user} moved");
        }
        seen.insert(first.unwrap());
    }
    assert!(seen.len() >= 2, "30 users all hashed to {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_costs_no_errors() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let (_guard, dead) = refusing_addr();
    let dead = dead.to_string();
    let conf = format!(
        "{PREAMBLE}[[routes]]\nservice = \"s\"\n[services.s]\nretries = 2\nbackends = [\"{{b:a}}\", \"{{b:dead}}\", \"{{b:b}}\"]\n"
    );
    let l = Lariat::new(&[("b:a", a.addr.to_string()), ("b:b", b.addr.to_string()), ("b:dead", dead)])
        .start(&conf)
        .await;
    let c = client();
    for i in 0..90 {
        let (s, _, _) = get(&c, &l.url("web", "/"), "x.test").await;
        assert_eq!(s, 200, "request {i}");
    }
    assert_eq!(
        a.hits.load(std::sync::atomic::Ordering::SeqCst) + b.hits.load(std::sync::atomic::Ordering::SeqCst),
        90
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_and_streaming_and_upgrade() {
    let b = http_backend("b").await;
    let conf = format!("{PREAMBLE}[[routes]]\nservice = \"s\"\n[services.s]\nbackends = [\"{{b:s}}\"]\n");
    let l = Lariat::new(&[("b:s", b.addr.to_string())]).start(&conf).await;

    // HTTP/2 with prior knowledge
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let r = h2.get(l.url("web", "/h2")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["x-backend"], "b");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["path"], "/h2");

    // A chunked response streams through: chunks arrive one by one, not all at the end.
    let mut r = client().get(l.url("web", "/stream")).send().await.unwrap();
    let mut parts = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        parts.push(chunk);
    }
    assert!(parts.len() >= 3, "response arrived in {} piece(s)", parts.len());
    let all: Vec<u8> = parts.concat();
    assert_eq!(String::from_utf8(all).unwrap(), "chunk0\nchunk1\nchunk2\nchunk3\nchunk4\n");

    // WebSocket-style upgrade: 101, then bytes both ways.
    let mut s = tokio::net::TcpStream::connect(l.addr("web")).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "connection closed in the 101 head");
        head.push(byte[0]);
        assert!(head.len() < 4096);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for msg in [&b"hello"[..], b"over the upgraded connection"] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_backend() {
    let b = http_backend("b").await;
    let conf = format!("{PREAMBLE}[[routes]]\nservice = \"s\"\n[services.s]\nbackends = [\"{{b:s}}\"]\n");
    let l = Lariat::new(&[("b:s", b.addr.to_string())]).start(&conf).await;
    let body = vec![b'x'; 3 * 1024 * 1024];
    let r = client().post(l.url("web", "/upload")).body(body).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["body_len"], 3 * 1024 * 1024);
    assert_eq!(v["method"], "POST");
}

/// Read one response with a Content-Length body from a raw connection.
async fn read_one(s: &mut tokio::net::TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("no response within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed after {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
    }
}

/// A kept-alive connection waits between requests outside the request machinery and resumes
/// with whatever arrives: a request split across writes after an idle pause, and one larger
/// than what is read ahead while parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_resume_after_idle() {
    let app = http_backend("app").await;
    let conf = format!("{PREAMBLE}[[routes]]\nservice = \"app\"\n[services.app]\nbackends = [\"{{b:app}}\"]\n");
    let l = Lariat::new(&[("b:app", app.addr.to_string())]).start(&conf).await;
    let mut s = tokio::net::TcpStream::connect(l.addr("web")).await.unwrap();
    for i in 0..3 {
        s.write_all(b"GET /one HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        s.write_all(b"st: a.example.com\r\n\r\n").await.unwrap();
        let r = read_one(&mut s).await;
        assert!(r.starts_with("HTTP/1.1 200"), "request {i}: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let big = format!(
        "GET /{} HTTP/1.1\r\nHost: a.example.com\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(1500),
        "q".repeat(3000)
    );
    s.write_all(big.as_bytes()).await.unwrap();
    let r = read_one(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("x-backend: app"), "{r}");
}
