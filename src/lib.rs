//! lariat: a Layer 4/7 load balancer for Rancher and Kubernetes hosts, built on Pingora.

pub mod accept;
pub mod admin;
pub mod config;
pub mod desired;
pub mod discovery;
pub mod proxy;
pub mod route;
pub mod route_tcp;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;

pub use config::Config;
pub use server::{run, RunOptions, Running, Signals};
pub mod breaker;
pub mod health;
pub mod metrics;
pub mod net;
