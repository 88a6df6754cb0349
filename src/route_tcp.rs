//! The TCP table of one entrypoint: connections go by the server name of their TLS ClientHello
//! (exact, then `*.parent`) to a passthrough route, else to the default route.

use crate::desired::{HostMatch, ServiceId, TcpRoute};
use crate::upstream::ServiceCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Where a connection goes.
#[derive(Clone)]
pub struct TcpTarget {
    pub id: ServiceId,
    pub service: Option<Arc<ServiceCell>>,
}

#[derive(Default, Clone)]
pub struct TcpTable {
    exact: HashMap<String, TcpTarget>,
    wildcard: HashMap<String, TcpTarget>,
    pub default: Option<TcpTarget>,
}

impl TcpTable {
    /// Add a route; returns false when what it claims is taken already (first wins).
    pub fn add(&mut self, r: &TcpRoute, service: Option<Arc<ServiceCell>>) -> bool {
        let t = TcpTarget {
            id: r.service.clone(),
            service,
        };
        if r.sni.is_empty() {
            if self.default.is_some() {
                return false;
            }
            self.default = Some(t);
            return true;
        }
        let mut all_new = true;
        for h in &r.sni {
            let slot = match h {
                HostMatch::Exact(n) => self.exact.entry(n.clone()),
                HostMatch::Wildcard(p) => self.wildcard.entry(p.clone()),
                HostMatch::Any => {
                    all_new &= self.default.is_none();
                    self.default.get_or_insert_with(|| t.clone());
                    continue;
                }
            };
            match slot {
                std::collections::hash_map::Entry::Occupied(_) => all_new = false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(t.clone());
                }
            }
        }
        all_new
    }

    /// Whether any route needs the ClientHello read.
    pub fn by_sni(&self) -> bool {
        !self.exact.is_empty() || !self.wildcard.is_empty()
    }

    /// The passthrough route for a server name, if any (no fallback to the default).
    pub fn passthrough(&self, sni: &str) -> Option<&TcpTarget> {
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        self.exact
            .get(&name)
            .or_else(|| name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)))
    }

    /// Where a connection with this ClientHello server name (None: no SNI, or not TLS) goes.
    pub fn lookup(&self, sni: Option<&str>) -> Option<&TcpTarget> {
        sni.and_then(|s| self.passthrough(s)).or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(sni: &[&str], svc: &str) -> TcpRoute {
        TcpRoute {
            entrypoint: "tls".into(),
            sni: sni.iter().map(|s| HostMatch::parse(s).unwrap()).collect(),
            service: ServiceId(svc.into()),
        }
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let mut t = TcpTable::default();
        assert!(t.add(&route(&["db.example.com"], "exact"), None));
        assert!(t.add(&route(&["*.db.example.com"], "wild"), None));
        assert!(t.add(&route(&[], "default"), None));
        assert!(!t.add(&route(&[], "second default"), None));
        assert!(!t.add(&route(&["db.example.com"], "dup"), None));
        let id = |s: Option<&str>| t.lookup(s).map(|x| x.id.0.clone());
        assert_eq!(id(Some("DB.example.com")).as_deref(), Some("exact"));
        assert_eq!(id(Some("a.db.example.com")).as_deref(), Some("wild"));
        assert_eq!(id(Some("other.org")).as_deref(), Some("default"));
        assert_eq!(id(None).as_deref(), Some("default"));
        assert!(t.by_sni());
    }
}
