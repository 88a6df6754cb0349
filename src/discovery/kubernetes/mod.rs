//! The Kubernetes provider: kube-rs watchers with reflector stores on Ingresses, Services,
//! EndpointSlices and TLS Secrets (all namespaces or the listed ones). It publishes only once every initial list
//! is complete, coalesces bursts of events, and keeps the last good state through dropped
//! watches, 410 relists (the store is replaced whole on `InitDone`) and API outages. A burst of
//! EndpointSlice events alone (membership) updates only the members of their Services' services;
//! any other change maps the whole state again.

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
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Events closer together than this are applied together.
const COALESCE: Duration = Duration::from_millis(10);

/// What the watch streams tell the loop.
enum Msg {
    /// Stream `i` finished an initial list (or a relist).
    Listed(usize),
    Changed(Change),
    Error(String),
}

/// What an object's change can touch in the published state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    /// Anything: routes, settings, certificates (the whole state is mapped again).
    Any,
    /// Only the members of the services published for this Service (namespace, name): an
    /// EndpointSlice of it was added, changed or deleted.
    Members(String, String),
}

fn any<K>(_: &K) -> Change {
    Change::Any
}

/// An EndpointSlice's change touches its Service's members only.
fn slice_change(s: &EndpointSlice) -> Change {
    match mapping::slice_owner(s) {
        Some((ns, name)) => Change::Members(ns, name),
        None => Change::Any,
    }
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

fn watch<K>(
    api: Api<K>,
    index: usize,
    fields: Option<&str>,
    change: fn(&K) -> Change,
    streams: &mut SelectAll<BoxStream<'static, Msg>>,
) -> Store<K>
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
        Ok(Event::Apply(o) | Event::Delete(o)) => Msg::Changed(change(&o)),
        // A relist: the whole state is mapped again at its InitDone.
        Ok(Event::Init | Event::InitApply(_)) => Msg::Changed(Change::Any),
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
            stores.ingresses.push(watch(api!(Ingress), i, None, any, &mut streams));
            stores.services.push(watch(api!(Service), i + 1, None, any, &mut streams));
            stores
                .slices
                .push(watch(api!(EndpointSlice), i + 2, None, slice_change, &mut streams));
            // Only TLS Secrets, and only to serve the certificates Ingresses ask for.
            stores
                .secrets
                .push(watch(api!(Secret), i + 3, Some("type=kubernetes.io/tls"), any, &mut streams));
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

    /// Publish new members for the services of the Services named, and nothing else: what an
    /// EndpointSlice event needs, at a cost proportional to the services touched (the registry
    /// swaps each in its cell). False when that cannot be done (a Service or port is gone, or
    /// the registry does not have the service): the caller publishes the whole state.
    fn publish_members(&self, stores: &Stores, changed: &BTreeSet<(String, String)>) -> bool {
        // The slices of the Services named, in one pass over the slice stores.
        let mut slices: BTreeMap<&(String, String), Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for slice in stores.slices.iter().flat_map(|s| s.state()) {
            if let Some(key) = mapping::slice_owner(&slice).and_then(|o| changed.get(&o)) {
                slices.entry(key).or_default().push(slice);
            }
        }
        let mut updates = Vec::new();
        for key @ (ns, name) in changed {
            let ids = self.shared.registry.published_ids("kubernetes", &format!("{ns}/{name}:"));
            if ids.is_empty() {
                continue; // no route leads to this Service
            }
            let svc_key = reflector::ObjectRef::<Service>::new(name).within(ns);
            let Some(svc) = stores.services.iter().find_map(|s| s.get(&svc_key)) else {
                return false;
            };
            let slices = slices.get(key).map(|v| v.as_slice()).unwrap_or(&[]);
            for id in ids {
                let Some(port) = mapping::port_of_id(&svc, &id) else {
                    return false;
                };
                updates.push((id, mapping::members(slices, port)));
            }
        }
        if updates.is_empty() {
            return true;
        }
        let Some(stats) = self.shared.registry.update_members("kubernetes", updates) else {
            return false;
        };
        log::debug!(
            "kubernetes: members updated ({} services rebuilt, {} unchanged)",
            stats.services_rebuilt,
            stats.services_reused
        );
        self.shared.provider_synced("kubernetes", None);
        true
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
        let mut published = false;
        loop {
            let msg = tokio::select! {
                _ = shutdown.changed() => return,
                m = streams.next() => m,
            };
            let Some(mut msg) = msg else { return };
            // Take everything that arrives within the coalescing window.
            let mut dirty = false;
            let mut changes = BTreeSet::new();
            let deadline = tokio::time::Instant::now() + COALESCE;
            loop {
                match msg {
                    Msg::Listed(i) => {
                        listed[i] = true;
                        dirty = true;
                        changes.insert(Change::Any);
                    }
                    Msg::Changed(c) => {
                        dirty = true;
                        changes.insert(c);
                    }
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
                // Slices alone changed, after a first whole publish: only their services'
                // members; anything else maps the whole state again.
                let members: Option<BTreeSet<(String, String)>> = changes
                    .into_iter()
                    .map(|c| match c {
                        Change::Members(ns, name) => Some((ns, name)),
                        Change::Any => None,
                    })
                    .collect();
                let done = published && members.is_some_and(|m| self.publish_members(&stores, &m));
                if !done {
                    self.publish(&stores, &mut skipped);
                    published = true;
                }
            }
        }
    }
}
