//! The fast lane (plain HTTP/1.1 requests without a body, served off Pingora's path): kept
//! backend connections, every way a response body is framed, interim responses, pipelining and
//! hand-over to Pingora's path on one connection, a kept connection that the backend closed, and
//! HTTP/1.1 over TLS.

mod common;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn base_conf() -> String {
    one_service_conf(true, 1)
}

/// How the scripted backend treats its connections.
#[derive(Clone, Copy, PartialEq)]
enum Keep {
    /// Serve every request on a connection.
    All,
    /// Close right after each response (no `Connection: close`: a short keep-alive timeout).
    CloseAfterResponse,
    /// Answer the first request on a connection; close on the second without answering (the
    /// backend's idle close racing the proxy's reuse).
    DropSecondRequest,
}

struct Backend {
    addr: std::net::SocketAddr,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Every request head (and body) received, in order.
    seen: Arc<Mutex<Vec<String>>>,
}

/// A backend that answers by path: `/len` (Content-Length), `/chunked` (with a trailer),
/// `/early` (a 103 first), `/continue` (a 100 first), `/eof` (HTTP/1.0, body until close).
async fn backend(keep: Keep) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (a, s) = (accepted.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let seen = s.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                for n in 0..1000 {
                    let Some(mut head) = read_head(&mut conn).await else {
                        return;
                    };
                    let mut body = vec![0u8; content_length(&head)];
                    conn.read_exact(&mut body).await.unwrap();
                    head.push_str(&String::from_utf8_lossy(&body));
                    seen.lock().unwrap().push(head.clone());
                    if keep == Keep::DropSecondRequest && n == 1 {
                        return;
                    }
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let answer: &[u8] = match path.as_str() {
                        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                        "/early" => b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                        "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                        "/eof" => b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
                        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhello",
                    };
                    if conn.get_mut().write_all(answer).await.is_err() || path == "/eof" || keep == Keep::CloseAfterResponse {
                        return;
                    }
                }
            });
        }
    });
    Backend { addr, accepted, seen }
}

/// A message head (through its blank line); None if the connection closed first.
async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// Read one response from a kept-alive connection: its head and its Content-Length body.
async fn response<S: AsyncRead + AsyncWrite + Unpin>(r: &mut BufReader<S>) -> (String, String) {
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(r))
        .await
        .expect("no response")
        .expect("connection closed before a response");
    let len = if head.starts_with("HTTP/1.1 103") {
        0
    } else {
        content_length(&head)
    };
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.unwrap();
    (head, String::from_utf8(body).unwrap())
}

async fn connect(l: &Lariat) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(l.addr("web")).await.unwrap())
}

/// Read byte by byte until what came ends with `tail` (at most 4 KiB, 5 s per byte).
async fn read_until<S: AsyncRead + Unpin>(r: &mut S, tail: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    while !got.ends_with(tail) {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), r.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        got.push(byte[0]);
        assert!(got.len() < 4096, "no {tail:?} in {got:?}");
    }
    got
}

/// A scripted backend, lariat in front of it, and a client connection to lariat.
async fn start(keep: Keep) -> (Backend, Lariat, BufReader<TcpStream>) {
    let b = backend(keep).await;
    let l = Lariat::new(&[("b:app", b.addr.to_string())]).start(&base_conf()).await;
    let c = connect(&l).await;
    (b, l, c)
}

async fn get<S: AsyncRead + AsyncWrite + Unpin>(r: &mut BufReader<S>, path: &str) -> (String, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
    r.get_mut().write_all(req.as_bytes()).await.unwrap();
    response(r).await
}

