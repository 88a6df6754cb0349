//! Idle keep-alive connections parked outside Pingora's request future.
//!
//! Pingora serves an HTTP/1 connection's requests one after another inside one large future per
//! request, and an idle keep-alive connection waits for its next request inside that future:
//! about 37 KiB per idle connection. Here the connection waits in a future of a few hundred bytes
//! until its next request's first byte arrives (or `idle_timeout` passes, or the stop's linger
//! ends), and only then goes back to the fast lane or Pingora. HTTP/2 connections (h2c, or h2
//! negotiated by ALPN) are Pingora's throughout.

use super::deadline::HeadDeadline;
use super::lane::{Lane, Next};
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct Parked<A> {
    pub app: Arc<A>,
    /// Serves HTTP/1.1 requests without a body; hands the others to Pingora's path (`app`).
    pub lane: Lane,
    /// An idle keep-alive connection closes after this.
    pub idle_timeout: Duration,
    /// Set when a stop's linger ends: parked connections close.
    stop: watch::Sender<bool>,
}

impl<A> Parked<A> {
    pub fn new(app: Arc<A>, lane: Lane, idle_timeout: Duration) -> Parked<A> {
        Parked {
            app,
            lane,
            idle_timeout,
            stop: watch::channel(false).0,
        }
    }
}

/// Wait until the connection's next request begins. None: it closed, stayed idle for `idle`, or
/// the stop came. On plain HTTP entrypoints the stream is a [`HeadDeadline`], which reads the
/// first bytes ahead and serves them to Pingora (no extra read); any other stream is peeked.
async fn next_request(mut stream: Stream, idle: Duration, stop: watch::Receiver<bool>) -> Option<Stream> {
    if stream.as_any().is::<HeadDeadline>() {
        let mut s: Box<HeadDeadline> = stream.into_any().downcast().ok()?;
        let ready = within(idle, stop, async { matches!(s.read_ahead().await, Ok(1..)) }).await;
        return ready.then_some(s as Stream);
    }
    let mut byte = [0u8; 1];
    let ready = within(idle, stop, async { stream.try_peek(&mut byte).await.is_ok() }).await;
    ready.then_some(stream)
}

/// `wait`'s answer, or false once `idle` passes or the stop comes first.
async fn within(idle: Duration, mut stop: watch::Receiver<bool>, wait: impl std::future::Future<Output = bool>) -> bool {
    if *stop.borrow_and_update() {
        return false;
    }
    tokio::select! {
        r = tokio::time::timeout(idle, wait) => r.unwrap_or(false),
        _ = stop.changed() => false,
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Parked<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let options = self.app.server_options();
        // HTTP/2 negotiated over TLS is Pingora's.
        if stream.selected_alpn_proto() == Some(pingora_core::protocols::ALPN::H2) {
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        let h2c = options.is_some_and(|o| o.h2c);
        let mut stream = stream;
        let mut settings: Option<pingora_core::apps::HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            // Only a connection's first bytes may be the h2c preface (prior knowledge).
            let next = self.lane.serve(stream, shutdown, h2c && first).await;
            first = false;
            match next {
                Next::Closed => return None,
                // Pingora peeks the preface again (served from the bytes put back) and speaks h2.
                Next::H2c(s) => return ServerApp::process_new(&self.app, s, shutdown).await,
                Next::Idle(s) => {
                    stream = next_request(s, self.idle_timeout, self.stop.subscribe()).await?;
                    continue;
                }
                Next::Pingora(s) => stream = s,
            }
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => {
                    session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
                    session.set_keepalive_reuses_remaining(options.and_then(|o| o.keepalive_request_limit));
                }
            }
            let (s, kept) = self.app.process_new_http(session, shutdown).await?.consume();
            settings = kept;
            stream = next_request(s, self.idle_timeout, self.stop.subscribe()).await?;
        }
    }

    async fn cleanup(&self) {
        let _ = self.stop.send(true);
        self.app.http_cleanup().await;
    }
}
