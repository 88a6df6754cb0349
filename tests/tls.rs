//! TLS termination through the real server: the certificate per SNI (exact, wildcard, default),
//! a refused handshake without either, ALPN h2 and HTTP/1.1, a certificate replaced under load,
//! a bad key refused on reload, redirects to https, and the TLS metrics and admin API.
//! Certificates are generated here with rcgen (ECDSA P-256), signed by a test CA.

mod common;
use common::*;
use rcgen::KeyPair;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;

use common::certs::{ca, connector, issue, served_names_at, Ca};

/// Handshake with the websecure entrypoint naming `sni`.
async fn served_names(l: &Lariat, ca: &Ca, sni: &str) -> Result<Vec<String>, String> {
    served_names_at(l.addr("websecure"), ca, sni).await
}

fn conf(certs: &str) -> String {
    format!(
        r#"
{PREAMBLE}redirect_https = "websecure"
[entrypoints.websecure]
listen = "{{websecure}}"
kind = "https"
[[routes]]
service = "app"
[services.app]
backends = ["{{b:app}}"]
{certs}
"#
    )
}

fn https_client(ca: &Ca, l: &Lariat, hosts: &[&str], h2: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap());
    for h in hosts {
        b = b.resolve(h, l.addr("websecure"));
    }
    b = if h2 { b } else { b.http1_only() };
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_per_sni_wildcard_default_and_refusal() {
    let app = http_backend("app").await;
    let ca = ca();
    let mut l = Lariat::new(&[("b:app", app.addr.to_string())]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let (sc, sk) = issue(&ca, &dir, "shop", &["shop.example.com"]);
    let (wc, wk) = issue(&ca, &dir, "wild", &["*.example.org"]);
    let certs = format!("[[tls.certificates]]\ncert = \"{sc}\"\nkey = \"{sk}\"\n[[tls.certificates]]\ncert = \"{wc}\"\nkey = \"{wk}\"\n");
    l = l.start(&conf(&certs)).await;
    assert_eq!(
        served_names(&l, &ca, "shop.example.com").await.unwrap(),
        ["DNSName(shop.example.com)"]
    );
    assert_eq!(served_names(&l, &ca, "api.example.org").await.unwrap(), ["DNSName(*.example.org)"]);
    let refused = served_names(&l, &ca, "unknown.example.net").await;
    assert!(
        refused.is_err(),
        "no certificate and no default must refuse the handshake: {refused:?}"
    );
    // No SNI at all (a client connecting by address) and no default: refused too.
    let no_sni = served_names(&l, &ca, "127.0.0.1").await;
    assert!(
        no_sni.is_err(),
        "a handshake without SNI and without a default certificate must be refused: {no_sni:?}"
    );
    drop(l);

    // With a default certificate, unknown names get it.
    let mut l = Lariat::new(&[("b:app", app.addr.to_string())]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let (sc, sk) = issue(&ca, &dir, "shop", &["shop.example.com"]);
    let (dc, dk) = issue(&ca, &dir, "default", &["default.example.net"]);
    let certs = format!(
        "[tls]\ndefault_certificate = {{ cert = \"{dc}\", key = \"{dk}\" }}\n[[tls.certificates]]\ncert = \"{sc}\"\nkey = \"{sk}\"\n"
    );
    l = l.start(&conf(&certs)).await;
    assert_eq!(
        served_names(&l, &ca, "shop.example.com").await.unwrap(),
        ["DNSName(shop.example.com)"]
    );
    let err = served_names(&l, &ca, "default.example.net").await.unwrap();
    assert_eq!(err, ["DNSName(default.example.net)"]);
    // Any other name gets the default too (the client then rejects the name mismatch).
    let err = served_names(&l, &ca, "other.example.net").await.unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    // Metrics and the admin API.
    let admin = l.addr("admin");
    let certs: serde_json::Value = client()
        .get(format!("http://{admin}/api/certificates"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = certs.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list
        .iter()
        .any(|c| c["default"] == true && c["names"][0] == "default.example.net" && c["source"] == "file"));
    assert!(list.iter().all(|c| c["not_after"].is_string() && c.get("key").is_none()));
    // The client that rejected the name hangs up after its side of the handshake; the server
    // counts the failure when it reads that, which may be just after the client returned.
    let errors = "lariat_tls_handshakes_total{entrypoint=\"websecure\",result=\"error\"} 2";
    wait_until(Duration::from_secs(5), || async { l.metrics().await.contains(errors) }).await;
    let text = l.metrics().await;
    assert!(
        text.contains("lariat_tls_handshakes_total{entrypoint=\"websecure\",result=\"ok\"} 2"),
        "{text}"
    );
    // Errors: the start-up readiness probe (a bare TCP connect) and the client that rejected the
    // default certificate's name.
    assert!(
        text.contains("lariat_tls_handshakes_total{entrypoint=\"websecure\",result=\"error\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("lariat_tls_certificate_not_after_timestamp_seconds{certificate=\"shop.example.com\",source=\"file\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_by_alpn_and_http11_and_redirect() {
    let app = http_backend("app").await;
    let ca = ca();
    let mut l = Lariat::new(&[("b:app", app.addr.to_string())]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let (c, k) = issue(&ca, &dir, "shop", &["shop.example.com"]);
    l = l
        .start(&conf(&format!("[[tls.certificates]]\ncert = \"{c}\"\nkey = \"{k}\"\n")))
        .await;
    let port = l.addr("websecure").port();
    let url = format!("https://shop.example.com:{port}/h?x=1");
    let r = https_client(&ca, &l, &["shop.example.com"], true).get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    let r = https_client(&ca, &l, &["shop.example.com"], false).get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    // http -> https, path and query kept, the https entrypoint's port.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(l.url("web", "/a/b?q=1&r=2"))
        .header("host", "shop.example.com:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("https://shop.example.com:{port}/a/b?q=1&r=2"));
    // ACME HTTP-01 paths are never redirected.
    let r = plain
        .get(l.url("web", "/.well-known/acme-challenge/token"))
        .header("host", "shop.example.com")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 308);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_replaced_under_load_and_bad_key_refused() {
    let app = http_backend("app").await;
    let ca = ca();
    let mut l = Lariat::new(&[("b:app", app.addr.to_string())]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let (c, k) = issue(&ca, &dir, "shop", &["shop.example.com"]);
    l = l
        .start(&conf(&format!("[[tls.certificates]]\ncert = \"{c}\"\nkey = \"{k}\"\n")))
        .await;
    let serial = |names: Vec<String>| names;
    assert_eq!(
        serial(served_names(&l, &ca, "shop.example.com").await.unwrap()),
        ["DNSName(shop.example.com)"]
    );

    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let url = format!("https://shop.example.com:{}/", l.addr("websecure").port());
    let loader = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let c = https_client(&ca, &l, &["shop.example.com"], false);
        tokio::spawn(async move {
            for _ in 0..50_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        })
    };
    // Replace the certificate: same name plus a second one, so the new one is recognisable.
    tokio::time::sleep(Duration::from_millis(200)).await;
    issue(&ca, &dir, "shop", &["shop.example.com", "new.example.com"]);
    wait_until(Duration::from_secs(5), || {
        let l = &l;
        let ca = &ca;
        async move { served_names(l, ca, "shop.example.com").await.unwrap().len() == 2 }
    })
    .await;
    // A key that does not fit: refused, the certificate in force stays.
    let other = KeyPair::generate().unwrap();
    std::fs::write(&k, other.serialize_pem()).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        served_names(&l, &ca, "shop.example.com").await.unwrap().len(),
        2,
        "a bad key replaced the table"
    );
    stop.store(true, Ordering::SeqCst);
    loader.await.unwrap();
    assert_eq!(failed.load(Ordering::SeqCst), 0, "{} ok", ok.load(Ordering::SeqCst));
    assert!(ok.load(Ordering::SeqCst) > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_refuses_unreadable_or_mismatched_files() {
    let ca = ca();
    let l = Lariat::new(&[]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let (c, _k) = issue(&ca, &dir, "a", &["a.example.com"]);
    let (_c2, k2) = issue(&ca, &dir, "b", &["b.example.com"]);
    let text = format!("[[tls.certificates]]\ncert = \"{c}\"\nkey = \"{k2}\"\n");
    let err = lariat::Config::parse(&text).unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(p.key, "tls.certificates[0]");
    assert!(p.message.contains(&c) && p.message.contains("does not fit"), "{p}");
    let err =
        lariat::Config::parse("[tls]\ndefault_certificate = { cert = \"/nonexistent.pem\", key = \"/nonexistent.key\" }\n").unwrap_err();
    let p = &err.problems()[0];
    assert_eq!(p.key, "tls.default_certificate");
    assert!(p.message.contains("/nonexistent.pem"), "{p}");
    let err = lariat::Config::parse("[tls]\nmin_version = \"1.1\"\n").unwrap_err();
    assert_eq!(err.problems()[0].key, "tls.min_version");
}

/// Writes one byte per write call: a ClientHello arrives in as many segments as it has bytes.
struct OneByteAtATime(tokio::net::TcpStream);

impl tokio::io::AsyncRead for OneByteAtATime {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for OneByteAtATime {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let n = buf.len().min(1);
        std::pin::Pin::new(&mut self.0).poll_write(cx, &buf[..n])
    }
    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A TLS backend (its own certificate for `name`) that answers every line with "{tag}:{line}".
async fn tls_echo(ca: &Ca, dir: &Path, name: &str, tag: &'static str) -> std::net::SocketAddr {
    let acceptor = common::certs::acceptor(ca, dir, &format!("backend-{tag}"), &[name]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
                let Ok(tls) = acceptor.accept(s).await else { return };
                let (r, mut w) = tokio::io::split(tls);
                let mut lines = tokio::io::BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("{tag}:{line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Connect to `addr` with SNI `name`, send a line, read the answer; the served certificate's names.
async fn ask<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(ca: &Ca, io: S, name: &str, line: &str) -> (Vec<String>, String) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector(ca, &[]).connect(sn, io))
        .await
        .expect("handshake hung")
        .unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let names = x
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    tls.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::io::BufReader::new(tls).read_line(&mut answer).await.unwrap();
    (names, answer.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_passthrough_on_tcp_and_https_entrypoints() {
    let app = http_backend("app").await;
    let ca = ca();
    let mut l = Lariat::new(&[("b:app", app.addr.to_string())]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let db = tls_echo(&ca, &dir, "db.example.com", "db").await;
    let wild = tls_echo(&ca, &dir, "x.db.example.com", "wild").await;
    let plain = tcp_echo().await;
    l.extra.insert("b:db".into(), db.to_string());
    l.extra.insert("b:wild".into(), wild.to_string());
    l.extra.insert("b:plain".into(), plain.addr.to_string());
    let (c, k) = issue(&ca, &dir, "shop", &["shop.example.com"]);
    let extra = format!(
        r#"
[entrypoints.tls]
listen = "{{tls}}"
kind = "tcp"
[[routes]]
entrypoints = ["tls", "websecure"]
sni = ["db.example.com"]
service = "db"
[[routes]]
entrypoints = ["tls"]
sni = ["*.db.example.com"]
service = "wild"
[[routes]]
entrypoints = ["tls"]
service = "plain"
[services.db]
backends = ["{{b:db}}"]
[services.wild]
backends = ["{{b:wild}}"]
[services.plain]
backends = ["{{b:plain}}"]
[[tls.certificates]]
cert = "{c}"
key = "{k}"
"#
    );
    l = l.start(&conf(&extra)).await;
    // On the tcp entrypoint: by name, end to end with the backend's own certificate, the hello
    // written one byte at a time.
    let io = OneByteAtATime(tokio::net::TcpStream::connect(l.addr("tls")).await.unwrap());
    io.0.set_nodelay(true).unwrap();
    assert_eq!(
        ask(&ca, io, "db.example.com", "hello").await,
        (vec!["DNSName(db.example.com)".into()], "db:hello".into())
    );
    let io = tokio::net::TcpStream::connect(l.addr("tls")).await.unwrap();
    assert_eq!(ask(&ca, io, "x.db.example.com", "hi").await.1, "wild:hi");
    // Non-TLS connections take the default route.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(l.addr("tls")).await.unwrap();
        s.write_all(b"plain text").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "plain text");
    }
    // On the https entrypoint: db.example.com passes through, shop.example.com terminates here.
    let io = tokio::net::TcpStream::connect(l.addr("websecure")).await.unwrap();
    assert_eq!(ask(&ca, io, "db.example.com", "via 443").await.1, "db:via 443");
    let port = l.addr("websecure").port();
    let r = https_client(&ca, &l, &["shop.example.com"], false)
        .get(format!("https://shop.example.com:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-backend"], "app");
    // Garbage that starts like TLS, then nothing: closed, counted.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(l.addr("tls")).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00])
            .await
            .unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("garbage kept the connection open");
        assert!(matches!(n, Ok(0) | Err(_)));
    }
    let text = l.metrics().await;
    assert!(
        text.contains("lariat_rejected_connections_total{entrypoint=\"tls\",reason=\"tls\"} 1"),
        "{text}"
    );
}

#[test]
fn sni_route_rules() {
    let base = "[entrypoints.tls]\nlisten = \"127.0.0.1:1\"\nkind = \"tcp\"\n[entrypoints.web]\nlisten = \"127.0.0.1:2\"\nkind = \"http\"\n[services.a]\n[services.b]\n";
    let two_defaults =
        format!("{base}[[routes]]\nentrypoints = [\"tls\"]\nservice = \"a\"\n[[routes]]\nentrypoints = [\"tls\"]\nservice = \"b\"\n");
    assert_eq!(
        lariat::Config::parse(&two_defaults).unwrap_err().problems()[0].key,
        "routes[1].entrypoints"
    );
    let same_name = format!("{base}[[routes]]\nentrypoints = [\"tls\"]\nsni = [\"a.com\"]\nservice = \"a\"\n[[routes]]\nentrypoints = [\"tls\"]\nsni = [\"a.com\"]\nservice = \"b\"\n");
    assert_eq!(lariat::Config::parse(&same_name).unwrap_err().problems()[0].key, "routes[1].sni");
    let on_http = format!("{base}[[routes]]\nentrypoints = [\"web\"]\nsni = [\"a.com\"]\nservice = \"a\"\n");
    assert_eq!(
        lariat::Config::parse(&on_http).unwrap_err().problems()[0].key,
        "routes[0].entrypoints"
    );
    let ok = format!("{base}[[routes]]\nentrypoints = [\"tls\"]\nsni = [\"a.com\", \"*.a.com\"]\nservice = \"a\"\n[[routes]]\nentrypoints = [\"tls\"]\nservice = \"b\"\n");
    lariat::Config::parse(&ok).unwrap();
}

/// An HTTPS backend (certificate for `name` from `ca`) answering every request with "tls-hello".
async fn https_backend(ca: &Ca, dir: &Path, name: &str) -> std::net::SocketAddr {
    let acceptor = common::certs::acceptor(ca, dir, "https-backend", &[name]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut tls) = acceptor.accept(s).await else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Backend: secure\r\nConnection: close\r\n\r\ntls-hello")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_verified_against_ca_file() {
    let ca = ca();
    let other_ca = common::certs::ca();
    let mut l = Lariat::new(&[]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let backend = https_backend(&ca, &dir, "backend.internal").await;
    let (ca_path, other_path) = (dir.join("ca.pem"), dir.join("other-ca.pem"));
    std::fs::write(&ca_path, &ca.pem).unwrap();
    std::fs::write(&other_path, &other_ca.pem).unwrap();
    l.extra.insert("b:secure".into(), backend.to_string());
    let conf = format!(
        r#"
{PREAMBLE}[[routes]]
host = "good.test"
service = "good"
[[routes]]
host = "untrusted.test"
service = "untrusted"
[services.good]
backends = ["{{b:secure}}"]
scheme = "https"
ca_file = "{}"
sni = "backend.internal"
retries = 0
[services.untrusted]
backends = ["{{b:secure}}"]
scheme = "https"
ca_file = "{}"
sni = "backend.internal"
retries = 0
"#,
        ca_path.display(),
        other_path.display()
    );
    l = l.start(&conf).await;
    let (status, backend_name, body) = get(&client(), &l.url("web", "/"), "good.test").await;
    assert_eq!((status, backend_name.as_str(), body.as_str()), (200, "secure", "tls-hello"));
    let (status, _, _) = get(&client(), &l.url("web", "/"), "untrusted.test").await;
    assert_eq!(status, 502, "a backend certificate from an untrusted CA must fail");
}

/// RSA (PKCS#1) and EC (SEC1) keys as openssl writes them load as well as PKCS#8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_and_ec_key_formats_expired_certificates_and_min_version() {
    let app = http_backend("app").await;
    let mut l = Lariat::new(&[("b:app", app.addr.to_string())]);
    let dir = l.path.parent().unwrap().to_path_buf();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl is needed for this test");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // RSA key in PKCS#1 ("BEGIN RSA PRIVATE KEY"), self-signed.
    openssl(&["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
    openssl(&[
        "req",
        "-x509",
        "-key",
        "rsa.key",
        "-out",
        "rsa.pem",
        "-days",
        "30",
        "-subj",
        "/CN=rsa.example.com",
        "-addext",
        "subjectAltName=DNS:rsa.example.com",
    ]);
    // EC key in SEC1 ("BEGIN EC PRIVATE KEY") for a certificate that expired in 2021.
    let key = KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["old.example.com".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "old.example.com");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    std::fs::write(dir.join("ec.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(dir.join("ec-pkcs8.key"), key.serialize_pem()).unwrap();
    openssl(&["ec", "-in", "ec-pkcs8.key", "-out", "ec.key"]);
    assert!(std::fs::read_to_string(dir.join("rsa.key"))
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    assert!(std::fs::read_to_string(dir.join("ec.key"))
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    let certs = format!(
        "[tls]\nmin_version = \"1.3\"\n[[tls.certificates]]\ncert = \"{0}/rsa.pem\"\nkey = \"{0}/rsa.key\"\n[[tls.certificates]]\ncert = \"{0}/ec.pem\"\nkey = \"{0}/ec.key\"\n",
        dir.display()
    );
    l = l.start(&conf(&certs)).await;
    let secure = l.addr("websecure");
    // The served certificates, by name, whatever their validity (checked with no verification).
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let handshake = |versions: &'static [&'static rustls::SupportedProtocolVersion], sni: &'static str| async move {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(secure).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(rustls::pki_types::ServerName::try_from(sni).unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        Ok::<String, String>(x.subject().to_string())
    };
    static V13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static V12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    assert_eq!(handshake(V13, "rsa.example.com").await.unwrap(), "CN=rsa.example.com");
    assert_eq!(
        handshake(V13, "old.example.com").await.unwrap(),
        "CN=old.example.com",
        "an expired certificate is still served"
    );
    assert!(
        handshake(V12, "rsa.example.com").await.is_err(),
        "min_version = 1.3 must refuse TLS 1.2"
    );
    let list: serde_json::Value = client()
        .get(format!("http://{}/api/certificates", l.addr("admin")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["names"][0] == "old.example.com" && c["expired"] == true),
        "{list}"
    );
    let text = l.metrics().await;
    assert!(
        text.contains("lariat_tls_certificate_not_after_timestamp_seconds{certificate=\"old.example.com\",source=\"file\"} 1609459200"),
        "{text}"
    );
}
