//! Hostile input: the request-smuggling table (each case's raw bytes, so anyone can add one), a
//! pipelined request behind a rejected one, and hostile backends.

mod common;
use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn base_conf() -> String {
    one_service_conf(false, 0)
}

/// Send raw bytes; the whole answer (the connection must close within 5 s).
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("connection left open after a rejected request")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// (name, raw request): each must get 400 and a closed connection, and never reach the backend.
const SMUGGLING: &[(&str, &[u8])] = &[
    (
        "content-length and transfer-encoding",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "two differing content-lengths",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ),
    (
        "a content-length list that disagrees",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
    ),
    (
        "transfer-encoding not ending in chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    ),
    (
        "transfer-encoding gzip alone",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    ),
    (
        "whitespace before the colon",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 0\r\n\r\n",
    ),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n"),
    ("bare CR in a header", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n"),
    ("NUL in a header", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n"),
    (
        "a chunk size that is not hex",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "a chunk size with a 0x prefix",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "a chunk size that overflows",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "a negative chunk size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_table() {
    let app = http_backend("app").await;
    let l = Lariat::new(&[("b:app", app.addr.to_string())]).start(&base_conf()).await;
    let mut failures = Vec::new();
    for (name, raw) in SMUGGLING {
        let before = app.hits.load(Ordering::SeqCst);
        let answer = exchange(l.addr("web"), raw).await;
        let reached = app.hits.load(Ordering::SeqCst) - before;
        if !answer.starts_with("HTTP/1.1 400") || reached != 0 {
            failures.push(format!(
                "{name}: answered {:?}, reached the backend {reached} time(s)",
                answer.lines().next().unwrap_or("")
            ));
        }
    }
    assert!(failures.is_empty(), "smuggling cases not refused:\n{}", failures.join("\n"));
    // A pipelined request behind a rejected one is never forwarded.
    let before = app.hits.load(Ordering::SeqCst);
    let two = [SMUGGLING[0].1, b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n"].concat();
    let answer = exchange(l.addr("web"), &two).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "the pipelined request was answered: {answer}"
    );
    assert_eq!(app.hits.load(Ordering::SeqCst), before);
    // And a clean request still works.
    assert!(exchange(l.addr("web"), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 200"));
    let text = l.metrics().await;
    assert!(
        text.contains("lariat_bad_requests_total{entrypoint=\"web\",reason=\"smuggling\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_backends_get_502() {
    for (name, answer) in [
        (
            "an invalid status line",
            &b"HTTP/1.1 two hundred OK\r\nContent-Length: 0\r\n\r\n"[..],
        ),
        (
            "two differing content-lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "transfer-encoding not ending in chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        ("garbage", b"\x00\x01\x02 not http at all\r\n\r\n"),
    ] {
        let addr = raw_backend(answer).await;
        let l = Lariat::new(&[("b:app", addr.to_string())]).start(&base_conf()).await;
        let got = exchange(l.addr("web"), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 502"), "{name}: {got:?}");
    }
}

/// A response with both Content-Length and Transfer-Encoding is not answered with 502: Pingora's
/// parser removes the Content-Length before lariat sees the response (RFC 9112 6.3 lets an
/// intermediary do so). What reaches the client is framed by Transfer-Encoding alone, so it cannot
/// be read two ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_content_length_with_transfer_encoding_is_reframed() {
    let addr = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").await;
    let l = Lariat::new(&[("b:app", addr.to_string())]).start(&base_conf()).await;
    let got = exchange(l.addr("web"), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    let head = got.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(
        head.contains("transfer-encoding: chunked") && !head.contains("content-length"),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_headers_bodies_connections_idle() {
    let app = http_backend("app").await;
    let conf = base_conf()
        .replace(
            "access_log = false",
            "access_log = false\nmax_header_bytes = 2048\nmax_body_bytes = 1000\nidle_timeout = \"1s\"",
        )
        .replace("kind = \"http\"", "kind = \"http\"\nmax_connections = 3");
    let l = Lariat::new(&[("b:app", app.addr.to_string())]).start(&conf).await;
    let web = l.addr("web");
    // Headers over max_header_bytes: 431, closed, not forwarded.
    let before = app.hits.load(Ordering::SeqCst);
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "x".repeat(3000));
    let got = exchange(web, big.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 431"), "{got:?}");
    // A declared body over max_body_bytes: 413 before anything is sent.
    let got = exchange(web, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got:?}");
    assert_eq!(app.hits.load(Ordering::SeqCst), before);
    // A chunked body that grows over it: 413 too.
    let chunk = format!("{:x}\r\n{}\r\n", 800, "y".repeat(800));
    let req = format!("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n");
    let got = exchange(web, req.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got:?}");
    // Within the limits all is well.
    let r = client().post(l.url("web", "/")).body(vec![b'z'; 900]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // max_connections = 3: a fourth open connection is closed at once, and counted.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(web).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 16];
        s.read_exact(&mut buf).await.unwrap(); // answered; the connection stays open (keep-alive)
        held.push(s);
    }
    let mut fourth = tokio::net::TcpStream::connect(web).await.unwrap();
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), fourth.read_to_end(&mut buf))
        .await
        .expect("the fourth connection was not closed");
    assert!(
        n.is_err() || buf.is_empty(),
        "the fourth connection was served: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // idle_timeout = 1s: the held keep-alive connections are closed by lariat.
    for mut s in held {
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "an idle keep-alive connection outlived idle_timeout");
    }
    let text = l.metrics().await;
    assert!(
        text.contains("lariat_rejected_connections_total{entrypoint=\"web\",reason=\"max_connections\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("lariat_bad_requests_total{entrypoint=\"web\",reason=\"header_too_large\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_gets_408_on_time() {
    let app = http_backend("app").await;
    let conf = base_conf().replace("access_log = false", "access_log = false\nclient_header_timeout = \"1s\"");
    let l = Lariat::new(&[("b:app", app.addr.to_string())]).start(&conf).await;
    let mut s = tokio::net::TcpStream::connect(l.addr("web")).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    // One header byte every 100 ms, for at most 10 s: far longer than the timeout.
    let mut answer = Vec::new();
    let t0 = tokio::time::Instant::now();
    let mut buf = [0u8; 512];
    'outer: for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        .iter()
        .cycle()
        .take(100)
    {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break 'outer,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "a slow head was not answered 408: {text:?}");
    assert!(t0.elapsed() < Duration::from_secs(9), "the slow client was not closed");
    assert_eq!(app.hits.load(Ordering::SeqCst), 0);
    // A client that sends nothing at all is answered on time too (its timer starts when the
    // first read has to wait).
    let mut silent = tokio::net::TcpStream::connect(l.addr("web")).await.unwrap();
    let t0 = tokio::time::Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut got)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"), "{got:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "a silent client was not closed on time");
    // A prompt client is unaffected, and a kept-alive connection is not timed out by it.
    let mut s = tokio::net::TcpStream::connect(l.addr("web")).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let mut head = vec![0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        let mut rest = vec![0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut rest)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let text = l.metrics().await;
    assert!(
        text.contains("lariat_bad_requests_total{entrypoint=\"web\",reason=\"timeout\"} 2"),
        "{text}"
    );
}

/// How a scripted backend treats each connection.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Answers with response headers over Pingora's 1 MiB head limit.
    HugeHead,
    /// Sends half of a declared body, then resets the connection.
    ResetMidBody,
    /// Sends half of a declared body, then nothing more.
    StallMidBody,
    /// Reads the request, never answers.
    NeverAnswers,
    /// Never reads the request (nor its body), never answers.
    NeverReads,
}

/// A backend that misbehaves as told and counts the connections it still holds open (one is
/// released when lariat closes its side, so a count that stays up is a leaked connection).
async fn misbehaving_backend(how: Misbehaviour) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let held = open.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let held = held.clone();
            held.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                if !matches!(how, Misbehaviour::NeverReads) {
                    let _ = s.read(&mut buf).await;
                }
                let half = format!("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{}", "h".repeat(50_000));
                match how {
                    Misbehaviour::HugeHead => {
                        let head = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n", "b".repeat(1_500_000));
                        let _ = s.write_all(head.as_bytes()).await;
                    }
                    Misbehaviour::ResetMidBody => {
                        let _ = s.write_all(half.as_bytes()).await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = s.set_zero_linger();
                        held.fetch_sub(1, Ordering::SeqCst);
                        return; // dropped with linger 0: a reset
                    }
                    Misbehaviour::StallMidBody => {
                        let _ = s.write_all(half.as_bytes()).await;
                    }
                    Misbehaviour::NeverAnswers | Misbehaviour::NeverReads => {}
                }
                // Hold the connection until lariat closes it (bounded, so a leak fails the test
                // rather than hanging it).
                if matches!(how, Misbehaviour::NeverReads) {
                    let _ = tokio::time::timeout(Duration::from_secs(30), s.readable()).await;
                    // Readable: data (never read) or EOF; wait for the close itself.
                    let _ = tokio::time::timeout(Duration::from_secs(30), async {
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                            }
                        }
                    })
                    .await;
                } else {
                    let _ = tokio::time::timeout(Duration::from_secs(30), async { while let Ok(1..) = s.read(&mut buf).await {} }).await;
                }
                held.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

/// Each misbehaving backend: the client gets a 502/504 or a response cut short, in bounded time;
/// lariat closes its backend connection (none leaks) and its client connection count returns to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_backends_end_cleanly() {
    let conf = base_conf().replace("retries = 0", "retries = 0\nread_timeout = \"1s\"");
    for how in [
        Misbehaviour::HugeHead,
        Misbehaviour::ResetMidBody,
        Misbehaviour::StallMidBody,
        Misbehaviour::NeverAnswers,
        Misbehaviour::NeverReads,
    ] {
        let (addr, open) = misbehaving_backend(how).await;
        let l = Lariat::new(&[("b:app", addr.to_string())]).start(&conf).await;
        let t0 = tokio::time::Instant::now();
        let got = match how {
            Misbehaviour::NeverReads => {
                // A 4 MB upload the backend never reads: written from its own task, since the
                // write itself may block once the buffers between are full.
                let mut s = tokio::net::TcpStream::connect(l.addr("web")).await.unwrap();
                let (mut r, mut w) = s.split();
                let body = vec![b'u'; 4 << 20];
                let head = format!(
                    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let send = async {
                    let _ = w.write_all(head.as_bytes()).await;
                    let _ = w.write_all(&body).await;
                    std::future::pending::<()>().await
                };
                let mut out = Vec::new();
                tokio::select! {
                    _ = send => unreachable!(),
                    r = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out)) => {
                        assert!(r.is_ok(), "{how:?}: the client connection hung");
                    }
                }
                String::from_utf8_lossy(&out).into_owned()
            }
            _ => exchange(l.addr("web"), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await,
        };
        let status = got.get(..12).unwrap_or("");
        match how {
            Misbehaviour::HugeHead => assert_eq!(status, "HTTP/1.1 502", "{how:?}"),
            Misbehaviour::NeverAnswers => assert_eq!(status, "HTTP/1.1 504", "{how:?}"),
            Misbehaviour::NeverReads => assert!(
                status == "HTTP/1.1 504" || status == "HTTP/1.1 502" || got.is_empty(),
                "{how:?}: {status:?}"
            ),
            Misbehaviour::ResetMidBody | Misbehaviour::StallMidBody => {
                assert_eq!(status, "HTTP/1.1 200", "{how:?}");
                assert!(got.len() < 100_000, "{how:?}: a cut body was completed");
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(8), "{how:?}: took {:?}", t0.elapsed());
        let held = open.clone();
        wait_until(Duration::from_secs(5), || {
            let held = held.clone();
            async move { held.load(Ordering::SeqCst) == 0 }
        })
        .await;
        // The client side closes too (lariat's count drops once its connection task has ended).
        let mut text = String::new();
        for _ in 0..100 {
            text = l.metrics().await;
            if text.contains("lariat_open_connections{entrypoint=\"web\",protocol=\"http\"} 0") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            text.contains("lariat_open_connections{entrypoint=\"web\",protocol=\"http\"} 0"),
            "{how:?}: a client connection stayed open: {text}"
        );
    }
}

/// A backend whose accept queue is full: its kernel drops new SYNs, so a connect hangs.
async fn unanswered_syns() -> (std::net::SocketAddr, Vec<tokio::net::TcpStream>, tokio::net::TcpListener) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the queue (never accepted); once it is full, connects no longer complete.
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    (addr, fillers, listener)
}

/// connect_timeout: a backend that never completes the handshake gets 504 on time (and, with a
/// retry left, another backend answers instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_504_or_a_retry() {
    let (silent, _fillers, _listener) = unanswered_syns().await;
    let conf = base_conf().replace("retries = 0", "retries = 0\nconnect_timeout = \"300ms\"");
    let l = Lariat::new(&[("b:app", silent.to_string())]).start(&conf).await;
    let t0 = tokio::time::Instant::now();
    let got = exchange(l.addr("web"), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 504"), "{got:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    // With a healthy second backend and a retry, the client never sees the timeout.
    let app = http_backend("app").await;
    let conf = base_conf()
        .replace("retries = 0", "retries = 1\nconnect_timeout = \"300ms\"\nbalance = \"round_robin\"")
        .replace("backends = [\"{b:app}\"]", "backends = [\"{b:silent}\", \"{b:app}\"]");
    let l = Lariat::new(&[("b:app", app.addr.to_string()), ("b:silent", silent.to_string())])
        .start(&conf)
        .await;
    for i in 0..4 {
        let got = exchange(l.addr("web"), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 200"), "request {i}: {got:?}");
    }
}
