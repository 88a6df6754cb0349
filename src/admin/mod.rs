//! The admin listener: /healthz, the demo page at /, and (as they land) /metrics, /api/* and
//! /dashboard/. Read-only; a bearer token guards every path but /healthz when `admin.token` is set.

use crate::state::Shared;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::Arc;

/// Path prefixes of the admin API; every other path shows the demo page.
const RESERVED: &[&str] = &["/api", "/metrics", "/dashboard"];

pub struct Admin {
    pub shared: Arc<Shared>,
    pub token: Option<String>,
}

/// Compare without an early exit, so the time taken says nothing about the token.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

impl Admin {
    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(value) = session.req_header().headers.get("authorization") else {
            return false;
        };
        let Some(given) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        constant_time_eq(given, token.as_bytes())
    }

    fn demo(&self, session: &ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let mut body = String::from("Hello from lariat.\n\nThis page is served by lariat's admin listener, standing in as a demo backend.\nThe request it received:\n\n");
        body.push_str(&format!("{} {}\n", req.method, req.uri));
        for (k, v) in req.headers.iter() {
            body.push_str(&format!("{}: {}\n", k, String::from_utf8_lossy(v.as_bytes())));
        }
        reply(StatusCode::OK, "text/plain; charset=utf-8", body)
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        if path == "/healthz" {
            return reply(StatusCode::OK, "text/plain", "ok\n");
        }
        if !self.authorized(session) {
            let mut r = reply(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "unauthorized: send Authorization: Bearer <admin.token>\n",
            );
            r.headers_mut().insert("www-authenticate", http::HeaderValue::from_static("Bearer"));
            return r;
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "the admin API is read-only\n");
        }
        match path.as_str() {
            p if RESERVED.iter().any(|r| p.starts_with(r)) => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
            _ => self.demo(session),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
