//! Discovery: the providers that publish desired state to the registry. Each owns the services
//! it publishes and replaces them whole on every update.

pub mod file;
pub mod kubernetes;
pub mod rancher;
