//! The kernel's floor under any HTTP/1 proxy on this machine: a forwarder that makes only the
//! system calls a proxy cannot avoid with the socket API and does nothing else. One thread, one
//! epoll set (level-triggered), a 16 KiB buffer on the stack; no parsing, no routing, no timers,
//! no allocation per request. It is a measuring instrument for `bench/run.sh` (`FLOOR=1`), not a
//! proxy: it trusts its client and its origin.
//!
//! - Keep-alive: each client connection is paired with a backend connection for its whole life,
//!   so a request costs `recv` from the client, `send` to the backend, `recv` from the backend and
//!   `send` to the client, plus a share of one `epoll_wait`, the four calls lariat, HAProxy and
//!   nginx make too.
//! - A request carrying `Connection: close`: the header's value is overwritten in place, so the
//!   origin keeps the backend connection (as lariat, HAProxy with `http-reuse` and nginx with
//!   `keepalive` keep theirs); the first read of the response is taken to be all of it (true of a
//!   small response on loopback), its `Connection: keep-alive` becomes `close`, it is sent with
//!   MSG_MORE, and the client connection is shut down and closed, so the FIN leaves with the
//!   response; the backend connection goes back to a pool.
//! - The listener has TCP_NODELAY and TCP_QUICKACK off, which accepted connections inherit (the
//!   fewest segments, as lariat's and HAProxy's HTTP listeners).
//!
//!   cargo build --release --example kernel_floor
//!   target/release/examples/kernel_floor LISTEN BACKEND [BACKEND ...]   # round robin

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Free,
    Client,
    Backend,
}

#[derive(Clone, Copy)]
struct Slot {
    role: Role,
    /// The paired connection's fd, or -1.
    peer: RawFd,
    /// A client whose request asked to close: close it after the response.
    closing: bool,
}

const FREE: Slot = Slot {
    role: Role::Free,
    peer: -1,
    closing: false,
};

struct Floor {
    epoll: RawFd,
    slots: Vec<Slot>,
    /// Backend connections with no client.
    pool: Vec<RawFd>,
    backends: Vec<SocketAddr>,
    next: usize,
}

fn check(what: &str, rc: libc::c_int) -> libc::c_int {
    if rc < 0 {
        eprintln!("kernel_floor: {what}: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    rc
}

impl Floor {
    fn slot(&mut self, fd: RawFd) -> &mut Slot {
        let i = fd as usize;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, FREE);
        }
        &mut self.slots[i]
    }

    fn watch(&mut self, fd: RawFd, role: Role) {
        *self.slot(fd) = Slot { role, ..FREE };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `ev` outlives the call; fd is an open socket.
        check("epoll_ctl", unsafe {
            libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, fd, &mut ev)
        });
    }

    /// Closing an fd also takes it out of the epoll set.
    fn close(&mut self, fd: RawFd) {
        *self.slot(fd) = FREE;
        // SAFETY: fd is an open socket this forwarder owns.
        unsafe { libc::close(fd) };
    }

    fn backend(&mut self) -> RawFd {
        if let Some(fd) = self.pool.pop() {
            return fd;
        }
        let addr = self.backends[self.next % self.backends.len()];
        self.next += 1;
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| {
            eprintln!("kernel_floor: connect {addr}: {e}");
            std::process::exit(1)
        });
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_nonblocking(true))
            .expect("socket options");
        let fd = stream.into_raw_fd();
        self.watch(fd, Role::Backend);
        fd
    }

    fn accept(&mut self, listener: RawFd) {
        loop {
            // SAFETY: null address arguments are allowed.
            let fd = unsafe {
                libc::accept4(
                    listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return;
            }
            self.watch(fd, Role::Client);
        }
    }

    fn client_readable(&mut self, fd: RawFd, buf: &mut [u8]) {
        let n = recv(fd, buf);
        if n < 0 {
            return;
        }
        let peer = self.slots[fd as usize].peer;
        if n == 0 {
            self.close(fd);
            if peer >= 0 {
                // Between requests (this client waited for its responses): the backend is clean.
                self.slots[peer as usize].peer = -1;
                self.pool.push(peer);
            }
            return;
        }
        let data = &mut buf[..n as usize];
        let closing = patch_close(data);
        let backend = if peer >= 0 { peer } else { self.backend() };
        self.slots[fd as usize].peer = backend;
        self.slots[fd as usize].closing = closing;
        self.slots[backend as usize].peer = fd;
        send_all(backend, data, 0);
    }

    fn backend_readable(&mut self, fd: RawFd, buf: &mut [u8]) {
        let n = recv(fd, buf);
        if n < 0 {
            return;
        }
        let client = self.slots[fd as usize].peer;
        if n == 0 {
            self.close(fd);
            self.pool.retain(|&b| b != fd);
            if client >= 0 {
                self.close(client);
            }
            return;
        }
        if client < 0 {
            return; // an idle backend has nothing to say
        }
        if self.slots[client as usize].closing {
            let len = patch_keep_alive(&mut buf[..n as usize]);
            send_all(client, &buf[..len], libc::MSG_MORE);
            // SAFETY: client is an open socket.
            unsafe { libc::shutdown(client, libc::SHUT_WR) };
            self.close(client);
            self.slots[fd as usize].peer = -1;
            self.pool.push(fd);
        } else {
            send_all(client, &buf[..n as usize], 0);
        }
    }
}

