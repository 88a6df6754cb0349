//! The PROXY protocol (v1 and v2, parsed with `ppp`): a header accepted from trusted sources sets
//! the connection's client address; a header from any other source, or a malformed one, closes
//! the connection. Also the header lariat sends to tcp backends that ask for one.

use crate::desired::ProxyVersion;
use crate::net::Cidr;
use pingora_core::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::AsyncReadExt;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1 headers are at most 107 bytes; v2 ones carry at most this much (TLVs included).
const MAX_HEADER: usize = 16 + 4096;
pub const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PpError {
    #[error("PROXY header from {0}, which is not a trusted source")]
    Untrusted(std::net::IpAddr),
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("connection closed in the PROXY header")]
    Closed,
    #[error("PROXY header not complete within {0:?}")]
    Timeout(Duration),
}

/// How far the bytes so far go: not a header, a header still incomplete, or a header of n bytes.
fn scan(buf: &[u8]) -> Result<Option<Option<usize>>, PpError> {
    let starts = |sig: &[u8]| buf.len() >= sig.len() && &buf[..sig.len()] == sig || sig.starts_with(buf);
    let v1 = starts(V1_PREFIX);
    let v2 = starts(V2_SIGNATURE);
    if !v1 && !v2 {
        return Ok(None);
    }
    if v2 && buf.len() >= 16 {
        return Ok(Some(
            Some(16 + u16::from_be_bytes([buf[14], buf[15]]) as usize).filter(|n| buf.len() >= *n),
        ));
    }
    if v1 && buf.len() >= V1_PREFIX.len() {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return Ok(Some(Some(end + 2)));
        }
        if buf.len() > 107 {
            return Err(PpError::Malformed("v1 header longer than 107 bytes".into()));
        }
    }
    Ok(Some(None))
}

/// The client address a complete header names (None: LOCAL / UNKNOWN, keep the socket's).
fn source(header: &[u8]) -> Result<Option<SocketAddr>, PpError> {
    match ppp::HeaderResult::parse(header) {
        ppp::HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            ppp::v1::Addresses::Unknown => None,
        }),
        ppp::HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            (_, ppp::v2::Addresses::IPv6(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            _ => None,
        }),
        ppp::HeaderResult::V1(Err(e)) => Err(PpError::Malformed(e.to_string())),
        ppp::HeaderResult::V2(Err(e)) => Err(PpError::Malformed(e.to_string())),
    }
}

/// Parse the start of a connection: Ok(None) when it is not (or not yet) a complete header, else
/// the header's length and the client address it names. For property tests and tools.
pub fn parse_header(buf: &[u8]) -> Result<Option<(usize, Option<SocketAddr>)>, PpError> {
    match scan(buf)? {
        Some(Some(n)) => Ok(Some((n, source(&buf[..n])?))),
        _ => Ok(None),
    }
}

/// Read a PROXY header off the start of `stream`, if there is one. From a trusted `peer` it sets
/// the client address; the bytes after it are put back for whatever reads next.
pub async fn accept(stream: &mut L4Stream, peer: std::net::IpAddr, trusted: &[Cidr]) -> Result<Option<SocketAddr>, PpError> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    let read = async {
        loop {
            match scan(&buf)? {
                None if !buf.is_empty() => return Ok(None),
                Some(Some(n)) => return Ok(Some(n)),
                _ => {}
            }
            if buf.len() >= MAX_HEADER {
                return Err(PpError::Malformed("header too long".into()));
            }
            let n = stream.read(&mut chunk).await.map_err(|_| PpError::Closed)?;
            if n == 0 {
                return if buf.is_empty() { Ok(None) } else { Err(PpError::Closed) };
            }
            buf.extend_from_slice(&chunk[..n]);
            // Once it is surely a header, the source must be trusted before reading on.
            if (buf.starts_with(V1_PREFIX) || buf.starts_with(V2_SIGNATURE)) && !trusted.iter().any(|c| c.contains(peer)) {
                return Err(PpError::Untrusted(peer));
            }
        }
    };
    let len = tokio::time::timeout(TIMEOUT, read).await.map_err(|_| PpError::Timeout(TIMEOUT))??;
    let Some(len) = len else {
        stream.rewind(&buf);
        return Ok(None);
    };
    let src = source(&buf[..len])?;
    stream.rewind(&buf[len..]);
    if let Some(src) = src {
        let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
        let _ = digest.peer_addr.set(Some(PSocketAddr::Inet(src)));
        stream.set_socket_digest(digest);
    }
    Ok(src)
}

/// The header to send a backend: the client's address, and the address it connected to.
pub fn header(version: ProxyVersion, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    // Both ends in one family: an IPv4 client on an IPv6 listener is written as IPv4.
    let norm = |a: SocketAddr| match a {
        SocketAddr::V6(v6) => v6
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddr::new(ip.into(), v6.port()))
            .unwrap_or(a),
        v4 => v4,
    };
    let (c, l) = (norm(client), norm(local));
    match version {
        ProxyVersion::V1 => {
            let family = if c.is_ipv4() && l.is_ipv4() { "TCP4" } else { "TCP6" };
            format!("PROXY {family} {} {} {} {}\r\n", c.ip(), l.ip(), c.port(), l.port()).into_bytes()
        }
        ProxyVersion::V2 => ppp::v2::Builder::with_addresses(0x21, ppp::v2::Protocol::Stream, (c, l))
            .build()
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_and_parses_both_versions() {
        let v1 = b"PROXY TCP4 192.0.2.1 198.51.100.1 5678 443\r\nGET /";
        assert_eq!(scan(v1).unwrap(), Some(Some(44)));
        assert_eq!(source(&v1[..44]).unwrap(), Some("192.0.2.1:5678".parse().unwrap()));
        let v2 = header(
            ProxyVersion::V2,
            "[2001:db8::1]:4000".parse().unwrap(),
            "[2001:db8::2]:443".parse().unwrap(),
        );
        assert_eq!(scan(&v2).unwrap(), Some(Some(v2.len())));
        assert_eq!(source(&v2).unwrap(), Some("[2001:db8::1]:4000".parse().unwrap()));
        assert_eq!(scan(b"PRO").unwrap(), Some(None), "could still be a header");
        assert_eq!(scan(b"GET / HTTP/1.1\r\n").unwrap(), None);
        assert_eq!(scan(&v2[..10]).unwrap(), Some(None));
        assert!(source(b"PROXY TCP4 nonsense\r\n").is_err());
        assert!(scan(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'x'].repeat(20)).is_err());
        let local = header(ProxyVersion::V1, "10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
        assert_eq!(local, b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n");
    }
}
