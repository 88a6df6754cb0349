//! Copying a TCP connection both ways: buffers that start at 8 KiB and grow to 64 KiB once a read
//! fills them (short exchanges stay small and cheap to set up; bulk transfers get few, large
//! reads), a half-close passed on to the other side,
//! byte counters updated as data flows (not only at the end), and an idle timeout over both
//! directions together.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// A direction's buffer starts at this size...
const FIRST_BUF: usize = 8 * 1024;
/// ...and grows to this once a read fills it.
const BULK_BUF: usize = 64 * 1024;

/// Copy `r` to `w` until EOF (then shut `w`'s write side), counting bytes (in `live`, shared,
/// and `mine`, this connection's) and marking activity.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    live: &AtomicU64,
    mine: &AtomicU64,
    last: &AtomicU64,
    base: Instant,
) -> io::Result<()> {
    let mut buf = vec![0u8; FIRST_BUF];
    loop {
        let n = r.read(&mut buf).await?;
        let full = n == buf.len();
        last.store(base.elapsed().as_millis() as u64, Relaxed);
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        // The client side may be buffered (Pingora's L4 stream): send what was read now.
        w.flush().await?;
        live.fetch_add(n as u64, Relaxed);
        mine.fetch_add(n as u64, Relaxed);
        if full && buf.len() < BULK_BUF {
            buf.resize(BULK_BUF, 0);
        }
    }
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

/// Copy `client` and `backend` both ways until both are done, one fails, or nothing moves for
/// `idle`. `rx` counts bytes from the client, `tx` bytes to it.
pub async fn both_ways<C, B>(client: C, backend: B, idle: Duration, rx: &AtomicU64, tx: &AtomicU64) -> End
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let base = Instant::now();
    let (last, up, down) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let (cr, cw) = tokio::io::split(client);
    let (br, bw) = tokio::io::split(backend);
    let copy = async { tokio::try_join!(pump(cr, bw, rx, &up, &last, base), pump(br, cw, tx, &down, &last, base)) };
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
            let end = both_ways(proxy_c, proxy_b, Duration::from_secs(5), &rx, &tx).await;
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

    #[tokio::test(start_paused = true)]
    async fn idle_connections_end() {
        let (_client, proxy_c) = tokio::io::duplex(1024);
        let (proxy_b, _backend) = tokio::io::duplex(1024);
        let (rx, tx) = (AtomicU64::new(0), AtomicU64::new(0));
        assert_eq!(both_ways(proxy_c, proxy_b, Duration::from_secs(30), &rx, &tx).await.how, How::Idle);
    }
}
