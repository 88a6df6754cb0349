//! Assembling and running the process: one Pingora service per entrypoint, the admin listener and
//! the providers, with signals mapped to SPEC (SIGTERM/SIGINT drain, SIGQUIT hands the listeners
//! to a new `lariat --upgrade`).

use crate::admin::Admin;
use crate::config::{Config, EntrypointKind};
use crate::discovery::file::FileProvider;
use crate::proxy::{http::HttpProxy, tcp::TcpProxy};
use crate::state::Shared;
use async_trait::async_trait;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::apps::HttpServerOptions;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::ShutdownWatch;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// How the process learns that it should stop.
pub enum Signals {
    /// SIGTERM and SIGINT drain, SIGQUIT hands over to `--upgrade`.
    Process,
    /// Stops come from a channel (tests, embedding).
    Channel(mpsc::UnboundedReceiver<ShutdownSignal>),
}

pub struct RunOptions {
    /// The file the config came from; reloads read it again. None: no file provider.
    pub config_path: Option<PathBuf>,
    /// Take the listening sockets over from a running lariat.
    pub upgrade: bool,
    pub signals: Signals,
}

struct ProcessSignals;

#[async_trait]
impl ShutdownSignalWatch for ProcessSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            log::error!("cannot install signal handlers; lariat stops only when killed");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => { log::info!("SIGTERM: draining"); ShutdownSignal::GracefulTerminate }
            _ = int.recv() => { log::info!("SIGINT: draining"); ShutdownSignal::GracefulTerminate }
            _ = quit.recv() => { log::info!("SIGQUIT: handing the listeners to the new process"); ShutdownSignal::GracefulUpgrade }
        }
    }
}

struct ChannelSignals(Mutex<Option<mpsc::UnboundedReceiver<ShutdownSignal>>>);

#[async_trait]
impl ShutdownSignalWatch for ChannelSignals {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        match rx {
            Some(mut rx) => rx.recv().await.unwrap_or(ShutdownSignal::FastShutdown),
            None => std::future::pending().await,
        }
    }
}

/// Keeps idle keep-alive connections open for most of the grace period after a stop begins.
/// Meanwhile every response carries `Connection: close`, so clients move to the new process (or
/// give up) between requests instead of finding a connection closed under a request in flight.
struct Graceful<A> {
    inner: Arc<A>,
    linger: Duration,
    /// Counts the open client connections of the entrypoint.
    counters: Arc<crate::metrics::EntrypointCounters>,
    /// Sources trusted to send a PROXY header, when the entrypoint accepts one.
    proxy_protocol: Option<Arc<[crate::net::Cidr]>>,
    /// Open connections allowed, 0 = unlimited.
    max_connections: u64,
    /// client_header_timeout for plain HTTP (https entrypoints apply it after the handshake).
    head_timeout: Option<Duration>,
}

impl<A: ServerApp + Send + Sync + 'static> crate::accept::Accept for Graceful<A> {
    /// The stream is set up before the future is made (a plain HTTP connection needs no await
    /// for it), so the future, which is the connection's task, keeps neither the accepted
    /// socket nor the address beside the stream made of them.
    fn accepted(self: Arc<Self>, tcp: std::net::TcpStream, peer: SocketAddr, shutdown: ShutdownWatch) -> impl Future<Output = ()> + Send {
        use crate::proxy::below::Below;
        let open = crate::metrics::OpenGuard::within(&self.counters, self.max_connections);
        let stream = match self.head_timeout {
            // Plain HTTP with no PROXY header: the socket as accepted, under the deadline layer,
            // outside the event loop until a read or write has to wait.
            Some(t) if self.proxy_protocol.is_none() => Ok(crate::proxy::deadline::HeadDeadline::wrap(
                Below::tcp(crate::proxy::sock::Sock::direct(tcp), peer),
                t,
                self.counters.clone(),
            )),
            // TLS or a PROXY header comes first.
            _ => match tokio::net::TcpStream::from_std(tcp) {
                Ok(tcp) => Err(Some(l4_stream(tcp, peer))),
                Err(e) => {
                    log::error!("connection from {peer}: cannot join the event loop: {e}");
                    Err(None)
                }
            },
        };
        async move {
            let Some(_open) = open else { return };
            let mut stream = match stream {
                Ok(s) => s,
                Err(None) => return,
                Err(Some(l4)) => {
                    // Boxed: not part of what every plain HTTP connection's task holds.
                    let proxied = crate::proxy::tcp::accept_proxy(l4, self.proxy_protocol.as_ref(), &self.counters, "entrypoint");
                    let Some(s) = Box::pin(proxied).await else {
                        return;
                    };
                    match self.head_timeout {
                        Some(t) => crate::proxy::deadline::HeadDeadline::wrap(Below::Stream(s), t, self.counters.clone()),
                        None => s,
                    }
                }
            };
            while let Some(s) = self.inner.process_new(stream, &shutdown).await {
                stream = s;
            }
        }
    }

    async fn cleanup(&self) {
        tokio::time::sleep(self.linger).await;
        self.inner.cleanup().await;
    }
}

