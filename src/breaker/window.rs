//! A 10-second sliding window of request outcomes (ten 1-second buckets of atomic counters) and
//! the statistics the expression language reads from it. Recording is lock-free.

use super::expr::Stats;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

const BUCKETS: usize = 10;
const CODES: usize = 600;
/// Latency histogram: bucket i holds latencies up to 0.1 ms × 1.5^i.
const LAT: usize = 40;

fn lat_bound_ms(i: usize) -> f64 {
    0.1 * 1.5f64.powi(i as i32)
}

fn lat_index(ms: f64) -> usize {
    (0..LAT).find(|&i| ms <= lat_bound_ms(i)).unwrap_or(LAT - 1)
}

struct Bucket {
    /// Which second (since the window's start, plus one) the counts belong to; 0 = empty.
    second: AtomicU64,
    total: AtomicU32,
    network_errors: AtomicU32,
    codes: Vec<AtomicU32>,
    latency: Vec<AtomicU32>,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            second: AtomicU64::new(0),
            total: AtomicU32::new(0),
            network_errors: AtomicU32::new(0),
            codes: (0..CODES).map(|_| AtomicU32::new(0)).collect(),
            latency: (0..LAT).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn clear(&self) {
        self.total.store(0, Relaxed);
        self.network_errors.store(0, Relaxed);
        self.codes.iter().chain(self.latency.iter()).for_each(|c| c.store(0, Relaxed));
    }
}

/// One request's outcome.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// Connect error, reset or timeout: no response.
    NetworkError,
    Response {
        status: u16,
        latency: Duration,
    },
}

pub struct Window {
    start: Instant,
    buckets: Vec<Bucket>,
}

impl Window {
    pub fn new(now: Instant) -> Window {
        Window {
            start: now,
            buckets: (0..BUCKETS).map(|_| Bucket::new()).collect(),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs() + 1
    }

    pub fn record(&self, now: Instant, outcome: Outcome) {
        let sec = self.second(now);
        let b = &self.buckets[(sec % BUCKETS as u64) as usize];
        let seen = b.second.load(Relaxed);
        if seen != sec && b.second.compare_exchange(seen, sec, Relaxed, Relaxed).is_ok() {
            b.clear();
        }
        b.total.fetch_add(1, Relaxed);
        match outcome {
            Outcome::NetworkError => {
                b.network_errors.fetch_add(1, Relaxed);
            }
            Outcome::Response { status, latency } => {
                b.codes[(status as usize).min(CODES - 1)].fetch_add(1, Relaxed);
                b.latency[lat_index(latency.as_secs_f64() * 1000.0)].fetch_add(1, Relaxed);
            }
        }
    }

    /// Forget everything (a breaker starting to recover begins with a clean slate).
    pub fn reset(&self) {
        for b in &self.buckets {
            b.second.store(0, Relaxed);
            b.clear();
        }
    }

    /// The sums over the last ten seconds.
    pub fn stats(&self, now: Instant) -> WindowStats {
        let sec = self.second(now);
        let mut s = WindowStats {
            total: 0,
            network_errors: 0,
            codes: vec![0; CODES],
            latency: vec![0; LAT],
        };
        for b in &self.buckets {
            let bs = b.second.load(Relaxed);
            if bs == 0 || bs + (BUCKETS as u64) <= sec || bs > sec {
                continue;
            }
            s.total += b.total.load(Relaxed) as u64;
            s.network_errors += b.network_errors.load(Relaxed) as u64;
            for (d, c) in s.codes.iter_mut().zip(&b.codes) {
                *d += c.load(Relaxed) as u64;
            }
            for (d, c) in s.latency.iter_mut().zip(&b.latency) {
                *d += c.load(Relaxed) as u64;
            }
        }
        s
    }
}

pub struct WindowStats {
    pub total: u64,
    pub network_errors: u64,
    codes: Vec<u64>,
    latency: Vec<u64>,
}

impl WindowStats {
    fn codes_in(&self, from: u16, to: u16) -> u64 {
        let (from, to) = ((from as usize).min(CODES), (to as usize).min(CODES));
        if from >= to {
            return 0;
        }
        self.codes[from..to].iter().sum()
    }
}

impl Stats for WindowStats {
    fn network_error_ratio(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.network_errors as f64 / self.total as f64
    }

    fn response_code_ratio(&self, from: u16, to: u16, div_from: u16, div_to: u16) -> f64 {
        let div = self.codes_in(div_from, div_to);
        if div == 0 {
            return 0.0;
        }
        self.codes_in(from, to) as f64 / div as f64
    }

    fn latency_at_quantile_ms(&self, q: f64) -> f64 {
        let n: u64 = self.latency.iter().sum();
        if n == 0 {
            return 0.0;
        }
        let want = ((q / 100.0) * n as f64).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, c) in self.latency.iter().enumerate() {
            acc += c;
            if acc >= want {
                return lat_bound_ms(i);
            }
        }
        lat_bound_ms(LAT - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, ms: u64) -> Outcome {
        Outcome::Response {
            status,
            latency: Duration::from_millis(ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ratios_and_quantiles() {
        let w = Window::new(Instant::now());
        for _ in 0..6 {
            w.record(Instant::now(), resp(200, 5));
        }
        for _ in 0..2 {
            w.record(Instant::now(), resp(503, 500));
        }
        for _ in 0..2 {
            w.record(Instant::now(), Outcome::NetworkError);
        }
        let s = w.stats(Instant::now());
        assert_eq!(s.total, 10);
        assert!((s.network_error_ratio() - 0.2).abs() < 1e-9);
        assert!((s.response_code_ratio(500, 600, 0, 600) - 0.25).abs() < 1e-9);
        let p50 = s.latency_at_quantile_ms(50.0);
        assert!((5.0..8.0).contains(&p50), "p50 {p50}");
        let p99 = s.latency_at_quantile_ms(99.0);
        assert!((500.0..760.0).contains(&p99), "p99 {p99}");
    }

    #[tokio::test(start_paused = true)]
    async fn old_buckets_expire() {
        let w = Window::new(Instant::now());
        w.record(Instant::now(), Outcome::NetworkError);
        tokio::time::advance(Duration::from_secs(5)).await;
        w.record(Instant::now(), resp(200, 1));
        assert_eq!(w.stats(Instant::now()).total, 2);
        tokio::time::advance(Duration::from_millis(5500)).await;
        let s = w.stats(Instant::now());
        assert_eq!((s.total, s.network_errors), (1, 0), "the error of 10.5 s ago still counts");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(w.stats(Instant::now()).total, 0);
        // A bucket reused after a full turn starts from zero.
        w.record(Instant::now(), resp(200, 1));
        assert_eq!(w.stats(Instant::now()).total, 1);
    }
}
