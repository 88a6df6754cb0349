//! The L7 proxy of one http entrypoint: route by host and path on the snapshot the request started
//! with, pick a backend, retry another after a connect failure, set forwarding headers, log.

use super::respond;
use crate::desired::HashKey;
use crate::route::Target;
use crate::state::Shared;
use crate::upstream::{InFlight, ServiceSlot};
use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::time::Instant;

pub struct HttpProxy {
    pub entrypoint: Arc<str>,
    pub shared: Arc<Shared>,
}

/// Per-request state.
pub struct Ctx {
    start: Instant,
    target: Option<Target>,
    _service_slot: Option<ServiceSlot>,
    /// The backend of the current attempt, holding its connection slot.
    attempt: Option<InFlight>,
    tried: Vec<usize>,
    hash_key: Vec<u8>,
    client_ip: Option<IpAddr>,
}

impl HttpProxy {
    fn hash_key(key: &HashKey, session: &Session, client_ip: Option<IpAddr>) -> Vec<u8> {
        let req = session.req_header();
        match key {
            HashKey::ClientIp => client_ip
                .map(|ip| ip.to_string().into_bytes())
                .unwrap_or_default(),
            HashKey::Path => req.uri.path().as_bytes().to_vec(),
            HashKey::Header(name) => req
                .headers
                .get(name.as_str())
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
            HashKey::Cookie(name) => cookie(req, name).unwrap_or_default(),
        }
    }
}

fn cookie(req: &RequestHeader, name: &str) -> Option<Vec<u8>> {
    for v in req.headers.get_all("cookie") {
        let s = v.to_str().ok()?;
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
    req.headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

#[async_trait]
impl ProxyHttp for HttpProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            target: None,
            _service_slot: None,
            attempt: None,
            tried: Vec::new(),
            hash_key: Vec::new(),
            client_ip: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.start = Instant::now();
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let snap = self.shared.registry.snapshot();
        let req = session.req_header();
        let target = snap
            .http
            .get(&*self.entrypoint)
            .and_then(|t| t.lookup(request_host(req), req.uri.path()))
            .cloned();
        let Some(target) = target else {
            respond::text(session, 404, respond::body_for(404)).await?;
            return Ok(true);
        };
        let service = target.service.clone();
        ctx.target = Some(target);
        let Some(service) = service.filter(|s| !s.members.is_empty()) else {
            respond::text(session, 503, respond::body_for(503)).await?;
            return Ok(true);
        };
        let Some(slot) = service.load.try_acquire(service.spec.max_requests) else {
            respond::text(session, 503, respond::body_for(503)).await?;
            return Ok(true);
        };
        ctx._service_slot = Some(slot);
        if let crate::desired::Balance::ConsistentHash(key) = &service.spec.balance {
            ctx.hash_key = Self::hash_key(key, session, ctx.client_ip);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let service = ctx
            .target
            .as_ref()
            .and_then(|t| t.service.clone())
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "no service"))?;
        ctx.attempt = None;
        let (i, slot) = service
            .pick(&ctx.hash_key, &ctx.tried)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "no usable backend"))?;
        ctx.tried.push(i);
        let addr = slot.member().addr;
        ctx.attempt = Some(slot);
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(service.spec.connect_timeout);
        peer.options.read_timeout = Some(service.spec.read_timeout);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(a) = &ctx.attempt {
            a.member().record_failure();
        }
        let retries = ctx
            .target
            .as_ref()
            .and_then(|t| t.service.as_ref())
            .map(|s| s.spec.retries)
            .unwrap_or(0);
        if ctx.tried.len() <= retries as usize {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let host = request_host(session.req_header()).to_string();
        if req.headers.get("host").is_none() && !host.is_empty() {
            req.insert_header("host", &host)?;
        }
        if let Some(ip) = ctx.client_ip {
            let ip = ip.to_string();
            req.insert_header("x-forwarded-for", &ip)?;
            req.insert_header("x-real-ip", &ip)?;
        }
        req.insert_header("x-forwarded-proto", "http")?;
        if !host.is_empty() {
            req.insert_header("x-forwarded-host", &host)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
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
        if !self.shared.access_log() {
            return;
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let req = session.req_header();
        let (route, service) = match &ctx.target {
            Some(t) => (&*t.name, t.id.0.as_str()),
            None => ("-", "-"),
        };
        let backend = ctx
            .attempt
            .as_ref()
            .map(|a| a.member().addr.to_string())
            .unwrap_or_else(|| "-".into());
        log::info!(
            target: "access",
            "http entrypoint={} client={} method={} route={} service={} backend={} status={} bytes={} duration_ms={:.3}{}",
            self.entrypoint,
            ctx.client_ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            req.method,
            route,
            service,
            backend,
            status,
            session.body_bytes_sent(),
            ctx.start.elapsed().as_secs_f64() * 1000.0,
            e.map(|e| format!(" error=\"{}\"", e.etype().as_str())).unwrap_or_default(),
        );
    }
}
