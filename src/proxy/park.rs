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
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
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
/// the stop came. A stream of the lane's entrypoints is a [`HeadDeadline`], which reads the
/// first bytes ahead and serves them to whoever reads next (no extra read); any other stream is
/// peeked.
///
/// This wait is what an idle connection holds, for as long as it is idle: it is kept to the
/// idle timer, the stop signal and the stream (a few hundred bytes), with no buffer.
async fn next_request(stream: Stream, idle: Duration, mut stop: watch::Receiver<bool>) -> Option<Stream> {
    if *stop.borrow_and_update() {
        return None;
    }
    if !stream.as_any().is::<HeadDeadline>() {
        // Not the lane's: boxed, so that its peek does not enlarge every parked connection.
        return Box::pin(peeked(stream, idle, stop)).await;
    }
    let mut s: Box<HeadDeadline> = stream.into_any().downcast().ok()?;
    let ready = tokio::select! {
        biased;
        r = std::future::poll_fn(|cx| s.poll_read_ahead(cx)) => matches!(r, Ok(1..)),
        _ = tokio::time::sleep(idle) => false,
        _ = stop.changed() => false,
    };
    ready.then_some(s as Stream)
}

async fn peeked(mut stream: Stream, idle: Duration, mut stop: watch::Receiver<bool>) -> Option<Stream> {
    let mut byte = [0u8; 1];
    let ready = tokio::select! {
        r = tokio::time::timeout(idle, stream.try_peek(&mut byte)) => matches!(r, Ok(Ok(_))),
        _ = stop.changed() => false,
    };
    ready.then_some(stream)
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
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            // Only a connection's first bytes may be the h2c preface (prior knowledge).
            // Boxed: the lane's state is held while it serves and freed when the connection
            // parks, so an idle connection holds only the parked wait.
            let next = Box::pin(self.lane.serve(stream, shutdown, h2c && first)).await;
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
            let (s, kept) = self.pingora_http1(stream, settings.take(), shutdown).await?.consume();
            settings = kept;
            stream = next_request(s, self.idle_timeout, self.stop.subscribe()).await?;
        }
    }

    async fn cleanup(&self) {
        let _ = self.stop.send(true);
        self.app.http_cleanup().await;
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Parked<A> {
    /// Pingora's HTTP/1 session for the connection's next request, with the keep-alive settings
    /// the previous one left. Built outside the async loop so that the session (about a
    /// kilobyte) is not part of what every parked connection holds.
    fn pingora_http1<'a>(
        &'a self,
        stream: Stream,
        settings: Option<HttpPersistentSettings>,
        shutdown: &'a ShutdownWatch,
    ) -> impl std::future::Future<Output = Option<pingora_core::apps::ReusedHttpStream>> + 'a {
        let mut session = ServerSession::new_http1(stream);
        match settings {
            Some(settings) => settings.apply_to_session(&mut session),
            None => {
                let options = self.app.server_options();
                session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
                session.set_keepalive_reuses_remaining(options.and_then(|o| o.keepalive_request_limit));
            }
        }
        self.app.process_new_http(session, shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<Fut>(_: impl FnOnce(Stream, Duration, watch::Receiver<bool>) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// What every idle keep-alive connection holds while parked: the stream, the idle timer and
    /// the stop signal, and no read buffer (it was 2.5 KiB with a 1 KiB buffer held across the
    /// wait).
    #[test]
    fn the_parked_wait_holds_no_buffer() {
        let size = future_size(next_request);
        assert!(size < 512, "the parked wait is {size} bytes");
    }
}
