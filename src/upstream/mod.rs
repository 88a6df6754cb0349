//! The registry: the desired state of every provider, merged into one immutable `Snapshot` that is
//! swapped in atomically by a single writer. Requests load the snapshot once and keep it, and
//! keep the service they were routed to. A change confined to services (the usual membership
//! change) swaps each changed service in its cell instead of making a new snapshot.

mod idle;
mod member;
mod select;
mod service;

pub use idle::IdleConns;
pub use member::{BackendState, InFlight, Member, ServiceSlot, ServiceStats};
pub use service::{Attempt, Pick, Service};

use crate::desired::{BackendSpec, Desired, HttpRoute, ServiceId, ServiceSpec, TcpRoute};
use crate::route::RouteTable;
use crate::route_tcp::TcpTable;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A service's place in the snapshot and in the route tables that lead to it. A change to the
/// service alone (its members, its settings) swaps the service in its cell: no table is rebuilt
/// and no other service is looked at.
pub struct ServiceCell(ArcSwap<Service>);

impl ServiceCell {
    fn new(service: Service) -> Arc<ServiceCell> {
        Arc::new(ServiceCell(ArcSwap::from_pointee(service)))
    }

    /// The service as of now; a request keeps what it loaded.
    pub fn load(&self) -> Arc<Service> {
        self.0.load_full()
    }

    /// Give the service `spec`: swapped in for a new one built from it (members kept by
    /// address) when it differs from the current spec. True when it did.
    fn set(&self, spec: &ServiceSpec) -> bool {
        let cur = self.load();
        if cur.spec == *spec {
            return false;
        }
        self.0.store(Arc::new(Service::build(spec.clone(), Some(&cur))));
        true
    }

    /// A look at the service as of now, without taking a reference to keep.
    pub fn with<R>(&self, f: impl FnOnce(&Service) -> R) -> R {
        f(&self.0.load())
    }
}

/// Everything a request needs to be routed, as of one moment. A service's own changes reach it
/// through the service's cell; a new snapshot is made when the routes or the set of services
/// change.
#[derive(Default)]
pub struct Snapshot {
    pub cells: BTreeMap<ServiceId, Arc<ServiceCell>>,
    /// Route table per http entrypoint.
    pub http: HashMap<String, RouteTable>,
    /// TCP table per entrypoint (tcp entrypoints, and https ones with passthrough routes).
    pub tcp: HashMap<String, TcpTable>,
    /// The routes as published, for the admin API.
    pub http_routes: Vec<HttpRoute>,
    pub tcp_routes: Vec<TcpRoute>,
    /// Host names providers ask ACME certificates for.
    pub acme_names: Vec<String>,
}

impl Snapshot {
    pub fn service(&self, id: &ServiceId) -> Option<Arc<Service>> {
        self.cells.get(id).map(|c| c.load())
    }

    /// Every service, in id order.
    pub fn services(&self) -> impl Iterator<Item = Arc<Service>> + '_ {
        self.cells.values().map(|c| c.load())
    }
}

/// What an apply changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub services_reused: usize,
    pub services_rebuilt: usize,
    /// Whether a new snapshot (route tables and all) was made: the routes or the set of
    /// services changed.
    pub routes_rebuilt: bool,
}

impl ApplyStats {
    fn count(&mut self, rebuilt: bool) {
        match rebuilt {
            true => self.services_rebuilt += 1,
            false => self.services_reused += 1,
        }
    }
}

/// What one provider published last.
#[derive(Default)]
struct Published {
    /// Its routes and names; `services` is kept apart, by id.
    desired: Desired,
    services: BTreeMap<ServiceId, ServiceSpec>,
}

