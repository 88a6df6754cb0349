//! Backend selection: a closed enum over Pingora's weighted round robin, weighted random and ketama
//! consistent hashing, plus our own least-connections. Callers may veto any candidate.

use super::member::Member;
use crate::desired::{BackendSpec, Balance};
use pingora_load_balancing::selection::{BackendIter, BackendSelection, Consistent, Random, RoundRobin};
use pingora_load_balancing::Backend;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub enum Selector {
    RoundRobin(Arc<RoundRobin>),
    Random(Arc<Random>),
    Consistent(Arc<Consistent>),
    LeastConn(AtomicUsize),
}

/// Index of a member in its service, carried in a Pingora `Backend`'s extensions.
#[derive(Clone, Copy)]
struct Index(usize);

impl Selector {
    pub fn build(balance: &Balance, backends: &[BackendSpec]) -> Selector {
        let set: BTreeSet<Backend> = backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut be = Backend {
                    addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(b.addr),
                    weight: b.weight as usize,
                    ext: Default::default(),
                };
                be.ext.insert(Index(i));
                be
            })
            .collect();
        match balance {
            Balance::RoundRobin => Selector::RoundRobin(Arc::new(RoundRobin::build(&set))),
            Balance::Random => Selector::Random(Arc::new(Random::build(&set))),
            Balance::ConsistentHash(_) => Selector::Consistent(Arc::new(Consistent::build(&set))),
            Balance::LeastConn => Selector::LeastConn(AtomicUsize::new(0)),
        }
    }

    /// Pick a member index: the algorithm's choices first, then any acceptable member, so a veto
    /// never hides a usable backend. `key` feeds consistent hashing only.
    pub fn select(&self, key: &[u8], members: &[Arc<Member>], weights: &[u32], accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = members.len();
        if n == 0 {
            return None;
        }
        let max_iter = 2 * n + 2;
        let from_iter = match self {
            Selector::RoundRobin(s) => first_accepted(s.iter(key), max_iter, accept),
            Selector::Random(s) => first_accepted(s.iter(key), max_iter, accept),
            Selector::Consistent(s) => first_accepted(s.iter(key), max_iter, accept),
            Selector::LeastConn(rot) => {
                let start = rot.fetch_add(1, Ordering::Relaxed) % n;
                let mut best: Option<(usize, u64, u64)> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    if !accept(i) {
                        continue;
                    }
                    let load = members[i].in_flight() as u64;
                    let w = weights.get(i).copied().unwrap_or(1).max(1) as u64;
                    // load/w < best_load/best_w, without division
                    if best.is_none_or(|(_, bl, bw)| load * bw < bl * w) {
                        best = Some((i, load, w));
                    }
                }
                return best.map(|(i, _, _)| i);
            }
        };
        from_iter.or_else(|| (0..n).find(|&i| accept(i)))
    }
}

fn first_accepted(mut it: impl BackendIter, max_iter: usize, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
    for _ in 0..max_iter {
        let b = it.next()?;
        if let Some(Index(i)) = b.ext.get::<Index>() {
            if accept(*i) {
                return Some(*i);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::HashKey;

    fn members(n: usize) -> (Vec<Arc<Member>>, Vec<BackendSpec>) {
        let specs: Vec<BackendSpec> = (0..n)
            .map(|i| BackendSpec {
                addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                weight: 1,
            })
            .collect();
        (specs.iter().map(|b| Member::new(b.addr)).collect(), specs)
    }

    #[test]
    fn round_robin_visits_all() {
        let (m, specs) = members(3);
        let s = Selector::build(&Balance::RoundRobin, &specs);
        let w = vec![1; 3];
        let mut seen = [0; 3];
        for _ in 0..30 {
            seen[s.select(b"", &m, &w, &|_| true).unwrap()] += 1;
        }
        assert_eq!(seen, [10, 10, 10]);
    }

    #[test]
    fn veto_falls_through_to_any_acceptable() {
        let (m, specs) = members(4);
        for bal in [
            Balance::RoundRobin,
            Balance::Random,
            Balance::LeastConn,
            Balance::ConsistentHash(HashKey::Path),
        ] {
            let s = Selector::build(&bal, &specs);
            for _ in 0..20 {
                assert_eq!(s.select(b"k", &m, &[1; 4], &|i| i == 2), Some(2));
            }
            assert_eq!(s.select(b"k", &m, &[1; 4], &|_| false), None);
        }
    }

    #[test]
    fn least_conn_prefers_idle() {
        let (m, specs) = members(3);
        let s = Selector::build(&Balance::LeastConn, &specs);
        let _a = m[0].try_acquire(0);
        let _b = m[1].try_acquire(0);
        assert_eq!(s.select(b"", &m, &[1; 3], &|_| true), Some(2));
    }

    #[test]
    fn consistent_is_sticky() {
        let (m, specs) = members(5);
        let s = Selector::build(&Balance::ConsistentHash(HashKey::ClientIp), &specs);
        let first = s.select(b"10.1.2.3", &m, &[1; 5], &|_| true);
        for _ in 0..10 {
            assert_eq!(s.select(b"10.1.2.3", &m, &[1; 5], &|_| true), first);
        }
    }
}
