//! The L4 forwarder: pick a backend of the connection's service (by the entrypoint's default
//! route, or by the server name of its TLS ClientHello for passthrough routes), connect (another
//! backend after a refused or timed-out connect, up to `retries`), then copy bytes both ways,
//! passing a half-close on to the other side.

use super::sni::{hello_or_close, Hello};
use crate::metrics::OpenGuard;
use crate::route_tcp::TcpTarget;
use crate::state::Shared;
use crate::upstream::{Attempt, InFlight, Service};
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// A connection that does not finish its ClientHello by then is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

pub struct TcpProxy {
    pub entrypoint: Arc<str>,
    pub shared: Arc<Shared>,
    /// This entrypoint's own counters.
    pub counters: Arc<crate::metrics::EntrypointCounters>,
    /// Sources trusted to send a PROXY header (None: the entrypoint does not accept one).
    pub proxy_protocol: Option<Arc<[crate::net::Cidr]>>,
    /// Open connections allowed, 0 = unlimited.
    pub max_connections: u64,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
}

/// Accept a PROXY header on `io` per the entrypoint's settings; None: the connection is closed.
pub async fn accept_proxy(
    io: Stream,
    trusted: Option<&Arc<[crate::net::Cidr]>>,
    counters: &crate::metrics::EntrypointCounters,
    ep: &str,
) -> Option<Stream> {
    let Some(trusted) = trusted else { return Some(io) };
    let peer = client_of(&io)?.ip();
    let mut l4 = io.into_any().downcast::<L4Stream>().ok()?;
    // Boxed: the header's buffer is held while it is read, not for the connection's life.
    match Box::pin(super::pp::accept(&mut l4, peer, trusted)).await {
        Ok(_) => Some(l4),
        Err(e) => {
            log::debug!("{ep}: {e}");
            if e != super::pp::PpError::Closed {
                counters.rejected_proxy.fetch_add(1, Ordering::Relaxed);
            }
            None
        }
    }
}

/// The client address of a connection.
pub fn client_of(io: &Stream) -> Option<SocketAddr> {
    io.get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
}

impl TcpProxy {
    /// Connect to a backend of the service, trying others after a failure.
    async fn connect(&self, target: &TcpTarget, client: Option<SocketAddr>) -> Option<(TcpStream, InFlight, Arc<Service>)> {
        let Some(service) = target.service.as_ref().map(|c| c.load()) else {
            log::warn!("tcp entrypoint {}: service {} does not exist", self.entrypoint, target.id);
            return None;
        };
        let key = client.map(|c| c.ip().to_string().into_bytes()).unwrap_or_default();
        let mut tried = Vec::new();
        while tried.len() <= service.spec.retries as usize {
            let pick = service.pick(&key, &tried, Instant::now())?;
            if !tried.is_empty() {
                service.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            tried.push(pick.index);
            let addr = pick.slot.member().addr;
            match timeout(service.spec.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    service.record(pick.index, Attempt::Ok, pick.probe, Instant::now());
                    return Some((stream, pick.slot, service.clone()));
                }
                Ok(Err(e)) => log::debug!("tcp {}: connect {addr}: {e}", self.entrypoint),
                Err(_) => log::debug!("tcp {}: connect {addr}: timed out", self.entrypoint),
            }
            service.record(pick.index, Attempt::Failed, pick.probe, Instant::now());
        }
        None
    }

    /// Forward a connection to `target`'s service until both sides are done.
    pub async fn forward(&self, io: Stream, target: &TcpTarget, start: Instant) {
        let client = client_of(&io);
        let Some((mut upstream, slot, service)) = self.connect(target, client).await else {
            if self.shared.access_log() {
                log::info!(target: "access", "tcp entrypoint={} client={} service={} backend=- status=no_backend", self.entrypoint, fmt_addr(client), target.id);
            }
            return;
        };
        if let Some(version) = service.spec.send_proxy {
            let local = io
                .get_socket_digest()
                .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
            if let (Some(c), Some(l)) = (client, local) {
                use tokio::io::AsyncWriteExt;
                if let Err(e) = upstream.write_all(&super::pp::header(version, c, l)).await {
                    log::debug!("tcp {}: sending the PROXY header: {e}", self.entrypoint);
                    return;
                }
            }
        }
        let counters = service.stats.tcp.get(&self.entrypoint);
        counters.connections.fetch_add(1, Ordering::Relaxed);
        // Counted as data flows, so long-lived connections show up in the metrics while open.
        // Raw bytes both ways: a tcp entrypoint has no TLS, and a passthrough route forwards
        // before any handshake; so what is written to either side reaches its socket unchanged.
        let fds = super::pump::Fds {
            client: Some(io.id()),
            backend: Some(upstream.as_raw_fd()),
        };
        let end = super::pump::both_ways(io, upstream, fds, self.idle_timeout, &counters.rx, &counters.tx).await;
        let (rx, tx) = (end.up, end.down);
        let status = match end.how {
            super::pump::How::Closed => "closed".to_string(),
            super::pump::How::Idle => "idle_timeout".to_string(),
            super::pump::How::Error(kind) => format!("error:{kind}"),
        };
        if self.shared.access_log() {
            log::info!(
                target: "access",
                "tcp entrypoint={} client={} route={} service={} backend={} status={} bytes_rx={} bytes_tx={} duration_ms={:.3}",
                self.entrypoint,
                fmt_addr(client),
                self.entrypoint,
                service.spec.id,
                slot.member().addr,
                status,
                rx,
                tx,
                start.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}

#[async_trait]
impl ServerApp for TcpProxy {
    async fn process_new(self: &Arc<Self>, io: Stream, _shutdown: &ShutdownWatch) -> Option<Stream> {
        let start = Instant::now();
        let _open = OpenGuard::within(&self.counters, self.max_connections)?;
        let io = accept_proxy(io, self.proxy_protocol.as_ref(), &self.counters, &self.entrypoint).await?;
        let snap = self.shared.registry.snapshot();
        let table = snap.tcp.get(&*self.entrypoint)?;
        if !table.by_sni() {
            let target = table.default.clone()?;
            self.forward(io, &target, start).await;
            return None;
        }
        // Passthrough routes: read the ClientHello's server name, then forward it untouched.
        let mut l4 = match io.into_any().downcast::<L4Stream>() {
            Ok(s) => *s,
            Err(_) => return None,
        };
        let sni = match hello_or_close(&mut l4, HELLO_TIMEOUT, &self.counters, &self.entrypoint).await? {
            Hello::Tls(sni) => sni,
            Hello::Plain => None,
        };
        let target = table.lookup(sni.as_deref()).cloned()?;
        self.forward(Box::new(l4), &target, start).await;
        None
    }
}

fn fmt_addr(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
}
