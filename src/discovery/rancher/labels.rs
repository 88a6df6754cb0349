//! From rancher-metadata services to lariat's desired state: exposure by `lariat.*` labels (and
//! Traefik's `traefik.*` ones), hosts and path prefixes, TCP services, members, and the metadata
//! health check with label overrides. Pure: the same answer always gives the same state.

use super::model::{MetaContainer, MetaContainerRef, MetaHealthCheck, MetaService};
use crate::config::{Dur, RancherProvider};
use crate::desired::{
    BackendSpec, Balance, CheckKind, Desired, Expression, HealthCheckSpec, HostMatch, HttpRoute, ServiceId, ServiceSpec, Strategy, TcpRoute,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Something skipped, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub service: String,
    pub reason: String,
}

fn label<'a>(labels: &'a BTreeMap<String, String>, ours: &str, traefik: Option<&str>) -> Option<&'a str> {
    labels.get(ours).or_else(|| traefik.and_then(|t| labels.get(t))).map(|s| s.trim())
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

const MEMBER_STATES: &[&str] = &["running", "starting", "updating-running", "upgraded"];
const GOOD_HEALTH: &[&str] = &["healthy", "updating-healthy"];
const SERVICE_DEAD: &[&str] = &["inactive", "removing", "removed", "purging", "purged"];

/// Hosts and path prefix from `traefik.frontend.rule`: `Host:a,b`, `PathPrefix:/p`, joined by ';'.
fn frontend_rule(rule: &str) -> Result<(Vec<String>, Option<String>), String> {
    let (mut hosts, mut prefix) = (Vec::new(), None);
    for part in rule.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("Host") => {
                hosts.extend(v.split(',').map(|h| h.trim().to_string()).filter(|h| !h.is_empty()))
            }
            Some((k, v)) if k.eq_ignore_ascii_case("PathPrefix") => prefix = Some(v.split(',').next().unwrap_or("").trim().to_string()),
            _ => return Err(format!("frontend rule part {part:?} is not Host: or PathPrefix:")),
        }
    }
    Ok((hosts, prefix))
}

fn ms(v: Option<u64>) -> Option<Duration> {
    v.filter(|&m| m > 0).map(Duration::from_millis)
}

/// The service's metadata health check, then label overrides.
fn health_check(meta: Option<&MetaHealthCheck>, labels: &BTreeMap<String, String>) -> Result<(Option<HealthCheckSpec>, Strategy), String> {
    let mut check = None;
    let mut strategy = Strategy::Recreate;
    let mut quorum = None;
    if let Some(h) = meta {
        let kind = CheckKind::from_request_line(h.request_line.as_deref().unwrap_or(""), None)?;
        let mut c = HealthCheckSpec::new(kind);
        c.port = h.port.filter(|p| *p != 0);
        c.interval = ms(h.interval).unwrap_or(c.interval);
        c.timeout = ms(h.response_timeout).unwrap_or(c.timeout);
        c.healthy_threshold = h.healthy_threshold.filter(|v| *v > 0).unwrap_or(c.healthy_threshold);
        c.unhealthy_threshold = h.unhealthy_threshold.filter(|v| *v > 0).unwrap_or(c.unhealthy_threshold);
        c.initializing_timeout = ms(h.initializing_timeout).unwrap_or(c.initializing_timeout);
        quorum = h.recreate_on_quorum_strategy_config.as_ref().and_then(|q| q.quorum);
        if let Some(s) = h.strategy.as_deref().filter(|s| !s.is_empty()) {
            strategy = crate::config::parse_strategy(s, quorum)?;
        }
        check = Some(c);
    }
    // Label overrides: lariat.health_check.KEY, and Traefik's healthcheck path and interval.
    let get = |k: &str| labels.get(&format!("lariat.health_check.{k}")).map(|s| s.trim());
    let path = labels
        .get("traefik.backend.healthcheck.path")
        .map(|p| format!("GET {} HTTP/1.0", p.trim()));
    if let Some(line) = get("request_line").map(str::to_string).or(path) {
        let kind = CheckKind::from_request_line(&line, get("host").map(str::to_string))?;
        match check.as_mut() {
            Some(c) => c.kind = kind,
            None => check = Some(HealthCheckSpec::new(kind)),
        }
    }
    if get("kind") == Some("tcp") {
        match check.as_mut() {
            Some(c) => c.kind = CheckKind::Tcp,
            None => check = Some(HealthCheckSpec::new(CheckKind::Tcp)),
        }
    }
    let dur = |k: &str| -> Result<Option<Duration>, String> { get(k).map(|v| Dur::parse(v).map(|d| d.0)).transpose() };
    let num = |k: &str| -> Result<Option<u32>, String> {
        get(k)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| format!("lariat.health_check.{k}: {v:?} is not a number"))
            })
            .transpose()
    };
    let traefik_interval = labels
        .get("traefik.backend.healthcheck.interval")
        .map(|v| Dur::parse(v.trim()).map(|d| d.0))
        .transpose()?;
    // Parsed whether or not a check exists, so a bad label is reported either way.
    let (port, interval, timeout, init) = (
        num("port")?,
        dur("interval")?.or(traefik_interval),
        dur("timeout")?,
        dur("initializing_timeout")?,
    );
    let (healthy, unhealthy) = (num("healthy_threshold")?, num("unhealthy_threshold")?);
    if let Some(c) = check.as_mut() {
        if let Some(p) = port {
            c.port = u16::try_from(p).ok().filter(|p| *p != 0);
        }
        c.interval = interval.unwrap_or(c.interval);
        c.timeout = timeout.unwrap_or(c.timeout);
        c.initializing_timeout = init.unwrap_or(c.initializing_timeout);
        c.healthy_threshold = healthy.map(|n| n.max(1)).unwrap_or(c.healthy_threshold);
        c.unhealthy_threshold = unhealthy.map(|n| n.max(1)).unwrap_or(c.unhealthy_threshold);

        if c.interval < Duration::from_millis(10) || c.timeout < Duration::from_millis(10) {
            return Err("health check interval and timeout must be at least 10ms".into());
        }
    }
    if let Some(q) = num("quorum")? {
        quorum = Some(q.max(1));
        if let Strategy::RecreateOnQuorum(_) = strategy {
            strategy = Strategy::RecreateOnQuorum(q.max(1));
        }
    }
    if let Some(s) = get("strategy") {
        strategy = crate::config::parse_strategy(s, quorum)?;
    }
    Ok((check, strategy))
}

