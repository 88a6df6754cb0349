//! Test helpers: real backends on 127.0.0.1:0 and a real lariat started in-process.
#![allow(dead_code)]

pub mod certs;
pub mod kube;
pub mod proc;
pub mod rancher;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lariat::{Config, Running};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub fn init_log() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .is_test(true)
        .try_init();
}

/// A port that was free a moment ago, from 20000..32000: below the kernel's ephemeral range, so
/// the backends and clients of tests running in parallel cannot be handed it meanwhile.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 20000 + (std::process::id() as usize * 397) % 12000;
    for _ in 0..12000 {
        let port = 20000 + (base - 20000 + NEXT.fetch_add(1, Ordering::SeqCst)) % 12000;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port in 20000..32000");
}

/// An address that refuses connections: a socket bound to it but not listening, kept for as long
/// as the returned guard lives.
pub fn refusing_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = s.local_addr().unwrap();
    (s, addr)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A real HTTP/1.1 + h2 backend that answers with its name. Paths:
/// `/ws` upgrades to an echo WebSocket-style byte stream; `/stream` sends 5 chunks 30 ms apart;
/// `/status/N` answers status N; `/sleep/MS` answers after MS milliseconds; anything else: 200 with a JSON echo of the request.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub name: String,
    /// Requests answered, health checks excluded.
    pub hits: Arc<AtomicUsize>,
    /// The status `/healthz` answers (200 unless changed).
    pub health: Arc<std::sync::atomic::AtomicU16>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl HttpBackend {
    /// Die like a killed process: stop listening and drop every open connection.
    pub fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

async fn handle(
    name: Arc<str>,
    hits: Arc<AtomicUsize>,
    health: Arc<std::sync::atomic::AtomicU16>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        let code = health.load(Ordering::SeqCst);
        return Ok(Response::builder()
            .status(code)
            .body(full(format!("{name} health {code}")))
            .unwrap());
    }
    hits.fetch_add(1, Ordering::SeqCst);
    if path == "/ws" {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(""))
            .unwrap());
    }
    if path == "/stream" {
        let stream = futures_util::stream::unfold(0u32, |i| async move {
            if i == 5 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(format!("chunk{i}\n")))), i + 1))
        });
        return Ok(Response::builder()
            .header("x-backend", &*name)
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap());
    }
    if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        return Ok(Response::builder()
            .header("x-backend", &*name)
            .body(full(format!("{name} slept {ms} ms")))
            .unwrap());
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(500);
        return Ok(Response::builder()
            .status(code)
            .header("x-backend", &*name)
            .body(full(name.to_string()))
            .unwrap());
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let method = req.method().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let echo = serde_json::json!({ "backend": &*name, "path": path, "method": method, "headers": headers, "body_len": body.len() });
    Ok(Response::builder()
        .header("x-backend", &*name)
        .header("content-type", "application/json")
        .body(full(echo.to_string()))
        .unwrap())
}

pub async fn http_backend(name: &str) -> HttpBackend {
    http_backend_on(name, TcpListener::bind("127.0.0.1:0").await.unwrap())
}

pub fn http_backend_on(name: &str, listener: TcpListener) -> HttpBackend {
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let health = Arc::new(std::sync::atomic::AtomicU16::new(200));
    let tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
    let n: Arc<str> = name.into();
    let (h, hl, t) = (hits.clone(), health.clone(), tasks.clone());
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (n, h, hl) = (n.clone(), h.clone(), hl.clone());
            let conn = tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(n.clone(), h.clone(), hl.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
            let mut t = t.lock().unwrap();
            t.retain(|h| !h.is_finished());
            t.push(conn.abort_handle());
        }
    });
    tasks.lock().unwrap().push(accept.abort_handle());
    HttpBackend {
        addr,
        name: name.to_string(),
        hits,
        health,
        tasks,
    }
}

/// A backend that accepts connections and never answers.
pub async fn hung_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s); // kept open, never read or written
        }
    });
    (addr, task)
}

/// A backend that reads a request head and then resets the connection without answering;
/// counts the requests it swallowed.
pub async fn resetting_backend() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                #[allow(deprecated)] // a zero linger closes at once, with a reset
                let _ = s.set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    (addr, count, task)
}

/// A TCP echo server; it half-closes its side when the client does.
pub struct TcpEcho {
    pub addr: SocketAddr,
    /// Connections that carried at least one byte (readiness probes carry none).
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn tcp_echo() -> TcpEcho {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                if let Ok(n) = tokio::io::copy(&mut r, &mut w).await {
                    if n > 0 {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let _ = w.shutdown().await;
            });
        }
    });
    TcpEcho { addr, connections, task }
}

