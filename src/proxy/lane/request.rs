//! The request side of the fast lane: which HTTP/1 requests it serves itself (a plain HTTP/1.1
//! request with no body, no upgrade, no `Expect`, one Host, origin-form target) and the head it
//! sends to the backend. Anything else, including anything the parser refuses, is referred to
//! Pingora's path, which answers it as before.

use std::ops::Range;

/// A request head the lane serves, as offsets into the connection's buffer.
#[derive(Debug)]
pub struct Request {
    /// The head's length in the buffer.
    pub len: usize,
    pub method: Range<usize>,
    /// The origin-form target (path and query).
    pub target: Range<usize>,
    /// The path alone (the target up to `?`).
    pub path: Range<usize>,
    pub host: Range<usize>,
    /// The client asked to close after this request.
    pub close: bool,
}

impl Request {
    pub fn str<'b>(&self, buf: &'b [u8], r: &Range<usize>) -> &'b str {
        std::str::from_utf8(&buf[r.clone()]).unwrap_or("")
    }

    pub fn is_head(&self, buf: &[u8]) -> bool {
        &buf[self.method.clone()] == b"HEAD"
    }

    /// Safe to send again after a failure (RFC 9110 9.2.2).
    pub fn idempotent(&self, buf: &[u8]) -> bool {
        matches!(
            &buf[self.method.clone()],
            b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
        )
    }
}

#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// Pingora's path answers this one.
    Refer,
    Complete(Request),
}

/// Headers the lane does not pass on: hop-by-hop ones and the forwarding headers it sets itself.
fn dropped(name: &str) -> bool {
    [
        "keep-alive",
        "proxy-connection",
        "te",
        "x-forwarded-for",
        "x-real-ip",
        "x-forwarded-proto",
        "x-forwarded-host",
    ]
    .iter()
    .any(|d| name.eq_ignore_ascii_case(d))
}

/// Headers that take a request off the lane.
fn referred(name: &str) -> bool {
    ["transfer-encoding", "expect", "upgrade", "http2-settings"]
        .iter()
        .any(|d| name.eq_ignore_ascii_case(d))
}

fn offset(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Parse the request head at the start of `buf` and, when the lane serves it, write the head for
/// the backend into `up`: the request line, the client's headers but hop-by-hop and forwarding
/// ones, then X-Forwarded-For, X-Real-IP, X-Forwarded-Proto and X-Forwarded-Host.
pub fn parse(buf: &[u8], max_head: usize, client_ip: Option<&str>, proto: &str, up: &mut Vec<u8>) -> Parsed {
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; 64];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
        _ => return Parsed::Refer,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Refer;
    };
    if method == "CONNECT" || !target.starts_with('/') {
        return Parsed::Refer;
    }
    up.clear();
    for part in [method.as_bytes(), b" ", target.as_bytes(), b" HTTP/1.1\r\n"] {
        up.extend_from_slice(part);
    }
    let (mut host, mut close) = (None, false);
    for h in req.headers.iter() {
        let name = h.name;
        if referred(name) {
            return Parsed::Refer;
        }
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() || h.value.is_empty() || std::str::from_utf8(h.value).is_err() {
                return Parsed::Refer;
            }
            host = Some(offset(buf, h.value));
        } else if name.eq_ignore_ascii_case("content-length") {
            if h.value.trim_ascii() != b"0" {
                return Parsed::Refer;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    // It names other hop-by-hop headers: Pingora's path handles those.
                    return Parsed::Refer;
                }
            }
            continue;
        }
        if dropped(name) {
            continue;
        }
        up.extend_from_slice(name.as_bytes());
        up.extend_from_slice(b": ");
        up.extend_from_slice(h.value);
        up.extend_from_slice(b"\r\n");
    }
    let Some(host) = host else {
        return Parsed::Refer;
    };
    if let Some(ip) = client_ip {
        for part in ["x-forwarded-for: ", ip, "\r\nx-real-ip: ", ip, "\r\n"] {
            up.extend_from_slice(part.as_bytes());
        }
    }
    for part in ["x-forwarded-proto: ", proto, "\r\nx-forwarded-host: "] {
        up.extend_from_slice(part.as_bytes());
    }
    up.extend_from_slice(&buf[host.clone()]);
    up.extend_from_slice(b"\r\n\r\n");
    let target_range = offset(buf, target.as_bytes());
    let path_len = target.find('?').unwrap_or(target.len());
    Parsed::Complete(Request {
        len,
        method: offset(buf, method.as_bytes()),
        path: target_range.start..target_range.start + path_len,
        target: target_range,
        host,
        close,
    })
}

/// The request's headers as (name, value) pairs, for a consistent-hash key.
pub fn headers_of(buf: &[u8], len: usize) -> Vec<(String, Vec<u8>)> {
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; 64];
    let mut req = httparse::Request::new(&mut []);
    let _ = req.parse_with_uninit_headers(&buf[..len], &mut headers);
    req.headers.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(raw: &str) -> Option<(Request, String)> {
        let mut up = Vec::new();
        match parse(raw.as_bytes(), 8192, Some("10.0.0.9"), "http", &mut up) {
            Parsed::Complete(r) => Some((r, String::from_utf8(up).unwrap())),
            _ => None,
        }
    }

    #[test]
    fn plain_requests_are_served_and_rewritten() {
        let raw = "GET /a/b?x=1 HTTP/1.1\r\nHost: app.example:8080\r\nConnection: keep-alive\r\nX-Forwarded-For: 6.6.6.6\r\nKeep-Alive: 5\r\nAccept: */*\r\n\r\nGET /next";
        let (r, up) = lane(raw).unwrap();
        let buf = raw.as_bytes();
        assert_eq!(r.len, raw.find("GET /next").unwrap());
        assert_eq!(r.str(buf, &r.path), "/a/b");
        assert_eq!(r.str(buf, &r.target), "/a/b?x=1");
        assert_eq!(r.str(buf, &r.host), "app.example:8080");
        assert!(!r.close && r.idempotent(buf) && !r.is_head(buf));
        assert_eq!(
            up,
            "GET /a/b?x=1 HTTP/1.1\r\nHost: app.example:8080\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.9\r\nx-real-ip: 10.0.0.9\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: app.example:8080\r\n\r\n"
        );
        let (r, _) = lane("DELETE /x HTTP/1.1\r\nhost: a\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert!(r.close);
    }

    #[test]
    fn everything_else_is_referred() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-secret\r\n\r\n",
            "\u{0}GET / HTTP/1.1\r\n\r\n",
        ] {
            let mut up = Vec::new();
            assert!(
                matches!(parse(raw.as_bytes(), 8192, None, "http", &mut up), Parsed::Refer),
                "{raw:?}"
            );
        }
        let mut up = Vec::new();
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n", 8192, None, "http", &mut up),
            Parsed::Partial
        ));
        let long = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "x".repeat(100));
        assert!(matches!(parse(long.as_bytes(), 64, None, "http", &mut up), Parsed::Refer));
    }
}
