//! Raw config -> `Config`: every check, each problem reported with its key path. All problems are
//! collected, not only the first.

use super::raw::*;
use super::*;
use crate::desired::{
    BackendSpec, Balance, BreakerSpec, CheckKind, Expression, HashKey, HealthCheckSpec, HostMatch, HttpRoute, ServiceId, ServiceSpec,
    Strategy, TcpRoute,
};
use std::collections::{BTreeSet, HashMap};

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

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

fn server(raw: &RawServer, p: &mut Problems) -> ServerSettings {
    let threads = raw
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if threads == 0 || threads > 1024 {
        p.add("server.threads", "must be between 1 and 1024");
    }
    if raw.max_header_bytes.is_some_and(|m| !(1024..=1 << 20).contains(&m)) {
        p.add("server.max_header_bytes", "must be between 1024 and 1048576");
    }
    if raw.client_header_timeout.is_some_and(|d| d.0 < Duration::from_millis(100)) {
        p.add("server.client_header_timeout", "must be at least 100ms");
    }
    if raw.idle_timeout.is_some_and(|d| d.0 < Duration::from_secs(1)) {
        p.add("server.idle_timeout", "must be at least 1s");
    }
    let log = raw.log.clone().unwrap_or_else(|| "info".into());
    let level_ok = log.split(',').all(|d| {
        let lvl = d.rsplit('=').next().unwrap_or("").trim().to_ascii_lowercase();
        ["off", "error", "warn", "info", "debug", "trace"].contains(&lvl.as_str())
    });
    if !level_ok {
        p.add(
            "server.log",
            format!("{log:?} is not a log filter (off, error, warn, info, debug, trace, or module=level,...)"),
        );
    }
    ServerSettings {
        threads,
        grace_period: raw.grace_period.map(|d| d.0).unwrap_or(Duration::from_secs(5)),
        log,
        access_log: raw.access_log.unwrap_or(true),
        upgrade_sock: raw.upgrade_sock.clone().unwrap_or_else(|| "/tmp/lariat_upgrade.sock".into()),
        pid_file: raw.pid_file.clone().unwrap_or_else(|| "/tmp/lariat.pid".into()),
        max_header_bytes: raw.max_header_bytes.unwrap_or(65536),
        client_header_timeout: raw.client_header_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
        idle_timeout: raw.idle_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(60)),
        max_body_bytes: raw.max_body_bytes.unwrap_or(0),
    }
}

fn admin(raw: &RawAdmin, p: &mut Problems) -> AdminSettings {
    let text = raw.listen.as_deref().unwrap_or("127.0.0.1:9090");
    let listen = parse_addr(text, "admin.listen", p).unwrap_or_else(|| ([127, 0, 0, 1], 9090).into());
    let token = raw.token.clone().filter(|t| !t.is_empty());
    let insecure = raw.insecure.unwrap_or(false);
    if !listen.ip().is_loopback() && token.is_none() && !insecure {
        p.add(
            "admin.listen",
            format!("{listen} is not a loopback address: set admin.token, or admin.insecure = true to expose the admin API without one"),
        );
    }
    AdminSettings { listen, token, insecure }
}

