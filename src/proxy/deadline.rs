//! `client_header_timeout` against slow clients (slowloris): a connection's first request head must
//! arrive whole within the timeout, however slowly its bytes trickle in. Past it, lariat answers
//! 408 and closes; the connection holds nothing but its socket meanwhile. Later requests on a
//! kept-alive connection fall under `idle_timeout` and the per-read timeout.

use super::below::Below;
use crate::metrics::EntrypointCounters;
use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const TIMEOUT_RESPONSE: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\nrequest timeout\n";

pub struct HeadDeadline {
    inner: Below,
    /// Until the first "\r\n\r\n" is read: when the head must have arrived by.
    deadline: Option<Instant>,
    /// The timer for `deadline`, made only once a read has to wait: most connections bring
    /// their head with them, and a timer per connection (allocated, registered, and waking the
    /// runtime's driver when it is the earliest) was a measurable part of a short connection.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The last bytes read, to find "\r\n\r\n" across reads.
    tail: Tail,
    counters: Arc<EntrypointCounters>,
    /// Bytes read ahead while the connection was parked between requests, served first.
    ahead: Vec<u8>,
}

/// Up to the last three bytes of what was read: a "\r\n\r\n" may straddle two reads.
#[derive(Default)]
struct Tail {
    bytes: [u8; 3],
    len: u8,
}

impl Tail {
    /// Whether "\r\n\r\n" ends within `data`, counting the bytes kept from earlier reads.
    fn saw_end(&mut self, data: &[u8]) -> bool {
        const END: &[u8] = b"\r\n\r\n";
        // The kept bytes followed by the first three of `data`: where a split "\r\n\r\n" lies.
        let held = self.len as usize;
        let k = data.len().min(3);
        let mut seam = [0u8; 6];
        seam[..held].copy_from_slice(&self.bytes[..held]);
        seam[held..held + k].copy_from_slice(&data[..k]);
        let seam = &seam[..held + k];
        let found = seam.windows(4).any(|w| w == END) || data.windows(4).any(|w| w == END);
        let last = if data.len() >= 3 {
            &data[data.len() - 3..]
        } else {
            &seam[seam.len().saturating_sub(3)..]
        };
        self.bytes[..last.len()].copy_from_slice(last);
        self.len = last.len() as u8;
        found
    }
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeadDeadline({:?})", self.inner)
    }
}

impl HeadDeadline {
    pub fn wrap(inner: Below, timeout: Duration, counters: Arc<EntrypointCounters>) -> Stream {
        Box::new(HeadDeadline {
            inner,
            deadline: Some(Instant::now() + timeout),
            sleep: None,
            tail: Tail::default(),
            counters,
            ahead: Vec::new(),
        })
    }

    /// The client's address: as accepted, or as a PROXY header or the TLS layer's digest has it.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.inner.client_addr()
    }

    /// Poll for the next request on a kept-alive connection and keep its first bytes (up to
    /// 1 KiB) to be read first. Ready(Ok(0)): the client closed. The buffer lives on the stack
    /// for the poll only: a parked connection that waits holds no buffer at all.
    pub fn poll_read_ahead(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
        let mut rb = ReadBuf::uninit(&mut buf);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                self.ahead.extend_from_slice(rb.filled());
                Poll::Ready(Ok(rb.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// See [`Below::send_more`].
    pub fn send_more(&self, data: &[u8]) -> usize {
        self.inner.send_more(data)
    }

    /// Put bytes already read back in front of the stream, to be read again.
    pub fn unread(&mut self, mut bytes: Vec<u8>) {
        bytes.extend_from_slice(&self.ahead);
        self.ahead = bytes;
    }

    /// Whether "\r\n\r\n" ends within `data`, counting the last bytes of earlier reads.
    fn saw_end_of_head(&mut self, data: &[u8]) -> bool {
        self.tail.saw_end(data)
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.ahead.is_empty() {
            let n = self.ahead.len().min(buf.remaining());
            buf.put_slice(&self.ahead[..n]);
            self.ahead.drain(..n);
            if self.ahead.is_empty() {
                self.ahead = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        if self.sleep.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready()) {
            return Poll::Ready(Err(self.timed_out(cx)));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Some(deadline) = self.deadline else {
            return r;
        };
        match &r {
            Poll::Ready(Ok(())) if self.saw_end_of_head(&buf.filled()[before..]) => {
                self.deadline = None;
                self.sleep = None;
            }
            Poll::Pending if self.sleep.is_none() => {
                let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(self.timed_out(cx)));
                }
                self.sleep = Some(sleep);
            }
            _ => {}
        }
        r
    }
}

impl HeadDeadline {
    /// The head did not arrive in time: count it, send 408 if the socket takes it now, and end.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> io::Error {
        self.deadline = None;
        self.sleep = None;
        self.counters.bad_timeout.fetch_add(1, Ordering::Relaxed);
        // Best effort: the 408 goes out if the socket takes it now; the connection closes either way.
        let _ = Pin::new(&mut self.inner).poll_write(cx, TIMEOUT_RESPONSE);
        let _ = Pin::new(&mut self.inner).poll_flush(cx);
        io::Error::new(io::ErrorKind::TimedOut, "client_header_timeout")
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.ssl()?.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.ssl()?.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.ssl()?.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        // Bytes put back come first (the fast lane reads an h2c preface rather than peeking it).
        if !self.ahead.is_empty() {
            let n = self.ahead.len().min(buf.len());
            buf[..n].copy_from_slice(&self.ahead[..n]);
            return Ok(n == buf.len());
        }
        match &mut self.inner {
            // Pingora's peek reads and puts the bytes back; so does this one.
            Below::Tcp { tcp, .. } => {
                use tokio::io::AsyncReadExt;
                tcp.read_exact(buf).await?;
                self.ahead.extend_from_slice(buf);
                Ok(true)
            }
            Below::Stream(s) => s.try_peek(buf).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tail;

    /// The end of a head is found however the reads split it, and only once it is whole.
    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let text: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let mut t = Tail::default();
                let parts = [&text[..a], &text[a..b], &text[b..]];
                let found: Vec<bool> = parts.iter().map(|p| t.saw_end(p)).collect();
                let ends = [a, b, text.len()];
                // Found by the first read that completes the head (a read that brings no byte
                // finds nothing new).
                let first = ends.iter().position(|&e| e == text.len()).unwrap();
                for (i, f) in found.iter().enumerate() {
                    let expected = i == first || (i > first && parts[i].len() >= 4 && parts[i].windows(4).any(|w| w == b"\r\n\r\n"));
                    assert_eq!(*f, expected, "split at {a}/{b}, read {i}");
                }
            }
        }
        // Byte by byte, and a "\r\n\r" that is not completed.
        let mut t = Tail::default();
        let hits: Vec<usize> = text.iter().enumerate().filter(|(_, b)| t.saw_end(&[**b])).map(|(i, _)| i).collect();
        assert_eq!(hits, vec![text.len() - 1]);
        let mut t = Tail::default();
        assert!(!t.saw_end(b"a\r\n\r") && !t.saw_end(b"x\r\n") && t.saw_end(b"\r\n"));
    }
}