fn recv(fd: RawFd, buf: &mut [u8]) -> isize {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
        return 0; // a reset: treat as closed
    }
    n
}

/// Loopback takes a small write whole; anything else is outside what this instrument measures.
fn send_all(fd: RawFd, data: &[u8], flags: libc::c_int) {
    // SAFETY: data is valid for reads of its length.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags | libc::MSG_NOSIGNAL) };
    if n != data.len() as isize {
        eprintln!("kernel_floor: short or failed send ({n} of {})", data.len());
    }
}

/// Overwrites the value of a `Connection: close` header so the origin keeps the connection.
fn patch_close(data: &mut [u8]) -> bool {
    const NEEDLE: &[u8] = b"\r\nConnection: close\r\n";
    match data.windows(NEEDLE.len()).position(|w| w.eq_ignore_ascii_case(NEEDLE)) {
        Some(at) => {
            let value = at + NEEDLE.len() - 7;
            data[value..value + 5].copy_from_slice(b"xxxxx");
            true
        }
        None => false,
    }
}

/// Tells the client the connection closes: the origin's `Connection: keep-alive` becomes
/// `Connection: close`, the rest moved up. Returns the new length.
fn patch_keep_alive(data: &mut [u8]) -> usize {
    const NEEDLE: &[u8] = b"\r\nConnection: keep-alive\r\n";
    let Some(at) = data.windows(NEEDLE.len()).position(|w| w.eq_ignore_ascii_case(NEEDLE)) else {
        return data.len();
    };
    let value = at + NEEDLE.len() - 12;
    data[value..value + 5].copy_from_slice(b"close");
    data.copy_within(value + 10.., value + 5);
    data.len() - 5
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backends: Vec<SocketAddr> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
    if args.is_empty() || backends.len() + 1 != args.len() {
        eprintln!("usage: kernel_floor LISTEN BACKEND [BACKEND ...]");
        std::process::exit(2);
    }
    let listener = TcpListener::bind(&args[0]).unwrap_or_else(|e| {
        eprintln!("kernel_floor: bind {}: {e}", args[0]);
        std::process::exit(1)
    });
    listener.set_nonblocking(true).expect("non-blocking listener");
    let sock = socket2::SockRef::from(&listener);
    sock.set_tcp_nodelay(true)
        .and_then(|()| sock.set_tcp_quickack(false))
        .expect("listener options");
    let lfd = listener.as_raw_fd();
    // SAFETY: plain system call.
    let epoll = check("epoll_create1", unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) });
    let mut floor = Floor {
        epoll,
        slots: Vec::new(),
        pool: Vec::new(),
        backends,
        next: 0,
    };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: lfd as u64,
    };
    // SAFETY: `ev` outlives the call.
    check("epoll_ctl", unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, lfd, &mut ev) });
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = [0u8; 16 * 1024];
    loop {
        // SAFETY: events is valid for writes of its length.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, -1) };
        for ev in &events[..n.max(0) as usize] {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                floor.accept(lfd);
                continue;
            }
            // An earlier event of this batch may have closed it.
            match floor.slots.get(fd as usize).map(|s| s.role) {
                Some(Role::Client) => floor.client_readable(fd, &mut buf),
                Some(Role::Backend) => floor.backend_readable(fd, &mut buf),
                _ => {}
            }
        }
    }
}
