//! The data path: the L7 HTTP proxy and the L4 TCP forwarder, one instance per entrypoint.

pub mod below;
pub mod deadline;
pub mod http;
pub mod lane;
pub mod park;
pub mod pp;
pub mod pump;
mod respond;
pub mod sni;
pub mod sock;
pub mod strict;
pub mod tcp;
pub mod tls;

pub use respond::body_for;
