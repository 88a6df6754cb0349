//! The L7 proxy of one http entrypoint: route by host and path on the snapshot the request started
//! with, pick a backend the strategy allows, retry another after a connect failure (or, for
//! idempotent requests, a reset or timeout before the response), feed outcomes to the breakers,
//! set forwarding headers, log.

use super::respond;
use crate::breaker::Outcome;
use crate::desired::HashKey;
use crate::route::Target;
use crate::state::Shared;
use crate::upstream::{Attempt, Pick, Service, ServiceSlot};
use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::time::Instant;

#[derive(Clone)]
pub struct HttpProxy {
    pub entrypoint: Arc<str>,
    pub shared: Arc<Shared>,
    /// This entrypoint's own counters.
    pub counters: Arc<crate::metrics::EntrypointCounters>,
    /// Requests arrive over TLS (an https entrypoint).
    pub tls: bool,
    /// Redirect every request to https on this port (ACME HTTP-01 paths excepted).
    pub redirect_port: Option<u16>,
    /// The port of the first https entrypoint, for routes that ask for a redirect.
    pub https_port: Option<u16>,
    /// Request line and headers, in bytes; over it: 431.
    pub max_header_bytes: usize,
    /// Idle keep-alive connections close after this.
    pub idle_timeout: std::time::Duration,
    /// Per request body, 0 = unlimited; over it: 413.
    pub max_body_bytes: u64,
}

/// How long a chunked request's first chunk is awaited before its head goes to a backend.
const FIRST_CHUNK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Read the first chunk of a chunked HTTP/1 request body before any backend sees the request, so
/// that an invalid chunk size is refused with nothing forwarded. What is read stays in the retry
/// buffer and goes to the backend first. A client that waits for `100 Continue`, or sends nothing
/// within [`FIRST_CHUNK_WAIT`], is forwarded as it is (its chunks are still parsed on the way and
/// re-framed, so a bad one later ends the body, never starts a second request).
async fn prefetch_first_chunk(session: &mut Session) -> Result<()> {
    let req = session.req_header();
    let chunked = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    if !chunked || req.headers.contains_key(http::header::EXPECT) || session.as_ref().as_http1().is_none() {
        return Ok(());
    }
    session.as_mut().enable_retry_buffering();
    match tokio::time::timeout(FIRST_CHUNK_WAIT, session.read_request_body()).await {
        Ok(read) => read.map(|_| ()),
        Err(_) => Ok(()),
    }
}

/// The size of a request head as sent (request line, headers, line ends).
fn head_bytes(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.uri.to_string().len() + 12;
    line + req.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>()
}

/// `https://host[:port]/path?query` for a request to `host` (its port, if any, replaced).
fn https_location(host: &str, pq: &str, port: u16) -> String {
    let host = crate::route::strip_port(host);
    if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    }
}

/// The backend of the current attempt, holding its connection slot.
pub(crate) struct Current {
    pub(crate) pick: Pick,
    /// Its outcome was already given to the breaker.
    pub(crate) recorded: bool,
}

/// Per-request state.
pub struct Ctx {
    pub(crate) start: Instant,
    target: Option<Arc<Target>>,
    pub(crate) service: Option<Arc<Service>>,
    _service_slot: Option<ServiceSlot>,
    pub(crate) current: Option<Current>,
    pub(crate) tried: Vec<usize>,
    pub(crate) hash_key: Vec<u8>,
    pub(crate) client_ip: Option<IpAddr>,
    /// Request body bytes read so far.
    body_bytes: u64,
}

impl Ctx {
    /// Give the current attempt's outcome to its backend's breaker, once.
    pub(crate) fn record(&mut self, attempt: Attempt) {
        if let (Some(svc), Some(cur)) = (&self.service, &mut self.current) {
            if !cur.recorded {
                cur.recorded = true;
                svc.record(cur.pick.index, attempt, cur.pick.probe, Instant::now());
            }
        }
    }

    pub(crate) fn retries_left(&self) -> bool {
        self.service.as_ref().is_some_and(|s| self.tried.len() <= s.spec.retries as usize)
    }
}

/// Errors that mean the backend failed (as opposed to the client going away).
fn upstream_failure(e: &Error) -> bool {
    e.esource() == &ErrorSource::Upstream
}