/// The container port a service is reached on: the label, else its only port mapping's private
/// port, else its health check's port.
fn service_port(s: &MetaService) -> Result<u16, String> {
    if let Some(p) = label(&s.labels, "lariat.port", Some("traefik.port")) {
        return p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port label {p:?} is not a port"));
    }
    let private: Vec<u16> = s
        .ports
        .iter()
        .filter_map(|m| m.split('/').next()?.rsplit(':').next()?.parse::<u16>().ok())
        .collect();
    match private.as_slice() {
        [one] => return Ok(*one),
        [] => {}
        _ => return Err("it maps several ports: set lariat.port".into()),
    }
    s.health_check
        .as_ref()
        .and_then(|h| h.port)
        .filter(|p| *p != 0)
        .ok_or_else(|| "it has no usable port: set lariat.port".into())
}

fn members(s: &MetaService, port: u16, health_filter: bool, containers: &BTreeMap<String, MetaContainer>) -> Vec<BackendSpec> {
    let mut out: Vec<BackendSpec> = Vec::new();
    for c in &s.containers {
        let c = match c {
            MetaContainerRef::Object(c) => c,
            MetaContainerRef::Name(n) => match containers.get(n) {
                Some(c) => c,
                None => continue,
            },
        };
        if !MEMBER_STATES.contains(&c.state.as_str()) {
            continue;
        }
        if health_filter && !c.health_state.is_empty() && !GOOD_HEALTH.contains(&c.health_state.as_str()) {
            continue;
        }
        let Ok(ip) = c.primary_ip.parse::<IpAddr>() else { continue };
        let addr = SocketAddr::new(ip, port);
        if !out.iter().any(|b| b.addr == addr) {
            out.push(BackendSpec { addr, weight: 1 });
        }
    }
    out.sort_by_key(|b| b.addr);
    out
}

