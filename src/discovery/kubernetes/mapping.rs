//! From Ingresses, Services and EndpointSlices to lariat's desired state: Ingress rules (hosts,
//! Prefix / Exact / ImplementationSpecific paths, defaultBackend) become HTTP routes; members are
//! the ready endpoints of the backend Service's slices, the port resolved by number or name;
//! `lariat.io/*` Service annotations set checks, strategy, balance, breaker and TCP exposure.
//! Pure: the same objects always give the same state.

use crate::config::{Dur, KubernetesProvider};
use crate::desired::{
    BackendSpec, Balance, CheckKind, Desired, Expression, HashKey, HealthCheckSpec, HostMatch, HttpRoute, ServiceId, ServiceSpec, Strategy,
    TcpRoute,
};
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Something skipped, for the log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub object: String,
    pub reason: String,
}

/// The objects the watchers hold.
#[derive(Default)]
pub struct Objects {
    pub ingresses: Vec<Arc<Ingress>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    /// Secrets of type kubernetes.io/tls.
    pub secrets: Vec<Arc<Secret>>,
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A port of a Service, referred to by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PortRef {
    Number(i32),
    Name(String),
}

struct Index<'a> {
    services: BTreeMap<(String, String), &'a Service>,
    /// (namespace, service name) -> its slices.
    slices: BTreeMap<(String, String), Vec<&'a EndpointSlice>>,
}

impl<'a> Index<'a> {
    fn new(o: &'a Objects) -> Index<'a> {
        let services = o.services.iter().map(|s| (ns_name(&s.metadata), s.as_ref())).collect();
        let mut slices: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
        for s in &o.slices {
            if let Some(owner) = slice_owner(s) {
                slices.entry(owner).or_default().push(s.as_ref());
            }
        }
        Index { services, slices }
    }

    /// The Service's port matching `port`.
    fn port(&self, ns: &str, svc: &str, port: &PortRef) -> Result<(&'a Service, &'a ServicePort), String> {
        let s = self
            .services
            .get(&(ns.to_string(), svc.to_string()))
            .ok_or_else(|| format!("service {ns}/{svc} does not exist"))?;
        let ports = s
            .spec
            .as_ref()
            .and_then(|sp| sp.ports.as_ref())
            .map(|p| p.as_slice())
            .unwrap_or(&[]);
        let found = ports.iter().find(|p| match port {
            PortRef::Number(n) => p.port == *n,
            PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
        });
        let found = found.ok_or_else(|| format!("service {ns}/{svc} has no port {port:?}"))?;
        Ok((s, found))
    }

    /// Ready endpoints of the Service's slices, on the slice port named like the Service port.
    fn members(&self, ns: &str, svc: &str, port: &ServicePort) -> Vec<BackendSpec> {
        let slices = self.slices.get(&(ns.to_string(), svc.to_string()));
        members_of(slices.into_iter().flatten().copied(), port)
    }
}

/// The Service (namespace, name) an EndpointSlice belongs to, by its `kubernetes.io/service-name`
/// label.
pub fn slice_owner(s: &EndpointSlice) -> Option<(String, String)> {
    let owner = s.metadata.labels.as_ref()?.get("kubernetes.io/service-name")?;
    Some((s.metadata.namespace.clone().unwrap_or_else(|| "default".into()), owner.clone()))
}

/// The members of a Service's port, from the Service's slices (all of them, and only them).
pub fn members(slices: &[Arc<EndpointSlice>], port: &ServicePort) -> Vec<BackendSpec> {
    members_of(slices.iter().map(|s| s.as_ref()), port)
}

/// Ready endpoints of the slices, on the slice port named like the Service port.
fn members_of<'a>(slices: impl Iterator<Item = &'a EndpointSlice>, port: &ServicePort) -> Vec<BackendSpec> {
    let want = port.name.clone().unwrap_or_default();
    let mut out = BTreeSet::new();
    for slice in slices {
        let Some(p) = slice
            .ports
            .as_ref()
            .and_then(|ps| ps.iter().find(|p| p.name.clone().unwrap_or_default() == want))
            .and_then(|p| p.port)
        else {
            continue;
        };
        let Ok(p) = u16::try_from(p) else { continue };
        for ep in &slice.endpoints {
            // Ready unless it says otherwise; terminating endpoints are not ready and drain.
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    out.insert(SocketAddr::new(ip, p));
                }
            }
        }
    }
    out.into_iter().map(|addr| BackendSpec { addr, weight: 1 }).collect()
}

