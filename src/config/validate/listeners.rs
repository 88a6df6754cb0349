//! `[server]`, `[admin]` and `[entrypoints.*]`.

use super::*;

pub(super) fn server(raw: &RawServer, p: &mut Problems) -> ServerSettings {
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

pub(super) fn admin(raw: &RawAdmin, p: &mut Problems) -> AdminSettings {
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

pub(super) fn entrypoints(raw: &BTreeMap<String, RawEntrypoint>, admin: &AdminSettings, p: &mut Problems) -> BTreeMap<String, Entrypoint> {
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
