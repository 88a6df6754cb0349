//! State shared by every entrypoint, the admin listener and the providers: the registry, the
//! entrypoint counters and each provider's sync status.

use crate::metrics::{EntrypointCounters, PerEntrypoint};
use crate::upstream::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// What the admin API and metrics say about one provider.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderStatus {
    pub updates: u64,
    pub errors: u64,
    pub last_success: Option<SystemTime>,
    /// When and what, for the last failure; cleared by nothing (the time tells whether it is old).
    pub last_error: Option<(SystemTime, String)>,
    /// The version of the source last applied (file hash, metadata version, resourceVersion).
    pub version: Option<String>,
}

pub struct Shared {
    pub registry: Registry,
    /// The certificates of every https entrypoint.
    pub certs: std::sync::Arc<crate::tls::CertStore>,
    pub entrypoints: PerEntrypoint<EntrypointCounters>,
    pub started: SystemTime,
    access_log: AtomicBool,
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
    providers: Mutex<BTreeMap<String, ProviderStatus>>,
    /// HTTP-01 answers by token, while an ACME order waits for validation.
    acme_challenges: Mutex<std::collections::HashMap<String, String>>,
    acme_ok: AtomicU64,
    acme_error: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new(true)
    }
}

impl Shared {
    pub fn new(access_log: bool) -> Shared {
        Shared {
            registry: Registry::default(),
            certs: Default::default(),
            entrypoints: PerEntrypoint::default(),
            started: SystemTime::now(),
            access_log: AtomicBool::new(access_log),
            reloads_ok: AtomicU64::new(0),
            reloads_error: AtomicU64::new(0),
            providers: Mutex::new(BTreeMap::new()),
            acme_challenges: Mutex::new(Default::default()),
            acme_ok: AtomicU64::new(0),
            acme_error: AtomicU64::new(0),
        }
    }

    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    pub fn set_access_log(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }

    /// Count a config reload by its result.
    pub fn count_reload(&self, ok: bool) {
        let c = if ok { &self.reloads_ok } else { &self.reloads_error };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (ok, error) reload counts.
    pub fn reloads(&self) -> (u64, u64) {
        (self.reloads_ok.load(Ordering::Relaxed), self.reloads_error.load(Ordering::Relaxed))
    }

    /// A provider applied a new state.
    pub fn provider_synced(&self, provider: &str, version: Option<String>) {
        let mut p = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        let s = p.entry(provider.to_string()).or_default();
        s.updates += 1;
        s.last_success = Some(SystemTime::now());
        if version.is_some() {
            s.version = version;
        }
    }

    /// A provider failed to read its source; the last good state stays.
    pub fn provider_failed(&self, provider: &str, error: String) {
        let mut p = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        let s = p.entry(provider.to_string()).or_default();
        s.errors += 1;
        s.last_error = Some((SystemTime::now(), error));
    }

    pub fn providers(&self) -> BTreeMap<String, ProviderStatus> {
        self.providers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Publish (Some) or withdraw (None) the HTTP-01 answer for a token.
    pub fn acme_challenge(&self, token: &str, key_authorization: Option<String>) {
        let mut c = self.acme_challenges.lock().unwrap_or_else(|e| e.into_inner());
        match key_authorization {
            Some(k) => c.insert(token.to_string(), k),
            None => c.remove(token),
        };
    }

    /// The HTTP-01 answer for a token, if an order waits for it.
    pub fn acme_answer(&self, token: &str) -> Option<String> {
        self.acme_challenges.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned()
    }

    pub fn count_acme(&self, ok: bool) {
        let c = if ok { &self.acme_ok } else { &self.acme_error };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (ok, error) ACME orders.
    pub fn acme_orders(&self) -> (u64, u64) {
        (self.acme_ok.load(Ordering::Relaxed), self.acme_error.load(Ordering::Relaxed))
    }
}
