//! The Prometheus text format (version 0.0.4) of everything lariat counts.

use super::*;
use crate::config::Entrypoint;
use crate::state::Shared;
use crate::upstream::BackendState;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::UNIX_EPOCH;
use tokio::time::Instant;

/// Escape a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Samples grouped by family, written in the order of `FAMILIES`, each with its HELP and TYPE.
#[derive(Default)]
struct Out {
    samples: BTreeMap<&'static str, String>,
}

impl Out {
    fn add(&mut self, family: &'static str, suffix: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let s = self.samples.entry(family).or_default();
        let _ = write!(s, "{family}{suffix}");
        if !labels.is_empty() {
            s.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{k}=\"{}\"", esc(v));
            }
            s.push('}');
        }
        let _ = writeln!(s, " {value}");
    }

    fn finish(self) -> String {
        let mut out = String::with_capacity(self.samples.values().map(|s| s.len() + 128).sum());
        for (name, kind, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            if let Some(s) = self.samples.get(name) {
                out.push_str(s);
            }
        }
        out
    }
}

fn http(out: &mut Out, ep: &str, service: &str, c: &HttpCounters) {
    for (code, n) in c.codes() {
        out.add(
            REQUESTS,
            "",
            &[("entrypoint", ep), ("service", service), ("code", &code.to_string())],
            n,
        );
    }
    let (cum, sum) = c.histogram();
    if *cum.last().unwrap_or(&0) == 0 {
        return;
    }
    for (i, b) in DURATION_BUCKETS.iter().enumerate() {
        out.add(
            REQUEST_DURATION,
            "_bucket",
            &[("entrypoint", ep), ("service", service), ("le", &b.to_string())],
            cum[i],
        );
    }
    let total = *cum.last().unwrap_or(&0);
    out.add(
        REQUEST_DURATION,
        "_bucket",
        &[("entrypoint", ep), ("service", service), ("le", "+Inf")],
        total,
    );
    out.add(REQUEST_DURATION, "_sum", &[("entrypoint", ep), ("service", service)], sum);
    out.add(REQUEST_DURATION, "_count", &[("entrypoint", ep), ("service", service)], total);
}

