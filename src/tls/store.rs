//! The process's one certificate table — exact name, then `*.parent`, then the default — behind a
//! rustls `ResolvesServerCert` that reads an ArcSwap, so a replaced certificate reaches the next
//! handshake with no restart. No match and no default: the handshake is refused.

use super::cert::Loaded;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Table {
    exact: HashMap<String, Arc<Loaded>>,
    wildcard: HashMap<String, Arc<Loaded>>,
    default: Option<Arc<Loaded>>,
    /// Every certificate, in load order, for the admin API and metrics.
    pub all: Vec<(Arc<Loaded>, bool)>,
}

impl Table {
    /// A table from certificates; the first to claim a name keeps it.
    pub fn new(certs: Vec<Arc<Loaded>>, default: Option<Arc<Loaded>>) -> Table {
        let mut t = Table::default();
        for c in certs {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(parent) => t.wildcard.entry(parent.to_string()).or_insert_with(|| c.clone()),
                    None => t.exact.entry(n.clone()).or_insert_with(|| c.clone()),
                };
            }
            t.all.push((c, false));
        }
        if let Some(d) = default {
            t.all.push((d.clone(), true));
            t.default = Some(d);
        }
        t
    }

    pub fn lookup(&self, sni: Option<&str>) -> Option<&Arc<Loaded>> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(c) = self.exact.get(&name) {
                return Some(c);
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(c) = self.wildcard.get(parent) {
                    return Some(c);
                }
            }
        }
        self.default.as_ref()
    }
}

/// The certificates each source contributes.
#[derive(Default)]
struct Sources {
    files: Vec<Arc<Loaded>>,
    default: Option<Arc<Loaded>>,
    kubernetes: Vec<Arc<Loaded>>,
    acme: Vec<Arc<Loaded>>,
}

#[derive(Default)]
pub struct CertStore {
    table: ArcSwap<Table>,
    sources: std::sync::Mutex<Sources>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertStore({} certificates)", self.table.load().all.len())
    }
}

impl CertStore {
    /// Swap in a table built from every source: files first, then Kubernetes (a name claimed by a
    /// file keeps the file's certificate).
    fn rebuild(&self, s: &Sources) {
        let all = s.files.iter().chain(s.kubernetes.iter()).chain(s.acme.iter()).cloned().collect();
        self.table.store(Arc::new(Table::new(all, s.default.clone())));
    }

    /// Replace the certificates from files (and the default).
    pub fn set_files(&self, certs: Vec<Loaded>, default: Option<Loaded>) {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.files = certs.into_iter().map(Arc::new).collect();
        s.default = default.map(Arc::new);
        self.rebuild(&s);
    }

    /// Replace the certificates obtained by ACME.
    pub fn set_acme(&self, certs: Vec<Arc<Loaded>>) {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.acme = certs;
        self.rebuild(&s);
    }

    /// Whether a certificate from a file or a Secret serves `name` (the default does not count).
    pub fn covered_by_others(&self, name: &str) -> bool {
        let s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let parent = name.split_once('.').map(|(_, p)| format!("*.{p}"));
        s.files
            .iter()
            .chain(s.kubernetes.iter())
            .any(|c| c.names.iter().any(|n| n == name || Some(n) == parent.as_ref()))
    }

    /// Replace the certificates from Kubernetes Secrets.
    pub fn set_kubernetes(&self, certs: Vec<Loaded>) {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.kubernetes = certs.into_iter().map(Arc::new).collect();
        self.rebuild(&s);
    }

    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table.load().lookup(hello.server_name()).map(|c| c.key.clone())
    }
}
