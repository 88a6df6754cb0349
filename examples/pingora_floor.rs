//! The floor under lariat's L7 path: a Pingora proxy that does nothing but forward every request
//! to one fixed backend (no routing, no health state, no counters, no forwarding headers). The
//! benchmark compares lariat with it to tell lariat's own per-request cost from Pingora's.
//!
//!   cargo build --release --example pingora_floor
//!   target/release/examples/pingora_floor LISTEN BACKEND      # e.g. 127.0.0.1:18405 127.0.0.1:18401

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};
use std::net::SocketAddr;

struct Floor(SocketAddr);

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(backend)) = (args.get(1), args.get(2).and_then(|b| b.parse().ok())) else {
        eprintln!("usage: pingora_floor LISTEN BACKEND");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Floor(backend));
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