/// The port of `svc` that the service id `namespace/name:port@kubernetes` stands for.
pub fn port_of_id<'a>(svc: &'a Service, id: &ServiceId) -> Option<&'a ServicePort> {
    let number: i32 = id.0.strip_suffix("@kubernetes")?.rsplit_once(':')?.1.parse().ok()?;
    svc.spec.as_ref()?.ports.as_ref()?.iter().find(|p| p.port == number)
}

fn annotation<'a>(s: &'a Service, key: &str) -> Option<&'a str> {
    s.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(|v| v.trim())
}

/// A service spec from a Service, one of its ports, and its `lariat.io/*` annotations.
fn service_spec(idx: &Index, ns: &str, svc: &Service, port: &ServicePort) -> Result<ServiceSpec, String> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let id = ServiceId(format!("{ns}/{name}:{}@kubernetes", port.port));
    let mut spec = ServiceSpec::new(id, idx.members(ns, &name, port));
    let a = |k: &str| annotation(svc, &format!("lariat.io/{k}"));
    let num = |k: &str| {
        a(k).map(|v| v.parse::<u32>().map_err(|_| format!("lariat.io/{k}: {v:?} is not a number")))
            .transpose()
    };
    if let Some(check) = a("health-check") {
        let kind = if check.eq_ignore_ascii_case("tcp") {
            CheckKind::Tcp
        } else {
            CheckKind::from_request_line(check, None)?
        };
        let mut c = HealthCheckSpec::new(kind);
        if let Some(i) = a("health-check-interval") {
            c.interval = Dur::parse(i).map_err(|e| format!("lariat.io/health-check-interval: {e}"))?.0;
            c.timeout = c.timeout.min(c.interval);
        }
        if let Some(n) = num("healthy-threshold")? {
            c.healthy_threshold = n.max(1);
        }
        if let Some(n) = num("unhealthy-threshold")? {
            c.unhealthy_threshold = n.max(1);
        }
        spec.health_check = Some(c);
    }
    let quorum = num("quorum")?;
    if let Some(s) = a("strategy") {
        spec.strategy = crate::config::parse_strategy(s, quorum).map_err(|e| format!("lariat.io/strategy: {e}"))?;
    } else if let Some(q) = quorum {
        spec.strategy = Strategy::RecreateOnQuorum(q.max(1));
    }
    if let Some(b) = a("balance") {
        spec.balance = match b {
            "round_robin" => Balance::RoundRobin,
            "random" => Balance::Random,
            "least_conn" => Balance::LeastConn,
            "consistent_hash" => Balance::ConsistentHash(HashKey::ClientIp),
            other => {
                return Err(format!(
                    "lariat.io/balance: {other:?} is not one of round_robin, random, least_conn, consistent_hash"
                ))
            }
        };
    }
    match a("backend-protocol") {
        None | Some("http") => {}
        Some("https") => {
            spec.upstream_tls = Some(crate::desired::UpstreamTls {
                verify: true,
                ca_file: None,
                sni: None,
            })
        }
        Some(other) => return Err(format!("lariat.io/backend-protocol: {other:?} is not http or https")),
    }
    if let Some(e) = a("circuit-breaker") {
        spec.breaker.expression = Some(Expression::parse(e).map_err(|e| format!("lariat.io/circuit-breaker: {e}"))?);
    }
    Ok(spec)
}

fn backend_ref(b: &IngressBackend) -> Result<(String, PortRef), String> {
    let s = b
        .service
        .as_ref()
        .ok_or("backend is not a service (resource backends are not supported)")?;
    let p = s.port.as_ref().ok_or_else(|| format!("backend service {} has no port", s.name))?;
    let port = match (&p.name, p.number) {
        (_, Some(n)) => PortRef::Number(n),
        (Some(n), None) => PortRef::Name(n.clone()),
        (None, None) => return Err(format!("backend service {} has no port", s.name)),
    };
    Ok((s.name.clone(), port))
}

fn class_matches(i: &Ingress, class: &str) -> bool {
    let by_spec = i.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref());
    let by_annotation = i
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/ingress.class"))
        .map(|s| s.as_str());
    by_spec.or(by_annotation) == Some(class)
}

