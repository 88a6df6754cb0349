//! Circuit breakers: the passive per-backend breaker (outlier ejection) and the whole-service
//! breaker driven by Traefik's expression language over a sliding window.

pub mod backend;
pub mod expr;
pub mod service;
pub mod window;

pub use backend::{Admit, Breaker, BreakerState, Transition};
pub use service::{Phase, ServiceBreaker};
pub use window::Outcome;