/// Pingora's stream for a connection that TLS or a PROXY header's reader takes next, with its
/// digest of the socket holding the client's address as accepted. Not inlined into the async
/// caller: the digest (400 bytes) would stay in the connection's future.
fn l4_stream(tcp: tokio::net::TcpStream, peer: SocketAddr) -> Stream {
    let mut l4 = L4Stream::from(tcp);
    let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    l4.set_socket_digest(digest);
    Box::new(l4)
}

/// Listen on a tcp entrypoint's address without Pingora's 64 KiB per-connection read buffer: it
/// stays allocated for the life of every connection, while the TCP pump reads into buffers of
/// its own. (http and https entrypoints have lariat's accept loop, `crate::accept`.)
fn listen<A: ServerApp + Send + Sync + 'static>(svc: &mut Service<A>, addr: &str) {
    use pingora_core::protocols::l4::stream::{L4BufferSettings, DEFAULT_L4_WRITE_BUFFER_SIZE};
    svc.add_listener(pingora_core::listeners::ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE)));
}

/// How long idle connections stay open once a stop begins: the grace period less a margin for
/// the close to reach clients before the runtimes stop.
fn linger(grace: Duration) -> Duration {
    grace.saturating_sub((grace / 4).min(Duration::from_secs(1)))
}

/// Why the server could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key}: cannot listen on {addr}: {source}")]
    Listen {
        key: String,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(crate::tls::cert::CertError),
}

/// Fail early, naming the key, when a listener's address cannot be bound (in use, not local).
fn check_listeners(config: &Config) -> Result<(), StartError> {
    let all = config
        .entrypoints
        .values()
        .map(|e| (format!("entrypoints.{}.listen", e.name), e.listen))
        .chain(std::iter::once(("admin.listen".to_string(), config.admin.listen)));
    for (key, addr) in all {
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Listen { key, addr, source })?;
    }
    Ok(())
}

/// A built server, ready to run.
pub struct Built {
    server: Server,
    pub shared: Arc<Shared>,
    /// Asks the file provider to reload now, when there is one.
    pub reload: Option<Arc<Notify>>,
}

fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.server.upgrade_sock.clone(),
        pid_file: config.server.pid_file.clone(),
        ..ServerConf::default()
    }
}

