use super::*;
use crate::discovery::rancher::model::MetaService;

fn cfg() -> RancherProvider {
    RancherProvider {
        endpoint: "http://rancher-metadata/2016-07-29".into(),
        domain: "rancher.internal".into(),
        entrypoints: vec!["web".into()],
        exposed_by_default: false,
        health_filter: false,
        long_poll: Duration::from_secs(60),
    }
}

fn services(json: &str) -> Vec<MetaService> {
    serde_json::from_str(json).unwrap()
}

fn run(json: &str, cfg: &RancherProvider) -> (Desired, Vec<Skipped>) {
    desired(&services(json), &BTreeMap::new(), cfg, &["pg".to_string()])
}

const WEB: &str = r#"[{
  "name": "Web", "stack_name": "Shop", "kind": "service", "state": "active", "system": false,
  "labels": {"lariat.enable": "true", "lariat.port": "8080"},
  "ports": [],
  "containers": [
    {"name": "shop-web-1", "primary_ip": "10.42.0.2", "state": "running", "health_state": "healthy"},
    {"name": "shop-web-2", "primary_ip": "10.42.0.3", "state": "starting", "health_state": "initializing"},
    {"name": "shop-web-3", "primary_ip": "10.42.0.4", "state": "stopped", "health_state": "unhealthy"},
    {"name": "shop-web-4", "primary_ip": "10.42.0.5", "state": "upgraded", "health_state": "unhealthy"}
  ],
  "health_check": {"port": 8080, "request_line": "GET \"/healthz\" \"HTTP/1.0\"", "interval": 1000, "response_timeout": 500,
                   "healthy_threshold": 2, "unhealthy_threshold": 3, "initializing_timeout": 30000,
                   "strategy": "recreateOnQuorum", "recreate_on_quorum_strategy_config": {"quorum": 2}}
}]"#;

#[test]
fn labelled_service_with_members_and_check() {
    let (d, skipped) = run(WEB, &cfg());
    assert!(skipped.is_empty(), "{skipped:?}");
    let s = &d.services[0];
    assert_eq!(s.id.0, "web.shop@rancher");
    let addrs: Vec<String> = s.backends.iter().map(|b| b.addr.to_string()).collect();
    assert_eq!(
        addrs,
        ["10.42.0.2:8080", "10.42.0.3:8080", "10.42.0.5:8080"],
        "running, starting and upgraded only"
    );
    let c = s.health_check.as_ref().unwrap();
    assert_eq!(
        c.kind,
        CheckKind::Http {
            method: "GET".into(),
            path: "/healthz".into(),
            version: "HTTP/1.0".into(),
            host: None
        }
    );
    assert_eq!(
        (c.port, c.interval, c.timeout),
        (Some(8080), Duration::from_secs(1), Duration::from_millis(500))
    );
    assert_eq!(c.initializing_timeout, Duration::from_secs(30));
    assert_eq!(s.strategy, Strategy::RecreateOnQuorum(2));
    assert_eq!(d.http_routes[0].host, HostMatch::Exact("web.shop.rancher.internal".into()));
    assert_eq!(d.http_routes[0].entrypoints, vec!["web".to_string()]);
}

#[test]
fn health_filter_drops_unhealthy_containers() {
    let mut c = cfg();
    c.health_filter = true;
    let (d, _) = run(WEB, &c);
    let addrs: Vec<String> = d.services[0].backends.iter().map(|b| b.addr.to_string()).collect();
    assert_eq!(addrs, ["10.42.0.2:8080"]);
}

