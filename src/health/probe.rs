//! One active probe of one backend: a TCP connect, or an HTTP request whose 2xx/3xx status is
//! healthy. Bounded by the check's timeout.
//!
//! HTTP/1.1 checks keep their connection between probes (as Envoy's HTTP health checker does by
//! default) when the backend answers with a Content-Length body and does not ask to close: a probe
//! then costs a request and a response, not a TCP handshake and teardown. A kept connection that
//! turns out closed when reused is replaced by a new one within the same probe, so a backend
//! that closes idle connections is not reported down for it. TCP checks are connect-and-reset, as
//! HAProxy makes them, on reused sockets (see [`connect_only`]).

use super::state::HealthCell;
use crate::desired::{CheckKind, HealthCheckSpec};
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The sockets TCP checks reuse.
static SPARES: Spares = Spares::new();

/// A response head larger than this is not a health check answer.
const MAX_HEAD: usize = 8 * 1024;
/// A body larger than this is not read to keep the connection; the connection is closed instead.
const MAX_KEPT_BODY: usize = 64 * 1024;

/// Probe `addr` (its port replaced by the check's `port`, when set): (healthy, detail). `cell`
/// keeps an HTTP check's connection for the next probe.
pub async fn probe(addr: SocketAddr, check: &HealthCheckSpec, cell: &HealthCell) -> (bool, String) {
    let target = SocketAddr::new(addr.ip(), check.port.unwrap_or(addr.port()));
    match tokio::time::timeout(check.timeout, run(target, &check.kind, cell)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => (false, e.kind().to_string()),
        Err(_) => (false, "timed out".into()),
    }
}

async fn run(target: SocketAddr, kind: &CheckKind, cell: &HealthCell) -> std::io::Result<(bool, String)> {
    let CheckKind::Http {
        method,
        path,
        version,
        host,
    } = kind
    else {
        connect_only(target, &SPARES).await?;
        return Ok((true, "connected".into()));
    };
    let keep_alive = version == "HTTP/1.1";
    let host = host.clone().unwrap_or_else(|| target.to_string());
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let req = format!(
        "{method} {path} {version}\r\nHost: {host}\r\nUser-Agent: lariat-health-check\r\nAccept: */*\r\nConnection: {connection}\r\n\r\n"
    );
    // A kept connection first; if it was closed meanwhile (nothing comes back), a new one.
    if let Some(mut s) = cell.take_conn() {
        if let Ok(Some(answer)) = exchange(&mut s, req.as_bytes()).await {
            return Ok(finish(answer, s, cell, keep_alive));
        }
    }
    let mut s = TcpStream::connect(target).await?;
    match exchange(&mut s, req.as_bytes()).await? {
        Some(answer) => Ok(finish(answer, s, cell, keep_alive)),
        None => Ok((false, "closed without a response".into())),
    }
}

/// What a backend answered: its status (None: not HTTP) and whether the connection can carry
/// the next probe.
struct Answer {
    status: Option<u16>,
    reusable: bool,
}

fn finish(answer: Answer, s: TcpStream, cell: &HealthCell, keep_alive: bool) -> (bool, String) {
    let Some(status) = answer.status else {
        return (false, "not an HTTP response".into());
    };
    if keep_alive && answer.reusable {
        cell.keep_conn(s);
    }
    ((200..400).contains(&status), status.to_string())
}

