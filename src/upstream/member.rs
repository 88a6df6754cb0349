//! One backend address of a service and its live counters. A member object survives membership
//! updates that keep its address, so whatever state it carries survives them too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// A backend address with lock-free counters read by the admin API and selection.
#[derive(Debug)]
pub struct Member {
    pub addr: SocketAddr,
    /// Requests (HTTP) or connections (TCP) currently using this backend.
    in_flight: AtomicU32,
    /// Requests or connections sent, in total.
    pub requests: AtomicU64,
    /// Failed attempts (connect errors, resets, timeouts), in total.
    pub failures: AtomicU64,
}

impl Member {
    pub fn new(addr: SocketAddr) -> Arc<Member> {
        Arc::new(Member {
            addr,
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
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

/// A counter of requests in flight for a whole service, with its slot guard.
#[derive(Debug, Default)]
pub struct ServiceLoad {
    in_flight: AtomicU32,
}

impl ServiceLoad {
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

#[derive(Debug)]
pub struct ServiceSlot(Arc<ServiceLoad>);

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
