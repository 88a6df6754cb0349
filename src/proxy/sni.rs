//! Reading a TLS ClientHello off a connection without losing it: the bytes are read, handed to
//! rustls' `Acceptor` (which copes with a hello split over segments and records), and put back
//! with `rewind`, so the connection can then be forwarded as is or terminated.

use crate::metrics::EntrypointCounters;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// What the start of a connection says.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// A TLS ClientHello, with the server name it asks for (lowercase), if any.
    Tls(Option<String>),
    /// Not TLS.
    Plain,
}

/// Why no hello was read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelloError {
    #[error("no ClientHello within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before a complete ClientHello")]
    Closed,
    #[error("malformed ClientHello: {0}")]
    Malformed(String),
}

/// The largest hello read (records of 16 KiB plus headers, a few of them).
const MAX_HELLO: usize = 64 * 1024;

/// Parse the bytes read so far: Some(hello) when decided, None when more are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Hello>, HelloError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    if first != 0x16 {
        return Ok(Some(Hello::Plain));
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd = buf;
    while !rd.is_empty() {
        if acceptor.read_tls(&mut rd).map_err(|e| HelloError::Malformed(e.to_string()))? == 0 {
            break;
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Ok(Some(Hello::Tls(
            accepted.client_hello().server_name().map(|s| s.to_ascii_lowercase()),
        ))),
        Ok(None) => {
            if buf.len() >= MAX_HELLO {
                Err(HelloError::Malformed("ClientHello too large".into()))
            } else {
                Ok(None)
            }
        }
        Err((e, _)) => Err(HelloError::Malformed(e.to_string())),
    }
}

/// Read the start of `stream` until it is known to be TLS (with its SNI) or not, then rewind it.
pub async fn peek_hello(stream: &mut L4Stream, timeout: Duration) -> Result<Hello, HelloError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.map_err(|_| HelloError::Closed)?;
            if n == 0 {
                return Err(HelloError::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(h) = parse(&buf)? {
                return Ok(h);
            }
        }
    };
    let r = tokio::time::timeout(timeout, read).await.map_err(|_| HelloError::Timeout(timeout));
    let hello = r.and_then(|x| x);
    stream.rewind(&buf);
    hello
}

/// `peek_hello` for an entrypoint: None when the connection should close; a malformed or missing
/// hello is counted as rejected (a connection closed before any hello, a TCP health check, is not).
pub async fn hello_or_close(stream: &mut L4Stream, timeout: Duration, counters: &EntrypointCounters, entrypoint: &str) -> Option<Hello> {
    match peek_hello(stream, timeout).await {
        Ok(h) => Some(h),
        Err(e) => {
            log::debug!("{entrypoint}: {e}");
            if e != HelloError::Closed {
                counters.rejected_tls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            None
        }
    }
}
