//! A service in a snapshot: its spec, its members and its selector, and the rules of its strategy
//! for which members may take traffic. Immutable once built; members, the stats, the
//! service breaker and the fail-open flag carry over to the service's next version.

use super::member::{BackendState, InFlight, Member, ServiceStats};
use super::select::Selector;
use crate::breaker::{Admit, BreakerState, Outcome, ServiceBreaker, Transition};
use crate::desired::{ServiceSpec, Strategy};
use crate::health::Active;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// How long a removed backend's state is remembered, should it come back.
const RETIRED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Service {
    pub spec: ServiceSpec,
    /// In the order of `spec.backends`.
    pub members: Vec<Arc<Member>>,
    /// Members removed by an update that still had work in flight: no new work.
    pub draining: Vec<Arc<Member>>,
    /// Members removed in the last RETIRED_FOR, with when: their state comes back with them.
    retired: Vec<(Arc<Member>, Instant)>,
    weights: Vec<u32>,
    selector: Selector,
    pub stats: Arc<ServiceStats>,
    /// The expression breaker, when the service has one.
    pub breaker: Option<Arc<ServiceBreaker>>,
    /// Under recreateOnQuorum: whether the service currently fails open (kept by the health loop
    /// for reporting; selection decides for itself).
    pub fail_open: Arc<AtomicBool>,
    /// Roots for TLS to the backends, from `ca_file` (None: the system's).
    pub upstream_ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    /// When the health loop next needs to look at each member, in ms since `built` (0: at
    /// once): its next probe or its initializing deadline. Side by side, so a pass over 10,000
    /// members reads one array instead of touching every member.
    pub(crate) check_wake: Box<[AtomicU64]>,
    pub(crate) built: Instant,
}

/// A chosen backend: its index, its connection slot, and whether the request is its breaker's probe.
pub struct Pick {
    pub index: usize,
    pub slot: InFlight,
    pub probe: bool,
}

/// Which members a pick may choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// The ones the strategy routes to.
    Eligible,
    /// Also those the passive breaker ejected (active check still passing).
    IgnoreBreaker,
    /// Every member (recreateOnQuorum below quorum).
    Everyone,
}

/// What became of a request to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    Ok,
    /// Connect error, reset, timeout, or a 5xx counted as failure.
    Failed,
}

