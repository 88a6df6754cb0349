//! The registry: the desired state of every provider, merged into one immutable `Snapshot` that is
//! swapped in atomically by a single writer. Requests load the snapshot once and keep it.

mod idle;
mod member;
mod select;
mod service;

pub use idle::IdleConns;
pub use member::{BackendState, InFlight, Member, ServiceSlot, ServiceStats};
pub use service::{Attempt, Pick, Service};

use crate::desired::{Desired, HttpRoute, ServiceId, TcpRoute};
use crate::route::RouteTable;
use crate::route_tcp::TcpTable;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Everything a request needs to be routed, as of one moment.
#[derive(Default)]
pub struct Snapshot {
    /// Bumped by every apply.
    pub version: u64,
    pub services: BTreeMap<ServiceId, Arc<Service>>,
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

/// What an apply changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub services_reused: usize,
    pub services_rebuilt: usize,
}

pub struct Registry {
    current: ArcSwap<Snapshot>,
    /// The single writer's state: the last desired state of each provider.
    writer: Mutex<BTreeMap<String, Desired>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            current: ArcSwap::from_pointee(Snapshot::default()),
            writer: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Registry {
    /// The current snapshot; cheap (one atomic increment).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replace what `provider` publishes and swap in the merged snapshot. Services whose spec did
    /// not change keep their object; changed services keep the members whose address stays.
    pub fn apply(&self, provider: &str, desired: Desired) -> ApplyStats {
        let mut all = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(provider.to_string(), desired);
        let old = self.current.load_full();
        let mut stats = ApplyStats::default();
        let mut services: BTreeMap<ServiceId, Arc<Service>> = BTreeMap::new();
        // The file provider is first in BTreeMap order ("file" < "kubernetes" < "rancher"); a
        // service id published twice keeps its first spec.
        for d in all.values() {
            for spec in &d.services {
                if services.contains_key(&spec.id) {
                    log::warn!("service {} is published twice; keeping the first", spec.id);
                    continue;
                }
                let prev = old.services.get(&spec.id);
                let svc = match prev {
                    Some(p) if p.spec == *spec => {
                        stats.services_reused += 1;
                        p.clone()
                    }
                    _ => {
                        stats.services_rebuilt += 1;
                        Arc::new(Service::build(spec.clone(), prev.map(|p| p.as_ref())))
                    }
                };
                services.insert(spec.id.clone(), svc);
            }
        }
        let mut snap = Snapshot {
            version: old.version + 1,
            services,
            ..Default::default()
        };
        for d in all.values() {
            for r in &d.http_routes {
                let svc = snap.services.get(&r.service).cloned();
                for ep in &r.entrypoints {
                    snap.http.entry(ep.clone()).or_default().add(r, svc.clone());
                }
                snap.http_routes.push(r.clone());
            }
            snap.acme_names.extend(d.acme_names.iter().cloned());
            for r in &d.tcp_routes {
                let svc = snap.services.get(&r.service).cloned();
                if !snap.tcp.entry(r.entrypoint.clone()).or_default().add(r, svc) {
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
        self.current.store(Arc::new(snap));
        stats
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

    #[test]
    fn unchanged_services_are_reused_and_members_survive() {
        let reg = Registry::default();
        reg.apply("file", desired(vec![spec("a", &[1, 2]), spec("b", &[3])]));
        let s1 = reg.snapshot();
        let stats = reg.apply("file", desired(vec![spec("a", &[1, 2]), spec("b", &[3, 4])]));
        assert_eq!(
            stats,
            ApplyStats {
                services_reused: 1,
                services_rebuilt: 1
            }
        );
        let s2 = reg.snapshot();
        let id = |n: &str| ServiceId(format!("{n}@file"));
        assert!(Arc::ptr_eq(&s1.services[&id("a")], &s2.services[&id("a")]));
        assert!(!Arc::ptr_eq(&s1.services[&id("b")], &s2.services[&id("b")]));
        assert!(Arc::ptr_eq(&s1.services[&id("b")].members[0], &s2.services[&id("b")].members[0]));
        assert_eq!(s2.version, s1.version + 1);
        // The old snapshot is untouched.
        assert_eq!(s1.services[&id("b")].members.len(), 1);
        let t = s2.http["web"].lookup("b.test", "/").unwrap();
        assert_eq!(t.service.as_ref().unwrap().members.len(), 2);
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
        assert_eq!(reg.snapshot().services.len(), 2);
        reg.apply("rancher", Desired::default());
        assert_eq!(reg.snapshot().services.len(), 1);
    }
}
