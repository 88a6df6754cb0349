//! The active-check state of one backend: initializing → healthy ⇄ unhealthy, with thresholds
//! and the initializing timeout. The request path reads one atomic.

use crate::desired::HealthCheckSpec;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::*};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Active {
    Initializing = 0,
    Healthy = 1,
    Unhealthy = 2,
}

impl Active {
    pub fn name(self) -> &'static str {
        match self {
            Active::Initializing => "initializing",
            Active::Healthy => "healthy",
            Active::Unhealthy => "unhealthy",
        }
    }
}

/// The last probe, for the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRecord {
    pub ok: bool,
    pub at: SystemTime,
    /// "200", "connection refused", "timed out", ...
    pub detail: String,
}

#[derive(Default)]
struct Counters {
    successes: u32,
    failures: u32,
    last: Option<CheckRecord>,
}

pub struct HealthCell {
    born: Instant,
    state: AtomicU8,
    /// Ms since `born` when the next probe is due; u64::MAX = not scheduled yet.
    next_due: AtomicU64,
    pub checks_ok: AtomicU64,
    pub checks_failed: AtomicU64,
    counters: Mutex<Counters>,
    /// An HTTP check's kept-alive connection, between probes (only the probe touches it).
    conn: Mutex<Option<tokio::net::TcpStream>>,
}

impl HealthCell {
    pub fn new(now: Instant) -> HealthCell {
        HealthCell {
            born: now,
            state: AtomicU8::new(Active::Initializing as u8),
            next_due: AtomicU64::new(u64::MAX),
            checks_ok: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            counters: Mutex::new(Counters::default()),
            conn: Mutex::new(None),
        }
    }

    /// The connection the last HTTP probe left open, if any.
    pub fn take_conn(&self) -> Option<tokio::net::TcpStream> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Keep a connection for the next probe.
    pub fn keep_conn(&self, s: tokio::net::TcpStream) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    pub fn state(&self) -> Active {
        match self.state.load(Acquire) {
            0 => Active::Initializing,
            1 => Active::Healthy,
            _ => Active::Unhealthy,
        }
    }

