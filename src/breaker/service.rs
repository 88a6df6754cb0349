//! The whole-service breaker of Traefik: an expression over a 10 s window of outcomes. Closed →
//! open (every request gets the fallback 503 for `fallback_duration`) → recovering (traffic ramps
//! up linearly over `recovery_duration`) → closed; tripping while recovering opens it again.

use super::expr::Expr;
use super::window::{Outcome, Window};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::*};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Open,
    Recovering,
}

pub struct ServiceBreaker {
    expr: Expr,
    fallback: Duration,
    recovery: Duration,
    window: Window,
    base: Instant,
    /// `Phase` as u8, read by every request.
    phase: AtomicU8,
    /// Ms since `base` when the current phase began.
    since: AtomicU64,
    /// Serialises transitions.
    transition: Mutex<()>,
    /// Requests seen while recovering, for the ramp.
    ramp_counter: AtomicU64,
}

impl ServiceBreaker {
    pub fn new(expr: Expr, fallback: Duration, recovery: Duration, now: Instant) -> ServiceBreaker {
        ServiceBreaker {
            expr,
            fallback,
            recovery,
            window: Window::new(now),
            base: now,
            phase: AtomicU8::new(Phase::Closed as u8),
            since: AtomicU64::new(0),
            transition: Mutex::new(()),
            ramp_counter: AtomicU64::new(0),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_millis() as u64
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Acquire) {
            0 => Phase::Closed,
            1 => Phase::Open,
            _ => Phase::Recovering,
        }
    }

    /// May this request through? Open: no. Recovering: a share that grows linearly with the time
    /// spent recovering (spread evenly over requests, not random).
    pub fn admit(&self, now: Instant) -> bool {
        match self.phase() {
            Phase::Closed => true,
            Phase::Open => false,
            Phase::Recovering => {
                let elapsed = self.ms(now).saturating_sub(self.since.load(Acquire)) as f64;
                let share = (elapsed / self.recovery.as_millis().max(1) as f64).clamp(0.0, 1.0);
                let n = self.ramp_counter.fetch_add(1, Relaxed);
                // Admit request n when the running count of admitted requests falls behind share × n.
                ((n + 1) as f64 * share).floor() > (n as f64 * share).floor() || share >= 1.0
            }
        }
    }

    pub fn record(&self, now: Instant, outcome: Outcome) {
        self.window.record(now, outcome);
    }

    fn set(&self, phase: Phase, now: Instant) {
        self.since.store(self.ms(now), Release);
        self.phase.store(phase as u8, Release);
    }

    /// Re-evaluate; returns the new phase when it changed. Called periodically.
    pub fn evaluate(&self, now: Instant) -> Option<Phase> {
        let _g = self.transition.lock().unwrap_or_else(|e| e.into_inner());
        let in_phase = Duration::from_millis(self.ms(now).saturating_sub(self.since.load(Acquire)));
        let next = match self.phase() {
            Phase::Closed | Phase::Recovering if self.expr.eval(&self.window.stats(now)) => Phase::Open,
            Phase::Open if in_phase >= self.fallback => {
                self.window.reset();
                self.ramp_counter.store(0, Relaxed);
                Phase::Recovering
            }
            Phase::Recovering if in_phase >= self.recovery => Phase::Closed,
            _ => return None,
        };
        self.set(next, now);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::super::expr::parse;
    use super::*;

    fn breaker() -> ServiceBreaker {
        ServiceBreaker::new(
            parse("NetworkErrorRatio() > 0.5").unwrap(),
            Duration::from_secs(10),
            Duration::from_secs(10),
            Instant::now(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn opens_falls_back_recovers_and_closes() {
        let b = breaker();
        for _ in 0..3 {
            b.record(Instant::now(), Outcome::NetworkError);
        }
        b.record(
            Instant::now(),
            Outcome::Response {
                status: 200,
                latency: Duration::from_millis(1),
            },
        );
        assert_eq!(b.evaluate(Instant::now()), Some(Phase::Open));
        assert!(!b.admit(Instant::now()));
        tokio::time::advance(Duration::from_millis(9_900)).await;
        assert_eq!(b.evaluate(Instant::now()), None);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(b.evaluate(Instant::now()), Some(Phase::Recovering));
        // The ramp: about a quarter of requests at 25% of the recovery time, about 3/4 at 75%.
        tokio::time::advance(Duration::from_millis(2_500)).await;
        let admitted = (0..1000).filter(|_| b.admit(Instant::now())).count();
        assert!((230..=270).contains(&admitted), "{admitted} of 1000 at 25%");
        tokio::time::advance(Duration::from_millis(5_000)).await;
        let admitted = (0..1000).filter(|_| b.admit(Instant::now())).count();
        assert!((730..=770).contains(&admitted), "{admitted} of 1000 at 75%");
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(b.evaluate(Instant::now()), Some(Phase::Closed));
        assert!(b.admit(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn tripping_while_recovering_opens_again() {
        let b = breaker();
        b.record(Instant::now(), Outcome::NetworkError);
        assert_eq!(b.evaluate(Instant::now()), Some(Phase::Open));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.evaluate(Instant::now()), Some(Phase::Recovering));
        assert_eq!(b.evaluate(Instant::now()), None, "old failures were not forgotten");
        b.record(Instant::now(), Outcome::NetworkError);
        assert_eq!(b.evaluate(Instant::now()), Some(Phase::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_traffic_keeps_it_closed() {
        let b = breaker();
        for _ in 0..100 {
            b.record(
                Instant::now(),
                Outcome::Response {
                    status: 200,
                    latency: Duration::from_millis(3),
                },
            );
        }
        b.record(Instant::now(), Outcome::NetworkError);
        assert_eq!(b.evaluate(Instant::now()), None);
        assert_eq!(b.phase(), Phase::Closed);
    }
}
