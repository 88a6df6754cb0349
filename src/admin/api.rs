//! The read-only JSON of the admin API: overview, entrypoints, routes, services (and one service
//! in detail), providers. Built from the current snapshot; carries no secrets.

use super::time::rfc3339;
use crate::config::Entrypoint;
use crate::desired::{CheckKind, ServiceId};
use crate::state::Shared;
use crate::upstream::{BackendState, Member, Service};
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;
use tokio::time::Instant;

/// Wall-clock time of a tokio instant.
fn wall(at: Instant, now: Instant) -> SystemTime {
    let sys = SystemTime::now();
    if at >= now {
        sys + (at - now)
    } else {
        sys - (now - at)
    }
}

fn backend_json(svc: &Service, m: &Member, state: BackendState, weight: Option<u32>, now: Instant) -> Value {
    let last = m
        .health
        .last()
        .map(|r| json!({ "ok": r.ok, "at": rfc3339(r.at), "detail": r.detail }));
    let ejected_until = m.breaker.ejected_until().filter(|u| *u > now).map(|u| rfc3339(wall(u, now)));
    json!({
        "address": m.addr.to_string(),
        "weight": weight,
        "state": state.name(),
        "in_flight": m.in_flight(),
        "requests": m.requests.load(Relaxed),
        "failures": m.failures.load(Relaxed),
        "consecutive_failures": m.breaker.consecutive_failures(),
        "ejections": m.ejections.load(Relaxed),
        "last_check": last,
        "ejected_until": ejected_until,
        "provider": svc.spec.id.provider(),
    })
}

fn backends(svc: &Service, now: Instant) -> Vec<Value> {
    let mut v: Vec<Value> = svc
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| backend_json(svc, m, svc.member_state(i, now), Some(svc.spec.backends[i].weight), now))
        .collect();
    v.extend(
        svc.draining
            .iter()
            .filter(|m| m.in_flight() > 0)
            .map(|m| backend_json(svc, m, BackendState::Draining, None, now)),
    );
    v
}

fn service_json(svc: &Service, now: Instant, detail: bool) -> Value {
    let s = &svc.spec;
    let requests: u64 = svc.stats.http.all().iter().map(|(_, c)| c.total()).sum::<u64>()
        + svc.stats.tcp.all().iter().map(|(_, c)| c.connections.load(Relaxed)).sum::<u64>();
    let check = s.health_check.as_ref().map(|c| {
        let (kind, request) = match &c.kind {
            CheckKind::Tcp => ("tcp", None),
            CheckKind::Http { method, path, version, .. } => ("http", Some(format!("{method} {path} {version}"))),
        };
        json!({
            "kind": kind, "request_line": request, "port": c.port,
            "interval_ms": c.interval.as_millis() as u64, "timeout_ms": c.timeout.as_millis() as u64,
            "healthy_threshold": c.healthy_threshold, "unhealthy_threshold": c.unhealthy_threshold,
            "initializing_timeout_ms": c.initializing_timeout.as_millis() as u64,
        })
    });
    let mut counts = serde_json::Map::new();
    for st in BackendState::ALL {
        counts.insert(st.name().into(), json!(0));
    }
    let list = backends(svc, now);
    for b in &list {
        if let Some(n) = b["state"].as_str().and_then(|k| counts.get_mut(k)) {
            *n = json!(n.as_u64().unwrap_or(0) + 1);
        }
    }
    let mut v = json!({
        "id": s.id.0,
        "provider": s.id.provider(),
        "balance": s.balance.name(),
        "strategy": s.strategy.name(),
        "quorum": match s.strategy { crate::desired::Strategy::RecreateOnQuorum(q) => Some(q), _ => None },
        "fail_open": svc.quorum_lost(now),
        "breaker": svc.breaker.as_ref().map(|b| json!({
            "expression": s.breaker.expression.as_ref().map(|e| e.source.clone()),
            "phase": format!("{:?}", b.phase()).to_lowercase(),
        })),
        "health_check": check,
        "retries": s.retries,
        "max_connections": s.max_connections,
        "max_requests": s.max_requests,
        "in_flight": svc.stats.in_flight(),
        "requests": requests,
        "backend_states": counts,
    });
    if detail {
        v["backends"] = json!(list);
        v["connect_timeout_ms"] = json!(s.connect_timeout.as_millis() as u64);
        v["read_timeout_ms"] = json!(s.read_timeout.as_millis() as u64);
    } else {
        // The list carries each backend's address and state, enough for the dashboard.
        v["backends"] = json!(list
            .iter()
            .map(|b| json!({ "address": b["address"], "state": b["state"], "in_flight": b["in_flight"] }))
            .collect::<Vec<_>>());
    }
    v
}

