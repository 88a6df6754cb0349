//! Strict HTTP/1 framing where lenience lets requests be smuggled: both Content-Length and
//! Transfer-Encoding, several differing Content-Length values, or a Transfer-Encoding whose last
//! coding is not `chunked`. (Malformed heads — whitespace before a colon, obs-fold, bare CR, NUL —
//! are refused by the parser before they get here.)

use http::HeaderMap;

/// Whether a raw message head carries both Content-Length and Transfer-Encoding (the parser
/// keeps only Transfer-Encoding, so this is checked on the bytes as received).
pub fn raw_has_cl_and_te(head: &[u8]) -> bool {
    let (mut cl, mut te) = (false, false);
    for line in head.split(|b| *b == b'\n').skip(1) {
        let name = line.split(|b| *b == b':').next().unwrap_or(&[]);
        cl |= name.eq_ignore_ascii_case(b"content-length");
        te |= name.eq_ignore_ascii_case(b"transfer-encoding");
    }
    cl && te
}

/// What is wrong with a message's framing headers, if anything.
pub fn framing_problem(headers: &HeaderMap) -> Option<&'static str> {
    let mut length: Option<&str> = None;
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        let Ok(v) = v.to_str() else {
            return Some("a Content-Length that is not text");
        };
        for part in v.split(',').map(str::trim) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Some("a Content-Length that is not a number");
            }
            match length {
                Some(l) if l.trim_start_matches('0') != part.trim_start_matches('0') => return Some("differing Content-Length values"),
                _ => length = Some(part),
            }
        }
    }
    let mut codings = Vec::new();
    for v in headers.get_all(http::header::TRANSFER_ENCODING) {
        let Ok(v) = v.to_str() else {
            return Some("a Transfer-Encoding that is not text");
        };
        codings.extend(v.split(',').map(|c| c.trim().to_ascii_lowercase()).filter(|c| !c.is_empty()));
    }
    if codings.is_empty() {
        return None;
    }
    if length.is_some() {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if codings.last().map(String::as_str) != Some("chunked") || codings.iter().filter(|c| *c == "chunked").count() > 1 {
        return Some("a Transfer-Encoding whose last coding is not chunked");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        m
    }

    #[test]
    fn raw_heads() {
        assert!(raw_has_cl_and_te(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(raw_has_cl_and_te(
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-LENGTH: 1\r\n\r\n"
        ));
        assert!(!raw_has_cl_and_te(b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n"));
        assert!(!raw_has_cl_and_te(
            b"GET /content-length: HTTP/1.1\r\nX-Transfer-Encoding: a\r\n\r\n"
        ));
    }

    #[test]
    fn table() {
        assert_eq!(framing_problem(&h(&[("content-length", "5")])), None);
        assert_eq!(framing_problem(&h(&[("content-length", "5"), ("content-length", "5")])), None);
        assert_eq!(framing_problem(&h(&[("content-length", "5, 5")])), None);
        assert_eq!(framing_problem(&h(&[("transfer-encoding", "gzip, chunked")])), None);
        assert!(framing_problem(&h(&[("content-length", "5"), ("content-length", "6")])).is_some());
        assert!(framing_problem(&h(&[("content-length", "5, 6")])).is_some());
        assert!(framing_problem(&h(&[("content-length", "-1")])).is_some());
        assert!(framing_problem(&h(&[("content-length", "5"), ("transfer-encoding", "chunked")])).is_some());
        assert!(framing_problem(&h(&[("transfer-encoding", "chunked, gzip")])).is_some());
        assert!(framing_problem(&h(&[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")])).is_some());
        assert!(framing_problem(&h(&[("transfer-encoding", "gzip")])).is_some());
    }
}
