//! The admin listener: /healthz, /metrics, /api/*, /dashboard/, and the demo page on every other
//! path. Read-only; a bearer token guards every path but /healthz when `admin.token` is set.

mod api;
mod time;

use crate::state::Shared;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::Arc;

/// The dashboard: one self-contained page, embedded.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Path prefixes of the admin API; every other path shows the demo page.
const RESERVED: &[&str] = &["/api", "/metrics", "/dashboard"];

pub struct Admin {
    pub shared: Arc<Shared>,
    pub token: Option<String>,
    pub entrypoints: Vec<crate::config::Entrypoint>,
}

/// Compare without an early exit, so the time taken says nothing about the token.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

fn json(v: serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    body.push(b'\n');
    reply(StatusCode::OK, "application/json", body)
}

/// Decode %XX escapes (a service id may contain '/' and ':'); invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }

        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        // The dashboard page itself is static and carries no data; the API it reads needs the
        // token, which the page asks for.
        if path == "/dashboard" {
            let mut r = reply(StatusCode::MOVED_PERMANENTLY, "text/plain", "moved to /dashboard/\n");
            r.headers_mut().insert("location", http::HeaderValue::from_static("/dashboard/"));
            return r;
        }
        if path == "/dashboard/" {
            let mut r = reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD);
            r.headers_mut().insert(
                "content-security-policy",
                http::HeaderValue::from_static(
                    "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'",
                ),
            );
            return r;
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
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                crate::metrics::render(&self.shared, &self.entrypoints),
            ),
            "/api/overview" => json(api::overview(&self.shared, &self.entrypoints)),
            "/api/entrypoints" => json(api::entrypoints(&self.shared, &self.entrypoints)),
            "/api/routes" => json(api::routes(&self.shared)),
            "/api/services" | "/api/services/" => json(api::services(&self.shared)),
            "/api/providers" => json(api::providers(&self.shared)),
            "/api/certificates" => json(api::certificates(&self.shared)),
            p if p.starts_with("/api/services/") => {
                let id = percent_decode(&p["/api/services/".len()..]);
                match api::service(&self.shared, &id) {
                    Some(v) => json(v),
                    None => reply(
                        StatusCode::NOT_FOUND,
                        "application/json",
                        format!("{{\"error\":\"no service {}\"}}\n", id.escape_default()),
                    ),
                }
            }
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

#[cfg(test)]
mod decode_tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("default%2Fweb%3A80@kubernetes"), "default/web:80@kubernetes");
        assert_eq!(super::percent_decode("a%zz%4"), "a%zz%4");
        assert_eq!(super::percent_decode("%é"), "%é");
    }
}