impl Service {
    /// Build a service, taking over the members (and so their state) of `previous` whose
    /// address stays.
    pub fn build(spec: ServiceSpec, previous: Option<&Service>) -> Service {
        // Members of the previous version, then recently removed ones: a backend that leaves and
        // comes back within RETIRED_FOR keeps its health state instead of initializing again.
        let now = Instant::now();
        let old: HashMap<SocketAddr, &Arc<Member>> = previous
            .map(|p| {
                p.retired
                    .iter()
                    .map(|(m, _)| (m.addr, m))
                    .chain(p.members.iter().map(|m| (m.addr, m)))
                    .collect()
            })
            .unwrap_or_default();
        let members: Vec<Arc<Member>> = spec
            .backends
            .iter()
            .map(|b| old.get(&b.addr).map(|m| Arc::clone(m)).unwrap_or_else(|| Member::new(b.addr)))
            .collect();
        let draining = previous
            .map(|p| {
                p.members
                    .iter()
                    .filter(|m| !spec.backends.iter().any(|b| b.addr == m.addr))
                    .chain(p.draining.iter())
                    .filter(|m| m.in_flight() > 0)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let retired = previous
            .map(|p| {
                let removed = p
                    .members
                    .iter()
                    .filter(|m| !spec.backends.iter().any(|b| b.addr == m.addr))
                    .map(|m| (m.clone(), now));
                p.retired
                    .iter()
                    .filter(|(m, at)| now.saturating_duration_since(*at) < RETIRED_FOR && !spec.backends.iter().any(|b| b.addr == m.addr))
                    .cloned()
                    .chain(removed)
                    .collect()
            })
            .unwrap_or_default();
        let weights = spec.backends.iter().map(|b| b.weight).collect();
        let selector = Selector::build(&spec.balance, &spec.backends);
        let stats = previous.map(|p| p.stats.clone()).unwrap_or_default();
        let b = &spec.breaker;
        let breaker = b.expression.as_ref().map(
            |e| match previous.and_then(|p| p.breaker.clone().filter(|_| p.spec.breaker == *b)) {
                Some(same) => same,
                None => Arc::new(ServiceBreaker::new(
                    e.expr.clone(),
                    b.fallback_duration,
                    b.recovery_duration,
                    Instant::now(),
                )),
            },
        );
        let fail_open = previous.map(|p| p.fail_open.clone()).unwrap_or_default();
        let upstream_ca = spec.upstream_tls.as_ref().and_then(|t| t.ca_file.as_ref()).and_then(|path| {
            match std::fs::read(path).map_err(|e| e.to_string()).and_then(|b| crate::tls::roots(&b)) {
                Ok(r) => Some(r),
                Err(e) => {
                    log::error!(
                        "service {}: ca_file {}: {e}; verifying against the system roots",
                        spec.id,
                        path.display()
                    );
                    None
                }
            }
        });
        let check_wake = members.iter().map(|_| AtomicU64::new(0)).collect();
        Service {
            check_wake,
            built: now,
            spec,
            members,
            draining,
            retired,
            weights,
            selector,
            stats,
            breaker,
            fail_open,
            upstream_ca,
        }
    }

    fn checked(&self) -> bool {
        self.spec.health_check.is_some()
    }

    /// The state of member `i` to report.
    pub fn member_state(&self, i: usize, now: Instant) -> BackendState {
        self.members[i].state(self.checked(), now)
    }

    /// Members that count towards the quorum: healthy or initializing, and not ejected.
    pub fn healthy_count(&self, now: Instant) -> usize {
        self.members
            .iter()
            .filter(|m| m.breaker.state(now) == BreakerState::Closed && (!self.checked() || m.health.state() != Active::Unhealthy))
            .count()
    }

    /// Members that take traffic under recreate: healthy (or unchecked) and not ejected.
    pub fn routable_count(&self, now: Instant) -> usize {
        self.members
            .iter()
            .filter(|m| m.breaker.state(now) == BreakerState::Closed && (!self.checked() || m.health.state() == Active::Healthy))
            .count()
    }

    /// Whether the strategy currently routes to every member (recreateOnQuorum below quorum).
    pub fn quorum_lost(&self, now: Instant) -> bool {
        match self.spec.strategy {
            Strategy::RecreateOnQuorum(q) => self.healthy_count(now) < q as usize,
            _ => false,
        }
    }

    /// May member `i` take traffic under the strategy? Half-open members pass here; the probe is
    /// claimed after selection.
    fn eligible(&self, i: usize, now: Instant, who: Who) -> bool {
        if who == Who::Everyone || self.spec.strategy == Strategy::None {
            return true;
        }
        let m = &self.members[i];
        let active_ok = !self.checked() || m.health.state() == Active::Healthy;
        active_ok && (who == Who::IgnoreBreaker || m.breaker.state(now) != BreakerState::Open)
    }

    /// Pick a backend not in `exclude` that the strategy allows and that has a free connection
    /// slot, and take that slot.
    pub fn pick(&self, key: &[u8], exclude: &[usize], now: Instant) -> Option<Pick> {
        // recreateOnQuorum below quorum fails open: every member takes traffic. The health loop
        // keeps the flag; when nothing is eligible the quorum is checked at once.
        let open = matches!(self.spec.strategy, Strategy::RecreateOnQuorum(_)) && self.fail_open.load(Ordering::Relaxed);
        let first = if open { Who::Everyone } else { Who::Eligible };
        self.pick_among(key, exclude, now, first).or_else(|| {
            if !open && self.quorum_lost(now) {
                return self.pick_among(key, exclude, now, Who::Everyone);
            }
            // Nothing eligible, but backends whose active check passes were only ejected by the
            // passive breaker (a softer signal): try them rather than answer 503 — Envoy's panic
            // mode plays this part. Unhealthy ones stay out.
            if !open && self.spec.strategy == Strategy::Recreate {
                return self.pick_among(key, exclude, now, Who::IgnoreBreaker);
            }
            None
        })
    }

    fn pick_among(&self, key: &[u8], exclude: &[usize], now: Instant, who: Who) -> Option<Pick> {
        let max = self.spec.max_connections;
        let members = &self.members;
        let mut refused: Vec<usize> = Vec::new();
        // Bounded: each round either returns or refuses one more member.
        for _ in 0..members.len() + 3 {
            let accept = |i: usize| {
                !exclude.contains(&i) && !refused.contains(&i) && (max == 0 || members[i].in_flight() < max) && self.eligible(i, now, who)
            };
            let i = self.selector.select(key, members, &self.weights, &accept)?;
            let probe = if who != Who::Eligible || self.spec.strategy == Strategy::None {
                false
            } else {
                match members[i].breaker.admit(now) {
                    Admit::Yes => false,
                    Admit::Probe => true,
                    Admit::No => {
                        refused.push(i);
                        continue;
                    }
                }
            };
            match members[i].try_acquire(max) {
                Some(slot) => return Some(Pick { index: i, slot, probe }),
                None => refused.push(i),
            }
        }
        None
    }

    /// Record how a request to member `i` went: feeds its breaker (ejection obeys the strategy).
    pub fn record(&self, i: usize, attempt: Attempt, probe: bool, now: Instant) {
        let m = &self.members[i];
        let ok = attempt == Attempt::Ok;
        if !ok {
            m.record_failure();
        }
        // Under `none` nothing leaves rotation, so any success may close an open breaker.
        let probe = probe || (self.spec.strategy == Strategy::None && m.breaker.state(now) != BreakerState::Closed);
        // The passive breaker never turns a partial outage into a total one: it does not take a
        // recreateOnQuorum service below its quorum, nor a recreate service's last routable backend
        // (Envoy's max_ejection_percent plays this part there).
        let may_eject = || match self.spec.strategy {
            Strategy::RecreateOnQuorum(q) => self.healthy_count(now) > q as usize,
            Strategy::Recreate => self.routable_count(now) > 1,
            Strategy::None => true,
        };
        match m.breaker.record(now, ok, probe, &self.spec.breaker, &may_eject) {
            Some(Transition::Ejected(d)) => {
                m.ejections.fetch_add(1, Ordering::Relaxed);
                log::warn!("service {}: backend {} ejected for {:?} after failures", self.spec.id, m.addr, d);
            }
            Some(Transition::Restored) => log::info!("service {}: backend {} restored: its probe request succeeded", self.spec.id, m.addr),
            None => {}
        }
    }

    /// Record a request's outcome for the expression breaker.
    pub fn record_outcome(&self, now: Instant, outcome: Outcome) {
        if let Some(b) = &self.breaker {
            b.record(now, outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{BackendSpec, CheckKind, HealthCheckSpec, ServiceId};

    fn service(strategy: Strategy, n: u16) -> Service {
        let mut spec = ServiceSpec::new(
            ServiceId("s@file".into()),
            (0..n)
                .map(|i| BackendSpec {
                    addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                    weight: 1,
                })
                .collect(),
        );
        spec.strategy = strategy;
        spec.breaker.consecutive_failures = 1;
        Service::build(spec, None)
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_never_takes_the_service_below_quorum() {
        let s = service(Strategy::RecreateOnQuorum(2), 3);
        let now = Instant::now();
        s.record(0, Attempt::Failed, false, now);
        assert_eq!(s.member_state(0, now), BackendState::Ejected);
        // Two healthy left = quorum: no more ejections.
        s.record(1, Attempt::Failed, false, now);
        assert_eq!(s.member_state(1, now), BackendState::Healthy);
        assert_eq!(s.healthy_count(now), 2);
        // Under recreate the last routable backend is never ejected.
        let r = service(Strategy::Recreate, 2);
        r.record(0, Attempt::Failed, false, now);
        r.record(1, Attempt::Failed, false, now);
        assert_eq!(r.member_state(0, now), BackendState::Ejected);
        assert_eq!(
            r.member_state(1, now),
            BackendState::Healthy,
            "the last routable backend was ejected"
        );
        assert_eq!(
            r.pick(b"", &[], now).map(|p| p.index),
            Some(1),
            "recreate: the ejected backend takes no traffic"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn strategies_decide_who_takes_traffic() {
        let now = Instant::now();
        let mut spec = service(Strategy::Recreate, 2).spec;
        spec.health_check = Some(HealthCheckSpec::new(CheckKind::Tcp));
        let s = Service::build(spec.clone(), None);
        assert!(
            s.pick(b"", &[], now).is_none(),
            "initializing backends take no traffic under recreate"
        );
        spec.strategy = Strategy::RecreateOnQuorum(1);
        let q = Service::build(spec.clone(), None);
        assert!(
            q.pick(b"", &[], now).is_none(),
            "initializing counts towards the quorum, so no fail-open yet"
        );
        spec.strategy = Strategy::None;
        let n = Service::build(spec, None);
        assert!(n.pick(b"", &[], now).is_some(), "none routes whatever the state");
    }

    #[tokio::test(start_paused = true)]
    async fn only_ejected_backends_left_still_take_traffic_under_recreate() {
        let now = Instant::now();
        let s = service(Strategy::Recreate, 2);
        s.record(0, Attempt::Failed, false, now);
        assert_eq!(s.member_state(0, now), BackendState::Ejected);
        // Discovery removes the healthy one: only the ejected backend is left.
        let mut spec = s.spec.clone();
        spec.backends.truncate(1);
        let left = Service::build(spec, Some(&s));
        assert_eq!(left.member_state(0, now), BackendState::Ejected);
        assert_eq!(
            left.pick(b"", &[], now).map(|p| p.index),
            Some(0),
            "a passive ejection must not turn into a 503"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_comes_back_keeps_its_state() {
        let s = service(Strategy::Recreate, 2);
        let mut spec = s.spec.clone();
        spec.backends.truncate(1);
        let without = Service::build(spec, Some(&s));
        let back = Service::build(s.spec.clone(), Some(&without));
        assert!(Arc::ptr_eq(&back.members[1], &s.members[1]), "the returning member was made anew");
        // Long gone: a new member.
        let mut spec = s.spec.clone();
        spec.backends.truncate(1);
        let without = Service::build(spec, Some(&s));
        tokio::time::advance(RETIRED_FOR).await;
        let mut later = without.spec.clone();
        later.retries = 1;
        let still_without = Service::build(later, Some(&without));
        let back = Service::build(s.spec.clone(), Some(&still_without));
        assert!(!Arc::ptr_eq(&back.members[1], &s.members[1]));
    }

    #[tokio::test(start_paused = true)]
    async fn removed_members_with_work_drain() {
        let s = service(Strategy::Recreate, 3);
        let busy = s.members[2].try_acquire(0).unwrap();
        let mut spec = s.spec.clone();
        spec.backends.truncate(1);
        let next = Service::build(spec, Some(&s));
        assert_eq!(next.members.len(), 1);
        assert_eq!(next.draining.len(), 1, "only the member with work in flight drains");
        assert!(Arc::ptr_eq(&next.draining[0], &s.members[2]));
        drop(busy);
        let mut spec = next.spec.clone();
        spec.retries = 1;
        assert!(Service::build(spec, Some(&next)).draining.is_empty());
    }
}