impl HttpProxy {
    /// A request whose framing could be read two ways (or is broken): 400, counted, and the
    /// connection closes with nothing forwarded.
    async fn refuse_framing(&self, session: &mut Session, why: &(dyn std::fmt::Display + Sync)) -> Result<bool> {
        log::debug!("{}: request refused: {why}", self.entrypoint);
        self.counters.bad_smuggling.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        respond::text(session, 400, respond::body_for(400)).await?;
        Ok(true)
    }

    /// Route a request by its host and path, on the current snapshot, and admit it to its
    /// service (breaker, `max_requests`): what to answer, or `Proxy` with `ctx` holding the
    /// target, the service and its slot. Pingora's path calls this; the fast lane calls its two
    /// halves, [`route`](Self::route) and [`admit`](Self::admit), handing a route to a backend
    /// over TLS to Pingora's path between them.
    pub(crate) fn decide(&self, ctx: &mut Ctx, host: &str, path: &str, path_and_query: &str) -> Decision {
        match self.route(host, path, path_and_query) {
            Ok(target) => self.admit(ctx, target),
            Err(answer) => answer,
        }
    }

    /// The first half of [`decide`](Self::decide), without side effects: the route's target, or
    /// the answer when there is none (404, a redirect, an ACME challenge).
    pub(crate) fn route(&self, host: &str, path: &str, path_and_query: &str) -> Result<Arc<Target>, Decision> {
        let acme_path = path.starts_with("/.well-known/acme-challenge/");
        if !self.tls && acme_path {
            if let Some(answer) = self.shared.acme_answer(&path["/.well-known/acme-challenge/".len()..]) {
                return Err(Decision::Acme(answer));
            }
        }
        if let Some(port) = self.redirect_port {
            if !acme_path && !host.is_empty() {
                return Err(Decision::Redirect(https_location(host, path_and_query, port)));
            }
        }
        let snap = self.shared.registry.snapshot();
        let Some(target) = snap.http.get(&*self.entrypoint).and_then(|t| t.lookup(host, path)).cloned() else {
            return Err(Decision::Status(404));
        };
        if target.redirect_https && !self.tls && !acme_path {
            if let Some(port) = self.https_port {
                return Err(Decision::Redirect(https_location(host, path_and_query, port)));
            }
        }
        Ok(target)
    }

    /// The second half of [`decide`](Self::decide): admit the request to its target's service
    /// (members, breaker, `max_requests`).
    pub(crate) fn admit(&self, ctx: &mut Ctx, target: Arc<Target>) -> Decision {
        let service = target.service.as_ref().map(|c| c.load());
        ctx.target = Some(target);
        let Some(service) = service.filter(|s| !s.members.is_empty()) else {
            return Decision::Status(503);
        };
        if service.breaker.as_ref().is_some_and(|b| !b.admit(ctx.start)) {
            return Decision::Status(503);
        }
        let Some(slot) = service.stats.try_acquire(service.spec.max_requests) else {
            return Decision::Status(503);
        };
        ctx._service_slot = Some(slot);
        ctx.service = Some(service);
        Decision::Proxy
    }

    /// Count a finished request (breaker outcome, service or entrypoint counters) and write its
    /// access log line.
    pub(crate) fn account(&self, ctx: &mut Ctx, done: Done<'_>) {
        let now = Instant::now();
        let status = done.status;
        if ctx.current.is_some() {
            let count_5xx = ctx.service.as_ref().is_some_and(|s| s.spec.breaker.count_5xx);
            let attempt = if done.failed_upstream || (count_5xx && status >= 500) {
                Attempt::Failed
            } else {
                Attempt::Ok
            };
            ctx.record(attempt);
            if let Some(svc) = &ctx.service {
                let outcome = if done.failed_upstream {
                    Outcome::NetworkError
                } else {
                    Outcome::Response {
                        status,
                        latency: now - ctx.start,
                    }
                };
                svc.record_outcome(now, outcome);
            }
        }
        match &ctx.service {
            Some(svc) => svc.stats.http.get(&self.entrypoint).observe(status, now - ctx.start),
            None => self.counters.unrouted.observe(status, now - ctx.start),
        }
        if !self.shared.access_log() {
            return;
        }
        let (route, service) = match &ctx.target {
            Some(t) => (&*t.name, t.id.0.as_str()),
            None => ("-", "-"),
        };
        let backend = ctx
            .current
            .as_ref()
            .map(|c| c.pick.slot.member().addr.to_string())
            .unwrap_or_else(|| "-".into());
        log::info!(
            target: "access",
            "http entrypoint={} client={} method={} route={} service={} backend={} status={} bytes={} duration_ms={:.3} attempts={}{}",
            self.entrypoint,
            ctx.client_ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            done.method,
            route,
            service,
            backend,
            status,
            done.bytes,
            (now - ctx.start).as_secs_f64() * 1000.0,
            ctx.tried.len(),
            done.error.map(|e| format!(" error=\"{e}\"")).unwrap_or_default(),
        );
    }
}

