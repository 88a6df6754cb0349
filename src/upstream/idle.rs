//! A backend's idle HTTP/1 connections, kept between requests of the L7 fast lane
//! (`proxy::lane`) for reuse. Lock-free; bounded in count and in idle time. A connection the
//! backend has closed (or sent anything on) while it waited is found out when it is taken, with
//! no syscall when nothing has arrived on it since its last read.

use crossbeam_queue::SegQueue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// At most this many idle connections per backend; more are closed when given back.
const MAX_IDLE: usize = 1024;

/// A connection idle for longer than this is closed instead of reused (backends commonly close
/// theirs after 60 s or more; reusing one as it closes would cost a retry).
pub const MAX_IDLE_TIME: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct IdleConns {
    queue: SegQueue<(TcpStream, Instant)>,
    len: AtomicUsize,
}

impl IdleConns {
    /// An idle connection still open and quiet, if there is one.
    pub fn take(&self, now: Instant) -> Option<TcpStream> {
        while let Some((conn, since)) = self.queue.pop() {
            self.len.fetch_sub(1, Ordering::Relaxed);
            if now.saturating_duration_since(since) > MAX_IDLE_TIME {
                continue;
            }
            // Quiet: nothing to read, not closed.
            let mut byte = [0u8; 1];
            if matches!(conn.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                return Some(conn);
            }
        }
        None
    }

    /// Keep a connection whose last response ended cleanly.
    pub fn put(&self, conn: TcpStream, now: Instant) {
        if self.len.fetch_add(1, Ordering::Relaxed) >= MAX_IDLE {
            self.len.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.queue.push((conn, now));
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn closed_and_stale_connections_are_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = IdleConns::default();
        let now = Instant::now();

        // Open and quiet: reused.
        let a = TcpStream::connect(addr).await.unwrap();
        let (_a_peer, _) = listener.accept().await.unwrap();
        pool.put(a, now);
        assert!(pool.take(now).is_some());

        // Closed by the backend while idle: dropped.
        let b = TcpStream::connect(addr).await.unwrap();
        let (b_peer, _) = listener.accept().await.unwrap();
        drop(b_peer);
        b.readable().await.unwrap();
        pool.put(b, now);
        assert!(pool.take(now).is_none());
        assert_eq!(pool.len(), 0);

        // Sent something unasked for: dropped.
        let c = TcpStream::connect(addr).await.unwrap();
        let (mut c_peer, _) = listener.accept().await.unwrap();
        c_peer.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        c.readable().await.unwrap();
        pool.put(c, now);
        assert!(pool.take(now).is_none());

        // Idle too long: dropped.
        let d = TcpStream::connect(addr).await.unwrap();
        let (_d_peer, _) = listener.accept().await.unwrap();
        pool.put(d, now);
        assert!(pool.take(now + MAX_IDLE_TIME + Duration::from_secs(1)).is_none());
    }
}
