//! A fake Kubernetes API server answering the way the real one does for Ingress, Service and
//! EndpointSlice: lists (items without kind/apiVersion, a list resourceVersion), chunked watches
//! (ADDED / MODIFIED / DELETED / BOOKMARK, one JSON object a line) from a resourceVersion, and
//! `410 Expired` for a version older than what it still remembers. The test changes objects,
//! drops every open watch, forgets history (so the next watch gets 410), or takes the API down.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Ingress,
    Service,
    EndpointSlice,
    Secret,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Ingress => "networking.k8s.io/v1",
            Kind::Service | Kind::Secret => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
        }
    }
    fn from_path(path: &str) -> Option<(Kind, Option<String>)> {
        let (prefix, plural) = path.rsplit_once('/')?;
        let kind = match (plural, prefix) {
            ("ingresses", p) if p.starts_with("/apis/networking.k8s.io/v1") => Kind::Ingress,
            ("services", p) if p.starts_with("/api/v1") => Kind::Service,
            ("endpointslices", p) if p.starts_with("/apis/discovery.k8s.io/v1") => Kind::EndpointSlice,
            ("secrets", p) if p.starts_with("/api/v1") => Kind::Secret,
            _ => return None,
        };
        let ns = prefix.split("/namespaces/").nth(1).map(|s| s.to_string());
        Some((kind, ns))
    }
}

#[derive(Clone, Debug)]
struct Ev {
    rv: u64,
    kind: Kind,
    ns: String,
    kind_of_event: &'static str,
    object: Value,
}

struct State {
    rv: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    log: Vec<Ev>,
    /// Watches from a resourceVersion below this get 410.
    oldest: u64,
    down: bool,
    /// Bumped to end every open watch.
    generation: u64,
    /// Lists of this kind answer only after this delay.
    slow_list: Option<(Kind, Duration)>,
}

pub struct FakeKube {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Ev>,
    task: tokio::task::JoinHandle<()>,
    /// Requests answered, by "list ..." / "watch ...".
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: u16, v: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

fn status_obj(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            objects: BTreeMap::new(),
            log: vec![],
            oldest: 0,
            down: false,
            generation: 0,
            slow_list: None,
        }));
        let (events, _) = broadcast::channel(4096);
        let requests: Arc<Mutex<Vec<String>>> = Default::default();
        let (s, e, r) = (state.clone(), events.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, e, r) = (s.clone(), e.clone(), r.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(s.clone(), e.clone(), r.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeKube {
            addr,
            state,
            events,
            task,
            requests,
        }
    }

    /// A kubeconfig pointing at this server, written to `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> String {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: test-token\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Create or replace an object (ADDED or MODIFIED).
    pub fn put(&self, kind: Kind, mut obj: Value) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        obj["metadata"]["namespace"] = json!(ns);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (kind, ns.clone(), name.clone());
        let existing = s.objects.get(&key).cloned();
        obj["metadata"]["uid"] = existing
            .as_ref()
            .map(|o| o["metadata"]["uid"].clone())
            .unwrap_or(json!(format!("uid-{name}-{rv}")));
        obj["metadata"]["creationTimestamp"] = existing
            .as_ref()
            .map(|o| o["metadata"]["creationTimestamp"].clone())
            .unwrap_or(json!(format!("2026-01-01T00:{:02}:{:02}Z", (rv / 60) % 60, rv % 60)));
        s.objects.insert(key, obj.clone());
        let ev = Ev {
            rv,
            kind,
            ns,
            kind_of_event: if existing.is_some() { "MODIFIED" } else { "ADDED" },
            object: obj,
        };
        s.log.push(ev.clone());
        drop(s);
        let _ = self.events.send(ev);
    }

    pub fn delete(&self, kind: Kind, ns: &str, name: &str) {
        let mut s = self.state.lock().unwrap();
        let Some(mut obj) = s.objects.remove(&(kind, ns.to_string(), name.to_string())) else {
            return;
        };
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        let ev = Ev {
            rv: s.rv,
            kind,
            ns: ns.to_string(),
            kind_of_event: "DELETED",
            object: obj,
        };
        s.log.push(ev.clone());
        drop(s);
        let _ = self.events.send(ev);
    }

    /// End every open watch (the client reconnects from its last resourceVersion).
    pub fn drop_watches(&self) {
        self.state.lock().unwrap().generation += 1;
    }

    /// Forget all history: a watch from any earlier resourceVersion now gets 410 Expired.
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        s.oldest = s.rv + 1;
        s.log.clear();
        s.generation += 1;
    }

    /// Take the API down (every request 500, open watches end) or bring it back.
    pub fn set_down(&self, down: bool) {
        let mut s = self.state.lock().unwrap();
        s.down = down;
        s.generation += 1;
    }

    /// Make lists of `kind` answer only after `delay`.
    pub fn slow_list(&self, kind: Kind, delay: Duration) {
        self.state.lock().unwrap().slow_list = Some((kind, delay));
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.requests.lock().unwrap().iter().filter(|r| r.starts_with(prefix)).count()
    }
}

fn with_type(kind: Kind, mut obj: Value) -> Value {
    obj["kind"] = json!(kind.name());
    obj["apiVersion"] = json!(kind.api_version());
    obj
}

