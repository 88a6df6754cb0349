//! The connection under an HTTP entrypoint's deadline layer: a plain TCP socket as accepted
//! (outside the event loop until it has to wait, `super::sock`), or Pingora's stream (after a
//! TLS handshake or a PROXY header).
//!
//! A plain HTTP connection needs nothing of Pingora's stream type (384 bytes with its digests and
//! timing fields, plus a 400-byte digest of the socket) while the fast lane serves it or it sits
//! idle; kept as the bare socket, it costs what tokio's socket costs. Pingora's path reads the
//! same things through the deadline layer's trait implementations: the digest of the socket is
//! made from the accepted address the first time it asks.

use super::sock::Sock;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, Ssl, Stream, TimingDigest};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub enum Below {
    /// A plain TCP connection as accepted.
    Tcp {
        tcp: Sock,
        peer: SocketAddr,
        /// Pingora's digest of the socket, made when Pingora's path first asks.
        digest: OnceLock<Arc<SocketDigest>>,
    },
    /// Pingora's stream: TLS, or a connection that began with a PROXY header.
    Stream(Stream),
}

impl std::fmt::Debug for Below {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Below::Tcp { tcp, peer, .. } => write!(f, "Tcp(fd {}, {peer})", tcp.as_raw_fd()),
            Below::Stream(s) => write!(f, "{s:?}"),
        }
    }
}

impl Below {
    pub fn tcp(tcp: Sock, peer: SocketAddr) -> Below {
        Below::Tcp {
            tcp,
            peer,
            digest: OnceLock::new(),
        }
    }

    /// The client's address: as accepted, or as the stream's digest has it (a PROXY header's
    /// source).
    pub fn client_addr(&self) -> Option<SocketAddr> {
        match self {
            Below::Tcp { peer, .. } => Some(*peer),
            Below::Stream(s) => super::tcp::client_of(s),
        }
    }

    pub fn id(&self) -> i32 {
        match self {
            Below::Tcp { tcp, .. } => tcp.as_raw_fd(),
            Below::Stream(s) => s.id(),
        }
    }

    /// Queue `data` without sending it yet (MSG_MORE), so that what follows — the FIN of a
    /// shutdown — leaves in the same segment. Plain TCP only; how much was queued, which may be
    /// less than all (0 when the socket is full or the stream is TLS).
    pub fn send_more(&self, data: &[u8]) -> usize {
        match self {
            Below::Tcp { tcp, .. } => tcp.send_more(data),
            Below::Stream(_) => 0,
        }
    }

    pub fn ssl(&self) -> Option<&dyn Ssl> {
        match self {
            Below::Tcp { .. } => None,
            Below::Stream(s) => Some(s.as_ref()),
        }
    }

    pub async fn shutdown(&mut self) {
        match self {
            Below::Tcp { tcp, .. } => {
                let _ = tokio::io::AsyncWriteExt::shutdown(tcp).await;
            }
            Below::Stream(s) => s.shutdown().await,
        }
    }
}

impl GetTimingDigest for Below {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        match self {
            Below::Tcp { .. } => Vec::new(),
            Below::Stream(s) => s.get_timing_digest(),
        }
    }
}

impl GetProxyDigest for Below {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        match self {
            Below::Tcp { .. } => None,
            Below::Stream(s) => s.get_proxy_digest(),
        }
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        if let Below::Stream(s) = self {
            s.set_proxy_digest(digest)
        }
    }
}

impl GetSocketDigest for Below {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        match self {
            Below::Tcp { tcp, peer, digest } => Some(
                digest
                    .get_or_init(|| {
                        let d = SocketDigest::from_raw_fd(tcp.as_raw_fd());
                        let _ = d.peer_addr.set(Some((*peer).into()));
                        Arc::new(d)
                    })
                    .clone(),
            ),
            Below::Stream(s) => s.get_socket_digest(),
        }
    }
    fn set_socket_digest(&mut self, new: SocketDigest) {
        match self {
            Below::Tcp { digest, .. } => *digest = OnceLock::from(Arc::new(new)),
            Below::Stream(s) => s.set_socket_digest(new),
        }
    }
}

impl AsyncRead for Below {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Below::Tcp { tcp, .. } => Pin::new(tcp).poll_read(cx, buf),
            Below::Stream(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Below {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Below::Tcp { tcp, .. } => Pin::new(tcp).poll_write(cx, buf),
            Below::Stream(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Below::Tcp { tcp, .. } => Pin::new(tcp).poll_flush(cx),
            Below::Stream(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Below::Tcp { tcp, .. } => Pin::new(tcp).poll_shutdown(cx),
            Below::Stream(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Below::Tcp { tcp, .. } => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Below::Stream(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Below::Tcp { tcp, .. } => tcp.is_write_vectored(),
            Below::Stream(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pump::tcp_info;
    use super::*;
    use std::io::Read;

    /// A response sent just before the shutdown and the FIN leave in one segment.
    #[tokio::test]
    async fn the_last_bytes_and_the_fin_share_a_segment() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (tcp, peer) = l.accept().unwrap();
        tcp.set_nonblocking(true).unwrap();
        let mut below = Below::tcp(Sock::direct(tcp), peer);
        let before = tcp_info(client.as_raw_fd()).tcpi_segs_in;
        let answer = b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
        assert_eq!(below.send_more(answer), answer.len());
        client.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 128];
        let early = client.read(&mut buf);
        assert!(
            matches!(&early, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "queued until the shutdown, not sent: {early:?}"
        );
        below.shutdown().await;
        client.set_nonblocking(false).unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, answer);
        assert_eq!(
            tcp_info(client.as_raw_fd()).tcpi_segs_in - before,
            1,
            "the answer and the FIN in one segment"
        );
    }
}