/// Build every service of the process from a validated config. With `upgrade`, the listeners
/// come from the running lariat instead of being bound here.
pub fn build(config: Config, config_path: Option<PathBuf>, upgrade: bool) -> Result<Built, StartError> {
    if !upgrade {
        check_listeners(&config)?;
    }
    let opt = Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config));
    server.bootstrap();
    let conf = server.configuration.clone();
    let shared = Arc::new(Shared::new(config.server.access_log));
    shared.registry.apply("file", config.desired.clone());
    let (certs, default) = crate::tls::load_files(&config.tls).map_err(StartError::Tls)?;
    shared.certs.set_files(certs, default);
    let tls_config = crate::tls::server_config(shared.certs.clone(), config.tls.min_version);

    let https_port = config
        .entrypoints
        .values()
        .find(|e| e.kind == EntrypointKind::Https)
        .map(|e| e.listen.port());
    for ep in config.entrypoints.values() {
        let name: Arc<str> = ep.name.as_str().into();
        let counters = shared.entrypoints.get(&name);
        let addr = ep.listen.to_string();
        let linger = linger(config.server.grace_period);
        let proxy_protocol: Option<Arc<[crate::net::Cidr]>> = ep.proxy_protocol.clone().map(Into::into);
        match ep.kind {
            EntrypointKind::Http | EntrypointKind::Https => {
                let mut opts = HttpServerOptions::default();
                opts.h2c = ep.h2c;
                let tls = ep.kind == EntrypointKind::Https;
                let redirect_port = ep
                    .redirect_https
                    .as_ref()
                    .and_then(|t| config.entrypoints.get(t))
                    .map(|t| t.listen.port());
                let app = HttpProxy {
                    entrypoint: name.clone(),
                    shared: shared.clone(),
                    counters: counters.clone(),
                    tls,
                    redirect_port,
                    https_port,
                    max_header_bytes: config.server.max_header_bytes,
                    idle_timeout: config.server.idle_timeout,
                    max_body_bytes: config.server.max_body_bytes,
                };
                let lane = crate::proxy::lane::Lane::new(app.clone());
                let mut proxy = pingora_proxy::http_proxy(&conf, app);
                proxy.server_options = Some(opts);
                let parked = Arc::new(crate::proxy::park::Parked::new(Arc::new(proxy), lane, config.server.idle_timeout));
                if tls {
                    let front = crate::proxy::tls::TlsFront {
                        acceptor: pingora_core::listeners::tls::Acceptor::from_server_config(tls_config.clone()),
                        inner: parked,
                        counters: counters.clone(),
                        entrypoint: name.clone(),
                        head_timeout: config.server.client_header_timeout,
                        passthrough: Arc::new(TcpProxy {
                            entrypoint: name,
                            shared: shared.clone(),
                            counters: counters.clone(),
                            proxy_protocol: None,
                            max_connections: 0,
                            idle_timeout: config.server.idle_timeout,
                        }),
                    };
                    let app = Graceful {
                        inner: Arc::new(front),
                        linger,
                        counters,
                        proxy_protocol,
                        max_connections: ep.max_connections,
                        head_timeout: None,
                    };
                    server.add_service(crate::accept::Entrypoint::new(format!("entrypoint {}", ep.name), ep.listen, app));
                } else {
                    let app = Graceful {
                        inner: parked,
                        linger,
                        counters,
                        proxy_protocol,
                        max_connections: ep.max_connections,
                        head_timeout: Some(config.server.client_header_timeout),
                    };
                    server.add_service(crate::accept::Entrypoint::new(format!("entrypoint {}", ep.name), ep.listen, app));
                }
            }
            EntrypointKind::Tcp => {
                let app = TcpProxy {
                    entrypoint: name,
                    shared: shared.clone(),
                    counters,
                    proxy_protocol,
                    max_connections: ep.max_connections,
                    idle_timeout: config.server.idle_timeout,
                };
                let mut svc = Service::new(format!("entrypoint {}", ep.name), app);
                listen(&mut svc, &addr);
                server.add_service(svc);
            }
        }
    }

    let admin = Admin {
        shared: shared.clone(),
        token: config.admin.token.clone(),
        entrypoints: config.entrypoints.values().cloned().collect(),
    };
    let mut svc = Service::new("admin".to_string(), HttpServer::new_app(admin));
    svc.add_tcp(&config.admin.listen.to_string());
    svc.threads = Some(1);
    server.add_service(svc);

    server.add_service(background_service(
        "health checks",
        crate::health::HealthLoop { shared: shared.clone() },
    ));

    if let Some(r) = &config.providers.rancher {
        let tcp = config.entrypoints_of(EntrypointKind::Tcp);
        server.add_service(background_service(
            "rancher provider",
            crate::discovery::rancher::Rancher::new(r.clone(), tcp, shared.clone()),
        ));
    }

    if let Some(k) = &config.providers.kubernetes {
        let tcp = config.entrypoints_of(EntrypointKind::Tcp);
        let provider = crate::discovery::kubernetes::Kubernetes {
            cfg: k.clone(),
            tcp_entrypoints: tcp,
            shared: shared.clone(),
        };
        server.add_service(background_service("kubernetes provider", provider));
    }

    if let Some(acme) = &config.tls.acme {
        let https_entrypoints = config.entrypoints_of(EntrypointKind::Https);
        server.add_service(background_service(
            "acme",
            crate::tls::acme::Acme {
                settings: acme.clone(),
                shared: shared.clone(),
                https_entrypoints,
            },
        ));
    }
    if !config.tls.certificates.is_empty() || config.tls.default_certificate.is_some() {
        let watcher = crate::tls::CertWatcher {
            settings: config.tls.clone(),
            store: shared.certs.clone(),
        };
        server.add_service(background_service("certificates", watcher));
    }

    let mut reload = None;

    if let Some(path) = config_path {
        let provider = FileProvider::new(path, shared.clone(), config);
        reload = Some(provider.trigger());
        server.add_service(background_service("file provider", provider));
    }
    Ok(Built { server, shared, reload })
}