#[test]
fn traefik_labels_and_frontend_rules() {
    let json = r#"[{"name": "api", "stack_name": "shop", "kind": "service", "state": "active",
      "labels": {"traefik.enable": "true", "traefik.port": "3000", "traefik.frontend.rule": "Host:api.example.com,www.example.com;PathPrefix:/v1",
                 "traefik.backend.loadbalancer.method": "drr", "traefik.backend.circuitbreaker.expression": "NetworkErrorRatio() > 0.5",
                 "traefik.backend.healthcheck.path": "/ping", "traefik.backend.healthcheck.interval": "5s"},
      "containers": [{"primary_ip": "10.42.1.1", "state": "running"}]}]"#;
    let (d, skipped) = run(json, &cfg());
    assert!(skipped.is_empty(), "{skipped:?}");
    let hosts: Vec<String> = d.http_routes.iter().map(|r| r.host.to_string()).collect();
    assert_eq!(hosts, ["api.example.com", "www.example.com"]);
    assert!(d.http_routes.iter().all(|r| r.path_prefix == "/v1"));
    let s = &d.services[0];
    assert_eq!(s.backends[0].addr.to_string(), "10.42.1.1:3000");
    assert_eq!(s.balance, Balance::LeastConn);
    assert!(s.breaker.expression.is_some());
    let c = s.health_check.as_ref().unwrap();
    assert!(matches!(&c.kind, CheckKind::Http { path, .. } if path == "/ping"));
    assert_eq!(c.interval, Duration::from_secs(5));
}

#[test]
fn lariat_labels_win_and_domain_label() {
    let json = r#"[{"name": "a", "stack_name": "s", "kind": "service", "state": "active",
      "labels": {"lariat.enable": "true", "traefik.enable": "false", "lariat.port": "80", "lariat.domain": "corp.example",
                 "lariat.path_prefix": "/app", "lariat.health_check.request_line": "GET /up HTTP/1.1", "lariat.health_check.healthy_threshold": "5",
                 "lariat.health_check.strategy": "none"},
      "containers": [{"primary_ip": "10.0.0.1", "state": "running"}]},
     {"name": "b", "stack_name": "s", "kind": "service", "state": "active",
      "labels": {"lariat.enable": "true", "lariat.port": "80", "lariat.host": "b.example.com, c.example.com",
                 "lariat.tls.acme": "true", "lariat.redirect_https": "true"},
      "containers": []}]"#;
    let (d, _) = run(json, &cfg());
    let a = d.http_routes.iter().find(|r| r.service.0 == "a.s@rancher").unwrap();
    assert_eq!((a.host.to_string(), a.path_prefix.as_str()), ("a.s.corp.example".into(), "/app"));
    let sa = d.services.iter().find(|s| s.id.0 == "a.s@rancher").unwrap();
    assert_eq!(sa.health_check.as_ref().unwrap().healthy_threshold, 5);
    assert_eq!(sa.strategy, Strategy::None);
    let b: Vec<String> = d
        .http_routes
        .iter()
        .filter(|r| r.service.0 == "b.s@rancher")
        .map(|r| r.host.to_string())
        .collect();
    assert_eq!(b, ["b.example.com", "c.example.com"]);
    assert_eq!(d.acme_names, ["b.example.com", "c.example.com"], "lariat.tls.acme");
    assert!(
        d.http_routes
            .iter()
            .filter(|r| r.service.0 == "b.s@rancher")
            .all(|r| r.redirect_https),
        "lariat.redirect_https"
    );
    assert!(d
        .http_routes
        .iter()
        .filter(|r| r.service.0 == "a.s@rancher")
        .all(|r| !r.redirect_https));
}

#[test]
fn tcp_services_bind_to_a_tcp_entrypoint() {
    let json = r#"[{"name": "db", "stack_name": "s", "kind": "service", "state": "active",
      "labels": {"lariat.enable": "true", "lariat.port": "5432", "lariat.protocol": "tcp", "lariat.entrypoint": "pg"},
      "containers": [{"primary_ip": "10.0.0.9", "state": "running"}]},
     {"name": "bad", "stack_name": "s", "kind": "service", "state": "active",
      "labels": {"lariat.enable": "true", "lariat.port": "1", "lariat.protocol": "tcp", "lariat.entrypoint": "web"}, "containers": []}]"#;
    let (d, skipped) = run(json, &cfg());
    assert_eq!(
        d.tcp_routes,
        vec![TcpRoute {
            sni: vec![],
            entrypoint: "pg".into(),
            service: ServiceId("db.s@rancher".into())
        }]
    );
    assert!(d.http_routes.is_empty());
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].reason.contains("not a tcp entrypoint"), "{skipped:?}");
}