    pub fn last(&self) -> Option<CheckRecord> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner()).last.clone()
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.born).as_millis() as u64
    }

    /// Is a probe due? The first is due at once plus `offset`, which spreads the probes of many
    /// backends over the interval; then every `interval`. Claims the probe when due. `offset`
    /// is asked for only before the first probe (the health loop asks every member on every tick).
    pub fn claim_probe(&self, now: Instant, interval: Duration, offset: impl FnOnce() -> Duration) -> bool {
        let now_ms = self.ms(now);
        let due = self.next_due.load(Acquire);
        let due = if due == u64::MAX {
            now_ms + offset().as_millis() as u64
        } else {
            due
        };
        if now_ms < due {
            if self.next_due.load(Acquire) == u64::MAX {
                self.next_due.store(due, Release);
            }
            return false;
        }
        // Keep the phase: the next probe is one interval after this one was due, unless we fell
        // far behind.
        let mut next = due + interval.as_millis().max(1) as u64;
        if next <= now_ms {
            next = now_ms + interval.as_millis().max(1) as u64;
        }
        self.next_due
            .compare_exchange(self.next_due.load(Acquire), next, AcqRel, Acquire)
            .is_ok()
    }

    /// When this backend next needs the health loop: its next probe, or while it initializes,
    /// its initializing deadline if sooner. Before its first probe is scheduled: `now`.
    pub fn next_look(&self, now: Instant, spec: &HealthCheckSpec) -> Instant {
        let due = self.next_due.load(Acquire);
        let at = if due == u64::MAX {
            now
        } else {
            self.born + Duration::from_millis(due)
        };
        if self.state() == Active::Initializing {
            at.min(self.born + spec.initializing_timeout)
        } else {
            at
        }
    }

    /// Record a probe result; returns (from, to) when the state changed.
    pub fn record(&self, ok: bool, detail: String, spec: &HealthCheckSpec) -> Option<(Active, Active)> {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        c.last = Some(CheckRecord {
            ok,
            at: SystemTime::now(),
            detail,
        });
        let from = self.state();
        let to = if ok {
            self.checks_ok.fetch_add(1, Relaxed);
            c.successes = c.successes.saturating_add(1);
            c.failures = 0;
            if from != Active::Healthy && c.successes >= spec.healthy_threshold {
                Active::Healthy
            } else {
                from
            }
        } else {
            self.checks_failed.fetch_add(1, Relaxed);
            c.failures = c.failures.saturating_add(1);
            c.successes = 0;
            // An initializing backend stays so until it passes or its initializing time is up.
            if from == Active::Healthy && c.failures >= spec.unhealthy_threshold {
                Active::Unhealthy
            } else {
                from
            }
        };
        if to != from {
            self.state.store(to as u8, Release);
            return Some((from, to));
        }
        None
    }

    /// Time-driven changes: an initializing backend past its timeout becomes unhealthy.
    pub fn tick(&self, now: Instant, spec: &HealthCheckSpec) -> Option<(Active, Active)> {
        if self.state() == Active::Initializing && now.saturating_duration_since(self.born) >= spec.initializing_timeout {
            let _c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            if self.state() == Active::Initializing {
                self.state.store(Active::Unhealthy as u8, Release);
                return Some((Active::Initializing, Active::Unhealthy));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::CheckKind;

    fn spec() -> HealthCheckSpec {
        HealthCheckSpec::new(CheckKind::Tcp)
    }

    #[tokio::test(start_paused = true)]
    async fn thresholds() {
        let h = HealthCell::new(Instant::now());
        let s = spec();
        assert_eq!(h.state(), Active::Initializing);
        assert_eq!(
            h.record(false, "refused".into(), &s),
            None,
            "failures keep a new backend initializing"
        );
        assert_eq!(h.record(true, "200".into(), &s), None);
        assert_eq!(h.record(true, "200".into(), &s), Some((Active::Initializing, Active::Healthy)));
        assert_eq!(h.record(false, "500".into(), &s), None);
        assert_eq!(h.record(false, "500".into(), &s), None);
        assert_eq!(h.record(true, "200".into(), &s), None, "a pass resets the failure count");
        for _ in 0..2 {
            assert_eq!(h.record(false, "500".into(), &s), None);
        }
        assert_eq!(h.record(false, "500".into(), &s), Some((Active::Healthy, Active::Unhealthy)));
        assert_eq!(h.record(true, "200".into(), &s), None);
        assert_eq!(h.record(true, "200".into(), &s), Some((Active::Unhealthy, Active::Healthy)));
        assert_eq!(h.last().unwrap().detail, "200");
        assert_eq!(h.checks_failed.load(Relaxed), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn initializing_timeout() {
        let h = HealthCell::new(Instant::now());
        let s = spec();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(h.tick(Instant::now(), &s), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(h.tick(Instant::now(), &s), Some((Active::Initializing, Active::Unhealthy)));
        assert_eq!(h.tick(Instant::now(), &s), None);
        // A late pass still brings it in.
        h.record(true, "ok".into(), &s);
        assert_eq!(h.record(true, "ok".into(), &s), Some((Active::Unhealthy, Active::Healthy)));
    }

    #[tokio::test(start_paused = true)]
    async fn probes_are_spread_and_periodic() {
        let h = HealthCell::new(Instant::now());
        let (i, off) = (Duration::from_secs(2), Duration::from_millis(500));
        assert!(!h.claim_probe(Instant::now(), i, || off));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(!h.claim_probe(Instant::now(), i, || off));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(h.claim_probe(Instant::now(), i, || off));
        assert!(!h.claim_probe(Instant::now(), i, || off), "claimed twice");
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(!h.claim_probe(Instant::now(), i, || off));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(h.claim_probe(Instant::now(), i, || off));
    }
}
