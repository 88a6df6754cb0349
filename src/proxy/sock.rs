//! An accepted plain-TCP socket that joins tokio's event loop only when it has to wait.
//!
//! A connection that carries one request (a client that sends `Connection: close`, a health
//! checker, a script) usually has its request waiting when it is accepted, and its response fits
//! the socket's buffer. Registered with the event loop at once, as tokio's listener does, it
//! would cost an `epoll_ctl` to add it and another to remove it, the registration's state, and a
//! trip through the event loop before the first read (a new registration is not known to be
//! readable until epoll says so, though the request is already there). [`Sock::Direct`] reads
//! and writes the non-blocking socket itself; the first read or write that would block
//! registers it ([`Sock::Evented`]) and waits there, as every keep-alive connection does between
//! its requests. epoll reports a readiness that came before the registration, so nothing is
//! missed between the failed call and the registration. A direct read or write spends a unit of
//! the task's cooperative budget as tokio's own sockets do, so a client that keeps its socket
//! readable (pipelined requests lariat answers itself) cannot hold the worker thread.
//!
//! If joining the event loop fails (the system's epoll watches exhausted), tokio has closed the
//! socket by then; the connection ends with that error.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub enum Sock {
    /// Not registered: every read and write so far was answered at once.
    Direct(std::net::TcpStream),
    /// Registered with tokio's event loop.
    Evented(tokio::net::TcpStream),
    /// Registration failed; the socket is closed.
    Lost,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Sock {
    /// `tcp` must be non-blocking (accepted with SOCK_NONBLOCK).
    pub fn direct(tcp: std::net::TcpStream) -> Sock {
        Sock::Direct(tcp)
    }

    pub fn is_evented(&self) -> bool {
        matches!(self, Sock::Evented(_))
    }

    /// The registered socket, registering it first if it is not.
    fn evented(&mut self) -> io::Result<&mut tokio::net::TcpStream> {
        if matches!(self, Sock::Direct(_)) {
            let Sock::Direct(tcp) = std::mem::replace(self, Sock::Lost) else {
                unreachable!()
            };
            *self = Sock::Evented(tokio::net::TcpStream::from_std(tcp)?);
        }
        match self {
            Sock::Evented(tcp) => Ok(tcp),
            _ => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the socket could not join the event loop",
            )),
        }
    }

    /// Queue `data` with MSG_MORE (see `Below::send_more`): how much was queued, 0 if none could be.
    pub fn send_more(&self, data: &[u8]) -> usize {
        match self {
            Sock::Direct(tcp) => super::pump::send_more(tcp.as_fd(), data).unwrap_or(0),
            Sock::Evented(tcp) => tcp
                .try_io(tokio::io::Interest::WRITABLE, || super::pump::send_more(tcp.as_fd(), data))
                .unwrap_or(0),
            Sock::Lost => 0,
        }
    }
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Sock::Direct(tcp) => tcp.as_raw_fd(),
            Sock::Evented(tcp) => tcp.as_raw_fd(),
            Sock::Lost => -1,
        }
    }
}

