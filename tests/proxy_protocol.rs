//! The PROXY protocol: v1 and v2 headers from a trusted source set the client address (seen in
//! X-Forwarded-For), from an untrusted source close the connection; a tcp service sends a v2
//! header to a backend that checks it.

mod common;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn conf(trusted: &str) -> String {
    format!(
        r#"
{PREAMBLE}proxy_protocol = {{ trusted = [{trusted}] }}
[entrypoints.pg]
listen = "{{pg}}"
kind = "tcp"
[[routes]]
service = "app"
[[routes]]
entrypoints = ["pg"]
service = "db"
[services.app]
backends = ["{{b:app}}"]
[services.db]
backends = ["{{b:db}}"]
proxy_protocol = "v2"
"#
    )
}

/// Send raw bytes, read the whole answer.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("connection left open");
    out
}

fn v2_header(src: &str, dst: &str) -> Vec<u8> {
    let (s, d): (std::net::SocketAddr, std::net::SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    ppp::v2::Builder::with_addresses(0x21, ppp::v2::Protocol::Stream, (s, d))
        .build()
        .unwrap()
}

/// A backend that expects a PROXY v2 header, then echoes "src=<addr>" and the bytes after it.
async fn checking_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 16];
                if s.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len = u16::from_be_bytes([head[14], head[15]]) as usize;
                let mut rest = vec![0u8; len];
                s.read_exact(&mut rest).await.unwrap();
                let full = [head.to_vec(), rest].concat();
                let answer = match ppp::HeaderResult::parse(&full) {
                    ppp::HeaderResult::V2(Ok(h)) => match h.addresses {
                        ppp::v2::Addresses::IPv4(a) => format!("src={}:{}", a.source_address, a.source_port),
                        other => format!("unexpected {other:?}"),
                    },
                    other => format!("not a v2 header: {other:?}"),
                };
                let mut data = Vec::new();
                let _ = s.read_to_end(&mut data).await;
                let _ = s.write_all(format!("{answer} {}", String::from_utf8_lossy(&data)).as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_headers_set_the_client_address() {
    let app = http_backend("app").await;
    let db = checking_backend().await;
    let l = Lariat::new(&[("b:app", app.addr.to_string()), ("b:db", db.to_string())])
        .start(&conf("\"127.0.0.1/32\""))
        .await;
    let req = b"GET /who HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    // v1
    let out = raw(
        l.addr("web"),
        &[b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\n".as_slice(), req].concat(),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("\"x-forwarded-for\":\"203.0.113.7\""), "{text}");
    // v2
    let out = raw(
        l.addr("web"),
        &[v2_header("198.51.100.9:40000", "10.0.0.1:80"), req.to_vec()].concat(),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("\"x-forwarded-for\":\"198.51.100.9\""), "{text}");
    // No header from a trusted source: the socket's address.
    let out = raw(l.addr("web"), req).await;
    assert!(String::from_utf8_lossy(&out).contains("\"x-forwarded-for\":\"127.0.0.1\""));
    // A malformed header: closed without an answer.
    assert!(raw(l.addr("web"), b"PROXY TCP4 not an address\r\nGET / HTTP/1.1\r\n\r\n")
        .await
        .is_empty());
    // A tcp service sends its backend a v2 header with the client's address.
    let mut s = tokio::net::TcpStream::connect(l.addr("pg")).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(b"payload").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, format!("src={me} payload"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_sources_are_closed() {
    let app = http_backend("app").await;
    let db = checking_backend().await;
    let l = Lariat::new(&[("b:app", app.addr.to_string()), ("b:db", db.to_string())])
        .start(&conf("\"10.0.0.0/8\""))
        .await;
    let req = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    assert!(raw(
        l.addr("web"),
        &[b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\n".as_slice(), req].concat()
    )
    .await
    .is_empty());
    assert!(raw(
        l.addr("web"),
        &[v2_header("198.51.100.9:40000", "10.0.0.1:80"), req.to_vec()].concat()
    )
    .await
    .is_empty());
    // Without a header, the untrusted client is served as usual.
    let out = raw(l.addr("web"), req).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    let text = l.metrics().await;
    assert!(
        text.contains("lariat_rejected_connections_total{entrypoint=\"web\",reason=\"proxy_protocol\"} 2"),
        "{text}"
    );
}