/// What [`HttpProxy::decide`] concluded.
pub(crate) enum Decision {
    /// Answer with lariat's own text for this status.
    Status(u16),
    /// 308 to this location.
    Redirect(String),
    /// The answer to an ACME HTTP-01 challenge.
    Acme(String),
    /// Proxy to the service now in the request's context.
    Proxy,
}

/// How a request ended, for [`HttpProxy::account`].
pub(crate) struct Done<'a> {
    pub status: u16,
    /// The backend failed (connect, reset, timeout, an invalid response).
    pub failed_upstream: bool,
    /// The error's name for the access log.
    pub error: Option<&'a str>,
    pub method: &'a str,
    /// Response body bytes sent to the client.
    pub bytes: usize,
}

/// The consistent-hash key of a request: its client address, its path, or a header's or a
/// cookie's value (empty when absent). `headers` yields (name, value) pairs as received.
pub(crate) fn hash_key<'h>(
    key: &HashKey,
    path: &str,
    client_ip: Option<IpAddr>,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
) -> Vec<u8> {
    match key {
        HashKey::ClientIp => client_ip.map(|ip| ip.to_string().into_bytes()).unwrap_or_default(),
        HashKey::Path => path.as_bytes().to_vec(),
        HashKey::Header(name) => headers
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_vec())
            .unwrap_or_default(),
        HashKey::Cookie(name) => {
            cookie(headers.filter(|(k, _)| k.eq_ignore_ascii_case("cookie")).map(|(_, v)| v), name).unwrap_or_default()
        }
    }
}

fn cookie<'h>(values: impl Iterator<Item = &'h [u8]>, name: &str) -> Option<Vec<u8>> {
    for v in values {
        let s = std::str::from_utf8(v).ok()?;
        for pair in s.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=') {
                if k == name {
                    return Some(val.as_bytes().to_vec());
                }
            }
        }
    }
    None
}

/// The host a request is for: the URI authority (HTTP/2, absolute-form) or the Host header.
pub fn request_host(req: &RequestHeader) -> &str {
    if let Some(a) = req.uri.authority() {
        return a.as_str();
    }
    req.headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("")
}

