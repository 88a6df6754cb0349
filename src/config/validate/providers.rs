//! `[providers.rancher]` and `[providers.kubernetes]`.

use super::*;

/// The http entrypoints a provider's routes use: the listed ones (each must be an http
/// entrypoint), or every http entrypoint.
pub(super) fn provider_entrypoints(
    list: Option<&Vec<String>>,
    key: &str,
    eps: &BTreeMap<String, Entrypoint>,
    p: &mut Problems,
) -> Vec<String> {
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

pub(super) fn rancher(r: &RawRancher, eps: &BTreeMap<String, Entrypoint>, p: &mut Problems) -> RancherProvider {
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

pub(super) fn kubernetes(k: &RawKubernetes, eps: &BTreeMap<String, Entrypoint>, p: &mut Problems) -> KubernetesProvider {
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