async fn answer(
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Ev>,
    requests: Arc<Mutex<Vec<String>>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let Some((kind, ns)) = Kind::from_path(&path) else {
        return Ok(full(404, status_obj(404, "NotFound", &format!("no {path}"))));
    };
    if state.lock().unwrap().down {
        return Ok(full(500, status_obj(500, "InternalError", "the fake API is down")));
    }
    let watching = matches!(query.get("watch").map(|s| s.as_str()), Some("true") | Some("1"));
    requests.lock().unwrap().push(format!(
        "{} {:?} {} {path}",
        if watching { "watch" } else { "list" },
        kind,
        query.get("resourceVersion").cloned().unwrap_or_default()
    ));
    let in_scope = move |ev_ns: &str| ns.as_deref().is_none_or(|n| n == ev_ns);
    // fieldSelector=type=X (the only field selector lariat uses).
    let type_is: Option<String> = query
        .get("fieldSelector")
        .map(|f| f.replace("%3D", "=").replace("%2F", "/"))
        .and_then(|f| f.strip_prefix("type=").map(str::to_string));
    let selected = move |o: &Value| type_is.as_deref().is_none_or(|t| o["type"].as_str() == Some(t));
    if !watching {
        let slow = state.lock().unwrap().slow_list.filter(|(k, _)| *k == kind);
        if let Some((_, delay)) = slow {
            tokio::time::sleep(delay).await;
        }
        let s = state.lock().unwrap();
        // Items of a list carry no kind or apiVersion, as the real server sends them.
        let items: Vec<Value> = s
            .objects
            .iter()
            .filter(|((k, n, _), o)| *k == kind && in_scope(n) && selected(o))
            .map(|(_, o)| o.clone())
            .collect();
        let list = json!({"kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(),
                          "metadata": {"resourceVersion": s.rv.to_string()}, "items": items});
        return Ok(full(200, list));
    }
    let from: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let timeout = Duration::from_secs(query.get("timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(290));
    let bookmarks = query.get("allowWatchBookmarks").map(|v| v == "true").unwrap_or(false);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(256);
    let line = |v: Value| Ok(Frame::data(Bytes::from(format!("{v}\n"))));
    let (backlog, generation, expired, current) = {
        let s = state.lock().unwrap();
        let expired = from < s.oldest;
        let backlog: Vec<Ev> = s
            .log
            .iter()
            .filter(|e| e.rv > from && e.kind == kind && in_scope(&e.ns) && selected(&e.object))
            .cloned()
            .collect();
        (backlog, s.generation, expired, s.rv)
    };
    let mut live = events.subscribe();
    tokio::spawn(async move {
        if expired {
            let _ = tx.send(line(json!({"type": "ERROR", "object": status_obj(410, "Expired", &format!("too old resource version: {from} ({current})"))}))).await;
            return;
        }
        let mut last = from;
        for e in backlog {
            last = e.rv;
            if tx
                .send(line(json!({"type": e.kind_of_event, "object": with_type(kind, e.object)})))
                .await
                .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tick.tick() => {
                    if state.lock().unwrap().generation != generation {
                        return; // dropped: the stream just ends
                    }
                    if bookmarks && last > from {
                        let b = json!({"type": "BOOKMARK", "object": {"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": {"resourceVersion": last.to_string()}}});
                        if tx.send(line(b)).await.is_err() {
                            return;
                        }
                    }
                }
                e = live.recv() => {
                    let Ok(e) = e else { return };
                    if e.rv <= last || e.kind != kind || !in_scope(&e.ns) || !selected(&e.object) {
                        continue;
                    }
                    last = e.rv;
                    if tx.send(line(json!({"type": e.kind_of_event, "object": with_type(kind, e.object)}))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let body = BodyExt::boxed(StreamBody::new(tokio_stream_from(rx)));
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body)
        .unwrap())
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> + Send + Sync {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Object builders in the real API's shape.
pub fn ingress(ns: &str, name: &str, class: &str, rules: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": ns}, "spec": {"ingressClassName": class, "rules": rules}})
}

pub fn rule(host: &str, path: &str, path_type: &str, service: &str, port: Value) -> Value {
    json!({"host": host, "http": {"paths": [{"path": path, "pathType": path_type, "backend": {"service": {"name": service, "port": port}}}]}})
}

pub fn service(ns: &str, name: &str, ports: Value, annotations: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": ns, "annotations": annotations}, "spec": {"type": "ClusterIP", "ports": ports}})
}

/// An EndpointSlice of `svc` with one port and endpoints (ip, ready).
pub fn slice(ns: &str, name: &str, svc: &str, port_name: &str, port: u16, endpoints: &[(&str, bool)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": !ready}}))
        .collect();
    json!({"metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
           "addressType": if endpoints.first().is_some_and(|e| e.0.contains(':')) { "IPv6" } else { "IPv4" },
           "ports": [{"name": port_name, "port": port, "protocol": "TCP"}], "endpoints": eps})
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `kubernetes.io/tls` Secret.
pub fn tls_secret(ns: &str, name: &str, cert_pem: &str, key_pem: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns}, "type": "kubernetes.io/tls",
           "data": {"tls.crt": base64(cert_pem.as_bytes()), "tls.key": base64(key_pem.as_bytes())}})
}
