//! The fast lane of an HTTP or HTTPS entrypoint: HTTP/1.1 requests without a body (the bulk of
//! traffic) served on the connection's own task, reading and writing the sockets directly, with
//! upstream connections kept per backend (`upstream::IdleConns`). It routes, admits, picks,
//! retries, counts and logs through the same code as Pingora's path ([`HttpProxy::decide`],
//! `Service::pick`, [`HttpProxy::account`]). Every other request — a body, an upgrade, `Expect`,
//! HTTP/1.0, anything the parser refuses, a backend over TLS — goes to Pingora's path with the
//! bytes already read, and is answered there as before.
//!
//! Why: Pingora's HTTP/1 proxy spends about 13 µs of user CPU per request here (two tasks joined
//! by channels, large futures moved per request, a `getpeername` per reused upstream); a request
//! in the lane spends about 3.5 µs, as HAProxy does, and makes the same four system calls
//! (bench/RESULTS.md).

mod chunked;
mod request;
mod response;

use super::deadline::HeadDeadline;
use super::http::{hash_key, Ctx, Current, Decision, Done, HttpProxy};
use super::respond;
use crate::desired::{Balance, ServiceSpec};
use crate::upstream::{Attempt, Member};
use pingora_core::protocols::{Stream, UniqueID};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::ProxyHttp;
use request::Request;
use response::{Framing, Response};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What the connection does after the lane is done with it.
pub enum Next {
    Closed,
    /// Between requests: park it until the next one.
    Idle(Stream),
    /// Pingora's path serves the next request (its bytes are put back to be read again).
    Pingora(Stream),
    /// The connection opened with the HTTP/2 preface (h2c with prior knowledge): Pingora's h2
    /// server takes it, the preface put back.
    H2c(Stream),
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub struct Lane {
    proxy: HttpProxy,
}

/// A backend read grows its buffer up to this.
const MAX_READ: usize = 64 * 1024;

/// Why an attempt at a backend failed before its response head arrived whole.
#[derive(Debug)]
enum Failure {
    ConnectRefused,
    Connect,
    ConnectTimeout,
    Timeout,
    /// The backend closed or reset the connection; `nothing`: before sending any byte.
    Closed {
        nothing: bool,
    },
    Invalid(&'static str),
}

impl Failure {
    fn status(&self) -> u16 {
        match self {
            Failure::ConnectTimeout | Failure::Timeout => 504,
            _ => 502,
        }
    }

    /// The error's name in the access log (as Pingora's path names it).
    fn name(&self) -> &'static str {
        match self {
            Failure::ConnectRefused => "ConnectRefused",
            Failure::Connect => "ConnectError",
            Failure::ConnectTimeout => "ConnectTimedout",
            Failure::Timeout => "ReadTimedout",
            Failure::Closed { .. } => "ConnectionClosed",
            Failure::Invalid(_) => "InvalidHTTPHeader",
        }
    }

    /// What went wrong, for the debug log.
    fn why(&self) -> &'static str {
        match self {
            Failure::Invalid(why) => why,
            other => other.name(),
        }
    }

    fn before_connect(&self) -> bool {
        matches!(self, Failure::ConnectRefused | Failure::Connect | Failure::ConnectTimeout)
    }

    fn from_io(e: &io::Error, nothing: bool) -> Failure {
        log::debug!("backend connection: {e}");
        Failure::Closed { nothing }
    }
}

/// A response cut short after its head was sent (or a body that turned out malformed before).
struct Cut {
    /// The backend's fault (else the client's).
    upstream: bool,
    head_sent: bool,
    bytes: usize,
    error: &'static str,
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(Failure::ConnectTimeout),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Err(Failure::ConnectRefused),
        Ok(Err(e)) => {
            log::debug!("connect to {addr}: {e}");
            Err(Failure::Connect)
        }
        Ok(Ok(c)) => {
            let _ = c.set_nodelay(true);
            Ok(c)
        }
    }
}

/// Make room for a read: at least 4 KiB free, doubling up to [`MAX_READ`] while reads fill it.
fn room(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(buf.capacity().clamp(8192, MAX_READ));
    }
}

