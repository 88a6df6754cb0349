//! Copying a TCP connection both ways: buffers that start at 8 KiB and grow to 64 KiB once a read
//! fills them (short exchanges stay small and cheap to set up; bulk transfers get few, large
//! reads), a half-close passed on to the other side,
//! byte counters updated as data flows (not only at the end), and an idle timeout over both
//! directions together. When a side's last bytes and its FIN have both arrived, they leave for the
//! other side in one segment (as HAProxy sends them): the bytes are queued with MSG_MORE and the
//! shutdown's FIN joins them.

use futures_util::FutureExt;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// A direction's buffer starts at this size...
const FIRST_BUF: usize = 8 * 1024;
/// ...and grows to this once a read fills it.
const BULK_BUF: usize = 64 * 1024;

/// Queue `data` on a TCP socket without sending it yet (MSG_MORE), so that what follows — a
/// shutdown's FIN — leaves in the same segment. How much was queued.
pub fn send_more(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(&fd).send_with_flags(data, libc::MSG_MORE | libc::MSG_DONTWAIT)
}

/// Copy `r` to `w` until EOF (then shut `w`'s write side), counting bytes (in `live`, shared,
/// and `mine`, this connection's) and marking activity. `w_fd`: `w`'s socket, when what is
/// written to `w` goes to it unchanged (plain TCP; `w` is flushed after every write).
#[allow(clippy::too_many_arguments)]
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    w_fd: Option<RawFd>,
    live: &AtomicU64,
    mine: &AtomicU64,
    last: &AtomicU64,
    base: Instant,
) -> io::Result<()> {
    let mut buf = vec![0u8; FIRST_BUF];
    loop {
        let mut n = r.read(&mut buf).await?;
        let full = n == buf.len();
        last.store(base.elapsed().as_millis() as u64, Relaxed);
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        // A short read drained the socket. If the peer's FIN has come too, the event loop has
        // seen it and this read says so; otherwise it is answered from the event loop's state,
        // with no system call.
        let mut eof = false;
        let mut failed = None;
        if !full {
            match r.read(&mut buf[n..]).now_or_never() {
                Some(Ok(0)) => eof = true,
                Some(Ok(more)) => n += more,
                Some(Err(e)) => failed = Some(e),
                None => {}
            }
        }
        let queued = match w_fd {
            // SAFETY: `w_fd` belongs to `w`, which is alive.
            Some(fd) if eof => send_more(unsafe { BorrowedFd::borrow_raw(fd) }, &buf[..n]).unwrap_or(0),
            _ => 0,
        };
        w.write_all(&buf[queued..n]).await?;
        // The client side may be buffered (Pingora's L4 stream): send what was read now.
        w.flush().await?;
        live.fetch_add(n as u64, Relaxed);
        mine.fetch_add(n as u64, Relaxed);
        if let Some(e) = failed {
            return Err(e);
        }
        if eof {
            let _ = w.shutdown().await;
            return Ok(());
        }
        if full && buf.len() < BULK_BUF {
            buf.resize(BULK_BUF, 0);
        }
    }
}

/// The kernel's TCP_INFO for a socket.
#[cfg(test)]
pub(crate) fn tcp_info(fd: RawFd) -> libc::tcp_info {
    // SAFETY: tcp_info is plain data; the kernel fills at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO");
    info
}

/// How a copy ended.
#[derive(Debug, PartialEq, Eq)]
pub enum How {
    /// Both sides closed.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    Error(io::ErrorKind),
}

/// How a copy ended, and the bytes client→backend and backend→client.
#[derive(Debug, PartialEq, Eq)]
pub struct End {
    pub how: How,
    pub up: u64,
    pub down: u64,
}

/// The sockets under the two sides, when bytes written to a side reach its socket unchanged
/// (plain TCP, not TLS): then a side's last bytes and FIN go to the other in one segment.
#[derive(Clone, Copy, Default)]
pub struct Fds {
    pub client: Option<RawFd>,
    pub backend: Option<RawFd>,
}

