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

/// A message's framing headers, checked: the Content-Length as first written (every value
/// agrees with it), and whether a Transfer-Encoding came (its last coding `chunked`, and only
/// that one). Both at once is for the caller to judge: a request is refused, a response re-framed.
pub struct Framing<'h> {
    pub length: Option<&'h [u8]>,
    pub transfer_encoding: bool,
}

/// What `HeaderValue::to_str` accepts: visible ASCII, space and tab.
fn is_text(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&b| b == b'0').count();
    &digits[zeros..]
}

/// Check the framing headers among `headers` (name, value as received): both HTTP/1 paths, for
/// requests and for responses, apply these same rules.
pub fn read_framing<'h>(headers: impl Iterator<Item = (&'h str, &'h [u8])>) -> Result<Framing<'h>, &'static str> {
    let (mut length, mut codings, mut chunked): (Option<&[u8]>, usize, usize) = (None, 0, 0);
    let mut last_chunked = false;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            if !is_text(value) {
                return Err("a Content-Length that is not text");
            }
            for part in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                    return Err("a Content-Length that is not a number");
                }
                match length {
                    Some(l) if trim_zeros(l) != trim_zeros(part) => return Err("differing Content-Length values"),
                    _ => length = length.or(Some(part)),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !is_text(value) {
                return Err("a Transfer-Encoding that is not text");
            }
            for coding in value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|c| !c.is_empty()) {
                codings += 1;
                last_chunked = coding.eq_ignore_ascii_case(b"chunked");
                chunked += last_chunked as usize;
            }
        }
    }
    if codings > 0 && (!last_chunked || chunked > 1) {
        return Err("a Transfer-Encoding whose last coding is not chunked");
    }
    Ok(Framing {
        length,
        transfer_encoding: codings > 0,
    })
}

/// What is wrong with a request's framing headers, if anything.
pub fn framing_problem(headers: &HeaderMap) -> Option<&'static str> {
    match read_framing(headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))) {
        Err(problem) => Some(problem),
        Ok(f) if f.length.is_some() && f.transfer_encoding => Some("both Content-Length and Transfer-Encoding"),
        Ok(_) => None,
    }
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