pub struct Registry {
    current: ArcSwap<Snapshot>,
    /// Bumped by every change that took effect.
    version: AtomicU64,
    /// How many of those were member updates (`update_members`).
    member_updates: AtomicU64,
    /// The single writer's state: the last state each provider published.
    writer: Mutex<BTreeMap<String, Published>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            current: ArcSwap::from_pointee(Snapshot::default()),
            version: AtomicU64::new(0),
            member_updates: AtomicU64::new(0),
            writer: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Registry {
    /// The current snapshot; cheap (one atomic increment).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// How many changes have taken effect.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// How many of them were member updates, which touch only the services named.
    pub fn member_updates(&self) -> u64 {
        self.member_updates.load(Ordering::Relaxed)
    }

    /// Replace what `provider` publishes. Services whose spec did not change keep their object;
    /// changed services keep the members whose address stays and are swapped in their cells.
    /// The route tables are rebuilt only when the routes or the set of services changed.
    pub fn apply(&self, provider: &str, mut desired: Desired) -> ApplyStats {
        let mut all = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut services = BTreeMap::new();
        for spec in std::mem::take(&mut desired.services) {
            // Within one provider, the first spec of an id is kept (as across providers).
            services.entry(spec.id.clone()).or_insert(spec);
        }
        let same_shape = all.get(provider).is_some_and(|p| {
            p.desired.http_routes == desired.http_routes
                && p.desired.tcp_routes == desired.tcp_routes
                && p.desired.acme_names == desired.acme_names
                && p.services.keys().eq(services.keys())
        });
        all.insert(provider.to_string(), Published { desired, services });
        let old = self.current.load_full();
        // Every service of the provider must have its cell already (it always has, unless an
        // earlier provider shadowed it before).
        let same_shape = same_shape
            && all[provider]
                .services
                .keys()
                .all(|id| old.cells.contains_key(id) || Self::shadowed(&all, provider, id));
        let mut stats = ApplyStats::default();
        let mut cells: BTreeMap<ServiceId, Arc<ServiceCell>> = BTreeMap::new();
        // The file provider is first in BTreeMap order ("file" < "kubernetes" < "rancher"); a
        // service id published twice keeps its first spec.
        for (name, p) in all.iter() {
            if same_shape && name != provider {
                continue;
            }
            for (id, spec) in &p.services {
                if same_shape {
                    if Self::shadowed(&all, name, id) {
                        continue;
                    }
                } else if cells.contains_key(id) {
                    log::warn!("service {id} is published twice; keeping the first");
                    continue;
                }
                let cell = match old.cells.get(id) {
                    Some(cell) => {
                        stats.count(cell.set(spec));
                        cell.clone()
                    }
                    None => {
                        stats.services_rebuilt += 1;
                        ServiceCell::new(Service::build(spec.clone(), None))
                    }
                };
                if !same_shape {
                    cells.insert(id.clone(), cell);
                }
            }
        }
        if !same_shape {
            stats.routes_rebuilt = true;
            self.current.store(Arc::new(Self::build(&all, cells)));
        }
        self.version.fetch_add(1, Ordering::Relaxed);
        stats
    }

    /// Give services `provider` publishes new members, everything else about them unchanged:
    /// what a membership change in discovery needs, in time proportional to the services
    /// changed (their cells are found by id and swapped; no table is rebuilt, no other service
    /// is looked at). None, and nothing changed, when an id is not one `provider` published
    /// last (or another provider's spec shadows it): the caller publishes its whole state.
    pub fn update_members(&self, provider: &str, changes: Vec<(ServiceId, Vec<BackendSpec>)>) -> Option<ApplyStats> {
        let mut all = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let snap = self.current.load_full();
        let p = all.get(provider)?;
        if changes
            .iter()
            .any(|(id, _)| !p.services.contains_key(id) || !snap.cells.contains_key(id) || Self::shadowed(&all, provider, id))
        {
            return None;
        }
        let p = all.get_mut(provider)?;
        let mut stats = ApplyStats::default();
        for (id, backends) in changes {
            let (Some(spec), Some(cell)) = (p.services.get_mut(&id), snap.cells.get(&id)) else {
                continue;
            };
            spec.backends = backends;
            stats.count(cell.set(spec));
        }
        self.member_updates.fetch_add(1, Ordering::Relaxed);
        self.version.fetch_add(1, Ordering::Relaxed);
        Some(stats)
    }

    /// The ids `provider` published last that begin with `prefix`, in order.
    pub fn published_ids(&self, provider: &str, prefix: &str) -> Vec<ServiceId> {
        let all = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = all.get(provider) else { return Vec::new() };
        p.services
            .range(ServiceId(prefix.to_string())..)
            .map(|(id, _)| id)
            .take_while(|id| id.0.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Whether a provider before `provider` (in merge order) publishes `id` too.
    fn shadowed(all: &BTreeMap<String, Published>, provider: &str, id: &ServiceId) -> bool {
        all.iter()
            .take_while(|(name, _)| name.as_str() < provider)
            .any(|(_, p)| p.services.contains_key(id))
    }

    /// A new snapshot: the cells, and route tables that lead to them.
    fn build(all: &BTreeMap<String, Published>, cells: BTreeMap<ServiceId, Arc<ServiceCell>>) -> Snapshot {
        let mut snap = Snapshot {
            cells,
            ..Default::default()
        };
        for p in all.values() {
            let d = &p.desired;
            for r in &d.http_routes {
                let cell = snap.cells.get(&r.service).cloned();
                for ep in &r.entrypoints {
                    snap.http.entry(ep.clone()).or_default().add(r, cell.clone());
                }
                snap.http_routes.push(r.clone());
            }
            snap.acme_names.extend(d.acme_names.iter().cloned());
            for r in &d.tcp_routes {
                let cell = snap.cells.get(&r.service).cloned();
                if !snap.tcp.entry(r.entrypoint.clone()).or_default().add(r, cell) {
                    log::warn!(
                        "tcp entrypoint {}: {} claims a server name (or the default) already taken",
                        r.entrypoint,
                        r.service
                    );
                    continue;
                }
                snap.tcp_routes.push(r.clone());
            }
        }
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{BackendSpec, HostMatch, ServiceSpec};

    fn spec(name: &str, ports: &[u16]) -> ServiceSpec {
        ServiceSpec::new(
            ServiceId(format!("{name}@file")),
            ports
                .iter()
                .map(|p| BackendSpec {
                    addr: format!("127.0.0.1:{p}").parse().unwrap(),
                    weight: 1,
                })
                .collect(),
        )
    }

    fn desired(services: Vec<ServiceSpec>) -> Desired {
        let http_routes = services
            .iter()
            .map(|s| HttpRoute {
                entrypoints: vec!["web".into()],
                host: HostMatch::Exact(format!("{}.test", s.id.0.trim_end_matches("@file"))),
                path_prefix: "/".into(),
                exact: false,
                redirect_https: false,
                service: s.id.clone(),
            })
            .collect();
        Desired {
            http_routes,
            tcp_routes: vec![],
            services,
            acme_names: vec![],
        }
    }

    fn id(n: &str) -> ServiceId {
        ServiceId(format!("{n}@file"))
    }

    fn members(snap: &Snapshot, host: &str) -> Vec<u16> {
        let t = snap.http["web"].lookup(host, "/").unwrap();
        t.service.as_ref().unwrap().load().members.iter().map(|m| m.addr.port()).collect()
    }

    #[test]
    fn unchanged_services_are_reused_and_members_survive() {
        let reg = Registry::default();
        reg.apply("file", desired(vec![spec("a", &[1, 2]), spec("b", &[3])]));
        let s1 = reg.snapshot();
        let (a1, b1) = (s1.service(&id("a")).unwrap(), s1.service(&id("b")).unwrap());
        let v1 = reg.version();
        let stats = reg.apply("file", desired(vec![spec("a", &[1, 2]), spec("b", &[3, 4])]));
        assert_eq!(
            stats,
            ApplyStats {
                services_reused: 1,
                services_rebuilt: 1,
                routes_rebuilt: false,
            }
        );
        // Only b's membership changed: the snapshot and its route tables stay, b is swapped in
        // its cell, and a keeps its object.
        let s2 = reg.snapshot();
        assert!(Arc::ptr_eq(&s1, &s2));
        assert!(Arc::ptr_eq(&a1, &s2.service(&id("a")).unwrap()));
        let b2 = s2.service(&id("b")).unwrap();
        assert!(!Arc::ptr_eq(&b1, &b2));
        assert!(Arc::ptr_eq(&b1.members[0], &b2.members[0]));
        assert_eq!(reg.version(), v1 + 1);
        // A request that loaded b before keeps what it loaded.
        assert_eq!(b1.members.len(), 1);
        assert_eq!(members(&s2, "b.test"), [3, 4]);
    }

    #[test]
    fn a_route_change_makes_a_new_snapshot_with_the_same_cells() {
        let reg = Registry::default();
        reg.apply("file", desired(vec![spec("a", &[1]), spec("b", &[3])]));
        let s1 = reg.snapshot();
        let mut d = desired(vec![spec("a", &[1]), spec("b", &[3])]);
        d.http_routes[1].path_prefix = "/b".into();
        let stats = reg.apply("file", d);
        assert!(stats.routes_rebuilt);
        assert_eq!(stats.services_reused, 2);
        let s2 = reg.snapshot();
        assert!(!Arc::ptr_eq(&s1, &s2));
        assert!(Arc::ptr_eq(&s1.cells[&id("a")], &s2.cells[&id("a")]));
        assert!(s2.http["web"].lookup("b.test", "/").is_none());
        assert!(s1.http["web"].lookup("b.test", "/").is_some(), "the old snapshot is untouched");
        // A service that goes away takes its routes' targets with it.
        let stats = reg.apply("file", desired(vec![spec("a", &[1])]));
        assert!(stats.routes_rebuilt);
        assert!(reg.snapshot().service(&id("b")).is_none());
    }

    #[test]
    fn member_updates_touch_only_the_services_named() {
        let reg = Registry::default();
        reg.apply("file", desired(vec![spec("a", &[1]), spec("b", &[3]), spec("c", &[5])]));
        let s1 = reg.snapshot();
        let (a1, c1) = (s1.service(&id("a")).unwrap(), s1.service(&id("c")).unwrap());
        let new = |ports: &[u16]| spec("x", ports).backends;
        let stats = reg
            .update_members("file", vec![(id("b"), new(&[3, 4])), (id("c"), new(&[5]))])
            .unwrap();
        assert_eq!(
            stats,
            ApplyStats {
                services_reused: 1,
                services_rebuilt: 1,
                routes_rebuilt: false,
            }
        );
        let s2 = reg.snapshot();
        assert!(Arc::ptr_eq(&s1, &s2));
        assert!(Arc::ptr_eq(&a1, &s2.service(&id("a")).unwrap()));
        assert!(Arc::ptr_eq(&c1, &s2.service(&id("c")).unwrap()));
        assert_eq!(members(&s2, "b.test"), [3, 4]);
        // The provider's record has the new members: publishing the same state whole changes
        // nothing more.
        let stats = reg.apply("file", desired(vec![spec("a", &[1]), spec("b", &[3, 4]), spec("c", &[5])]));
        assert_eq!(stats.services_rebuilt, 0);
        // An id the provider did not publish: refused whole, nothing changed.
        let v = reg.version();
        assert!(reg
            .update_members("file", vec![(id("b"), new(&[9])), (id("zz"), new(&[9]))])
            .is_none());
        assert!(reg.update_members("rancher", vec![(id("b"), new(&[9]))]).is_none());
        assert_eq!(reg.version(), v);
        assert_eq!(members(&reg.snapshot(), "b.test"), [3, 4]);
    }

    #[test]
    fn a_shadowed_service_is_not_updated() {
        let reg = Registry::default();
        reg.apply("file", desired(vec![spec("a", &[1])]));
        // A later provider publishing the same id: the file's spec is the one in effect.
        reg.apply(
            "rancher",
            Desired {
                services: vec![spec("a", &[7])],
                ..Default::default()
            },
        );
        assert_eq!(members(&reg.snapshot(), "a.test"), [1]);
        assert!(reg.update_members("rancher", vec![(id("a"), spec("a", &[8]).backends)]).is_none());
        assert_eq!(members(&reg.snapshot(), "a.test"), [1]);
    }

    #[test]
    fn providers_are_merged_and_replaced_whole() {
        let reg = Registry::default();
        reg.apply("file", desired(vec![spec("a", &[1])]));
        let mut r = spec("r", &[5]);
        r.id = ServiceId("r@rancher".into());
        reg.apply(
            "rancher",
            Desired {
                services: vec![r],
                ..Default::default()
            },
        );
        assert_eq!(reg.snapshot().cells.len(), 2);
        reg.apply("rancher", Desired::default());
        assert_eq!(reg.snapshot().cells.len(), 1);
    }
}