/// Send the request head and read the response head (and whatever of the body came with it)
/// into `rbuf`; the head the client gets goes into `out`.
async fn exchange(
    conn: &mut TcpStream,
    up: &[u8],
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    timeout: Duration,
    head: bool,
    close: bool,
) -> Result<Response, Failure> {
    rbuf.clear();
    out.clear();
    conn.write_all(up).await.map_err(|e| Failure::from_io(&e, true))?;
    loop {
        match response::parse(rbuf, head, close, out) {
            response::Parsed::Complete(r) => return Ok(r),
            response::Parsed::Interim(n) => {
                rbuf.drain(..n);
                continue;
            }
            response::Parsed::Invalid(why) => return Err(Failure::Invalid(why)),
            response::Parsed::Partial => {}
        }
        room(rbuf);
        let nothing = rbuf.is_empty() && out.is_empty();
        match tokio::time::timeout(timeout, conn.read_buf(rbuf)).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Ok(0)) => return Err(Failure::Closed { nothing }),
            Ok(Err(e)) => return Err(Failure::from_io(&e, nothing)),
            Ok(Ok(_)) => {}
        }
    }
}

async fn send(client: &mut Stream, data: &[u8]) -> io::Result<()> {
    client.write_all(data).await?;
    client.flush().await
}

/// Send the last bytes before the connection is shut down: queued so that the FIN goes in the
/// same segment (a connection closed after each response costs one segment fewer). The caller
/// shuts down next.
async fn send_last(client: &mut Stream, data: &[u8]) -> io::Result<()> {
    let queued = client.as_any().downcast_ref::<HeadDeadline>().map_or(0, |d| d.send_more(data));
    send(client, &data[queued..]).await
}

/// Relay the body after the head in `out` (its first bytes are in `rbuf`) until its framing says
/// it ended. Ok: body bytes sent, and whether the backend connection ended clean (nothing past
/// the body) so it may be reused. `last`: the client connection is shut down right after.
#[allow(clippy::too_many_arguments)]
async fn relay(
    client: &mut Stream,
    conn: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    framing: Framing,
    timeout: Duration,
    last: bool,
) -> Result<(usize, bool), Cut> {
    let mut chunks = chunked::Chunked::default();
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let (mut sent, mut head_sent) = (0usize, false);
    let cut = |upstream, head_sent, bytes, error| Cut {
        upstream,
        head_sent,
        bytes,
        error,
    };
    loop {
        let (take, done) = match framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let t = left.min(rbuf.len() as u64);
                left -= t;
                (t as usize, left == 0)
            }
            Framing::Chunked => match chunks.feed(rbuf) {
                Ok(t) => (t, chunks.done()),
                Err(_) => return Err(cut(true, head_sent, sent, "InvalidHTTPHeader")),
            },
            Framing::UntilClose => (rbuf.len(), false),
        };
        let data: &[u8] = if head_sent {
            &rbuf[..take]
        } else {
            out.extend_from_slice(&rbuf[..take]);
            head_sent = true;
            out
        };
        let written = if done && last {
            send_last(client, data).await
        } else {
            send(client, data).await
        };
        if written.is_err() {
            return Err(cut(false, true, sent, "WriteError"));
        }
        sent += take;
        if done {
            return Ok((sent, rbuf.len() == take));
        }
        rbuf.clear();
        room(rbuf);
        match tokio::time::timeout(timeout, conn.read_buf(rbuf)).await {
            Err(_) => return Err(cut(true, true, sent, "ReadTimedout")),
            Ok(Ok(0)) if framing == Framing::UntilClose => return Ok((sent, false)),
            Ok(Ok(0)) => return Err(cut(true, true, sent, "ConnectionClosed")),
            Ok(Err(_)) => return Err(cut(true, true, sent, "ReadError")),
            Ok(Ok(_)) => {}
        }
    }
}

/// Put the bytes read back in front of the stream for Pingora to read (or peek) again.
/// Pingora's path takes requests with a body: the client may be waiting for an ACK to send it.
fn refer(stream: Stream, buf: Vec<u8>, to: fn(Stream) -> Next) -> Next {
    match stream.into_any().downcast::<HeadDeadline>() {
        Ok(mut s) => {
            crate::accept::ack_now(s.id());
            s.unread(buf);
            to(s)
        }
        Err(_) => Next::Closed,
    }
}

/// The request's method, and whether it is HEAD (the answer goes without its body).
struct Asked<'a> {
    method: &'a str,
    head: bool,
}

/// The connection's buffers, kept while it is busy and dropped when it parks.
#[derive(Default)]
struct Buffers {
    /// From the client.
    buf: Vec<u8>,
    backend: Exchange,
}

/// The buffers of an exchange with a backend.
#[derive(Default)]
struct Exchange {
    /// The request head for the backend.
    up: Vec<u8>,
    /// From the backend.
    rbuf: Vec<u8>,
    /// To the client.
    out: Vec<u8>,
}

