//! TLS termination: certificates from files in one table (exact, `*.parent`, default) served by a
//! resolver that reads an ArcSwap, the rustls server config (ALPN h2 and http/1.1, minimum
//! version), and a watcher that reloads certificate files when they change.

pub mod acme;
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

/// Load every certificate file of the settings (and the default); the first error is returned.
pub fn load_files(settings: &TlsSettings) -> Result<(Vec<cert::Loaded>, Option<cert::Loaded>), cert::CertError> {
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
    Ok((certs, default))
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
            match load_files(&self.settings) {
                Ok((certs, default)) => {
                    log::info!("tls: certificate files reloaded ({})", certs.len() + default.is_some() as usize);
                    self.store.set_files(certs, default);
                }
                Err(e) => log::error!("tls: certificate reload refused, the certificates in force stay: {e}"),
            }
            last = pending.take().unwrap_or_default();
        }
    }
}

/// PEM roots (a CA file) in the form Pingora's upstream TLS takes.
pub fn roots(pem: &[u8]) -> Result<Arc<pingora_core::protocols::tls::CaType>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    let wrapped: Vec<pingora_core::utils::tls::WrappedX509> = certs
        .into_iter()
        .map(|c| pingora_core::utils::tls::WrappedX509::new(c.as_ref().to_vec(), pingora_core::utils::tls::parse_x509))
        .collect();
    Ok(Arc::from(wrapped.into_boxed_slice()))
}
