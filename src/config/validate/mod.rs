//! Raw config -> `Config`: every check, each problem reported with its key path. All problems are
//! collected, not only the first. One file per part of the config.

use super::raw::*;
use super::*;
use crate::desired::{
    BackendSpec, Balance, BreakerSpec, CheckKind, Expression, HashKey, HealthCheckSpec, HostMatch, HttpRoute, ServiceId, ServiceSpec,
    Strategy, TcpRoute,
};
use std::collections::{BTreeSet, HashMap};

pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

mod listeners;
mod providers;
mod routes;
mod services;
mod tls;

use listeners::{admin, entrypoints, server};
use providers::{kubernetes, rancher};
use routes::routes;
pub use services::parse_strategy;
use services::services;
use tls::tls;

pub(super) fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut p = Problems(Vec::new());
    let server = server(&raw.server, &mut p);
    let admin = admin(&raw.admin, &mut p);
    let entrypoints = entrypoints(&raw.entrypoints, &admin, &mut p);
    let services = services(&raw.services, &mut p);
    let (http_routes, tcp_routes) = routes(&raw.routes, &entrypoints, &raw.services, &mut p);
    let rancher = raw.providers.rancher.as_ref().map(|r| rancher(r, &entrypoints, &mut p));
    let kubernetes = raw.providers.kubernetes.as_ref().map(|k| kubernetes(k, &entrypoints, &mut p));
    let providers = Providers {
        file: FileProvider {
            watch: raw.providers.file.watch.unwrap_or(true),
            poll_interval: raw.providers.file.poll_interval.map(|d| d.0).unwrap_or(Duration::from_secs(1)),
        },
        rancher,
        kubernetes,
    };
    let tls = tls(&raw.tls, &entrypoints, &mut p);
    if providers.file.poll_interval < Duration::from_millis(10) {
        p.add("providers.file.poll_interval", "must be at least 10ms");
    }
    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok(Config {
        server,
        admin,
        entrypoints,
        desired: Desired {
            http_routes,
            tcp_routes,
            services,
            acme_names: vec![],
        },
        providers,
        tls,
    })
}

pub(super) fn parse_addr(text: &str, key: &str, p: &mut Problems) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                key,
                format!("{text:?} is not an address of the form IP:PORT (e.g. \"0.0.0.0:8080\", \"[::]:8080\")"),
            );
            None
        }
    }
}