/// One `recv` into the unfilled part of `buf`, without initialising it first.
fn recv(fd: BorrowedFd<'_>, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    // SAFETY: the kernel writes at most `unfilled.len()` bytes into memory valid for writes and
    // de-initialises nothing; MaybeUninit<u8> has u8's layout.
    let n = unsafe {
        let unfilled = buf.unfilled_mut();
        libc::recv(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len(), 0)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised the first n bytes.
    unsafe { buf.assume_init(n as usize) };
    buf.advance(n as usize);
    Ok(())
}

/// One call on the socket outside the event loop, spending a unit of the task's cooperative
/// budget as tokio's own sockets do (Pending when it is spent: the task is woken and yields).
/// `None` when the call would block (or was interrupted): the caller joins the event loop.
fn direct<T>(cx: &mut Context<'_>, call: impl FnOnce() -> io::Result<T>) -> Poll<Option<io::Result<T>>> {
    let coop = ready!(tokio::task::coop::poll_proceed(cx));
    match call() {
        Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => Poll::Ready(None),
        done => {
            coop.made_progress();
            Poll::Ready(Some(done))
        }
    }
}

impl AsyncRead for Sock {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Sock::Direct(tcp) = this {
            if let Some(done) = ready!(direct(cx, || recv(tcp.as_fd(), buf))) {
                return Poll::Ready(done);
            }
        }
        Pin::new(this.evented()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for Sock {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Sock::Direct(tcp) = this {
            // std's send passes MSG_NOSIGNAL.
            if let Some(done) = ready!(direct(cx, || (&*tcp).write(data))) {
                return Poll::Ready(done);
            }
        }
        Pin::new(this.evented()?).poll_write(cx, data)
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Sock::Direct(tcp) = this {
            if let Some(done) = ready!(direct(cx, || (&*tcp).write_vectored(bufs))) {
                return Poll::Ready(done);
            }
        }
        Pin::new(this.evented()?).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Sock::Direct(tcp) => Poll::Ready(tcp.shutdown(Shutdown::Write)),
            Sock::Evented(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Sock::Lost => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (Sock, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (Sock::direct(accepted), client)
    }

    /// A request that is there when read and a response that fits: the socket never joins the
    /// event loop.
    #[tokio::test]
    async fn a_connection_that_never_waits_stays_out_of_the_event_loop() {
        let (mut sock, mut client) = pair().await;
        client.write_all(b"ping").unwrap();
        // Until the bytes are there (loopback usually delivers before write returns), without
        // the event loop.
        let mut fds = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut fds, 1, 5000) }, 1);
        let mut buf = [0u8; 16];
        let n = sock.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        sock.write_all(b"pong").await.unwrap();
        sock.shutdown().await.unwrap();
        assert!(!sock.is_evented(), "registered though nothing waited");
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"pong");
    }

    /// A read that would block registers the socket, and the bytes that come after are reported
    /// by the event loop.
    #[tokio::test]
    async fn a_read_that_must_wait_joins_the_event_loop() {
        let (mut sock, mut client) = pair().await;
        let mut buf = [0u8; 16];
        let mut rb = ReadBuf::new(&mut buf);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut sock).poll_read(&mut cx, &mut rb).is_pending(), "nothing was sent");
        assert!(sock.is_evented());
        client.write_all(b"late").unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"late");
    }

    /// A client that keeps the socket readable does not keep the thread: direct reads spend the
    /// task's budget, and another task runs within a budget's worth of them.
    #[tokio::test]
    async fn direct_reads_yield_to_other_tasks() {
        const QUEUED: usize = 64 * 1024;
        let (mut sock, mut client) = pair().await;
        client.write_all(&[b'x'; QUEUED]).unwrap();
        let fd = sock.as_raw_fd();
        let queued = || {
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int.
            unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
            n as usize
        };
        for _ in 0..500 {
            if queued() >= QUEUED {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(queued(), QUEUED);
        let other_ran = Arc::new(AtomicBool::new(false));
        let flag = other_ran.clone();
        tokio::spawn(async move { flag.store(true, Ordering::Relaxed) });
        // One byte a read: QUEUED reads would complete without blocking.
        let mut byte = [0u8; 1];
        let mut reads = 0;
        while !other_ran.load(Ordering::Relaxed) && reads < QUEUED {
            assert_eq!(sock.read(&mut byte).await.unwrap(), 1);
            reads += 1;
        }
        assert!(other_ran.load(Ordering::Relaxed), "{reads} reads and the other task never ran");
        assert!(reads <= 1024, "the other task waited {reads} reads");
        assert!(!sock.is_evented(), "no read had to wait");
    }

    /// A write that would block (the client reads nothing) registers the socket and finishes
    /// once the client drains it; every byte arrives once, in order.
    #[tokio::test]
    async fn a_write_that_must_wait_joins_the_event_loop() {
        let (mut sock, mut client) = pair().await;
        // Fixed small buffers (no autotuning): 8 MiB cannot all be in flight.
        socket2::SockRef::from(&client).set_recv_buffer_size(64 * 1024).unwrap();
        if let Sock::Direct(tcp) = &sock {
            socket2::SockRef::from(tcp).set_send_buffer_size(64 * 1024).unwrap();
        }
        let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        tokio::time::timeout(Duration::from_secs(20), async {
            sock.write_all(&data).await.unwrap();
            sock.shutdown().await.unwrap();
        })
        .await
        .unwrap();
        assert!(sock.is_evented(), "8 MiB went out without waiting for the reader");
        drop(sock);
        assert!(reader.join().unwrap() == expected);
    }
}
