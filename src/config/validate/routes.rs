//! `[[routes]]`: HTTP routes, TCP routes and TLS passthrough routes.

use super::*;

pub(super) fn routes(
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
