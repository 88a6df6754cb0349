//! The Rancher provider: long-polls rancher-metadata's `/version`, reads `/services` (and
//! `/containers` when services list container names) on each new version, and publishes the
//! labelled services. Unreachable or malformed metadata keeps the last good state; only a valid
//! answer removes routes.

mod labels;
mod model;

pub use labels::{desired, Skipped};
pub use model::{MetaContainer, MetaContainerRef, MetaService};

use crate::config::RancherProvider;
use crate::desired::Desired;
use crate::state::Shared;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Why a sync failed; the last good state stays.
#[derive(Debug, thiserror::Error)]
pub enum RancherError {
    #[error("GET {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("GET {url}: status {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: malformed answer: {message}")]
    Malformed { url: String, message: String },
}

/// Time to let a burst of changes settle before reading them all at once.
const SETTLE: Duration = Duration::from_millis(20);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Rancher {
    pub cfg: RancherProvider,
    pub tcp_entrypoints: Vec<String>,
    pub shared: Arc<Shared>,
    client: reqwest::Client,
}

impl Rancher {
    pub fn new(cfg: RancherProvider, tcp_entrypoints: Vec<String>, shared: Arc<Shared>) -> Rancher {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Rancher {
            cfg,
            tcp_entrypoints,
            shared,
            client,
        }
    }

    async fn get_text(&self, path: &str, timeout: Duration) -> Result<String, RancherError> {
        let url = format!("{}{path}", self.cfg.endpoint);
        let r = self
            .client
            .get(&url)
            .header("accept", "application/json")
            .timeout(timeout)
            .send()
            .await
            .map_err(|source| RancherError::Http { url: url.clone(), source })?;
        if !r.status().is_success() {
            return Err(RancherError::Status {
                url,
                status: r.status().as_u16(),
            });
        }
        r.text().await.map_err(|source| RancherError::Http { url, source })
    }

    /// The metadata version: after a change from `seen`, or when `maxWait` runs out.
    async fn version(&self, seen: Option<&str>) -> Result<String, RancherError> {
        let text = match seen {
            Some(v) => {
                let wait = self.cfg.long_poll;
                let path = format!("/version?wait=true&value={}&maxWait={}", urlencode(v), wait.as_secs());
                self.get_text(&path, wait + Duration::from_secs(10)).await?
            }
            None => self.get_text("/version", Duration::from_secs(10)).await?,
        };
        // JSON gives a quoted string; plain text the bare version.
        let v = serde_json::from_str::<String>(&text).unwrap_or_else(|_| text.trim().to_string());
        if v.is_empty() {
            return Err(RancherError::Malformed {
                url: format!("{}/version", self.cfg.endpoint),
                message: "empty version".into(),
            });
        }
        Ok(v)
    }

    /// Read the services (and containers when needed) and compute the desired state.
    pub async fn fetch(&self) -> Result<(Desired, Vec<Skipped>), RancherError> {
        let url = format!("{}/services", self.cfg.endpoint);
        let text = self.get_text("/services", Duration::from_secs(10)).await?;
        let services: Vec<MetaService> = serde_json::from_str(&text).map_err(|e| RancherError::Malformed {
            url,
            message: e.to_string(),
        })?;
        let mut containers = BTreeMap::new();
        if services
            .iter()
            .any(|s| s.containers.iter().any(|c| matches!(c, MetaContainerRef::Name(_))))
        {
            let url = format!("{}/containers", self.cfg.endpoint);
            let text = self.get_text("/containers", Duration::from_secs(10)).await?;
            let list: Vec<MetaContainer> = serde_json::from_str(&text).map_err(|e| RancherError::Malformed {
                url,
                message: e.to_string(),
            })?;
            containers = list.into_iter().map(|c| (c.name.clone(), c)).collect();
        }
        Ok(desired(&services, &containers, &self.cfg, &self.tcp_entrypoints))
    }

    /// One sync at `version`: fetch and publish. Logs what was skipped when it changes.
    async fn sync(&self, version: &str, last_skipped: &mut Vec<Skipped>) -> Result<(), RancherError> {
        let (d, skipped) = self.fetch().await?;
        if skipped != *last_skipped {
            for s in &skipped {
                log::warn!("rancher: service {} skipped: {}", s.service, s.reason);
            }
            *last_skipped = skipped;
        }
        let stats = self.shared.registry.apply("rancher", d);
        log::debug!(
            "rancher: version {version} applied ({} services rebuilt, {} unchanged)",
            stats.services_rebuilt,
            stats.services_reused
        );
        self.shared.provider_synced("rancher", Some(version.to_string()));
        Ok(())
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[async_trait]
impl BackgroundService for Rancher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut applied: Option<String> = None;
        let mut failing = false;
        let mut backoff = BACKOFF_MIN;
        let mut skipped = Vec::new();
        loop {
            let step = async {
                let v = self.version(applied.as_deref()).await?;
                if applied.as_deref() == Some(v.as_str()) {
                    return Ok(()); // maxWait ran out with no change
                }
                // Let a burst settle, then read the newest version and everything at once.
                tokio::time::sleep(SETTLE).await;
                let v = if applied.is_some() { self.version(None).await? } else { v };
                self.sync(&v, &mut skipped).await?;
                applied = Some(v);
                Ok::<(), RancherError>(())
            };
            let result = tokio::select! {
                _ = shutdown.changed() => return,
                r = step => r,
            };
            match result {
                Ok(()) => {
                    if failing {
                        log::info!("rancher: metadata at {} answers again", self.cfg.endpoint);
                        failing = false;
                    }
                    backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    self.shared.provider_failed("rancher", e.to_string());
                    if !failing {
                        log::error!("rancher: {e}; keeping the last good state and retrying with backoff");
                        failing = true;
                    }
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