#[test]
fn skips_other_kinds_states_system_and_portless() {
    let json = r#"[
      {"name": "lb", "stack_name": "s", "kind": "loadBalancerService", "state": "active", "labels": {"lariat.enable": "true", "lariat.port": "80"}},
      {"name": "ext", "stack_name": "s", "kind": "externalService", "state": "active", "labels": {"lariat.enable": "true", "lariat.port": "80"}},
      {"name": "dns", "stack_name": "s", "kind": "dnsService", "state": "active", "labels": {"lariat.enable": "true", "lariat.port": "80"}},
      {"name": "off", "stack_name": "s", "kind": "service", "state": "inactive", "labels": {"lariat.enable": "true", "lariat.port": "80"}},
      {"name": "gone", "stack_name": "s", "kind": "service", "state": "removed", "labels": {"lariat.enable": "true", "lariat.port": "80"}},
      {"name": "sys", "stack_name": "s", "kind": "service", "state": "active", "system": true, "labels": {"lariat.enable": "true", "lariat.port": "80"}},
      {"name": "plain", "stack_name": "s", "kind": "service", "state": "active", "labels": {"lariat.port": "80"}},
      {"name": "portless", "stack_name": "s", "kind": "service", "state": "active", "labels": {"lariat.enable": "true"}},
      {"name": "mapped", "stack_name": "s", "kind": "service", "state": "active", "labels": {"lariat.enable": "true"}, "ports": ["8080:80/tcp"]}
    ]"#;
    let (d, skipped) = run(json, &cfg());
    let ids: Vec<&str> = d.services.iter().map(|s| s.id.0.as_str()).collect();
    assert_eq!(ids, ["mapped.s@rancher"], "the container port of the only mapping");
    assert_eq!(
        skipped,
        vec![Skipped {
            service: "portless.s".into(),
            reason: "it has no usable port: set lariat.port".into()
        }]
    );
    let mut c = cfg();
    c.exposed_by_default = true;
    let (d, _) = run(json, &c);
    assert!(d.services.iter().any(|s| s.id.0 == "plain.s@rancher"));
}

#[test]
fn container_names_resolve_through_the_container_list() {
    let json = r#"[{"name": "w", "stack_name": "s", "kind": "service", "state": "active",
      "labels": {"lariat.enable": "true", "lariat.port": "80"}, "containers": ["s-w-1", "s-w-2"]}]"#;
    let containers: BTreeMap<String, MetaContainer> = [
        (
            "s-w-1".to_string(),
            MetaContainer {
                name: "s-w-1".into(),
                primary_ip: "10.1.1.1".into(),
                state: "running".into(),
                ..Default::default()
            },
        ),
        (
            "s-w-2".to_string(),
            MetaContainer {
                name: "s-w-2".into(),
                primary_ip: "10.1.1.2".into(),
                state: "stopped".into(),
                ..Default::default()
            },
        ),
    ]
    .into();
    let (d, _) = desired(&services(json), &containers, &cfg(), &[]);
    assert_eq!(d.services[0].backends.len(), 1);
}

#[test]
fn bad_labels_skip_the_service_with_a_reason() {
    for (labels, want) in [
        (r#""lariat.port": "x""#, "port label"),
        (r#""lariat.port": "80", "traefik.frontend.rule": "HostRegexp:{a}""#, "frontend rule"),
        (r#""lariat.port": "80", "lariat.balance": "fastest""#, "balance"),
        (
            r#""lariat.port": "80", "lariat.circuit_breaker.expression": "Nope() > 1""#,
            "circuit breaker",
        ),
        (r#""lariat.port": "80", "lariat.health_check.interval": "soon""#, "health check"),
    ] {
        let json = format!(
            r#"[{{"name": "x", "stack_name": "s", "kind": "service", "state": "active", "labels": {{"lariat.enable": "true", {labels}}}}}]"#
        );
        let (d, skipped) = run(&json, &cfg());
        assert!(d.services.is_empty(), "{labels}");
        assert!(skipped[0].reason.contains(want), "{labels}: {skipped:?}");
    }
}