/// Kubernetes path rules as lariat routes: (path, exact).
fn paths(path: Option<&str>, path_type: &str) -> Result<Vec<(String, bool)>, String> {
    let p = path.unwrap_or("/");
    if !p.starts_with('/') {
        return Err(format!("path {p:?} does not start with '/'"));
    }
    match path_type {
        "Exact" => Ok(vec![(p.to_string(), true)]),
        // Prefix matches whole path elements: /foo matches /foo and /foo/bar, not /foobar.
        "Prefix" | "ImplementationSpecific" => {
            let trimmed = p.trim_end_matches('/');
            if trimmed.is_empty() {
                Ok(vec![("/".to_string(), false)])
            } else {
                Ok(vec![(trimmed.to_string(), true), (format!("{trimmed}/"), false)])
            }
        }
        other => Err(format!("pathType {other:?} is not Prefix, Exact or ImplementationSpecific")),
    }
}

/// The certificates of the Ingresses' `spec.tls` (the `kubernetes.io/tls` Secret of the
/// Ingress's namespace, `tls.crt` and `tls.key`); a missing or invalid Secret is skipped with a
/// reason, and its hosts get the default certificate.
pub fn certificates(o: &Objects, cfg: &KubernetesProvider) -> (Vec<crate::tls::cert::Loaded>, Vec<Skipped>) {
    let secrets: BTreeMap<(String, String), &Secret> = o.secrets.iter().map(|s| (ns_name(&s.metadata), s.as_ref())).collect();
    let mut seen = BTreeSet::new();
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for ing in o.ingresses.iter().filter(|i| class_matches(i, &cfg.ingress_class)) {
        let (ns, name) = ns_name(&ing.metadata);
        for t in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let Some(secret) = &t.secret_name else { continue };
            if !seen.insert((ns.clone(), secret.clone())) {
                continue;
            }
            let what = format!("ingress {ns}/{name}");
            let found = secrets
                .get(&(ns.clone(), secret.clone()))
                .filter(|s| s.type_.as_deref() == Some("kubernetes.io/tls"));
            let Some(s) = found else {
                skipped.push(Skipped {
                    object: what,
                    reason: format!("secret {ns}/{secret} does not exist or is not of type kubernetes.io/tls"),
                });
                continue;
            };
            let data = s.data.as_ref();
            let (Some(crt), Some(key)) = (data.and_then(|d| d.get("tls.crt")), data.and_then(|d| d.get("tls.key"))) else {
                skipped.push(Skipped {
                    object: what,
                    reason: format!("secret {ns}/{secret} lacks tls.crt or tls.key"),
                });
                continue;
            };
            match crate::tls::cert::from_pem(
                &crt.0,
                &key.0,
                crate::tls::cert::Source::Kubernetes,
                format!("secret {ns}/{secret}"),
            ) {
                Ok(c) => out.push(c),
                Err(e) => skipped.push(Skipped {
                    object: what,
                    reason: format!("secret {ns}/{secret}: {e}"),
                }),
            }
        }
    }
    (out, skipped)
}