#[async_trait]
impl ProxyHttp for HttpProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            target: None,
            service: None,
            _service_slot: None,
            current: None,
            tried: Vec::new(),
            hash_key: Vec::new(),
            client_ip: None,
            body_bytes: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.client_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        if head_bytes(session.req_header()) > self.max_header_bytes {
            self.counters
                .bad_header_too_large
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            respond::text(session, 431, respond::body_for(431)).await?;
            return Ok(true);
        }
        if self.max_body_bytes > 0 {
            let declared = session
                .req_header()
                .headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > self.max_body_bytes) {
                respond::text(session, 413, respond::body_for(413)).await?;
                return Ok(true);
            }
        }
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.idle_timeout.as_secs().max(1)));
        }
        // The parser keeps only Transfer-Encoding when both came: look at the raw head then.
        let raw_both = session.req_header().headers.contains_key(http::header::TRANSFER_ENCODING)
            && session
                .as_ref()
                .as_http1()
                .is_some_and(|h1| super::strict::raw_has_cl_and_te(&h1.get_headers_raw_bytes()));
        let problem = if raw_both {
            Some("both Content-Length and Transfer-Encoding")
        } else {
            super::strict::framing_problem(&session.req_header().headers)
        };
        if let Some(problem) = problem {
            return self.refuse_framing(session, &problem).await;
        }
        if let Err(e) = prefetch_first_chunk(session).await {
            return self.refuse_framing(session, &e).await;
        }
        let req = session.req_header();
        let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        match self.decide(ctx, request_host(req), req.uri.path(), pq) {
            Decision::Status(code) => respond::text(session, code, respond::body_for(code)).await?,
            Decision::Redirect(location) => respond::redirect(session, &location).await?,
            Decision::Acme(answer) => respond::text_owned(session, 200, answer).await?,
            Decision::Proxy => {
                if let Some(crate::desired::Balance::ConsistentHash(key)) = ctx.service.as_ref().map(|s| &s.spec.balance) {
                    let req = session.req_header();
                    let headers = req.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
                    ctx.hash_key = hash_key(key, req.uri.path(), ctx.client_ip, headers);
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // A new attempt after an earlier one: that one failed.
        ctx.record(Attempt::Failed);
        let service = ctx
            .service
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "no service"))?;
        if !ctx.tried.is_empty() {
            service.stats.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ctx.current = None;
        let pick = service
            .pick(&ctx.hash_key, &ctx.tried, Instant::now())
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "no usable backend"))?;
        ctx.tried.push(pick.index);
        let addr = pick.slot.member().addr;
        ctx.current = Some(Current { pick, recorded: false });
        let mut peer = match &service.spec.upstream_tls {
            None => HttpPeer::new(addr, false, String::new()),
            Some(tls) => {
                let sni = tls
                    .sni
                    .clone()
                    .unwrap_or_else(|| crate::route::strip_port(request_host(session.req_header())).to_string());
                let mut p = HttpPeer::new(addr, true, sni);
                p.options.verify_cert = tls.verify;
                p.options.verify_hostname = tls.verify;
                p.options.ca = service.upstream_ca.clone();
                p.options.alpn = pingora_core::protocols::ALPN::H1;
                p
            }
        };
        peer.options.connection_timeout = Some(service.spec.connect_timeout);
        peer.options.read_timeout = Some(service.spec.read_timeout);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(&self, _session: &mut Session, _peer: &HttpPeer, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        ctx.record(Attempt::Failed);
        // Nothing was sent: any request may go to another backend.
        e.set_retry(ctx.retries_left());
        e
    }

    fn error_while_proxy(&self, peer: &HttpPeer, session: &mut Session, e: Box<Error>, ctx: &mut Ctx, _client_reused: bool) -> Box<Error> {
        let mut e = e.more_context(format!("backend {peer}"));
        if upstream_failure(&e) {
            ctx.record(Attempt::Failed);
        }
        // A reset or a timeout before any response byte: idempotent requests go to another
        // backend. A non-idempotent request may already have had its effect: never replayed.
        let before_response = session.response_written().is_none();
        let replayable = session.req_header().method.is_idempotent() && !session.as_ref().retry_buffer_truncated();
        e.set_retry(upstream_failure(&e) && before_response && replayable && ctx.retries_left());
        e
    }

    async fn upstream_request_filter(&self, session: &mut Session, req: &mut RequestHeader, ctx: &mut Ctx) -> Result<()> {
        // The Host header's value is shared, not copied; an HTTP/2 authority is made into one.
        let host = match session.req_header().uri.authority() {
            Some(a) => http::HeaderValue::from_str(a.as_str()).ok(),
            None => session.req_header().headers.get(http::header::HOST).cloned(),
        }
        .filter(|h| !h.is_empty());
        if let Some(host) = &host {
            if !req.headers.contains_key(http::header::HOST) {
                req.insert_header("host", host.clone())?;
            }
        }
        if let Some(ip) = ctx.client_ip {
            let ip = http::HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
                .map_err(|_| Error::explain(ErrorType::InternalError, "client address as a header"))?;
            req.insert_header("x-forwarded-for", ip.clone())?;
            req.insert_header("x-real-ip", ip)?;
        }
        let proto = http::HeaderValue::from_static(if self.tls { "https" } else { "http" });
        req.insert_header("x-forwarded-proto", proto)?;
        if let Some(host) = host {
            req.insert_header("x-forwarded-host", host)?;
        }
        Ok(())
    }

    async fn request_body_filter(&self, _session: &mut Session, body: &mut Option<bytes::Bytes>, _end: bool, ctx: &mut Ctx) -> Result<()> {
        if let Some(b) = body {
            ctx.body_bytes += b.len() as u64;
            if self.max_body_bytes > 0 && ctx.body_bytes > self.max_body_bytes {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body over max_body_bytes");
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut pingora_http::ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(problem) = super::strict::framing_problem(&resp.headers) {
            return Error::e_explain(ErrorType::InvalidHTTPHeader, format!("backend response refused: {problem}")).map_err(|e| e.into_up());
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout if e.esource() == &ErrorSource::Upstream => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let _ = respond::text(session, code, respond::body_for(code)).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        let done = Done {
            status,
            failed_upstream: e.is_some_and(upstream_failure),
            error: e.map(|e| e.etype().as_str()),
            method: session.req_header().method.as_str(),
            bytes: session.body_bytes_sent(),
        };
        self.account(ctx, done);
    }
}
