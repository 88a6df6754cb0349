//! The passive breaker of one backend (outlier ejection): consecutive failures eject it for
//! `base_ejection`, doubling at each repeat up to `max_ejection`; when the time is up one probe
//! request decides. The request path reads atomics only.

use crate::desired::BreakerSpec;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::Duration;
use tokio::time::Instant;

/// A probe request that never reports back frees its slot after this long.
const PROBE_TTL: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Ejected: no traffic until the ejection time is up.
    Open,
    /// Ejection time is up: the next request is a probe.
    HalfOpen,
}

/// What a request may do with this backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Yes, as the one probe of a half-open breaker.
    Probe,
    No,
}

/// A change worth logging and counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Ejected(Duration),
    Restored,
}

pub struct Breaker {
    base: Instant,
    consecutive: AtomicU32,
    /// Ms since `base` until which the backend is ejected; 0 = closed.
    open_until: AtomicU64,
    /// Ms since `base` when the current probe started; 0 = none.
    probe_started: AtomicU64,
    /// Ejections in a row (the doubling exponent).
    ejections: AtomicU32,
    /// Ms since `base` of the last close, to let the doubling decay.
    closed_at: AtomicU64,
}

impl Breaker {
    pub fn new(now: Instant) -> Breaker {
        Breaker {
            base: now,
            consecutive: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probe_started: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            closed_at: AtomicU64::new(0),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_millis() as u64 + 1
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until.load(Acquire) {
            0 => BreakerState::Closed,
            until if self.ms(now) < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// When the current ejection ends (for the admin API).
    pub fn ejected_until(&self) -> Option<Instant> {
        match self.open_until.load(Acquire) {
            0 => None,
            ms => Some(self.base + Duration::from_millis(ms - 1)),
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Relaxed)
    }

    /// May a request go to this backend now? A half-open breaker admits one probe at a time.
    pub fn admit(&self, now: Instant) -> Admit {
        match self.state(now) {
            BreakerState::Closed => Admit::Yes,
            BreakerState::Open => Admit::No,
            BreakerState::HalfOpen => {
                let now_ms = self.ms(now);
                let p = self.probe_started.load(Acquire);
                if p != 0 && now_ms.saturating_sub(p) < PROBE_TTL.as_millis() as u64 {
                    return Admit::No;
                }
                match self.probe_started.compare_exchange(p, now_ms, AcqRel, Acquire) {
                    Ok(_) => Admit::Probe,
                    Err(_) => Admit::No,
                }
            }
        }
    }

    fn eject(&self, now: Instant, spec: &BreakerSpec) -> Transition {
        let now_ms = self.ms(now);
        // The doubling decays: a backend that stayed closed for max_ejection starts over.
        let closed = self.closed_at.load(Relaxed);
        if closed != 0 && now_ms.saturating_sub(closed) >= spec.max_ejection.as_millis() as u64 {
            self.ejections.store(0, Relaxed);
        }
        let k = self.ejections.fetch_add(1, Relaxed).min(20);
        let d = spec.base_ejection.saturating_mul(1u32 << k.min(20)).min(spec.max_ejection);
        self.probe_started.store(0, Release);
        self.open_until.store(now_ms + d.as_millis() as u64, Release);
        Transition::Ejected(d)
    }

    /// Record an outcome. `probe` says the request was admitted as the probe. `may_eject` is asked
    /// before an ejection (a strategy can forbid it).
    pub fn record(&self, now: Instant, ok: bool, probe: bool, spec: &BreakerSpec, may_eject: &dyn Fn() -> bool) -> Option<Transition> {
        if ok {
            self.consecutive.store(0, Relaxed);
            if probe && self.open_until.load(Acquire) != 0 {
                self.open_until.store(0, Release);
                self.probe_started.store(0, Release);
                self.closed_at.store(self.ms(now), Relaxed);
                return Some(Transition::Restored);
            }
            return None;
        }
        if probe && self.state(now) == BreakerState::HalfOpen {
            return Some(self.eject(now, spec));
        }
        let n = self.consecutive.fetch_add(1, Relaxed) + 1;
        if spec.consecutive_failures > 0 && n >= spec.consecutive_failures && self.state(now) == BreakerState::Closed && may_eject() {
            self.consecutive.store(0, Relaxed);
            return Some(self.eject(now, spec));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(35),
            ..BreakerSpec::default()
        }
    }

    fn fail(b: &Breaker, probe: bool) -> Option<Transition> {
        b.record(Instant::now(), false, probe, &spec(), &|| true)
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_doubles_and_probes() {
        let b = Breaker::new(Instant::now());
        assert_eq!(fail(&b, false), None);
        assert_eq!(fail(&b, false), None);
        assert_eq!(fail(&b, false), Some(Transition::Ejected(Duration::from_secs(10))));
        assert_eq!(b.admit(Instant::now()), Admit::No);
        tokio::time::advance(Duration::from_millis(9_990)).await;
        assert_eq!(b.state(Instant::now()), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(20)).await;
        // Half-open: one probe, others wait.
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        assert_eq!(b.admit(Instant::now()), Admit::No);
        // The probe fails: ejected again, twice as long.
        assert_eq!(fail(&b, true), Some(Transition::Ejected(Duration::from_secs(20))));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        // Up to max_ejection.
        assert_eq!(fail(&b, true), Some(Transition::Ejected(Duration::from_secs(35))));
        tokio::time::advance(Duration::from_secs(35)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        assert_eq!(b.record(Instant::now(), true, true, &spec(), &|| true), Some(Transition::Restored));
        assert_eq!(b.admit(Instant::now()), Admit::Yes);
        assert_eq!(b.ejected_until(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count_and_doubling_decays() {
        let b = Breaker::new(Instant::now());
        fail(&b, false);
        fail(&b, false);
        b.record(Instant::now(), true, false, &spec(), &|| true);
        assert_eq!(fail(&b, false), None, "count was not reset by the success");
        fail(&b, false);
        assert!(matches!(fail(&b, false), Some(Transition::Ejected(d)) if d == Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        b.record(Instant::now(), true, true, &spec(), &|| true);
        // Quickly failing again doubles...
        for _ in 0..2 {
            fail(&b, false);
        }
        assert!(matches!(fail(&b, false), Some(Transition::Ejected(d)) if d == Duration::from_secs(20)));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        b.record(Instant::now(), true, true, &spec(), &|| true);
        // ...but after max_ejection closed, it starts over.
        tokio::time::advance(Duration::from_secs(35)).await;
        for _ in 0..2 {
            fail(&b, false);
        }
        assert!(matches!(fail(&b, false), Some(Transition::Ejected(d)) if d == Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_strategy_can_forbid_ejection_and_lost_probes_expire() {
        let b = Breaker::new(Instant::now());
        for _ in 0..5 {
            assert_eq!(b.record(Instant::now(), false, false, &spec(), &|| false), None);
        }
        assert_eq!(b.state(Instant::now()), BreakerState::Closed);
        for _ in 0..3 {
            fail(&b, false);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        // The probe never reports back; after PROBE_TTL another may try.
        tokio::time::advance(PROBE_TTL).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
    }
}