fn parse_addr(text: &str, key: &str, p: &mut Problems) -> Option<SocketAddr> {
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

fn entrypoints(raw: &BTreeMap<String, RawEntrypoint>, admin: &AdminSettings, p: &mut Problems) -> BTreeMap<String, Entrypoint> {
    let mut out = BTreeMap::new();
    let mut seen: HashMap<SocketAddr, String> = HashMap::new();
    seen.insert(admin.listen, "admin.listen".into());
    for (name, ep) in raw {
        let key = format!("entrypoints.{name}");
        let kind = match ep.kind.as_str() {
            "http" => Some(EntrypointKind::Http),
            "https" => Some(EntrypointKind::Https),
            "tcp" => Some(EntrypointKind::Tcp),
            other => {
                p.add(format!("{key}.kind"), format!("{other:?} is not one of http, https, tcp"));
                None
            }
        };
        if let Some(target) = &ep.redirect_https {
            match raw.get(target) {
                _ if kind != Some(EntrypointKind::Http) => {
                    p.add(format!("{key}.redirect_https"), "only http entrypoints redirect to https")
                }
                Some(t) if t.kind == "https" => {}
                _ => p.add(format!("{key}.redirect_https"), format!("{target:?} is not an https entrypoint")),
            }
        }
        let listen = parse_addr(&ep.listen, &format!("{key}.listen"), p);
        if let Some(addr) = listen {
            if let Some(prev) = seen.insert(addr, format!("{key}.listen")) {
                p.add(format!("{key}.listen"), format!("{addr} is already used by {prev}"));
            }
        }
        if ep.h2c.is_some() && kind != Some(EntrypointKind::Http) {
            p.add(
                format!("{key}.h2c"),
                "only http entrypoints speak h2c (https negotiates h2 by ALPN)",
            );
        }
        if let (Some(kind), Some(listen)) = (kind, listen) {
            let h2c = kind == EntrypointKind::Http && ep.h2c.unwrap_or(true);
            let proxy_protocol = ep.proxy_protocol.as_ref().map(|pp| {
                pp.trusted
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| {
                        crate::net::Cidr::parse(t)
                            .map_err(|e| p.add(format!("{key}.proxy_protocol.trusted[{i}]"), e))
                            .ok()
                    })
                    .collect()
            });
            out.insert(
                name.clone(),
                Entrypoint {
                    name: name.clone(),
                    listen,
                    kind,
                    h2c,
                    redirect_https: ep.redirect_https.clone(),
                    proxy_protocol,
                    max_connections: ep.max_connections.unwrap_or(0),
                },
            );
        }
    }
    out
}

fn services(raw: &BTreeMap<String, RawService>, p: &mut Problems) -> Vec<ServiceSpec> {
    let mut out = Vec::new();
    for (name, s) in raw {
        let key = format!("services.{name}");
        if name.contains('@') || name.is_empty() {
            p.add(&key, "a service name in the file cannot contain '@' (its id is name@file)");
            continue;
        }
        let mut spec = ServiceSpec::new(ServiceId::from_file_ref(name), Vec::new());
        let mut seen = BTreeSet::new();
        for (i, b) in s.backends.iter().enumerate() {
            let bkey = format!("{key}.backends[{i}]");
            let weight = b.weight.unwrap_or(1);
            if !(1..=1000).contains(&weight) {
                p.add(format!("{bkey}.weight"), format!("{weight} is not between 1 and 1000"));
            }
            if let Some(addr) = parse_addr(&b.addr, &bkey, p) {
                if !seen.insert(addr) {
                    p.add(&bkey, format!("{addr} is listed twice"));
                }
                spec.backends.push(BackendSpec {
                    addr,
                    weight: weight.clamp(1, 1000) as u32,
                });
            }
        }
        let hash_key = match s.hash_key.as_deref().map(HashKey::parse) {
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => {
                p.add(format!("{key}.hash_key"), e);
                None
            }
            None => None,
        };
        spec.balance = match s.balance.as_deref().unwrap_or("round_robin") {
            "round_robin" => Balance::RoundRobin,
            "random" => Balance::Random,
            "least_conn" => Balance::LeastConn,
            "consistent_hash" => Balance::ConsistentHash(hash_key.clone().unwrap_or(HashKey::ClientIp)),
            other => {
                p.add(
                    format!("{key}.balance"),
                    format!("{other:?} is not one of round_robin, random, least_conn, consistent_hash"),
                );
                Balance::RoundRobin
            }
        };
        if hash_key.is_some() && !matches!(spec.balance, Balance::ConsistentHash(_)) {
            p.add(format!("{key}.hash_key"), "only applies to balance = \"consistent_hash\"");
        }
        if let Some(r) = s.retries {
            if r > 16 {
                p.add(format!("{key}.retries"), "must be at most 16");
            }
            spec.retries = r;
        }
        if let Some(m) = s.max_connections {
            spec.max_connections = m;
        }
        if let Some(m) = s.max_requests {
            spec.max_requests = m;
        }
        if let Some(d) = s.connect_timeout {
            if d.0.is_zero() {
                p.add(format!("{key}.connect_timeout"), "must be more than 0");
            }
            spec.connect_timeout = d.0;
        }
        if let Some(d) = s.read_timeout {
            if d.0.is_zero() {
                p.add(format!("{key}.read_timeout"), "must be more than 0");
            }
            spec.read_timeout = d.0;
        }
        if let Some(h) = &s.health_check {
            let (check, strategy) = health_check(h, &format!("{key}.health_check"), p);
            spec.health_check = check;
            spec.strategy = strategy;
        }
        if let Some(b) = &s.circuit_breaker {
            spec.breaker = breaker(b, &format!("{key}.circuit_breaker"), p);
        }
        match s.scheme.as_deref() {
            None | Some("http") => {
                for (k, set) in [
                    ("tls_verify", s.tls_verify.is_some()),
                    ("ca_file", s.ca_file.is_some()),
                    ("sni", s.sni.is_some()),
                ] {
                    if set {
                        p.add(format!("{key}.{k}"), "only applies to scheme = \"https\"");
                    }
                }
            }
            Some("https") => {
                if let Some(ca) = &s.ca_file {
                    if let Err(e) = std::fs::read(ca)
                        .map_err(|e| e.to_string())
                        .and_then(|b| crate::tls::roots(&b).map(|_| ()))
                    {
                        p.add(format!("{key}.ca_file"), format!("{ca}: {e}"));
                    }
                }
                spec.upstream_tls = Some(crate::desired::UpstreamTls {
                    verify: s.tls_verify.unwrap_or(true),
                    ca_file: s.ca_file.clone().map(Into::into),
                    sni: s.sni.clone(),
                });
            }
            Some(other) => p.add(format!("{key}.scheme"), format!("{other:?} is not one of http, https")),
        }
        spec.send_proxy = match s.proxy_protocol.as_deref() {
            None => None,
            Some("v1") => Some(crate::desired::ProxyVersion::V1),
            Some("v2") => Some(crate::desired::ProxyVersion::V2),
            Some(other) => {
                p.add(format!("{key}.proxy_protocol"), format!("{other:?} is not one of v1, v2"));
                None
            }
        };
        out.push(spec);
    }
    out
}