/// The start of most test configs: one worker thread, no grace period, no access log, the admin
/// listener and one http entrypoint `web` (keys that follow continue `[entrypoints.web]`). A
/// template, like the rest of the config: `{admin}` and `{web}` become fresh addresses.
pub const PREAMBLE: &str = r#"[server]
threads = 1
grace_period = "0s"
access_log = false
[admin]
listen = "{admin}"
[entrypoints.web]
listen = "{web}"
kind = "http"
"#;

/// A backend that answers every request with these raw bytes, then closes.
pub async fn raw_backend(answer: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// The config most tests start from: the admin listener, one http entrypoint `web`, every
/// request routed to service `app` at `{b:app}` with `retries`. Tests add keys by replacing lines.
pub fn one_service_conf(access_log: bool, retries: u32) -> String {
    format!(
        r#"
[server]
threads = 1
grace_period = "0s"
access_log = {access_log}
[admin]
listen = "{{admin}}"
[entrypoints.web]
listen = "{{web}}"
kind = "http"
[[routes]]
service = "app"
[services.app]
backends = ["{{b:app}}"]
retries = {retries}
"#
    )
}

static INSTANCE: AtomicUsize = AtomicUsize::new(0);

/// A lariat running in this process on a config written from a template. In the template,
/// `{NAME}` stands for a fresh 127.0.0.1 address for NAME (`{admin}`, `{web}`, `{pg}`, ...) and
/// `{b:NAME}` is filled from `backends`.
pub struct Lariat {
    pub running: Option<Running>,
    pub path: PathBuf,
    pub addrs: BTreeMap<String, SocketAddr>,
    pub extra: BTreeMap<String, String>,
}

impl Lariat {
    pub fn render(&mut self, template: &str) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            let key = &rest[start + 1..start + len];
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':') {
                out.push_str(&rest[..start + 1]);
                rest = &rest[start + 1..];
                continue;
            }
            out.push_str(&rest[..start]);
            if let Some(v) = self.extra.get(key) {
                out.push_str(v);
            } else {
                let addr = *self
                    .addrs
                    .entry(key.to_string())
                    .or_insert_with(|| format!("127.0.0.1:{}", free_port()).parse().unwrap());
                out.push_str(&addr.to_string());
            }
            rest = &rest[start + len + 1..];
        }
        out.push_str(rest);
        out
    }

    pub fn new(extra: &[(&str, String)]) -> Lariat {
        init_log();
        let n = INSTANCE.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("lariat-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Lariat {
            running: None,
            path: dir.join("lariat.toml"),
            addrs: BTreeMap::new(),
            extra: extra.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }

    /// Write the config and start lariat on it; returns once the admin listener answers.
    pub async fn start(mut self, template: &str) -> Lariat {
        let text = self.render(template);
        std::fs::write(&self.path, &text).unwrap();
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        self.running = Some(Running::start(config, Some(self.path.clone())).expect("lariat did not start"));
        let admin = self.addr("admin");
        wait_until(Duration::from_secs(10), || async move {
            client()
                .get(format!("http://{admin}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        // The proxy listeners start with the admin one; give them the same chance.
        for (name, addr) in self.addrs.clone() {
            if name != "admin" && !name.starts_with("unused") {
                wait_until(Duration::from_secs(10), || async move { TcpStream::connect(addr).await.is_ok() }).await;
            }
        }
        self
    }

    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    pub fn url(&self, name: &str, path: &str) -> String {
        format!("http://{}{}", self.addr(name), path)
    }

    /// The admin listener's /metrics text.
    pub async fn metrics(&self) -> String {
        client()
            .get(format!("http://{}/metrics", self.addr("admin")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// Rewrite the config file from a template (same address map) and wait until the reload
    /// was counted, ok or not. Returns whether it was accepted.
    pub async fn rewrite(&mut self, template: &str) -> bool {
        let text = self.render(template);
        let shared = self.running().shared.clone();
        let before = shared.reloads();
        std::fs::write(&self.path, text).unwrap();
        self.running().reload.as_ref().unwrap().notify_one();
        let s = shared.clone();
        wait_until(Duration::from_secs(10), || {
            let s = s.clone();
            async move { s.reloads() != before }
        })
        .await;
        shared.reloads().0 > before.0
    }
}

/// Poll `f` every 20 ms until it is true; panics after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET with an explicit Host header; returns (status, x-backend, body).
pub async fn get(c: &reqwest::Client, url: &str, host: &str) -> (u16, String, String) {
    let r = c
        .get(url)
        .header("host", host)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url} (Host {host}): {e}"));
    let status = r.status().as_u16();
    let backend = r
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, backend, r.text().await.unwrap_or_default())
}
