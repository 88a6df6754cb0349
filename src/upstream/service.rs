//! A service in a snapshot: its spec, its members and its selector. Immutable once built; the
//! members and the load counter are shared with the service's next version.

use super::member::{InFlight, Member, ServiceLoad};
use super::select::Selector;
use crate::desired::ServiceSpec;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub struct Service {
    pub spec: ServiceSpec,
    /// In the order of `spec.backends`.
    pub members: Vec<Arc<Member>>,
    weights: Vec<u32>,
    selector: Selector,
    pub load: Arc<ServiceLoad>,
}

impl Service {
    /// Build a service, taking over the members (and so their state) of `previous` whose
    /// address stays.
    pub fn build(spec: ServiceSpec, previous: Option<&Service>) -> Service {
        let old: HashMap<SocketAddr, &Arc<Member>> = previous
            .map(|p| p.members.iter().map(|m| (m.addr, m)).collect())
            .unwrap_or_default();
        let members = spec
            .backends
            .iter()
            .map(|b| {
                old.get(&b.addr)
                    .map(|m| Arc::clone(m))
                    .unwrap_or_else(|| Member::new(b.addr))
            })
            .collect();
        let weights = spec.backends.iter().map(|b| b.weight).collect();
        let selector = Selector::build(&spec.balance, &spec.backends);
        let load = previous.map(|p| p.load.clone()).unwrap_or_default();
        Service {
            spec,
            members,
            weights,
            selector,
            load,
        }
    }

    /// Pick a backend not in `exclude` with a free connection slot, and take that slot.
    pub fn pick(&self, key: &[u8], exclude: &[usize]) -> Option<(usize, InFlight)> {
        let max = self.spec.max_connections;
        let members = &self.members;
        let accept = |i: usize| !exclude.contains(&i) && (max == 0 || members[i].in_flight() < max);
        // A slot can be taken by another request between accept and acquire: try a few times.
        for _ in 0..3 {
            let i = self.selector.select(key, members, &self.weights, &accept)?;
            if let Some(slot) = members[i].try_acquire(max) {
                return Some((i, slot));
            }
        }
        None
    }
}
