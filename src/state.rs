//! State shared by every entrypoint, the admin listener and the providers.

use crate::upstream::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Default)]
pub struct Shared {
    pub registry: Registry,
    access_log: AtomicBool,
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
}

impl Shared {
    pub fn new(access_log: bool) -> Shared {
        Shared {
            access_log: AtomicBool::new(access_log),
            ..Default::default()
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
}
