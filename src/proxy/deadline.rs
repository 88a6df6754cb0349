//! `client_header_timeout` against slow clients (slowloris): a connection's first request head must
//! arrive whole within the timeout, however slowly its bytes trickle in. Past it, lariat answers
//! 408 and closes; the connection holds nothing but its socket meanwhile. Later requests on a
//! kept-alive connection fall under `idle_timeout` and the per-read timeout.

use crate::metrics::EntrypointCounters;
use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::future::Future;
use std::io;
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
    inner: Stream,
    /// Until the first "\r\n\r\n" is read: when the head must have arrived by.
    deadline: Option<Instant>,
    /// The timer for `deadline`, made only once a read has to wait: most connections bring
    /// their head with them, and a timer per connection (allocated, registered, and waking the
    /// runtime's driver when it is the earliest) was a measurable part of a short connection.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The last bytes read, to find "\r\n\r\n" across reads.
    tail: Vec<u8>,
    counters: Arc<EntrypointCounters>,
    /// Bytes read ahead while the connection was parked between requests, served first.
    ahead: Vec<u8>,
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeadDeadline({:?})", self.inner)
    }
}

impl HeadDeadline {
    pub fn wrap(inner: Stream, timeout: Duration, counters: Arc<EntrypointCounters>) -> Stream {
        Box::new(HeadDeadline {
            inner,
            deadline: Some(Instant::now() + timeout),
            sleep: None,
            tail: Vec::with_capacity(8),
            counters,
            ahead: Vec::new(),
        })
    }

    /// Wait for the next request on a kept-alive connection and keep its first bytes (up to
    /// 1 KiB, so a parked connection holds no buffer) to be read first. Ok(0): the client closed.
    pub async fn read_ahead(&mut self) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        let n = self.inner.read(&mut buf).await?;
        self.ahead.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Put bytes already read back in front of the stream, to be read again.
    pub fn unread(&mut self, mut bytes: Vec<u8>) {
        bytes.extend_from_slice(&self.ahead);
        self.ahead = bytes;
    }

    /// Whether "\r\n\r\n" ends within `data`, counting the last bytes of earlier reads.
    fn saw_end_of_head(&mut self, data: &[u8]) -> bool {
        self.tail.extend_from_slice(data);
        let found = self.tail.windows(4).any(|w| w == b"\r\n\r\n");
        let keep = self.tail.len().saturating_sub(3);
        self.tail.drain(..keep);
        found
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
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
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
        self.inner.try_peek(buf).await
    }
}
