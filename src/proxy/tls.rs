//! The front of an https entrypoint: the TLS handshake (under a timeout, counted by result), then
//! the decrypted stream goes to the entrypoint's HTTP proxy, which picks HTTP/2 or HTTP/1.1 from
//! the negotiated ALPN.

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
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for TlsFront<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // A TCP listener hands over its L4 stream; the handshake needs the concrete type.
        let stream = match stream.into_any().downcast::<L4Stream>() {
            Ok(s) => *s,
            Err(_) => {
                log::error!("{}: an https entrypoint got a stream that is not TCP", self.entrypoint);
                return None;
            }
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.tls_handshake(stream)).await {
            Ok(Ok(tls)) => {
                self.counters.tls_ok.fetch_add(1, Ordering::Relaxed);
                self.inner.process_new(Box::new(tls), shutdown).await;
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