/// The http entrypoints a provider's routes use: the listed ones (each must be an http
/// entrypoint), or every http entrypoint.
fn provider_entrypoints(list: Option<&Vec<String>>, key: &str, eps: &BTreeMap<String, Entrypoint>, p: &mut Problems) -> Vec<String> {
    match list {
        Some(l) => {
            for (i, n) in l.iter().enumerate() {
                match eps.get(n) {
                    Some(e) if e.kind.is_http() => {}
                    Some(_) => p.add(format!("{key}[{i}]"), format!("{n:?} is not an http entrypoint")),
                    None => p.add(format!("{key}[{i}]"), format!("no entrypoint {n:?} in [entrypoints]")),
                }
            }
            l.clone()
        }
        None => eps.values().filter(|e| e.kind.is_http()).map(|e| e.name.clone()).collect(),
    }
}

fn rancher(r: &RawRancher, eps: &BTreeMap<String, Entrypoint>, p: &mut Problems) -> RancherProvider {
    let endpoint = r.endpoint.clone().unwrap_or_else(|| "http://rancher-metadata/2016-07-29".into());
    let endpoint = endpoint.trim_end_matches('/').to_string();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) || reqwest::Url::parse(&endpoint).is_err() {
        p.add("providers.rancher.endpoint", format!("{endpoint:?} is not an http(s) URL"));
    }
    let long_poll = r.long_poll.map(|d| d.0).unwrap_or(Duration::from_secs(60));
    if long_poll < Duration::from_secs(1) || long_poll > Duration::from_secs(600) {
        p.add("providers.rancher.long_poll", "must be between 1s and 10m");
    }
    let domain = r.domain.clone().unwrap_or_else(|| "rancher.internal".into());
    if HostMatch::parse(&domain).map(|h| !matches!(h, HostMatch::Exact(_))).unwrap_or(true) {
        p.add("providers.rancher.domain", format!("{domain:?} is not a domain name"));
    }
    RancherProvider {
        endpoint,
        domain,
        entrypoints: provider_entrypoints(r.entrypoints.as_ref(), "providers.rancher.entrypoints", eps, p),
        exposed_by_default: r.exposed_by_default.unwrap_or(false),
        health_filter: r.health_filter.unwrap_or(false),
        long_poll,
    }
}

