//! The response side of the fast lane: parse a backend's response head, decide how its body is
//! framed, and write the head the client gets (hop-by-hop headers dropped; a Content-Length that
//! came with Transfer-Encoding dropped, so the body cannot be read two ways).

/// A backend response head larger than this is refused (502).
pub const MAX_HEAD: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Ends when the backend closes.
    UntilClose,
}

#[derive(Debug)]
pub struct Response {
    /// The head's length in the buffer.
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub keep_alive: bool,
    /// The client's connection closes after it.
    pub close: bool,
}

#[derive(Debug)]
pub enum Parsed {
    Partial,
    /// An interim (1xx) head of this length, already written out (a 100 is not).
    Interim(usize),
    Complete(Response),
    Invalid(&'static str),
}

/// Parse the response head at the start of `buf`; write what the client gets into `out`.
/// `head_request`: the request was HEAD. `close`: the client connection closes after this response.
pub fn parse(buf: &[u8], head_request: bool, close: bool, out: &mut Vec<u8>) -> Parsed {
    // Uninitialised: zeroing 256 headers (8 KiB) per response was this parser's largest cost.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; 256];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
        Ok(httparse::Status::Partial) => return Parsed::Invalid("response head too large"),
        Err(_) => return Parsed::Invalid("invalid response head"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Parsed::Invalid("invalid response head");
    };
    if status == 101 {
        return Parsed::Invalid("a protocol switch that was not asked for");
    }
    if (100..200).contains(&status) {
        if status != 100 {
            out.extend_from_slice(&buf[..len]);
        }
        return Parsed::Interim(len);
    }
    // The same framing rules as for requests (`strict`); both headers at once is re-framed here.
    let checked = match super::super::strict::read_framing(resp.headers.iter().map(|h| (h.name, h.value))) {
        Ok(f) => f,
        Err(why) => return Parsed::Invalid(why),
    };
    let length = match checked
        .length
        .map(|d| std::str::from_utf8(d).ok().and_then(|d| d.parse::<u64>().ok()))
    {
        Some(None) => return Parsed::Invalid("a Content-Length that is not a number"),
        Some(n) => n,
        None => None,
    };
    let keep_alive = version == 1
        && !resp
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .any(|h| h.value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")));
    let framing = if head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if checked.transfer_encoding {
        Framing::Chunked
    } else {
        length.map(Framing::Length).unwrap_or(Framing::UntilClose)
    };
    let close = close || framing == Framing::UntilClose;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let n = h.name;
        let hop = ["connection", "keep-alive", "proxy-connection"]
            .iter()
            .any(|d| n.eq_ignore_ascii_case(d));
        if hop || (checked.transfer_encoding && n.eq_ignore_ascii_case("content-length")) {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Complete(Response {
        len,
        status,
        framing,
        keep_alive: keep_alive && framing != Framing::UntilClose,
        close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &str, head: bool, close: bool) -> (Response, String) {
        let mut out = Vec::new();
        match parse(raw.as_bytes(), head, close, &mut out) {
            Parsed::Complete(r) => (r, String::from_utf8(out).unwrap()),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn framing_and_the_client_head() {
        let (r, out) = complete(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nX: y\r\n\r\nhello",
            false,
            false,
        );
        assert_eq!(
            (r.len, r.status, r.framing, r.keep_alive, r.close),
            (68, 200, Framing::Length(5), true, false)
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\n");

        let (r, out) = complete(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
            true,
        );
        assert_eq!((r.framing, r.close), (Framing::Chunked, true));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nconnection: close\r\n\r\n"
        );

        let (r, out) = complete("HTTP/1.0 200 OK\r\n\r\n", false, false);
        assert_eq!((r.framing, r.keep_alive, r.close), (Framing::UntilClose, false, true));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");

        assert_eq!(
            complete("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, false).0.framing,
            Framing::Empty
        );
        assert_eq!(
            complete("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false, false)
                .0
                .framing,
            Framing::Empty
        );
        assert!(
            !complete("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: Close\r\n\r\n", false, false)
                .0
                .keep_alive
        );
        assert_eq!(
            complete("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", false, false).0.framing,
            Framing::Length(3)
        );
    }

    #[test]
    fn interim_and_invalid_heads() {
        let mut out = Vec::new();
        assert!(matches!(
            parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", false, false, &mut out),
            Parsed::Interim(25)
        ));
        assert!(out.is_empty());
        assert!(matches!(
            parse(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false, false, &mut out),
            Parsed::Interim(40)
        ));
        assert_eq!(out, b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Le", false, false, &mut out),
            Parsed::Partial
        ));
        for bad in [
            &b"HTTP/1.1 two hundred OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \xff, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"\x00\x01 not http\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad, false, false, &mut out), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