/// Render every metric. `entrypoints`: the configured listeners (for the connection gauges).
pub fn render(shared: &Shared, entrypoints: &[Entrypoint]) -> String {
    let mut out = Out::default();
    let now = Instant::now();
    for ep in entrypoints {
        let c = shared.entrypoints.get(&ep.name.as_str().into());
        let protocol = ep.kind.name();
        out.add(
            OPEN_CONNECTIONS,
            "",
            &[("entrypoint", &ep.name), ("protocol", protocol)],
            c.open.load(Relaxed).max(0),
        );
        if ep.kind.is_http() {
            http(&mut out, &ep.name, "none", &c.unrouted);
        }
        for (reason, n) in [
            ("tls", c.rejected_tls.load(Relaxed)),
            ("proxy_protocol", c.rejected_proxy.load(Relaxed)),
        ] {
            if n > 0 {
                out.add(REJECTED_CONNECTIONS, "", &[("entrypoint", &ep.name), ("reason", reason)], n);
            }
        }
        for (reason, n) in [
            ("smuggling", c.bad_smuggling.load(Relaxed)),
            ("header_too_large", c.bad_header_too_large.load(Relaxed)),
            ("timeout", c.bad_timeout.load(Relaxed)),
        ] {
            if n > 0 {
                out.add(BAD_REQUESTS, "", &[("entrypoint", &ep.name), ("reason", reason)], n);
            }
        }
        let over = c.rejected_max_connections.load(Relaxed);
        if over > 0 {
            out.add(
                REJECTED_CONNECTIONS,
                "",
                &[("entrypoint", &ep.name), ("reason", "max_connections")],
                over,
            );
        }
        if ep.kind == crate::config::EntrypointKind::Https {
            out.add(
                TLS_HANDSHAKES,
                "",
                &[("entrypoint", &ep.name), ("result", "ok")],
                c.tls_ok.load(Relaxed),
            );
            out.add(
                TLS_HANDSHAKES,
                "",
                &[("entrypoint", &ep.name), ("result", "error")],
                c.tls_error.load(Relaxed),
            );
        }
    }
    for (cert, _) in &shared.certs.table().all {
        let first = cert.names.first().map(|s| s.as_str()).unwrap_or("");
        let secs = cert.not_after.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        out.add(TLS_NOT_AFTER, "", &[("certificate", first), ("source", cert.source.name())], secs);
    }
    let snap = shared.registry.snapshot();
    for svc in snap.services() {
        let id = svc.spec.id.0.as_str();
        for (ep, c) in svc.stats.http.all() {
            http(&mut out, &ep, id, &c);
        }
        for (ep, c) in svc.stats.tcp.all() {
            out.add(
                TCP_CONNECTIONS,
                "",
                &[("entrypoint", &ep), ("service", id)],
                c.connections.load(Relaxed),
            );
            out.add(
                TCP_BYTES,
                "",
                &[("entrypoint", &ep), ("service", id), ("direction", "rx")],
                c.rx.load(Relaxed),
            );
            out.add(
                TCP_BYTES,
                "",
                &[("entrypoint", &ep), ("service", id), ("direction", "tx")],
                c.tx.load(Relaxed),
            );
        }
        let fail_open = svc.quorum_lost(now);
        for (i, m) in svc.members.iter().enumerate() {
            let addr = m.addr.to_string();
            let state = svc.member_state(i, now);
            let up = fail_open || svc.spec.strategy == crate::desired::Strategy::None || state == BackendState::Healthy;
            out.add(BACKEND_UP, "", &[("service", id), ("backend", &addr)], up as u8);
            for s in BackendState::ALL {
                out.add(
                    BACKEND_STATE,
                    "",
                    &[("service", id), ("backend", &addr), ("state", s.name())],
                    (s == state) as u8,
                );
            }
            out.add(
                BACKEND_EJECTIONS,
                "",
                &[("service", id), ("backend", &addr)],
                m.ejections.load(Relaxed),
            );
        }
        for m in &svc.draining {
            let addr = m.addr.to_string();
            out.add(BACKEND_UP, "", &[("service", id), ("backend", &addr)], 0);
            for s in BackendState::ALL {
                out.add(
                    BACKEND_STATE,
                    "",
                    &[("service", id), ("backend", &addr), ("state", s.name())],
                    (s == BackendState::Draining) as u8,
                );
            }
        }
        if svc.spec.health_check.is_some() {
            out.add(
                HEALTH_CHECKS,
                "",
                &[("service", id), ("result", "ok")],
                svc.stats.checks_ok.load(Relaxed),
            );
            out.add(
                HEALTH_CHECKS,
                "",
                &[("service", id), ("result", "fail")],
                svc.stats.checks_failed.load(Relaxed),
            );
        }
        out.add(RETRIES, "", &[("service", id)], svc.stats.retries.load(Relaxed));
        if matches!(svc.spec.strategy, crate::desired::Strategy::RecreateOnQuorum(_)) {
            out.add(SERVICE_FAIL_OPEN, "", &[("service", id)], fail_open as u8);
        }
        if let Some(b) = &svc.breaker {
            out.add(
                SERVICE_BREAKER_OPEN,
                "",
                &[("service", id)],
                (b.phase() == crate::breaker::Phase::Open) as u8,
            );
        }
    }
    for (name, p) in shared.providers() {
        out.add(PROVIDER_UPDATES, "", &[("provider", &name)], p.updates);
        out.add(PROVIDER_ERRORS, "", &[("provider", &name)], p.errors);
        if let Some(t) = p.last_success {
            let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            out.add(PROVIDER_LAST_SUCCESS, "", &[("provider", &name)], format!("{secs:.3}"));
        }
    }
    let (aok, aerr) = shared.acme_orders();
    if aok + aerr > 0 {
        out.add(ACME_ORDERS, "", &[("result", "ok")], aok);
        out.add(ACME_ORDERS, "", &[("result", "error")], aerr);
    }
    let (ok, err) = shared.reloads();
    out.add(CONFIG_RELOADS, "", &[("result", "ok")], ok);
    out.add(CONFIG_RELOADS, "", &[("result", "error")], err);
    out.finish()
}
