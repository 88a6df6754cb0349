//! The accept loop of an http or https entrypoint, in place of Pingora's listening service.
//!
//! Pingora spawns one task per accepted connection whose future holds a TLS handshake's state
//! inline (whether the listener has TLS or not) and a 60 s handshake timer, for the connection's
//! whole life: about 13 KiB per idle keep-alive connection, and a large future moved into every
//! new task. Here a connection's task holds only what lariat's own layers need (`Graceful`, the
//! TLS front or the parked wait and the fast lane). Listening sockets come from, and are
//! recorded in, Pingora's table of listening descriptors, so `lariat --upgrade` hands them to the
//! next process exactly as it does for Pingora's own listeners.
//!
//! Accepted sockets hold back their ACKs (TCP_QUICKACK off on the listener, which they inherit),
//! as HAProxy's HTTP frontends do (`option tcp-smart-accept`): the kernel otherwise acknowledges
//! a new connection's request at once, one segment for nothing, since the response carries the
//! acknowledgement a moment later. 12 -> 11 segments per request with a new connection per
//! request (bench/RESULTS.md). Where the client may be waiting for that ACK before sending more
//! (a request head or body that has not all arrived, so a Nagle client holds its next small
//! write), [`ack_now`] sends it.
//!
//! A connection is accepted with `accept4` itself (non-blocking, close-on-exec) and handed over
//! outside tokio's event loop: a plain HTTP connection joins it only when it has to wait
//! (`crate::proxy::sock`), one that starts with TLS or a PROXY header at once.

use async_trait::async_trait;
use pingora_core::server::{ListenFds, ShutdownWatch};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Pending connections the kernel queues for a listener (as Pingora's listeners do).
const BACKLOG: i32 = 65535;

/// Acknowledge what the client sent now, and acknowledge at once from here on: the request is
/// not all here, and a client with Nagle's algorithm on may hold its next write until its last
/// one is acknowledged. `fd` is an accepted connection's socket.
pub fn ack_now(fd: std::os::fd::RawFd) {
    // SAFETY: the caller's stream owns `fd` and outlives this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = socket2::SockRef::from(&fd).set_tcp_quickack(true);
}

pub struct Entrypoint<A> {
    name: String,
    addr: SocketAddr,
    app: Option<Arc<A>>,
}

impl<A> Entrypoint<A> {
    pub fn new(name: String, addr: SocketAddr, app: A) -> Entrypoint<A> {
        Entrypoint {
            name,
            addr,
            app: Some(Arc::new(app)),
        }
    }
}

/// Options the connections accepted on `socket` inherit from it (Linux copies them from the
/// listener), so that no accepted connection needs a system call for them: TCP_NODELAY, and
/// TCP_QUICKACK off (see the module's doc).
fn accepted_inherit(socket: &socket2::Socket) {
    let _ = socket.set_tcp_nodelay(true);
    let _ = socket.set_tcp_quickack(false);
}

/// The listening socket for `addr`: the one a previous lariat handed over (`--upgrade`), else a
/// new one, recorded so that the next upgrade can hand it on.
fn listener(addr: SocketAddr, fds: Option<&ListenFds>) -> std::io::Result<std::net::TcpListener> {
    let key = addr.to_string();
    if let Some(fds) = fds {
        if let Some(fd) = fds.lock().get(&key).copied() {
            // SAFETY: the descriptor came from the previous process for this address and is
            // owned by nothing else in this one.
            let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            let socket = socket2::SockRef::from(&listener);
            socket.listen(BACKLOG)?;
            socket.set_nonblocking(true)?;
            accepted_inherit(&socket);
            return Ok(listener);
        }
    }
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    accepted_inherit(&socket);
    let listener: std::net::TcpListener = socket.into();
    if let Some(fds) = fds {
        fds.lock().add(key, listener.as_raw_fd());
    }
    Ok(listener)
}

/// The listener in tokio's event loop, read-only interest.
fn watch(listener: std::net::TcpListener) -> std::io::Result<AsyncFd<std::net::TcpListener>> {
    // SAFETY: the AsyncFd owns the listener, whose descriptor stays open and the same until the
    // AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// The next connection, non-blocking and left out of the event loop (the connection decides
/// when it joins, `crate::proxy::sock`), with its peer's address.
async fn accept(listener: &AsyncFd<std::net::TcpListener>) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        if let Ok(accepted) = ready.try_io(|l| accept4(l.get_ref())) {
            return accepted;
        }
    }
}