/// The desired state for a metadata answer. `tcp_entrypoints`: the configured tcp entrypoints.
pub fn desired(
    services: &[MetaService],
    containers: &BTreeMap<String, MetaContainer>,
    cfg: &RancherProvider,
    tcp_entrypoints: &[String],
) -> (Desired, Vec<Skipped>) {
    let mut d = Desired::default();
    let mut skipped = Vec::new();
    for s in services {
        let name = format!("{}.{}", s.name, s.stack_name).to_ascii_lowercase();
        let mut skip = |reason: String| {
            skipped.push(Skipped {
                service: name.clone(),
                reason,
            })
        };
        if s.system || s.kind != "service" || SERVICE_DEAD.contains(&s.state.as_str()) {
            continue;
        }
        let enabled = label(&s.labels, "lariat.enable", Some("traefik.enable"))
            .map(truthy)
            .unwrap_or(cfg.exposed_by_default);
        if !enabled {
            continue;
        }
        let port = match service_port(s) {
            Ok(p) => p,
            Err(e) => {
                skip(e);
                continue;
            }
        };
        let id = ServiceId(format!("{name}@rancher"));
        let mut spec = ServiceSpec::new(id.clone(), members(s, port, cfg.health_filter, containers));
        match health_check(s.health_check.as_ref(), &s.labels) {
            Ok((check, strategy)) => {
                spec.health_check = check;
                spec.strategy = strategy;
            }
            Err(e) => {
                skip(format!("health check: {e}"));
                continue;
            }
        }
        if let Some(b) = label(&s.labels, "lariat.balance", Some("traefik.backend.loadbalancer.method")) {
            spec.balance = match b.to_ascii_lowercase().as_str() {
                "round_robin" | "wrr" => Balance::RoundRobin,
                "random" => Balance::Random,
                "least_conn" | "drr" => Balance::LeastConn,
                "consistent_hash" => Balance::ConsistentHash(crate::desired::HashKey::ClientIp),
                other => {
                    skip(format!(
                        "balance {other:?} is not one of round_robin, random, least_conn, consistent_hash, wrr, drr"
                    ));
                    continue;
                }
            };
        }
        if let Some(e) = label(
            &s.labels,
            "lariat.circuit_breaker.expression",
            Some("traefik.backend.circuitbreaker.expression"),
        ) {
            match Expression::parse(e) {
                Ok(x) => spec.breaker.expression = Some(x),
                Err(err) => {
                    skip(format!("circuit breaker: {err}"));
                    continue;
                }
            }
        }
        if label(&s.labels, "lariat.protocol", None).is_some_and(|p| p.eq_ignore_ascii_case("tcp")) {
            match label(&s.labels, "lariat.entrypoint", None) {
                Some(ep) if tcp_entrypoints.iter().any(|t| t == ep) => d.tcp_routes.push(TcpRoute {
                    sni: vec![],
                    entrypoint: ep.to_string(),
                    service: id,
                }),
                Some(ep) => {
                    skip(format!("lariat.entrypoint {ep:?} is not a tcp entrypoint of this lariat"));
                    continue;
                }
                None => {
                    skip("lariat.protocol=tcp needs lariat.entrypoint".into());
                    continue;
                }
            }
            d.services.push(spec);
            continue;
        }
        // HTTP: hosts and prefix from our labels, else Traefik's frontend rule, else the default host.
        let (mut hosts, mut prefix) = (Vec::new(), None);
        if let Some(rule) = s.labels.get("traefik.frontend.rule") {
            match frontend_rule(rule) {
                Ok((h, p)) => (hosts, prefix) = (h, p),
                Err(e) => {
                    skip(e);
                    continue;
                }
            }
        }
        if let Some(h) = s.labels.get("lariat.host") {
            hosts = h.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
        }
        if let Some(p) = s.labels.get("lariat.path_prefix") {
            prefix = Some(p.trim().to_string());
        }
        if hosts.is_empty() {
            let domain = label(&s.labels, "lariat.domain", Some("traefik.domain")).unwrap_or(&cfg.domain);
            hosts.push(format!("{}.{}.{}", s.name, s.stack_name, domain).to_ascii_lowercase());
        }
        let prefix = prefix.unwrap_or_else(|| "/".into());
        let redirect_https = label(&s.labels, "lariat.redirect_https", None).is_some_and(truthy);
        if !prefix.starts_with('/') {
            skip(format!("path prefix {prefix:?} must start with '/'"));
            continue;
        }
        let mut parsed = Vec::new();
        for h in &hosts {
            match HostMatch::parse(h) {
                Ok(m) => parsed.push(m),
                Err(e) => skip(e),
            }
        }
        if label(&s.labels, "lariat.tls.acme", None).is_some_and(truthy) {
            d.acme_names.extend(parsed.iter().filter_map(|h| match h {
                HostMatch::Exact(n) => Some(n.clone()),
                _ => None,
            }));
        }
        for host in parsed {
            d.http_routes.push(HttpRoute {
                entrypoints: cfg.entrypoints.clone(),
                host,
                path_prefix: prefix.clone(),
                exact: false,
                redirect_https,
                service: id.clone(),
            });
        }
        d.services.push(spec);
    }
    d.services.sort_by(|a, b| a.id.cmp(&b.id));
    (d, skipped)
}

#[cfg(test)]
#[path = "labels_tests.rs"]
mod tests;
