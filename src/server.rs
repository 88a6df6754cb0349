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
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::ProxyServiceBuilder;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::quit()))
        else {
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

/// A built server, ready to run.
pub struct Built {
    server: Server,
    pub shared: Arc<Shared>,
    /// Asks the file provider to reload now, when there is one.
    pub reload: Option<Arc<Notify>>,
}

fn server_conf(config: &Config) -> ServerConf {
    let mut conf = ServerConf::default();
    conf.threads = config.server.threads;
    conf.grace_period_seconds = Some(config.server.grace_period.as_secs_f64().ceil() as u64);
    conf.graceful_shutdown_timeout_seconds = Some(1);
    conf.upgrade_sock = config.server.upgrade_sock.clone();
    conf.pid_file = config.server.pid_file.clone();
    conf
}

/// Build every service of the process from a validated config.
pub fn build(config: Config, config_path: Option<PathBuf>, upgrade: bool) -> Built {
    let opt = Opt { upgrade, ..Default::default() };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config));
    server.bootstrap();
    let conf = server.configuration.clone();
    let shared = Arc::new(Shared::new(config.server.access_log));
    shared.registry.apply("file", config.desired.clone());

    for ep in config.entrypoints.values() {
        let name: Arc<str> = ep.name.as_str().into();
        let addr = ep.listen.to_string();
        match ep.kind {
            EntrypointKind::Http => {
                let mut opts = HttpServerOptions::default();
                opts.h2c = ep.h2c;
                let app = HttpProxy { entrypoint: name, shared: shared.clone() };
                let mut svc = ProxyServiceBuilder::new(&conf, app).name(format!("entrypoint {}", ep.name)).server_options(opts).build();
                svc.add_tcp(&addr);
                server.add_service(svc);
            }
            EntrypointKind::Tcp => {
                let app = TcpProxy { entrypoint: name, shared: shared.clone() };
                let mut svc = Service::new(format!("entrypoint {}", ep.name), app);
                svc.add_tcp(&addr);
                server.add_service(svc);
            }
        }
    }

    let admin = Admin { shared: shared.clone(), token: config.admin.token.clone() };
    let mut svc = Service::new("admin".to_string(), HttpServer::new_app(admin));
    svc.add_tcp(&config.admin.listen.to_string());
    svc.threads = Some(1);
    server.add_service(svc);

    let mut reload = None;
    if let Some(path) = config_path {
        let provider = FileProvider::new(path, shared.clone(), config);
        reload = Some(provider.trigger());
        server.add_service(background_service("file provider", provider));
    }
    Built { server, shared, reload }
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
pub fn run(config: Config, opts: RunOptions) {
    build(config, opts.config_path, opts.upgrade).run(opts.signals);
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
    pub fn start(config: Config, config_path: Option<PathBuf>) -> Running {
        let (tx, rx) = mpsc::unbounded_channel();
        let built = build(config, config_path, false);
        let shared = built.shared.clone();
        let reload = built.reload.clone();
        let thread = std::thread::spawn(move || built.run(Signals::Channel(rx)));
        Running { stop: tx, thread: Some(thread), shared, reload }
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