fn kubernetes(k: &RawKubernetes, eps: &BTreeMap<String, Entrypoint>, p: &mut Problems) -> KubernetesProvider {
    let ingress_class = k.ingress_class.clone().unwrap_or_else(|| "lariat".into());
    let dns_label = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    if !dns_label(&ingress_class) {
        p.add(
            "providers.kubernetes.ingress_class",
            format!("{ingress_class:?} is not a Kubernetes name"),
        );
    }
    let namespaces = k.namespaces.clone().unwrap_or_default();
    for (i, n) in namespaces.iter().enumerate() {
        if !dns_label(n) || n.contains('.') {
            p.add(
                format!("providers.kubernetes.namespaces[{i}]"),
                format!("{n:?} is not a namespace name"),
            );
        }
    }
    KubernetesProvider {
        ingress_class,
        namespaces,
        entrypoints: provider_entrypoints(k.entrypoints.as_ref(), "providers.kubernetes.entrypoints", eps, p),
        kubeconfig: k.kubeconfig.clone(),
    }
}

fn tls(raw: &RawTls, eps: &BTreeMap<String, Entrypoint>, p: &mut Problems) -> TlsSettings {
    let min_version = match raw.min_version.as_deref().unwrap_or("1.2") {
        "1.2" => TlsVersion::V12,
        "1.3" => TlsVersion::V13,
        other => {
            p.add("tls.min_version", format!("{other:?} is not one of 1.2, 1.3"));
            TlsVersion::V12
        }
    };
    // Every certificate must load now: a bad file is refused here, with its name.
    let mut check = |f: &RawCertFiles, key: String| -> CertFiles {
        let files = CertFiles {
            cert: f.cert.clone().into(),
            key: f.key.clone().into(),
        };
        match crate::tls::cert::load(&files.cert, &files.key) {
            Ok(c) if c.expired() => log::warn!("{key}: {} expired; it is served anyway", files.cert.display()),
            Ok(_) => {}
            Err(e) => p.add(key, e.to_string()),
        }
        files
    };
    let default_certificate = raw.default_certificate.as_ref().map(|f| check(f, "tls.default_certificate".into()));
    let certificates = raw
        .certificates
        .iter()
        .enumerate()
        .map(|(i, f)| check(f, format!("tls.certificates[{i}]")))
        .collect();
    let acme = raw.acme.as_ref().map(|a| {
        if !a.email.contains('@') {
            p.add("tls.acme.email", format!("{:?} is not an email address", a.email));
        }
        if !(a.directory.starts_with("https://") || a.directory.starts_with("http://")) || reqwest::Url::parse(&a.directory).is_err() {
            p.add("tls.acme.directory", format!("{:?} is not a URL", a.directory));
        }
        if let Some(ca) = a.ca_file.as_ref().filter(|c| !c.is_empty()) {
            if let Err(e) = std::fs::read(ca)
                .map_err(|e| e.to_string())
                .and_then(|b| crate::tls::roots(&b).map(|_| ()))
            {
                p.add("tls.acme.ca_file", format!("{ca}: {e}"));
            }
        }
        for (i, d) in a.domains.iter().enumerate() {
            if !matches!(HostMatch::parse(d), Ok(HostMatch::Exact(_))) {
                p.add(
                    format!("tls.acme.domains[{i}]"),
                    format!("{d:?} is not a host name (HTTP-01 cannot issue wildcards)"),
                );
            }
        }
        if !eps.values().any(|e| e.kind == EntrypointKind::Http) {
            p.add("tls.acme", "HTTP-01 needs an http entrypoint to answer on");
        }
        AcmeSettings {
            email: a.email.clone(),
            directory: a.directory.clone(),
            ca_file: a.ca_file.clone().filter(|c| !c.is_empty()).map(Into::into),
            storage: a.storage.clone().unwrap_or_else(|| "/var/lib/lariat/acme".into()).into(),
            on_host_rule: a.on_host_rule.unwrap_or(true),
            domains: a.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            renew_before: a.renew_before.map(|d| d.0).unwrap_or(Duration::from_secs(30 * 86400)),
        }
    });
    TlsSettings {
        min_version,
        default_certificate,
        certificates,
        acme,
    }
}

/// A strategy by Rancher's name.
pub fn parse_strategy(name: &str, quorum: Option<u32>) -> Result<Strategy, String> {
    match name {
        "none" => Ok(Strategy::None),
        "recreate" => Ok(Strategy::Recreate),
        "recreateOnQuorum" => Ok(Strategy::RecreateOnQuorum(quorum.unwrap_or(1))),
        other => Err(format!("{other:?} is not one of none, recreate, recreateOnQuorum")),
    }
}