impl Lane {
    pub fn new(proxy: HttpProxy) -> Lane {
        Lane { proxy }
    }

    /// Serve the connection's requests while they are the lane's to serve. `h2c`: the
    /// connection may open with the HTTP/2 preface (its first request, on an h2c entrypoint).
    pub async fn serve(&self, mut client: Stream, shutdown: &ShutdownWatch, h2c: bool) -> Next {
        let Some(deadline) = client.as_any().downcast_ref::<HeadDeadline>() else {
            return Next::Pingora(client);
        };
        let client_ip = deadline.client_addr().map(|a| a.ip());
        let client_text = client_ip.map(|ip| ip.to_string());
        let proto = if self.proxy.tls { "https" } else { "http" };
        let mut b = Buffers {
            buf: Vec::with_capacity(2048),
            ..Default::default()
        };
        let mut maybe_h2 = h2c;
        let mut acked = false;
        loop {
            let req = loop {
                // Read by the lane, not peeked: a peek would cost a read of its own.
                if maybe_h2 {
                    let n = b.buf.len().min(H2_PREFACE.len());
                    if b.buf[..n] != H2_PREFACE[..n] {
                        maybe_h2 = false;
                        continue;
                    }
                    if n == H2_PREFACE.len() {
                        return refer(client, b.buf, Next::H2c);
                    }
                }
                let parsed = if maybe_h2 {
                    request::Parsed::Partial
                } else {
                    request::parse(
                        &b.buf,
                        self.proxy.max_header_bytes,
                        client_text.as_deref(),
                        proto,
                        &mut b.backend.up,
                    )
                };
                match parsed {
                    request::Parsed::Complete(r) => break r,
                    request::Parsed::Refer => return refer(client, b.buf, Next::Pingora),
                    request::Parsed::Partial => {
                        if !b.buf.is_empty() && !acked {
                            // The head came in pieces: the client may want an ACK for the rest.
                            crate::accept::ack_now(client.id());
                            acked = true;
                        }
                        if b.buf.capacity() - b.buf.len() < 1024 {
                            b.buf.reserve(b.buf.len().max(2048));
                        }
                        match client.read_buf(&mut b.buf).await {
                            Ok(1..) => {}
                            _ => return Next::Closed,
                        }
                    }
                }
            };
            let close = req.close || *shutdown.borrow();
            let mut ctx = self.proxy.new_ctx();
            ctx.client_ip = client_ip;
            let Some(close) = self.one(&mut ctx, &mut client, &req, &mut b, close).await else {
                return refer(client, b.buf, Next::Pingora);
            };
            if close {
                let _ = client.shutdown().await;
                return Next::Closed;
            }
            maybe_h2 = false;
            b.buf.drain(..req.len);
            if b.buf.is_empty() {
                return Next::Idle(client);
            }
        }
    }

    /// Answer one request; true: the connection closes after it. None: a backend over TLS
    /// serves it, which is Pingora's path.
    async fn one(&self, ctx: &mut Ctx, client: &mut Stream, req: &Request, b: &mut Buffers, close: bool) -> Option<bool> {
        let buf = &b.buf;
        let method = req.str(buf, &req.method);
        let decision = match self
            .proxy
            .route(req.str(buf, &req.host), req.str(buf, &req.path), req.str(buf, &req.target))
        {
            Ok(target) if target.service.as_ref().is_some_and(|c| c.with(|s| s.spec.upstream_tls.is_some())) => return None,
            Ok(target) => self.proxy.admit(ctx, target),
            Err(answer) => answer,
        };
        let (answer, status) = match decision {
            Decision::Proxy => return Some(self.proxy_request(ctx, client, req, b, close).await),
            Decision::Status(code) => (respond::raw_status(code, close), code),
            Decision::Redirect(location) => (respond::raw_redirect(&location, close), 308),
            Decision::Acme(answer) => (respond::raw_text(200, &answer, "text/plain", close), 200),
        };
        Some(
            self.answer(
                ctx,
                client,
                Asked {
                    method,
                    head: req.is_head(buf),
                },
                &answer,
                status,
                None,
            )
            .await
                || close
                || respond::closes(status),
        )
    }

