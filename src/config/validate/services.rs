//! `[services.*]` with their health checks and circuit breakers.

use super::*;

pub(super) fn services(raw: &BTreeMap<String, RawService>, p: &mut Problems) -> Vec<ServiceSpec> {
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

/// A strategy by Rancher's name.
pub fn parse_strategy(name: &str, quorum: Option<u32>) -> Result<Strategy, String> {
    match name {
        "none" => Ok(Strategy::None),
        "recreate" => Ok(Strategy::Recreate),
        "recreateOnQuorum" => Ok(Strategy::RecreateOnQuorum(quorum.unwrap_or(1))),
        other => Err(format!("{other:?} is not one of none, recreate, recreateOnQuorum")),
    }
}

pub(super) fn health_check(h: &RawHealthCheck, key: &str, p: &mut Problems) -> (Option<HealthCheckSpec>, Strategy) {
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

pub(super) fn breaker(b: &RawBreaker, key: &str, p: &mut Problems) -> BreakerSpec {
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