fn accept4(listener: &std::net::TcpListener) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    // SAFETY: accept4 writes at most `len` bytes of address into the storage try_init provides.
    let (fd, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let fd = libc::accept4(listener.as_raw_fd(), storage.cast(), len, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
            if fd < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(fd)
            }
        })?
    };
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let tcp = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let peer = addr
        .as_socket()
        .ok_or_else(|| std::io::Error::other("a connection from a non-IP address"))?;
    Ok((tcp, peer))
}

/// What serves the connections an entrypoint accepts.
pub trait Accept: Send + Sync + 'static {
    /// Serve one connection for its whole life. The future is the connection's task, spawned
    /// as it is (not boxed): what it holds across an await is what every open connection costs.
    /// `tcp` is non-blocking and not yet registered with tokio's event loop.
    fn accepted(self: Arc<Self>, tcp: std::net::TcpStream, peer: SocketAddr, shutdown: ShutdownWatch) -> impl Future<Output = ()> + Send;
    /// The listener has closed (a stop or an upgrade): let open connections finish.
    fn cleanup(&self) -> impl Future<Output = ()> + Send;
}

#[async_trait]
impl<A: Accept> pingora_core::services::Service for Entrypoint<A> {
    async fn start_service(&mut self, fds: Option<ListenFds>, mut shutdown: ShutdownWatch, _listeners_per_fd: usize) {
        let Some(app) = self.app.take() else { return };
        let listener = match listener(self.addr, fds.as_ref()).and_then(watch) {
            Ok(l) => l,
            Err(e) => {
                log::error!("{}: cannot listen on {}: {e}", self.name, self.addr);
                return;
            }
        };
        loop {
            let accepted = tokio::select! {
                a = accept(&listener) => a,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
            };
            match accepted {
                Ok((tcp, peer)) => {
                    tokio::spawn(app.clone().accepted(tcp, peer, shutdown.clone()));
                }
                Err(e) => {
                    log::error!("{}: accept failed: {e}", self.name);
                    // Out of descriptors or memory: accept would fail again at once; let some
                    // close (the connection stays queued meanwhile).
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        drop(listener);
        app.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An accepted connection has TCP_NODELAY from its listener, and does not acknowledge its
    /// request on its own: the response carries the ACK. `ack_now` turns that off for a
    /// connection whose request is still coming.
    #[test]
    fn accepted_sockets_send_at_once_and_hold_back_their_acks() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let l = listener(free, None).unwrap();
        let _client = std::net::TcpStream::connect(free).unwrap();
        l.set_nonblocking(false).unwrap();
        let (accepted, _) = l.accept().unwrap();
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.tcp_nodelay().unwrap(), "Nagle's algorithm on for the accepted socket");
        assert!(!sock.tcp_quickack().unwrap(), "the accepted socket acknowledges at once");
        ack_now(accepted.as_raw_fd());
        assert!(sock.tcp_quickack().unwrap());
    }

    /// A new listener is recorded in the descriptor table under its address; with the address
    /// already in the table (a previous process's socket, as `--upgrade` passes it), that socket
    /// is used instead of binding a new one.
    #[test]
    fn listeners_are_recorded_and_inherited() {
        let fds: ListenFds = Arc::new(pingora_core::server::Fds::new().into());
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let first = listener(free, Some(&fds)).unwrap();
        assert_eq!(fds.lock().get(&free.to_string()).copied(), Some(first.as_raw_fd()));
        // The "next process": its own descriptor for the same socket, as SCM_RIGHTS would give.
        let handed = fds.lock().get(&free.to_string()).map(|fd| unsafe { dup(*fd) }).unwrap();
        let next: ListenFds = Arc::new(pingora_core::server::Fds::new().into());
        next.lock().add(free.to_string(), handed);
        let second = listener(free, Some(&next)).unwrap();
        assert_eq!(second.as_raw_fd(), handed);
        // Both are the one listening socket: a client connecting is accepted by either.
        let _client = std::net::TcpStream::connect(free).unwrap();
        second.set_nonblocking(false).unwrap();
        assert!(second.accept().is_ok());
        drop(first);
    }

    unsafe fn dup(fd: i32) -> i32 {
        let owned = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().unwrap();
        std::os::fd::IntoRawFd::into_raw_fd(owned)
    }
}
