//! The front of an https entrypoint: connections whose ClientHello names a passthrough route are
//! forwarded untouched; the others get the TLS handshake (under a timeout, counted by result),
//! then the decrypted stream goes to the entrypoint's HTTP proxy, which picks HTTP/2 or HTTP/1.1
//! from the negotiated ALPN.

use super::sni::{hello_or_close, Hello};
use super::tcp::{TcpProxy, HELLO_TIMEOUT};
use crate::metrics::EntrypointCounters;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A handshake not done by then is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TlsFront<A> {
    pub acceptor: Acceptor,
    pub inner: Arc<A>,
    pub counters: Arc<EntrypointCounters>,
    pub entrypoint: Arc<str>,
    /// client_header_timeout, applied to the decrypted stream.
    pub head_timeout: Duration,
    /// Forwards the connections of passthrough routes (tcp routes with `sni` on this entrypoint).
    pub passthrough: Arc<TcpProxy>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for TlsFront<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // A TCP listener hands over its L4 stream; the handshake needs the concrete type.
        let mut stream = match stream.into_any().downcast::<L4Stream>() {
            Ok(s) => *s,
            Err(_) => {
                log::error!("{}: an https entrypoint got a stream that is not TCP", self.entrypoint);
                return None;
            }
        };
        // Passthrough names go to their tcp route untouched; every other name terminates here.
        let snap = self.passthrough.shared.registry.snapshot();
        if let Some(table) = snap.tcp.get(&*self.entrypoint).filter(|t| t.by_sni()) {
            let start = tokio::time::Instant::now();
            let hello = hello_or_close(&mut stream, HELLO_TIMEOUT, &self.counters, &self.entrypoint).await?;
            if let Hello::Tls(Some(name)) = hello {
                if let Some(target) = table.passthrough(&name).cloned() {
                    self.passthrough.forward(Box::new(stream), &target, start).await;
                    return None;
                }
            }
        }
        // Boxed: the handshake's state is held while it runs, not for the connection's life.
        match Box::pin(tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.tls_handshake(stream))).await {
            Ok(Ok(tls)) => {
                self.counters.tls_ok.fetch_add(1, Ordering::Relaxed);
                let stream = super::deadline::HeadDeadline::wrap(
                    super::below::Below::Stream(Box::new(tls)),
                    self.head_timeout,
                    self.counters.clone(),
                );
                self.inner.process_new(stream, shutdown).await;
            }
            Ok(Err(e)) => {
                self.counters.tls_error.fetch_add(1, Ordering::Relaxed);
                log::debug!("{}: TLS handshake failed: {e}", self.entrypoint);
            }
            Err(_) => {
                self.counters.tls_error.fetch_add(1, Ordering::Relaxed);
                log::debug!("{}: TLS handshake timed out", self.entrypoint);
            }
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