    /// Write one of lariat's own answers and account for it; true if the client is gone.
    async fn answer(
        &self,
        ctx: &mut Ctx,
        client: &mut Stream,
        asked: Asked<'_>,
        answer: &[u8],
        status: u16,
        failure: Option<&Failure>,
    ) -> bool {
        let Asked { method, head } = asked;
        let end_of_head = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |p| p + 4);
        let answer = if head { &answer[..end_of_head] } else { answer };
        let gone = send(client, answer).await.is_err();
        let done = Done {
            status,
            failed_upstream: failure.is_some(),
            error: failure.map(Failure::name),
            method,
            bytes: answer.len() - end_of_head.min(answer.len()),
        };
        self.proxy.account(ctx, done);
        gone
    }

    /// Proxy a routed request to a backend of `ctx.service`, retrying as Pingora's path does.
    async fn proxy_request(&self, ctx: &mut Ctx, client: &mut Stream, req: &Request, b: &mut Buffers, close: bool) -> bool {
        let Some(service) = ctx.service.clone() else {
            return true;
        };
        let buf = &b.buf;
        let method = req.str(buf, &req.method);
        let head = req.is_head(buf);
        if let Balance::ConsistentHash(key) = &service.spec.balance {
            let headers = request::headers_of(buf, req.len);
            let pairs = headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
            ctx.hash_key = hash_key(key, req.str(buf, &req.path), ctx.client_ip, pairs);
        }
        let idempotent = req.idempotent(buf);
        let (member, mut conn, resp) = loop {
            if !ctx.tried.is_empty() {
                service.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            let Some(pick) = service.pick(&ctx.hash_key, &ctx.tried, Instant::now()) else {
                let answer = respond::raw_status(503, true);
                self.answer(ctx, client, Asked { method, head }, &answer, 503, None).await;
                return true;
            };
            ctx.tried.push(pick.index);
            let member = pick.slot.member().clone();
            ctx.current = Some(Current { pick, recorded: false });
            match attempt(&member, &service.spec, &mut b.backend, head, close, idempotent).await {
                Ok((conn, resp)) => break (member, conn, resp),
                Err(f) => {
                    log::debug!("{}: backend {}: {}", self.proxy.entrypoint, member.addr, f.why());
                    ctx.record(Attempt::Failed);
                    // Any request may go elsewhere after a failed connect; after that (a reset, a
                    // timeout, an invalid response: nothing reached the client yet), only one
                    // that may be sent twice, as on Pingora's path.
                    if (f.before_connect() || idempotent) && ctx.retries_left() {
                        continue;
                    }
                    let status = f.status();
                    let answer = respond::raw_status(status, true);
                    self.answer(ctx, client, Asked { method, head }, &answer, status, Some(&f)).await;
                    return true;
                }
            }
        };
        b.backend.rbuf.drain(..resp.len);
        let timeout = service.spec.read_timeout;
        match relay(
            client,
            &mut conn,
            &mut b.backend.rbuf,
            &mut b.backend.out,
            resp.framing,
            timeout,
            resp.close,
        )
        .await
        {
            Ok((bytes, clean)) => {
                if clean && resp.keep_alive {
                    member.idle.put(conn, Instant::now());
                }
                let done = Done {
                    status: resp.status,
                    failed_upstream: false,
                    error: None,
                    method,
                    bytes,
                };
                self.proxy.account(ctx, done);
                resp.close
            }
            Err(cut) => {
                let status = if cut.head_sent { resp.status } else { 502 };
                if !cut.head_sent {
                    let _ = send(client, &respond::raw_status(502, true)).await;
                }
                let done = Done {
                    status,
                    failed_upstream: cut.upstream,
                    error: Some(cut.error),
                    method,
                    bytes: cut.bytes,
                };
                self.proxy.account(ctx, done);
                true
            }
        }
    }
}

/// One attempt at `member`: an idle connection if one is kept (and the request may be sent
/// twice), else a new one; a kept connection the backend closed as it was taken is replaced
/// by a new one at once, without counting against the backend.
async fn attempt(
    member: &Arc<Member>,
    spec: &ServiceSpec,
    x: &mut Exchange,
    head: bool,
    close: bool,
    idempotent: bool,
) -> Result<(TcpStream, Response), Failure> {
    if idempotent {
        if let Some(mut conn) = member.idle.take(Instant::now()) {
            match exchange(&mut conn, &x.up, &mut x.rbuf, &mut x.out, spec.read_timeout, head, close).await {
                Ok(resp) => return Ok((conn, resp)),
                Err(Failure::Closed { nothing: true }) => {}
                Err(f) => return Err(f),
            }
        }
    }
    let mut conn = connect(member.addr, spec.connect_timeout).await?;
    let resp = exchange(&mut conn, &x.up, &mut x.rbuf, &mut x.out, spec.read_timeout, head, close).await?;
    Ok((conn, resp))
}
