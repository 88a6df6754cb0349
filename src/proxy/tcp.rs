//! The L4 forwarder of one tcp entrypoint: pick a backend of the entrypoint's service, connect
//! (another backend after a refused or timed-out connect, up to `retries`), then copy bytes both
//! ways, passing a half-close on to the other side.

use crate::metrics::OpenGuard;
use crate::state::Shared;
use crate::upstream::{Attempt, InFlight, Service};
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

pub struct TcpProxy {
    pub entrypoint: Arc<str>,
    pub shared: Arc<Shared>,
    /// This entrypoint's own counters.
    pub counters: Arc<crate::metrics::EntrypointCounters>,
}

impl TcpProxy {
    /// Connect to a backend of the service, trying others after a failure.
    async fn connect(&self, client: Option<SocketAddr>) -> Option<(TcpStream, InFlight, Arc<Service>)> {
        let snap = self.shared.registry.snapshot();
        let (id, service) = snap.tcp.get(&*self.entrypoint)?;
        let Some(service) = service else {
            log::warn!("tcp entrypoint {}: service {id} does not exist", self.entrypoint);
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
}

#[async_trait]
impl ServerApp for TcpProxy {
    async fn process_new(self: &Arc<Self>, mut io: Stream, _shutdown: &ShutdownWatch) -> Option<Stream> {
        let start = Instant::now();
        let _open = OpenGuard::new(self.counters.clone());
        let client = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let Some((mut upstream, slot, service)) = self.connect(client).await else {
            if self.shared.access_log() {
                log::info!(target: "access", "tcp entrypoint={} client={} service=- backend=- status=no_backend", self.entrypoint, fmt_addr(client));
            }
            return None;
        };
        let counters = service.stats.tcp.get(&self.entrypoint);
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let result = tokio::io::copy_bidirectional(&mut io, &mut upstream).await;
        let (rx, tx, status) = match result {
            Ok((rx, tx)) => (rx, tx, "closed".to_string()),
            Err(e) => (0, 0, format!("error:{}", e.kind())),
        };
        counters.rx.fetch_add(rx, Ordering::Relaxed);
        counters.tx.fetch_add(tx, Ordering::Relaxed);
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
        drop(slot);
        None
    }
}

fn fmt_addr(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
}