/// The desired state for the watched objects.
pub fn desired(o: &Objects, cfg: &KubernetesProvider, tcp_entrypoints: &[String]) -> (Desired, Vec<Skipped>) {
    let idx = Index::new(o);
    let mut d = Desired::default();
    let mut skipped = Vec::new();
    let mut services: BTreeMap<ServiceId, ServiceSpec> = BTreeMap::new();
    let mut ingresses: Vec<&Ingress> = o
        .ingresses
        .iter()
        .map(|i| i.as_ref())
        .filter(|i| class_matches(i, &cfg.ingress_class))
        .collect();
    // Oldest first, so the first Ingress to claim a host and path keeps it.
    ingresses.sort_by(|a, b| {
        (&a.metadata.creation_timestamp, ns_name(&a.metadata)).cmp(&(&b.metadata.creation_timestamp, ns_name(&b.metadata)))
    });
    let mut resolve = |ns: &str, b: &IngressBackend, skipped: &mut Vec<Skipped>, what: &str| -> Option<ServiceId> {
        let r = backend_ref(b).and_then(|(name, port)| {
            let (svc, sp) = idx.port(ns, &name, &port)?;
            let spec = service_spec(&idx, ns, svc, sp)?;
            Ok(spec)
        });
        match r {
            Ok(spec) => {
                let id = spec.id.clone();
                services.entry(id.clone()).or_insert(spec);
                Some(id)
            }
            Err(reason) => {
                skipped.push(Skipped {
                    object: what.to_string(),
                    reason,
                });
                None
            }
        }
    };
    for ing in ingresses {
        let (ns, name) = ns_name(&ing.metadata);
        let what = format!("ingress {ns}/{name}");
        let Some(spec) = &ing.spec else { continue };
        // lariat.io/ssl-redirect: the hosts of spec.tls answer plain http with a redirect.
        let ssl_redirect = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("lariat.io/ssl-redirect"))
            .is_some_and(|v| v.trim() == "true");
        let tls_hosts: BTreeSet<String> = spec
            .tls
            .iter()
            .flatten()
            .flat_map(|t| t.hosts.iter().flatten())
            .map(|h| h.to_ascii_lowercase())
            .collect();
        for rule in spec.rules.as_deref().unwrap_or(&[]) {
            let redirect_https = ssl_redirect && rule.host.as_ref().is_some_and(|h| tls_hosts.contains(&h.to_ascii_lowercase()));
            let host = match rule.host.as_deref().map(HostMatch::parse).unwrap_or(Ok(HostMatch::Any)) {
                Ok(h) => h,
                Err(reason) => {
                    skipped.push(Skipped {
                        object: what.clone(),
                        reason,
                    });
                    continue;
                }
            };
            for p in rule.http.as_ref().map(|h| h.paths.as_slice()).unwrap_or(&[]) {
                let routes = match paths(p.path.as_deref(), &p.path_type) {
                    Ok(r) => r,
                    Err(reason) => {
                        skipped.push(Skipped {
                            object: what.clone(),
                            reason,
                        });
                        continue;
                    }
                };
                let Some(id) = resolve(&ns, &p.backend, &mut skipped, &what) else {
                    continue;
                };
                for (path, exact) in routes {
                    d.http_routes.push(HttpRoute {
                        entrypoints: cfg.entrypoints.clone(),
                        host: host.clone(),
                        path_prefix: path,
                        exact,
                        redirect_https,
                        service: id.clone(),
                    });
                }
            }
        }
        if let Some(b) = &spec.default_backend {
            if let Some(id) = resolve(&ns, b, &mut skipped, &what) {
                d.http_routes.push(HttpRoute {
                    entrypoints: cfg.entrypoints.clone(),
                    host: HostMatch::Any,
                    path_prefix: "/".into(),
                    exact: false,
                    redirect_https: false,
                    service: id,
                });
            }
        }
    }
    // Services exposed on a tcp entrypoint.
    for svc in &o.services {
        let Some(ep) = annotation(svc, "lariat.io/tcp-entrypoint") else {
            continue;
        };
        let (ns, name) = ns_name(&svc.metadata);
        let what = format!("service {ns}/{name}");
        if !tcp_entrypoints.iter().any(|t| t == ep) {
            skipped.push(Skipped {
                object: what,
                reason: format!("lariat.io/tcp-entrypoint {ep:?} is not a tcp entrypoint of this lariat"),
            });
            continue;
        }
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(|p| p.as_slice())
            .unwrap_or(&[]);
        let port = match (annotation(svc, "lariat.io/tcp-port"), ports) {
            (Some(p), _) => ports.iter().find(|sp| sp.name.as_deref() == Some(p) || sp.port.to_string() == p),
            (None, [one]) => Some(one),
            (None, _) => {
                skipped.push(Skipped {
                    object: what,
                    reason: "several ports: set lariat.io/tcp-port".into(),
                });
                continue;
            }
        };
        let Some(port) = port else {
            skipped.push(Skipped {
                object: what,
                reason: "lariat.io/tcp-port names no port of the service".into(),
            });
            continue;
        };
        match service_spec(&idx, &ns, svc, port) {
            Ok(spec) => {
                d.tcp_routes.push(TcpRoute {
                    sni: vec![],
                    entrypoint: ep.to_string(),
                    service: spec.id.clone(),
                });
                services.entry(spec.id.clone()).or_insert(spec);
            }
            Err(reason) => skipped.push(Skipped { object: what, reason }),
        }
    }
    d.services = services.into_values().collect();
    skipped.sort();
    skipped.dedup();
    (d, skipped)
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
