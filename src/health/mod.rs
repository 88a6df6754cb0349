//! Active health checks: one loop over the live snapshot probes every member of every service
//! that has a check, each on its own phase within the interval so probes do not fire in
//! lockstep. The same loop drives time-based changes: the initializing timeout, the expression
//! breakers' phases and the fail-open state of recreateOnQuorum services.

mod probe;
mod state;

pub use probe::probe;
pub use state::{Active, CheckRecord, HealthCell};

use crate::state::Shared;
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
            for m in &svc.members {
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
                if !m.health.claim_probe(now, check.interval, offset(&m.addr, check.interval)) {
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    continue; // too many probes in flight; this one waits for the next interval
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
