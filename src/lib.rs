//! lariat: a Layer 4/7 load balancer for Rancher and Kubernetes hosts, built on Pingora.

pub mod config;
pub mod desired;
pub mod route;
pub mod upstream;
pub mod proxy;
pub mod state;
pub mod admin;
pub mod discovery;
pub mod server;

pub use config::Config;
pub use server::{run, RunOptions, Running, Signals};