impl Built {
    /// Run until stopped; returns after the drain.
    pub fn run(self, signals: Signals) {
        let shutdown_signal: Box<dyn ShutdownSignalWatch> = match signals {
            Signals::Process => Box::new(ProcessSignals),
            Signals::Channel(rx) => Box::new(ChannelSignals(Mutex::new(Some(rx)))),
        };
        self.server.run(RunArgs { shutdown_signal });
    }
}

/// Build and run in this thread until stopped.
pub fn run(config: Config, opts: RunOptions) -> Result<(), StartError> {
    build(config, opts.config_path, opts.upgrade)?.run(opts.signals);
    Ok(())
}

/// A lariat running on a thread of this process (tests, embedding).
pub struct Running {
    stop: mpsc::UnboundedSender<ShutdownSignal>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub shared: Arc<Shared>,
    pub reload: Option<Arc<Notify>>,
}

impl Running {
    /// Start `config` on a new thread.
    pub fn start(config: Config, config_path: Option<PathBuf>) -> Result<Running, StartError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let built = build(config, config_path, false)?;
        let shared = built.shared.clone();
        let reload = built.reload.clone();
        let thread = std::thread::spawn(move || built.run(Signals::Channel(rx)));
        Ok(Running {
            stop: tx,
            thread: Some(thread),
            shared,
            reload,
        })
    }

    /// Drain for the grace period, then stop; returns when the server has exited.
    pub fn drain(mut self) {
        let _ = self.stop.send(ShutdownSignal::GracefulTerminate);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(ShutdownSignal::FastShutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accept::Accept;

    struct Nothing;

    #[async_trait]
    impl ServerApp for Nothing {
        async fn process_new(self: &Arc<Self>, _: Stream, _: &ShutdownWatch) -> Option<Stream> {
            None
        }
    }

    /// What every open plain HTTP connection's task holds beside the layers it calls: the
    /// stream, the open-connection count, the stop signal and the call in progress. The
    /// accepted socket and address are made into the stream before the task, and the PROXY
    /// header's reader is boxed (it was 616 bytes, holding the socket's digest).
    #[tokio::test]
    async fn a_connection_task_holds_only_its_stream() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (tcp, peer) = listener.accept().unwrap();
        tcp.set_nonblocking(true).unwrap();
        let graceful = Arc::new(Graceful {
            inner: Arc::new(Nothing),
            linger: Duration::ZERO,
            counters: Arc::default(),
            proxy_protocol: None,
            max_connections: 0,
            head_timeout: Some(Duration::from_secs(1)),
        });
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let task = graceful.accepted(tcp, peer, shutdown);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 128, "a connection's task future is {size} bytes");
        task.await;
    }
}