pub fn services(shared: &Shared) -> Value {
    let snap = shared.registry.snapshot();
    let now = Instant::now();
    json!(snap.services().map(|s| service_json(&s, now, false)).collect::<Vec<_>>())
}

pub fn service(shared: &Shared, id: &str) -> Option<Value> {
    let snap = shared.registry.snapshot();
    snap.service(&ServiceId(id.to_string()))
        .map(|s| service_json(&s, Instant::now(), true))
}

pub fn routes(shared: &Shared) -> Value {
    let snap = shared.registry.snapshot();
    let mut v: Vec<Value> = snap
        .http_routes
        .iter()
        .map(|r| {
            json!({
                "kind": "http", "entrypoints": r.entrypoints, "host": r.host.to_string(), "path_prefix": r.path_prefix,
                "service": r.service.0, "provider": r.service.provider(), "service_exists": snap.cells.contains_key(&r.service),
            })
        })
        .collect();
    v.extend(snap.tcp_routes.iter().map(|r| {
        json!({
            "kind": "tcp", "entrypoints": [r.entrypoint], "service": r.service.0, "provider": r.service.provider(),
            "sni": r.sni.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            "service_exists": snap.cells.contains_key(&r.service),
        })
    }));
    json!(v)
}

pub fn entrypoints(shared: &Shared, eps: &[Entrypoint]) -> Value {
    json!(eps
        .iter()
        .map(|e| {
            let c = shared.entrypoints.get(&e.name.as_str().into());
            json!({ "name": e.name, "listen": e.listen.to_string(), "kind": e.kind.name(), "h2c": e.h2c, "open_connections": c.open.load(Relaxed).max(0) })
        })
        .collect::<Vec<_>>())
}

pub fn providers(shared: &Shared) -> Value {
    json!(shared
        .providers()
        .into_iter()
        .map(|(name, p)| json!({
            "name": name,
            "updates": p.updates,
            "errors": p.errors,
            "last_sync": p.last_success.map(rfc3339),
            "last_error": p.last_error.as_ref().map(|(t, e)| json!({ "at": rfc3339(*t), "message": e })),
            "version": p.version,
        }))
        .collect::<Vec<_>>())
}

pub fn certificates(shared: &Shared) -> Value {
    json!(shared
        .certs
        .table()
        .all
        .iter()
        .map(|(c, default)| json!({
            "names": c.names,
            "source": c.source.name(),
            "not_before": rfc3339(c.not_before),
            "not_after": rfc3339(c.not_after),
            "expired": c.expired(),
            "default": default,
            "origin": c.origin,
        }))
        .collect::<Vec<_>>())
}

pub fn overview(shared: &Shared, eps: &[Entrypoint]) -> Value {
    let snap = shared.registry.snapshot();
    let now = Instant::now();
    let mut states = serde_json::Map::new();
    for st in BackendState::ALL {
        states.insert(st.name().into(), json!(0));
    }
    let mut requests = 0u64;
    for svc in snap.services() {
        for i in 0..svc.members.len() {
            if let Some(n) = states.get_mut(svc.member_state(i, now).name()) {
                *n = json!(n.as_u64().unwrap_or(0) + 1);
            }
        }
        requests += svc.stats.http.all().iter().map(|(_, c)| c.total()).sum::<u64>();
    }
    let (ok, err) = shared.reloads();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started": rfc3339(shared.started),
        "uptime_seconds": shared.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
        "snapshot_version": shared.registry.version(),
        "entrypoints": eps.len(),
        "routes": snap.http_routes.len() + snap.tcp_routes.len(),
        "services": snap.cells.len(),
        "backends": states,
        "http_requests": requests,
        "config_reloads": { "ok": ok, "error": err },
    })
}
