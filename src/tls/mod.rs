//! TLS termination: certificates from files in one table (exact, `*.parent`, default) served by a
//! resolver that reads an ArcSwap, the rustls server config (ALPN h2 and http/1.1, minimum
//! version), and a watcher that reloads certificate files when they change.

pub mod cert;
mod store;

pub use store::{CertStore, Table};

use crate::config::{TlsSettings, TlsVersion};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use rustls::ServerConfig;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Load every certificate of the settings into a table; the first error is returned.
pub fn load_table(settings: &TlsSettings) -> Result<Table, cert::CertError> {
    let certs = settings
        .certificates
        .iter()
        .map(|f| cert::load(&f.cert, &f.key))
        .collect::<Result<Vec<_>, _>>()?;
    let default = settings
        .default_certificate
        .as_ref()
        .map(|f| cert::load(&f.cert, &f.key))
        .transpose()?;
    Ok(Table::new(certs, default))
}

/// The rustls config of every https entrypoint: certificates from `store`, ALPN h2 then
/// http/1.1, TLS 1.2 or 1.3 from `min_version` on.
pub fn server_config(store: Arc<CertStore>, min_version: TlsVersion) -> Arc<ServerConfig> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V13 => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap_or_else(|_| ServerConfig::builder_with_protocol_versions(versions));
    let mut config = builder.with_no_client_auth().with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Reloads the certificate files when any of them changes (polled every second); a file that no
/// longer loads is refused with a logged reason and the table in force stays.
pub struct CertWatcher {
    pub settings: TlsSettings,
    pub store: Arc<CertStore>,
}

fn stamps(settings: &TlsSettings) -> Vec<Option<(SystemTime, u64)>> {
    settings
        .certificates
        .iter()
        .chain(settings.default_certificate.iter())
        .flat_map(|f| [&f.cert, &f.key])
        .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

#[async_trait]
impl BackgroundService for CertWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last = stamps(&self.settings);
        let mut pending = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let now = stamps(&self.settings);
            if now == last {
                continue;
            }
            // Reload once the files have stayed put for one tick (a certificate and its key are
            // usually written one after the other).
            if pending.as_ref() != Some(&now) {
                pending = Some(now);
                continue;
            }
            match load_table(&self.settings) {
                Ok(t) => {
                    log::info!("tls: certificates reloaded ({} in the table)", t.all.len());
                    self.store.replace(t);
                }
                Err(e) => log::error!("tls: certificate reload refused, the certificates in force stay: {e}"),
            }
            last = pending.take().unwrap_or_default();
        }
    }
}
