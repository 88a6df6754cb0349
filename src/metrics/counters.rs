//! Lock-free counters the data path updates: per (entrypoint, service) HTTP requests by status
//! code with a duration histogram, TCP connections and bytes, and per-entrypoint gauges.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of `lariat_request_duration_seconds`, 1 ms to 10 s.
pub const DURATION_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Requests of one service on one entrypoint.
pub struct HttpCounters {
    /// By status code 0..600 (0: no response was sent).
    codes: Box<[AtomicU64]>,
    /// Per bucket (cumulated when rendering); the last is +Inf.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for HttpCounters {
    fn default() -> Self {
        HttpCounters {
            codes: (0..600).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl HttpCounters {
    pub fn observe(&self, status: u16, duration: Duration) {
        self.codes[(status as usize).min(599)].fetch_add(1, Relaxed);
        let secs = duration.as_secs_f64();
        let i = DURATION_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(duration.as_micros() as u64, Relaxed);
    }

    /// (code, count) for every code seen.
    pub fn codes(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.codes
            .iter()
            .enumerate()
            .map(|(c, n)| (c as u16, n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
    }

    pub fn total(&self) -> u64 {
        self.codes.iter().map(|n| n.load(Relaxed)).sum()
    }

    /// Cumulative counts per bucket (the last is +Inf), and the sum in seconds.
    pub fn histogram(&self) -> (Vec<u64>, f64) {
        let mut acc = 0;
        let cum = self.buckets.iter().map(|b| {
            acc += b.load(Relaxed);
            acc
        });
        (cum.collect(), self.sum_micros.load(Relaxed) as f64 / 1e6)
    }
}

/// TCP connections of one service on one entrypoint.
#[derive(Default)]
pub struct TcpCounters {
    pub connections: AtomicU64,
    /// Bytes from clients.
    pub rx: AtomicU64,
    /// Bytes to clients.
    pub tx: AtomicU64,
}

/// Counters keyed by entrypoint name, created on first use; lookups take no lock.
pub struct PerEntrypoint<T> {
    map: ArcSwap<HashMap<Arc<str>, Arc<T>>>,
    write: Mutex<()>,
}

impl<T> Default for PerEntrypoint<T> {
    fn default() -> Self {
        PerEntrypoint {
            map: ArcSwap::from_pointee(HashMap::new()),
            write: Mutex::new(()),
        }
    }
}

impl<T: Default> PerEntrypoint<T> {
    pub fn get(&self, entrypoint: &Arc<str>) -> Arc<T> {
        if let Some(c) = self.map.load().get(entrypoint) {
            return c.clone();
        }
        let _g = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.map.load_full();
        if let Some(c) = cur.get(entrypoint) {
            return c.clone();
        }
        let mut next = (*cur).clone();
        let c = Arc::new(T::default());
        next.insert(entrypoint.clone(), c.clone());
        self.map.store(Arc::new(next));
        c
    }

    /// Every entrypoint's counters, sorted by name.
    pub fn all(&self) -> Vec<(Arc<str>, Arc<T>)> {
        let mut v: Vec<_> = self.map.load().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Counters of one entrypoint itself.
#[derive(Default)]
pub struct EntrypointCounters {
    /// Open client connections.
    pub open: AtomicI64,
    /// Requests that matched no route or no existing service.
    pub unrouted: HttpCounters,
    /// TLS handshakes (https entrypoints), by result.
    pub tls_ok: AtomicU64,
    pub tls_error: AtomicU64,
    /// Connections closed for a missing or malformed ClientHello on passthrough entrypoints.
    pub rejected_tls: AtomicU64,
    /// Connections closed for an untrusted or malformed PROXY header.
    pub rejected_proxy: AtomicU64,
    /// Requests refused before routing for smuggling-prone framing.
    pub bad_smuggling: AtomicU64,
    /// Requests refused for a head over max_header_bytes.
    pub bad_header_too_large: AtomicU64,
    /// Connections answered 408 for a request head slower than client_header_timeout.
    pub bad_timeout: AtomicU64,
    /// Connections closed at once for being over the entrypoint's max_connections.
    pub rejected_max_connections: AtomicU64,
}

/// Counts an open connection while alive.
pub struct OpenGuard(Arc<EntrypointCounters>);

impl OpenGuard {
    pub fn new(c: Arc<EntrypointCounters>) -> OpenGuard {
        c.open.fetch_add(1, Relaxed);
        OpenGuard(c)
    }

    /// Count the connection in, unless that takes the entrypoint over `max` (0 = unlimited):
    /// then None, counted as rejected.
    pub fn within(c: &Arc<EntrypointCounters>, max: u64) -> Option<OpenGuard> {
        let prev = c.open.fetch_add(1, Relaxed);
        let g = OpenGuard(c.clone());
        if max != 0 && prev >= max as i64 {
            c.rejected_max_connections.fetch_add(1, Relaxed);
            return None;
        }
        Some(g)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let c = HttpCounters::default();
        c.observe(200, Duration::from_micros(500));
        c.observe(200, Duration::from_millis(30));
        c.observe(503, Duration::from_secs(20));
        let (cum, sum) = c.histogram();
        assert_eq!(cum[0], 1);
        assert_eq!(cum[5], 2); // <= 50 ms
        assert_eq!(cum[12], 2); // <= 10 s
        assert_eq!(cum[13], 3); // +Inf
        assert!((sum - 20.0305).abs() < 1e-6);
        assert_eq!(c.codes().collect::<Vec<_>>(), vec![(200, 2), (503, 1)]);
    }

    #[test]
    fn per_entrypoint_reuses() {
        let p: PerEntrypoint<TcpCounters> = PerEntrypoint::default();
        let web: Arc<str> = "web".into();
        assert!(Arc::ptr_eq(&p.get(&web), &p.get(&web)));
        assert_eq!(p.all().len(), 1);
    }
}
