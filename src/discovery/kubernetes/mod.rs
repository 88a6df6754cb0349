//! The Kubernetes provider: kube-rs watchers with reflector stores on Ingresses, Services,
//! EndpointSlices and TLS Secrets (all namespaces or the listed ones). It publishes only once every initial list
//! is complete, coalesces bursts of events, and keeps the last good state through dropped
//! watches, 410 relists (the store is replaced whole on `InitDone`) and API outages.

pub mod mapping;

pub use mapping::{desired, Objects, Skipped};

use crate::config::KubernetesProvider;
use crate::state::Shared;
use async_trait::async_trait;
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// Events closer together than this are applied together.
const COALESCE: Duration = Duration::from_millis(10);

/// What the watch streams tell the loop.
enum Msg {
    /// Stream `i` finished an initial list (or a relist).
    Listed(usize),
    Changed,
    Error(String),
}

pub struct Kubernetes {
    pub cfg: KubernetesProvider,
    pub tcp_entrypoints: Vec<String>,
    pub shared: Arc<Shared>,
}

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("no Kubernetes configuration (in-cluster service account or $KUBECONFIG): {0}")]
    Infer(String),
    #[error("Kubernetes client: {0}")]
    Client(String),
}

async fn client(cfg: &KubernetesProvider) -> Result<Client, ClientError> {
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| ClientError::Kubeconfig {
                path: path.clone(),
                message: e.to_string(),
            })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| ClientError::Kubeconfig {
                    path: path.clone(),
                    message: e.to_string(),
                })?
        }
        None => kube::Config::infer().await.map_err(|e| ClientError::Infer(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| ClientError::Client(e.to_string()))
}

struct Stores {
    ingresses: Vec<Store<Ingress>>,
    services: Vec<Store<Service>>,
    slices: Vec<Store<EndpointSlice>>,
    secrets: Vec<Store<Secret>>,
}

impl Stores {
    fn objects(&self) -> Objects {
        Objects {
            ingresses: self.ingresses.iter().flat_map(|s| s.state()).collect(),
            services: self.services.iter().flat_map(|s| s.state()).collect(),
            slices: self.slices.iter().flat_map(|s| s.state()).collect(),
            secrets: self.secrets.iter().flat_map(|s| s.state()).collect(),
        }
    }
}

fn watch<K>(api: Api<K>, index: usize, fields: Option<&str>, streams: &mut SelectAll<BoxStream<'static, Msg>>) -> Store<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (reader, writer) = reflector::store::<K>();
    let mut wc = watcher::Config::default();
    if let Some(f) = fields {
        wc = wc.fields(f);
    }
    let s = watcher::watcher(api, wc).default_backoff().reflect(writer).map(move |ev| match ev {
        Ok(Event::InitDone) => Msg::Listed(index),
        Ok(_) => Msg::Changed,
        Err(e) => Msg::Error(e.to_string()),
    });
    streams.push(s.boxed());
    reader
}

impl Kubernetes {
    /// Start the watchers: one per kind, per namespace (or one per kind for all namespaces).
    fn watchers(&self, client: &Client) -> (Stores, SelectAll<BoxStream<'static, Msg>>) {
        let mut streams = SelectAll::new();
        let mut stores = Stores {
            ingresses: vec![],
            services: vec![],
            slices: vec![],
            secrets: vec![],
        };
        let scopes: Vec<Option<&str>> = if self.cfg.namespaces.is_empty() {
            vec![None]
        } else {
            self.cfg.namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let mut i = 0;
        for ns in scopes {
            let c = client.clone();
            macro_rules! api {
                ($k:ty) => {
                    match ns {
                        Some(ns) => Api::<$k>::namespaced(c.clone(), ns),
                        None => Api::<$k>::all(c.clone()),
                    }
                };
            }
            stores.ingresses.push(watch(api!(Ingress), i, None, &mut streams));
            stores.services.push(watch(api!(Service), i + 1, None, &mut streams));
            stores.slices.push(watch(api!(EndpointSlice), i + 2, None, &mut streams));
            // Only TLS Secrets, and only to serve the certificates Ingresses ask for.
            stores
                .secrets
                .push(watch(api!(Secret), i + 3, Some("type=kubernetes.io/tls"), &mut streams));
            i += 4;
        }
        (stores, streams)
    }

    fn publish(&self, stores: &Stores, last_skipped: &mut Vec<Skipped>) {
        let objects = stores.objects();
        let (d, mut skipped) = desired(&objects, &self.cfg, &self.tcp_entrypoints);
        let (certs, cert_skipped) = mapping::certificates(&objects, &self.cfg);
        skipped.extend(cert_skipped);
        self.shared.certs.set_kubernetes(certs);
        if skipped != *last_skipped {
            for s in &skipped {
                log::warn!("kubernetes: {} skipped: {}", s.object, s.reason);
            }
            *last_skipped = skipped;
        }
        let stats = self.shared.registry.apply("kubernetes", d);
        log::debug!(
            "kubernetes: applied ({} services rebuilt, {} unchanged)",
            stats.services_rebuilt,
            stats.services_reused
        );
        self.shared.provider_synced("kubernetes", None);
    }
}

#[async_trait]
impl BackgroundService for Kubernetes {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = loop {
            match client(&self.cfg).await {
                Ok(c) => break c,
                Err(e) => {
                    log::error!("kubernetes: {e}; retrying in 5s");
                    self.shared.provider_failed("kubernetes", e.to_string());
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        };
        let (stores, mut streams) = self.watchers(&client);
        let mut listed = vec![false; streams.len()];
        let mut failing = false;
        let mut skipped = Vec::new();
        loop {
            let msg = tokio::select! {
                _ = shutdown.changed() => return,
                m = streams.next() => m,
            };
            let Some(mut msg) = msg else { return };
            // Take everything that arrives within the coalescing window.
            let mut dirty = false;
            let deadline = tokio::time::Instant::now() + COALESCE;
            loop {
                match msg {
                    Msg::Listed(i) => {
                        listed[i] = true;
                        dirty = true;
                    }
                    Msg::Changed => dirty = true,
                    Msg::Error(e) => {
                        self.shared.provider_failed("kubernetes", e.clone());
                        if !failing {
                            log::error!("kubernetes: {e}; keeping the last good state while the watch recovers");
                            failing = true;
                        }
                    }
                }
                match tokio::time::timeout_at(deadline, streams.next()).await {
                    Ok(Some(m)) => msg = m,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if dirty && failing {
                log::info!("kubernetes: the API answers again");
                failing = false;
            }
            if dirty && listed.iter().all(|l| *l) {
                self.publish(&stores, &mut skipped);
            }
        }
    }
}
