//! One backend address of a service and its live counters. A member object survives membership
//! updates that keep its address, so whatever state it carries survives them too.

use crate::breaker::{Breaker, BreakerState};
use crate::health::{Active, HealthCell};
use crate::metrics::{HttpCounters, PerEntrypoint, TcpCounters};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// What the admin API and metrics report for a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendState {
    Initializing,
    Healthy,
    Unhealthy,
    Ejected,
    Draining,
}

impl BackendState {
    pub const ALL: [BackendState; 5] = [
        BackendState::Initializing,
        BackendState::Healthy,
        BackendState::Unhealthy,
        BackendState::Ejected,
        BackendState::Draining,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BackendState::Initializing => "initializing",
            BackendState::Healthy => "healthy",
            BackendState::Unhealthy => "unhealthy",
            BackendState::Ejected => "ejected",
            BackendState::Draining => "draining",
        }
    }
}

/// A backend address with lock-free counters read by the admin API and selection, its active
/// check state and its breaker.
pub struct Member {
    pub addr: SocketAddr,
    /// Requests (HTTP) or connections (TCP) currently using this backend.
    in_flight: AtomicU32,
    /// Requests or connections sent, in total.
    pub requests: AtomicU64,
    /// Failed attempts (connect errors, resets, timeouts, counted 5xx), in total.
    pub failures: AtomicU64,
    /// Times the breaker ejected this backend.
    pub ejections: AtomicU64,
    pub health: HealthCell,
    pub breaker: Breaker,
    /// Idle HTTP/1 connections to this backend, for reuse.
    pub idle: super::IdleConns,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Member({})", self.addr)
    }
}

impl Member {
    pub fn new(addr: SocketAddr) -> Arc<Member> {
        let now = Instant::now();
        Arc::new(Member {
            addr,
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            health: HealthCell::new(now),
            breaker: Breaker::new(now),
            idle: Default::default(),
        })
    }

    /// The state to report. `checked`: the service has an active check. A failing active check
    /// outranks an open breaker: the backend stays out until its check passes either way.
    pub fn state(&self, checked: bool, now: Instant) -> BackendState {
        let active = if checked { self.health.state() } else { Active::Healthy };
        if active == Active::Unhealthy {
            return BackendState::Unhealthy;
        }
        if self.breaker.state(now) != BreakerState::Closed {
            return BackendState::Ejected;
        }
        match active {
            Active::Initializing => BackendState::Initializing,
            _ => BackendState::Healthy,
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Take a slot if fewer than `max` are in flight (`max` 0 = unlimited).
    pub fn try_acquire(self: &Arc<Self>, max: u32) -> Option<InFlight> {
        let prev = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if max != 0 && prev >= max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(self.clone()))
    }

    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// A slot on a member, given back when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Member>);

impl InFlight {
    pub fn member(&self) -> &Arc<Member> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The counters of a whole service, carried across its rebuilds: requests in flight (with their
/// slot guard) and what the metrics report.
#[derive(Default)]
pub struct ServiceStats {
    in_flight: AtomicU32,
    pub retries: AtomicU64,
    pub checks_ok: AtomicU64,
    pub checks_failed: AtomicU64,
    pub http: PerEntrypoint<HttpCounters>,
    pub tcp: PerEntrypoint<TcpCounters>,
}

impl ServiceStats {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn try_acquire(self: &Arc<Self>, max: u32) -> Option<ServiceSlot> {
        let prev = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if max != 0 && prev >= max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ServiceSlot(self.clone()))
    }
}

pub struct ServiceSlot(Arc<ServiceStats>);

impl Drop for ServiceSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_returned() {
        let m = Member::new("127.0.0.1:1".parse().unwrap());
        let a = m.try_acquire(2).unwrap();
        let _b = m.try_acquire(2).unwrap();
        assert!(m.try_acquire(2).is_none());
        assert_eq!(m.in_flight(), 2);
        drop(a);
        assert!(m.try_acquire(2).is_some());
        assert_eq!(m.in_flight(), 1);
        assert_eq!(m.requests.load(Ordering::Relaxed), 3);
    }
}
