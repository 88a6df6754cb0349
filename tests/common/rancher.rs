//! A fake rancher-metadata: `/2016-07-29/version` with long-poll (`wait=true&value=V&maxWait=S`)
//! and `/2016-07-29/services` in the real service's JSON field names. The test swaps the
//! services (each swap is a new version), or makes it fail or answer garbage.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Ok,
    /// Every request gets 500.
    Down,
    /// /services answers broken JSON (the version still moves).
    Malformed,
}

struct State {
    version: u64,
    services: Value,
    mode: Mode,
}

pub struct FakeMetadata {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    /// GETs of /services answered.
    pub service_reads: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMetadata {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeMetadata {
    pub async fn start(services: Value) -> FakeMetadata {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            version: 1,
            services,
            mode: Mode::Ok,
        }));
        let changed = Arc::new(Notify::new());
        let reads = Arc::new(AtomicUsize::new(0));
        let (s, c, r) = (state.clone(), changed.clone(), reads.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, c, r) = (s.clone(), c.clone(), r.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(s.clone(), c.clone(), r.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeMetadata {
            addr,
            state,
            changed,
            service_reads: reads,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/2016-07-29", self.addr)
    }

    /// Replace the services: a new version, and long-polls return.
    pub fn set(&self, services: Value) {
        let mut s = self.state.lock().unwrap();
        s.services = services;
        s.version += 1;
        drop(s);
        self.changed.notify_waiters();
    }

    pub fn mode(&self, mode: Mode) {
        let mut s = self.state.lock().unwrap();
        s.mode = mode;
        s.version += 1;
        drop(s);
        self.changed.notify_waiters();
    }

    pub fn version(&self) -> u64 {
        self.state.lock().unwrap().version
    }
}

fn reply(status: u16, body: String) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

async fn answer(
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    reads: Arc<AtomicUsize>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let q = |k: &str| query.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    if state.lock().unwrap().mode == Mode::Down {
        return reply(500, "\"internal error\"".into());
    }
    match path.as_str() {
        "/2016-07-29/version" => {
            if q("wait").as_deref() == Some("true") {
                let seen = q("value").unwrap_or_default();
                let max = Duration::from_secs(q("maxWait").and_then(|m| m.parse().ok()).unwrap_or(60));
                let deadline = tokio::time::Instant::now() + max;
                loop {
                    let notified = changed.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if state.lock().unwrap().version.to_string() != seen {
                        break;
                    }
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        break;
                    }
                }
            }
            let s = state.lock().unwrap();
            if s.mode == Mode::Down {
                return reply(500, "\"internal error\"".into());
            }
            reply(200, format!("\"{}\"", s.version))
        }
        "/2016-07-29/services" => {
            reads.fetch_add(1, Ordering::SeqCst);
            let s = state.lock().unwrap();
            match s.mode {
                Mode::Malformed => reply(200, "[{\"name\": \"web\", \"containers\": [".into()),
                _ => reply(200, s.services.to_string()),
            }
        }
        _ => reply(404, "\"not found\"".into()),
    }
}