/// The failures the backend's breaker has counted.
fn failures(l: &Lariat) -> u64 {
    let snap = l.running().shared.registry.snapshot();
    snap.services().map(|s| s.members[0].failures.load(Ordering::Relaxed)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_are_kept_and_hop_by_hop_headers_dropped() {
    let (b, l, mut c) = start(Keep::All).await;
    for _ in 0..20 {
        let (head, body) = get(&mut c, "/len").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, "hello");
        let lower = head.to_ascii_lowercase();
        assert!(
            !lower.contains("keep-alive") && !lower.contains("connection:"),
            "hop-by-hop header passed on: {head}"
        );
    }
    // Another client, sequentially: the same backend connection.
    let mut c2 = connect(&l).await;
    let req =
        "GET /len?q=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-Forwarded-For: 6.6.6.6\r\nX-Other: kept\r\n\r\n";
    c2.get_mut().write_all(req.as_bytes()).await.unwrap();
    assert_eq!(response(&mut c2).await.1, "hello");
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1, "a backend connection was not reused");
    let last = b.seen.lock().unwrap().last().unwrap().to_ascii_lowercase();
    assert!(last.starts_with("get /len?q=1 http/1.1\r\n"), "{last}");
    assert!(
        last.contains("x-forwarded-for: 127.0.0.1\r\n") && !last.contains("6.6.6.6"),
        "{last}"
    );
    assert!(
        last.contains("x-real-ip: 127.0.0.1\r\n") && last.contains("x-forwarded-proto: http\r\n"),
        "{last}"
    );
    assert!(
        last.contains("x-forwarded-host: a\r\n") && last.contains("x-other: kept\r\n"),
        "{last}"
    );
    assert!(!last.contains("keep-alive"), "{last}");
    let m = l.metrics().await;
    assert!(
        m.contains("lariat_requests_total{entrypoint=\"web\",service=\"app@file\",code=\"200\"} 21"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_framing_and_interim_responses() {
    let (_b, _l, mut c) = start(Keep::All).await;

    // Chunked, with an extension and a trailer, passed through as is; the connection goes on.
    c.get_mut().write_all(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let got = read_until(&mut c, b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n").await;
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 200 ok\r\n") && text.contains("transfer-encoding: chunked\r\n"),
        "{text}"
    );

    // HEAD: the head alone, though it declares a length.
    c.get_mut().write_all(b"HEAD /len HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        c.read_line(&mut head).await.unwrap();
    }
    assert!(head.to_ascii_lowercase().contains("content-length: 5"), "{head}");

    // A 103 reaches the client before the response; a 100 (never asked for) does not.
    let (interim, _) = get(&mut c, "/early").await;
    assert!(
        interim.starts_with("HTTP/1.1 103 Early Hints\r\n") && interim.contains("Link: </s.css>"),
        "{interim}"
    );
    assert_eq!(response(&mut c).await.1, "hello");
    let (head, body) = get(&mut c, "/continue").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "hello");

    // A body that ends with the backend's close: the client's connection closes after it too.
    c.get_mut().write_all(b"GET /eof HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.to_ascii_lowercase().contains("connection: close\r\n"), "{rest}");
    assert!(rest.ends_with("\r\n\r\nuntil the end"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_cross_between_the_lane_and_pingora() {
    let (b, l, mut c) = start(Keep::All).await;
    // A GET (the lane), a POST with a body (Pingora's path), a GET again (the lane), in one write.
    c.get_mut()
        .write_all(b"GET /len HTTP/1.1\r\nHost: a\r\n\r\nPOST /len HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\npayloadGET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(response(&mut c).await.1, "hello");
    // Pingora's path answers the first of pipelined requests and closes (what reached it is
    // its own); the GET after it is sent again on a new connection.
    let (head, body) = response(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "hello");
    let seen = b.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|r| r.starts_with("POST /len") && r.ends_with("\r\n\r\npayload")),
        "{seen:?}"
    );
    // Then the same connection (or, if Pingora's path closed it, a new one) keeps working.
    let mut c = connect(&l).await;
    for path in ["/len", "/chunked", "/len"] {
        c.get_mut()
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        if path == "/len" {
            assert_eq!(response(&mut c).await.1, "hello");
        } else {
            read_until(&mut c, b"0\r\nX-Trailer: t\r\n\r\n").await;
        }
    }
    c.get_mut()
        .write_all(b"POST /len HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok")
        .await
        .unwrap();
    assert_eq!(response(&mut c).await.1, "hello");
    assert_eq!(get(&mut c, "/len").await.1, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_the_backend_closed_is_replaced() {
    for keep in [Keep::CloseAfterResponse, Keep::DropSecondRequest] {
        let (b, l, mut c) = start(keep).await;
        for i in 0..10 {
            let (head, body) = get(&mut c, "/len").await;
            assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
            assert_eq!(body, "hello");
            if keep == Keep::CloseAfterResponse {
                // Let the close arrive before the next request takes the connection.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(failures(&l), 0, "a closed kept connection counted against the backend");
        assert!(b.accepted.load(Ordering::SeqCst) >= 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_http1_requests_take_the_lane() {
    let b = backend(Keep::All).await;
    let ca = common::certs::ca();
    let mut l = Lariat::new(&[("b:app", b.addr.to_string())]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let (cert, key) = common::certs::issue(&ca, &dir, "site", &["site.test"]);
    let conf =
        base_conf().replace("kind = \"http\"", "kind = \"https\"") + &format!("[[tls.certificates]]\ncert = \"{cert}\"\nkey = \"{key}\"\n");
    l = l.start(&conf).await;
    let tcp = TcpStream::connect(l.addr("web")).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("site.test").unwrap();
    let tls = common::certs::connector(&ca, &[b"http/1.1"]).connect(name, tcp).await.unwrap();
    let mut c = BufReader::new(tls);
    for _ in 0..5 {
        let (head, body) = get(&mut c, "/len").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, "hello");
    }
    // Kept backend connections (Pingora's path would do that too), and pipelining, which only
    // the lane answers in order on one connection.
    c.get_mut()
        .write_all(b"GET /len HTTP/1.1\r\nHost: site.test\r\n\r\nGET /len HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(response(&mut c).await.1, "hello");
    assert_eq!(response(&mut c).await.1, "hello");
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
    let last = b.seen.lock().unwrap().last().unwrap().to_ascii_lowercase();
    assert!(last.contains("x-forwarded-proto: https\r\n"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_response_sends_an_idempotent_request_elsewhere() {
    let good = backend(Keep::All).await;
    let bad = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!").await;
    let conf = base_conf().replace("backends = [\"{b:app}\"]", "backends = [\"{b:app}\", \"{b:bad}\"]");
    let l = Lariat::new(&[("b:app", good.addr.to_string()), ("b:bad", bad.to_string())])
        .start(&conf)
        .await;
    let mut c = connect(&l).await;
    for i in 0..6 {
        let (head, body) = get(&mut c, "/len").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "request {i}: {head}");
        assert_eq!(body, "hello");
    }
    let snap = l.running().shared.registry.snapshot();
    let bad_member = snap.services().flat_map(|s| s.members.clone()).find(|m| m.addr == bad).unwrap();
    assert!(
        bad_member.failures.load(Ordering::Relaxed) >= 1,
        "the invalid response was not counted"
    );
}