/// A TCP check as HAProxy makes it: the handshake's last ACK is held back (TCP_QUICKACK off) and
/// the connection is reset as soon as the backend's SYN-ACK arrives. The backend's kernel has
/// answered, so something listens; its application never has to accept, and neither side keeps
/// a TIME_WAIT.
///
/// The socket is then disconnected (a connect to AF_UNSPEC, which sends the reset) rather than
/// closed, and kept for a later check: 5,000 checks a second would otherwise create and destroy
/// 5,000 sockets and files. A backend on the same host (loopback, a container's veth) has
/// answered before `connect` returns; a second `connect` tells so and the socket never enters
/// the event loop. Only a handshake still under way waits there.
async fn connect_only(target: SocketAddr, spares: &Spares) -> std::io::Result<()> {
    let sock = spares.take(target)?;
    let _ = sock.set_tcp_quickack(false);
    let to = SockAddr::from(target);
    let sock = match sock.connect(&to) {
        Ok(()) => sock,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => match sock.connect(&to) {
            Ok(()) => sock,
            Err(e) if e.raw_os_error() == Some(libc::EISCONN) => sock,
            Err(e) if e.raw_os_error() == Some(libc::EALREADY) => wait_connected(sock).await?,
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    spares.give_back(target, sock);
    Ok(())
}

/// Wait in the event loop for a handshake under way; the socket comes back out of it.
async fn wait_connected(sock: Socket) -> std::io::Result<Socket> {
    let stream = tokio::net::TcpStream::from_std(sock.into())?;
    stream.writable().await?;
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    Ok(stream.into_std()?.into())
}

/// Sockets of finished TCP checks, disconnected and ready for the next one, per address family.
pub struct Spares {
    v4: Mutex<Vec<Socket>>,
    v6: Mutex<Vec<Socket>>,
    /// Sockets created, over the process's life.
    made: AtomicUsize,
}

/// More than this many checks are rarely between connect and reset at once.
const MAX_SPARES: usize = 64;

impl Spares {
    pub const fn new() -> Self {
        Spares {
            v4: Mutex::new(Vec::new()),
            v6: Mutex::new(Vec::new()),
            made: AtomicUsize::new(0),
        }
    }

    fn list(&self, target: SocketAddr) -> &Mutex<Vec<Socket>> {
        if target.is_ipv4() {
            &self.v4
        } else {
            &self.v6
        }
    }

    /// A kept socket of `target`'s family, or a new one: non-blocking, closing with a reset.
    fn take(&self, target: SocketAddr) -> std::io::Result<Socket> {
        if let Some(s) = self.list(target).lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(s);
        }
        let sock = Socket::new(Domain::for_address(target), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
        self.made.fetch_add(1, Ordering::Relaxed);
        sock.set_linger(Some(std::time::Duration::ZERO))?;
        Ok(sock)
    }

    /// Reset the connection and keep the socket. One whose disconnect fails is closed instead.
    fn give_back(&self, target: SocketAddr, sock: Socket) {
        // An all-zero address is AF_UNSPEC: connect to it disconnects (RST from an open connection).
        let storage = SockAddrStorage::zeroed();
        let len = storage.size_of();
        // SAFETY: the storage is zeroed and `len` is its size.
        let unspec = unsafe { SockAddr::new(storage, len) };
        // The disconnect leaves ECONNRESET as the socket's pending error; the next connect
        // clears it (tcp_connect_init), so a later check never reads it as its own (tested).
        if sock.connect(&unspec).is_err() {
            return;
        }
        let mut list = self.list(target).lock().unwrap_or_else(|e| e.into_inner());
        if list.len() < MAX_SPARES {
            list.push(sock);
        }
    }
}

/// Send the request and read one response. Ok(None): the connection closed before any byte
/// of a response.
async fn exchange(s: &mut TcpStream, req: &[u8]) -> std::io::Result<Option<Answer>> {
    s.write_all(req).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break Some(i + 4);
        }
        if buf.len() > MAX_HEAD {
            break None;
        }
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            break None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let status = status_of(&buf);
    let Some(head_end) = head_end else {
        // A status line without a complete head (closed early or oversized): judged by the
        // status, never kept.
        return Ok(Some(Answer { status, reusable: false }));
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    let closes = header("connection").is_some_and(|v| v.split(',').any(|t| t.trim() == "close"));
    let length = if header("transfer-encoding").is_some() {
        None
    } else {
        header("content-length").and_then(|v| v.parse::<usize>().ok())
    };
    let mut reusable = !closes && length.is_some_and(|n| n <= MAX_KEPT_BODY);
    if reusable {
        // Read the rest of the body so the connection is clean for the next probe.
        let mut have = buf.len() - head_end;
        let want = length.unwrap_or(0);
        while have < want {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                reusable = false;
                break;
            }
            have += n;
        }
        reusable &= have == want;
    }
    Ok(Some(Answer { status, reusable }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status of an HTTP/1.x status line at the start of `buf`.
fn status_of(buf: &[u8]) -> Option<u16> {
    let line_end = find(buf, b"\r\n").unwrap_or(buf.len());
    let line = std::str::from_utf8(&buf[..line_end]).ok()?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && (100..600).contains(&code) => Some(code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (std::net::TcpListener, SocketAddr) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[tokio::test]
    async fn tcp_checks_reuse_one_socket_and_are_never_accepted() {
        let (up_listener, up) = listener();
        let down = listener().1; // its listener is gone: refused
        let spares = Spares::new();
        for round in 0..50 {
            connect_only(up, &spares).await.unwrap_or_else(|e| panic!("check {round}: {e}"));
        }
        assert_eq!(spares.made.load(Ordering::Relaxed), 1, "50 checks, one socket");
        assert_eq!(spares.v4.lock().unwrap().len(), 1);
        // The handshake's last ACK was held back and the connection reset: the backend's
        // application never saw a connection.
        let accepted = up_listener.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a check reached the backend's accept queue: {accepted:?}"
        );
        // A refused check reports it, and the checks after it still pass.
        let e = connect_only(down, &spares).await.expect_err("nothing listens there");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        for round in 0..5 {
            connect_only(up, &spares)
                .await
                .unwrap_or_else(|e| panic!("check {round} after a refusal: {e}"));
        }
        assert!(spares.made.load(Ordering::Relaxed) <= 2);
        if let Ok(l6) = std::net::TcpListener::bind("[::1]:0") {
            connect_only(l6.local_addr().unwrap(), &spares).await.expect("IPv6 check");
            assert_eq!(spares.v6.lock().unwrap().len(), 1, "an IPv6 socket is kept apart");
            assert_eq!(spares.v4.lock().unwrap().len(), 1);
        }
    }

    /// A kept socket whose next handshake has to wait in the event loop (a remote backend) must
    /// not read the reset of its previous check as its own failure.
    #[tokio::test]
    async fn a_kept_socket_carries_no_error_of_its_last_check() {
        let (_l, up) = listener();
        let spares = Spares::new();
        connect_only(up, &spares).await.expect("first check");
        let sock = spares.take(up).unwrap();
        assert_eq!(spares.made.load(Ordering::Relaxed), 1, "the kept socket");
        match sock.connect(&SockAddr::from(up)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => panic!("connect: {e}"),
        }
        let waited = tokio::time::timeout(std::time::Duration::from_secs(5), wait_connected(sock))
            .await
            .expect("bounded");
        waited.expect("connected, with no error left from the last check");
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 Busy\r\nX: y\r\n"), Some(503));
        assert_eq!(status_of(b"HTTP/1.1 200"), Some(200));
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 999 What\r\n"), None);
        assert_eq!(status_of(b""), None);
    }
}
