//! lariat: a Layer 4/7 load balancer for Rancher and Kubernetes hosts, built on Pingora.

pub mod config;
pub mod desired;
pub mod route;
pub mod upstream;