/// Copy `client` and `backend` both ways until both are done, one fails, or nothing moves for
/// `idle`. `rx` counts bytes from the client, `tx` bytes to it.
pub async fn both_ways<C, B>(client: C, backend: B, fds: Fds, idle: Duration, rx: &AtomicU64, tx: &AtomicU64) -> End
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let base = Instant::now();
    let (last, up, down) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let (cr, cw) = tokio::io::split(client);
    let (br, bw) = tokio::io::split(backend);
    let copy = async {
        tokio::try_join!(
            pump(cr, bw, fds.backend, rx, &up, &last, base),
            pump(br, cw, fds.client, tx, &down, &last, base)
        )
    };
    let watch = async {
        loop {
            let quiet = base.elapsed().saturating_sub(Duration::from_millis(last.load(Relaxed)));
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    let how = tokio::select! {
        r = copy => match r {
            Ok(_) => How::Closed,
            Err(e) => How::Error(e.kind()),
        },
        _ = watch => How::Idle,
    };
    End {
        how,
        up: up.load(Relaxed),
        down: down.load(Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (mut client, proxy_c) = tokio::io::duplex(1024);
        let (proxy_b, mut backend) = tokio::io::duplex(1024);
        let (rx, tx) = (AtomicU64::new(0), AtomicU64::new(0));
        let copy = tokio::spawn(async move {
            let (rx, tx) = (rx, tx);
            let end = both_ways(proxy_c, proxy_b, Fds::default(), Duration::from_secs(5), &rx, &tx).await;
            (end, rx.load(Relaxed), tx.load(Relaxed))
        });
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping", "the half-close reached the backend");
        backend.write_all(b"pong!").await.unwrap();
        backend.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong!");
        assert_eq!(
            copy.await.unwrap(),
            (
                End {
                    how: How::Closed,
                    up: 4,
                    down: 5
                },
                4,
                5
            )
        );
    }

    /// A backend that answers and closes at once: its answer and its FIN reach the client in one
    /// segment, and the client's own close still reaches the backend.
    #[tokio::test]
    async fn the_last_bytes_and_the_fin_reach_the_other_side_together() {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = std::net::TcpStream::connect(front.local_addr().unwrap()).unwrap();
        let (proxy_c, _) = front.accept().await.unwrap();
        let back = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_b = tokio::net::TcpStream::connect(back.local_addr().unwrap()).await.unwrap();
        let (backend, _) = back.accept().await.unwrap();
        let mut backend = backend.into_std().unwrap();
        backend.set_nonblocking(false).unwrap();
        backend.write_all(b"pong!").unwrap();
        backend.shutdown(std::net::Shutdown::Write).unwrap();
        // Both the answer and the FIN have reached the proxy's socket (it is in CLOSE_WAIT).
        for _ in 0..500 {
            if tcp_info(proxy_b.as_raw_fd()).tcpi_state == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(tcp_info(proxy_b.as_raw_fd()).tcpi_state, 8, "the backend's FIN arrived");
        let before = tcp_info(client.as_raw_fd()).tcpi_segs_in;
        let fds = Fds {
            client: Some(proxy_c.as_raw_fd()),
            backend: Some(proxy_b.as_raw_fd()),
        };
        let copy = tokio::spawn(async move {
            let (rx, tx) = (AtomicU64::new(0), AtomicU64::new(0));
            both_ways(proxy_c, proxy_b, fds, Duration::from_secs(5), &rx, &tx).await
        });
        let got = tokio::task::spawn_blocking(move || {
            client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            let segs = tcp_info(client.as_raw_fd()).tcpi_segs_in - before;
            client.shutdown(std::net::Shutdown::Write).unwrap();
            (got, segs)
        })
        .await
        .unwrap();
        assert_eq!(got, (b"pong!".to_vec(), 1), "the answer and the FIN in one segment");
        // Off the runtime's thread: the copy task has to run to pass the client's close on.
        let rest = tokio::task::spawn_blocking(move || {
            let mut rest = Vec::new();
            backend.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            backend.read_to_end(&mut rest).map(|_| rest)
        })
        .await
        .unwrap();
        assert_eq!(rest.unwrap(), b"", "the client's close reached the backend");
        let end = tokio::time::timeout(Duration::from_secs(5), copy).await.unwrap().unwrap();
        assert_eq!((end.how, end.up, end.down), (How::Closed, 0, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_end() {
        let (_client, proxy_c) = tokio::io::duplex(1024);
        let (proxy_b, _backend) = tokio::io::duplex(1024);
        let (rx, tx) = (AtomicU64::new(0), AtomicU64::new(0));
        assert_eq!(
            both_ways(proxy_c, proxy_b, Fds::default(), Duration::from_secs(30), &rx, &tx)
                .await
                .how,
            How::Idle
        );
    }
}