fn health_check(h: &RawHealthCheck, key: &str, p: &mut Problems) -> (Option<HealthCheckSpec>, Strategy) {
    let strategy = match parse_strategy(h.strategy.as_deref().unwrap_or("recreate"), h.quorum) {
        Ok(s) => s,
        Err(e) => {
            p.add(format!("{key}.strategy"), e);
            Strategy::Recreate
        }
    };
    if h.quorum.is_some() && !matches!(strategy, Strategy::RecreateOnQuorum(_)) {
        p.add(format!("{key}.quorum"), "only applies to strategy = \"recreateOnQuorum\"");
    }
    if h.quorum == Some(0) {
        p.add(format!("{key}.quorum"), "must be at least 1");
    }
    let kind = match h.kind.as_deref() {
        Some("tcp") => {
            if h.request_line.is_some() || h.host.is_some() {
                p.add(key, "request_line and host are for kind = \"http\"");
            }
            CheckKind::Tcp
        }
        Some("http") | None => match CheckKind::from_request_line(h.request_line.as_deref().unwrap_or("GET / HTTP/1.0"), h.host.clone()) {
            Ok(CheckKind::Tcp) => {
                p.add(
                    format!("{key}.request_line"),
                    "is empty: use kind = \"tcp\" for a connect-only check",
                );
                CheckKind::Tcp
            }
            Ok(k) => k,
            Err(e) => {
                p.add(format!("{key}.request_line"), e);
                CheckKind::Tcp
            }
        },
        Some(other) => {
            p.add(format!("{key}.kind"), format!("{other:?} is not one of http, tcp"));
            CheckKind::Tcp
        }
    };
    let mut c = HealthCheckSpec::new(kind);
    c.port = h.port;
    if h.port == Some(0) {
        p.add(format!("{key}.port"), "must be 1..65535");
    }
    for (name, v, d) in [
        ("interval", h.interval, &mut c.interval),
        ("timeout", h.timeout, &mut c.timeout),
        ("initializing_timeout", h.initializing_timeout, &mut c.initializing_timeout),
    ] {
        if let Some(v) = v {
            if v.0 < Duration::from_millis(10) {
                p.add(format!("{key}.{name}"), "must be at least 10ms");
            }
            *d = v.0;
        }
    }
    for (name, v, d) in [
        ("healthy_threshold", h.healthy_threshold, &mut c.healthy_threshold),
        ("unhealthy_threshold", h.unhealthy_threshold, &mut c.unhealthy_threshold),
    ] {
        if let Some(v) = v {
            if v == 0 || v > 100 {
                p.add(format!("{key}.{name}"), "must be between 1 and 100");
            }
            *d = v;
        }
    }
    (Some(c), strategy)
}

fn breaker(b: &RawBreaker, key: &str, p: &mut Problems) -> BreakerSpec {
    let mut s = BreakerSpec::default();
    if let Some(v) = b.consecutive_failures {
        s.consecutive_failures = v;
    }
    if let Some(v) = b.count_5xx {
        s.count_5xx = v;
    }
    for (name, v, d) in [
        ("base_ejection", b.base_ejection, &mut s.base_ejection),
        ("max_ejection", b.max_ejection, &mut s.max_ejection),
        ("fallback_duration", b.fallback_duration, &mut s.fallback_duration),
        ("recovery_duration", b.recovery_duration, &mut s.recovery_duration),
    ] {
        if let Some(v) = v {
            if v.0.is_zero() {
                p.add(format!("{key}.{name}"), "must be more than 0");
            }
            *d = v.0;
        }
    }
    if s.max_ejection < s.base_ejection {
        p.add(format!("{key}.max_ejection"), "must not be shorter than base_ejection");
    }
    if let Some(e) = &b.expression {
        match Expression::parse(e) {
            Ok(x) => s.expression = Some(x),
            Err(err) => p.add(format!("{key}.expression"), err.to_string()),
        }
    }
    s
}

