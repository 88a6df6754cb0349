//! Active health checks: one loop over the live snapshot probes every member of every service
//! that has a check, each on its own phase within the interval so probes do not fire in
//! lockstep. The same loop drives time-based changes: the initializing timeout, the expression
//! breakers' phases and the fail-open state of recreateOnQuorum services. Each pass reads the
//! services' arrays of wake times and touches only the members whose probe or deadline is due
//! (10,000 members, 20 passes a second).

mod probe;
mod state;

pub use probe::probe;
pub use state::{Active, CheckRecord, HealthCell};

use crate::desired::HealthCheckSpec;
use crate::state::Shared;
use crate::upstream::{Member, Service};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How often the loop looks at the snapshot.
pub const TICK: Duration = Duration::from_millis(50);
/// Probes in flight at once, over all services.
const MAX_CONCURRENT_PROBES: usize = 512;

/// This member's phase within the interval, stable across restarts.
fn offset(addr: &std::net::SocketAddr, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    addr.hash(&mut h);
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % ms)
}

pub struct HealthLoop {
    pub shared: Arc<Shared>,
}

impl HealthLoop {
    /// One pass over the snapshot; spawns the probes that are due.
    pub fn tick(&self, now: Instant, permits: &Arc<Semaphore>) {
        let snap = self.shared.registry.snapshot();
        for svc in snap.services() {
            if let Some(b) = &svc.breaker {
                if let Some(phase) = b.evaluate(now) {
                    log::warn!(
                        "service {}: breaker {:?} ({})",
                        svc.spec.id,
                        phase,
                        svc.spec.breaker.expression.as_ref().map(|e| e.source.as_str()).unwrap_or("")
                    );
                }
            }
            let lost = svc.quorum_lost(now);
            if svc.fail_open.swap(lost, Ordering::Relaxed) != lost {
                if lost {
                    log::warn!(
                        "service {}: below quorum ({} healthy), failing open: every backend takes traffic",
                        svc.spec.id,
                        svc.healthy_count(now)
                    );
                } else {
                    log::info!("service {}: quorum restored, unhealthy backends leave rotation again", svc.spec.id);
                }
            }
            let Some(check) = &svc.spec.health_check else { continue };
            let since = now.saturating_duration_since(svc.built).as_millis() as u64;
            for (m, wake) in svc.members.iter().zip(svc.check_wake.iter()) {
                if since < wake.load(Ordering::Relaxed) {
                    continue;
                }
                Self::look(&svc, m, check, now, permits);
                let next = m.health.next_look(now, check).saturating_duration_since(svc.built);
                wake.store(next.as_millis() as u64, Ordering::Relaxed);
            }
        }
    }

    /// A member whose time has come: its initializing deadline, and its probe when due.
    fn look(svc: &Service, m: &Arc<Member>, check: &HealthCheckSpec, now: Instant, permits: &Arc<Semaphore>) {
        if let Some((from, to)) = m.health.tick(now, check) {
            log::warn!(
                "service {}: backend {} {} -> {} (not healthy within {:?})",
                svc.spec.id,
                m.addr,
                from.name(),
                to.name(),
                check.initializing_timeout
            );
        }
        if !m.health.claim_probe(now, check.interval, || offset(&m.addr, check.interval)) {
            return;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            return; // too many probes in flight; this one waits for the next interval
        };
        let (m, check, id, stats) = (m.clone(), check.clone(), svc.spec.id.clone(), svc.stats.clone());
        tokio::spawn(async move {
            let (ok, detail) = probe(m.addr, &check, &m.health).await;
            drop(permit);
            let counter = if ok { &stats.checks_ok } else { &stats.checks_failed };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Some((from, to)) = m.health.record(ok, detail.clone(), &check) {
                let level = if to == Active::Healthy {
                    log::Level::Info
                } else {
                    log::Level::Warn
                };
                log::log!(
                    level,
                    "service {id}: backend {} {} -> {} (check: {detail})",
                    m.addr,
                    from.name(),
                    to.name()
                );
            }
        });
    }
}

#[async_trait]
impl BackgroundService for HealthLoop {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.tick(Instant::now(), &permits),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{BackendSpec, CheckKind, Desired, ServiceId, ServiceSpec};

    /// The loop looks at a member only when it needs to, and still catches an initializing
    /// deadline that comes long before the member's next probe.
    #[tokio::test(start_paused = true)]
    async fn the_loop_wakes_a_member_for_its_deadline_and_its_probe() {
        // Nothing listens there: every probe fails, but one failure is below the threshold.
        let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut spec = ServiceSpec::new(ServiceId("s@file".into()), vec![BackendSpec { addr: down, weight: 1 }]);
        let mut check = HealthCheckSpec::new(CheckKind::Tcp);
        check.interval = Duration::from_secs(10);
        check.unhealthy_threshold = 3;
        check.initializing_timeout = Duration::from_millis(300);
        spec.health_check = Some(check);
        let shared = Arc::new(Shared::new(false));
        shared.registry.apply(
            "file",
            Desired {
                http_routes: vec![],
                tcp_routes: vec![],
                services: vec![spec],
                acme_names: vec![],
            },
        );
        let svc = shared.registry.snapshot().services().next().unwrap();
        let health = HealthLoop { shared: shared.clone() };
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
        let first_probe = offset(&down, Duration::from_secs(10)).as_millis() as u64;
        let wake = || svc.check_wake[0].load(Ordering::Relaxed);

        health.tick(Instant::now(), &permits);
        assert_eq!(wake(), first_probe.min(300), "the sooner of the first probe and the deadline");
        for _ in 0..5 {
            tokio::time::advance(TICK).await;
            health.tick(Instant::now(), &permits);
        }
        assert_eq!(svc.members[0].health.state(), Active::Initializing, "250 ms: not yet");
        tokio::time::advance(TICK).await;
        health.tick(Instant::now(), &permits);
        assert_eq!(svc.members[0].health.state(), Active::Unhealthy, "300 ms: the deadline");
        let next = if first_probe <= 300 { first_probe + 10_000 } else { first_probe };
        assert_eq!(wake(), next, "then only its next probe");
    }
}