fn routes(
    raw: &[RawRoute],
    eps: &BTreeMap<String, Entrypoint>,
    services: &BTreeMap<String, RawService>,
    p: &mut Problems,
) -> (Vec<HttpRoute>, Vec<TcpRoute>) {
    let mut http = Vec::new();
    let mut tcp: Vec<TcpRoute> = Vec::new();
    let mut tcp_owner: HashMap<String, usize> = HashMap::new();
    let mut sni_owner: HashMap<(String, HostMatch), usize> = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        let service = ServiceId::from_file_ref(&r.service);
        if !r.service.contains('@') && !services.contains_key(&r.service) {
            p.add(format!("{key}.service"), format!("no service {:?} in [services]", r.service));
        }
        let names: Vec<String> = match &r.entrypoints {
            Some(list) if list.is_empty() => {
                p.add(format!("{key}.entrypoints"), "is empty: leave it out to mean every http entrypoint");
                continue;
            }
            Some(list) => list.clone(),
            None => eps.values().filter(|e| e.kind.is_http()).map(|e| e.name.clone()).collect(),
        };
        let mut kinds = BTreeSet::new();
        for (j, n) in names.iter().enumerate() {
            match eps.get(n) {
                Some(ep) => {
                    kinds.insert(if ep.kind.is_http() { "http" } else { "tcp" });
                }
                None => p.add(format!("{key}.entrypoints[{j}]"), format!("no entrypoint {n:?} in [entrypoints]")),
            }
        }
        if kinds.len() > 1 && r.sni.is_none() {
            p.add(
                format!("{key}.entrypoints"),
                "mixes http and tcp entrypoints: make one route for each kind",
            );
            continue;
        }
        if let Some(list) = &r.sni {
            // TLS passthrough: by ClientHello server name, on tcp or https entrypoints.
            if r.host.is_some() || r.path_prefix.is_some() {
                p.add(&key, "a route with sni cannot have host or path_prefix");
            }
            if r.entrypoints.is_none() {
                p.add(
                    format!("{key}.entrypoints"),
                    "a route with sni must name its tcp or https entrypoints",
                );
            }
            if list.is_empty() {
                p.add(format!("{key}.sni"), "is empty: leave it out for the entrypoint's default route");
            }
            let mut sni = Vec::new();
            for (j, s) in list.iter().enumerate() {
                match HostMatch::parse(s) {
                    Ok(HostMatch::Any) => p.add(
                        format!("{key}.sni[{j}]"),
                        "\"*\" is not a server name: leave sni out for the default route",
                    ),
                    Ok(h) => sni.push(h),
                    Err(e) => p.add(format!("{key}.sni[{j}]"), e),
                }
            }
            for n in &names {
                if eps.get(n).is_some_and(|e| e.kind == EntrypointKind::Http) {
                    p.add(
                        format!("{key}.entrypoints"),
                        format!("{n:?} is an http entrypoint: sni routes go on tcp or https entrypoints"),
                    );
                }
                for h in &sni {
                    if let Some(prev) = sni_owner.insert((n.clone(), h.clone()), i) {
                        p.add(format!("{key}.sni"), format!("{h} on {n:?} is already taken by routes[{prev}]"));
                    }
                }
                tcp.push(TcpRoute {
                    entrypoint: n.clone(),
                    sni: sni.clone(),
                    service: service.clone(),
                });
            }
            continue;
        }
        if kinds.contains("tcp") {
            if r.host.is_some() || r.path_prefix.is_some() {
                p.add(&key, "a route on a tcp entrypoint cannot have host or path_prefix");
            }
            for n in names {
                if let Some(prev) = tcp_owner.insert(n.clone(), i) {
                    p.add(
                        format!("{key}.entrypoints"),
                        format!("tcp entrypoint {n:?} already forwards to the service of routes[{prev}]"),
                    );
                }
                tcp.push(TcpRoute {
                    entrypoint: n,
                    sni: vec![],
                    service: service.clone(),
                });
            }
            continue;
        }
        let host = match r.host.as_deref().map(HostMatch::parse).unwrap_or(Ok(HostMatch::Any)) {
            Ok(h) => h,
            Err(e) => {
                p.add(format!("{key}.host"), e);
                continue;
            }
        };
        let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/') || path_prefix.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            p.add(
                format!("{key}.path_prefix"),
                format!("{path_prefix:?} must start with '/' and contain no spaces"),
            );
        }
        if names.is_empty() {
            p.add(format!("{key}.entrypoints"), "there is no http entrypoint for this route");
        }
        http.push(HttpRoute {
            entrypoints: names,
            host,
            path_prefix,
            exact: false,
            redirect_https: false,
            service,
        });
    }
    (http, tcp)
}
