use super::*;
use serde_json::{json, Value};

fn cfg() -> KubernetesProvider {
    KubernetesProvider {
        ingress_class: "lariat".into(),
        namespaces: vec![],
        entrypoints: vec!["web".into()],
        kubeconfig: None,
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn service(ns: &str, name: &str, ports: Value, annotations: Value) -> Arc<Service> {
    obj(json!({"metadata": {"namespace": ns, "name": name, "annotations": annotations}, "spec": {"ports": ports}}))
}

fn slice(ns: &str, svc: &str, name: &str, ports: Value, endpoints: Value) -> Arc<EndpointSlice> {
    obj(
        json!({"metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
               "addressType": "IPv4", "ports": ports, "endpoints": endpoints}),
    )
}

fn ingress(ns: &str, name: &str, spec: Value, annotations: Value) -> Arc<Ingress> {
    obj(json!({"metadata": {"namespace": ns, "name": name, "annotations": annotations}, "spec": spec}))
}

fn objects() -> Objects {
    Objects {
        secrets: vec![],
        ingresses: vec![ingress(
            "shop",
            "web",
            json!({"ingressClassName": "lariat", "rules": [
                {"host": "shop.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                    {"path": "/api/", "pathType": "Prefix", "backend": {"service": {"name": "api", "port": {"name": "http"}}}},
                    {"path": "/healthz", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}},
                {"host": "*.shop.example.com", "http": {"paths": [
                    {"pathType": "ImplementationSpecific", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}],
                "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}),
            json!({}),
        )],
        services: vec![
            service(
                "shop",
                "web",
                json!([{"name": "http", "port": 80, "targetPort": "web"}]),
                json!({
                "lariat.io/health-check": "GET /healthz HTTP/1.1", "lariat.io/health-check-interval": "1s",
                "lariat.io/healthy-threshold": "3", "lariat.io/strategy": "recreateOnQuorum", "lariat.io/quorum": "2",
                "lariat.io/balance": "least_conn", "lariat.io/circuit-breaker": "NetworkErrorRatio() > 0.5"}),
            ),
            service(
                "shop",
                "api",
                json!([{"name": "metrics", "port": 9100}, {"name": "http", "port": 8080, "targetPort": 3000}]),
                json!({"lariat.io/backend-protocol": "https"}),
            ),
        ],
        slices: vec![
            slice(
                "shop",
                "web",
                "web-a",
                json!([{"name": "http", "port": 8080}]),
                json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}},
                {"addresses": ["10.0.0.3"]}]),
            ),
            slice(
                "shop",
                "web",
                "web-b",
                json!([{"name": "http", "port": 8080}]),
                json!([
                {"addresses": ["fd00::4"], "conditions": {"ready": true}}]),
            ),
            slice(
                "shop",
                "api",
                "api-a",
                json!([{"name": "metrics", "port": 9100}, {"name": "http", "port": 3000}]),
                json!([
                {"addresses": ["10.0.1.1"], "conditions": {"ready": true}}]),
            ),
        ],
    }
}

#[test]
fn ingress_rules_become_routes_and_slices_members() {
    let (d, skipped) = desired(&objects(), &cfg(), &[]);
    assert!(skipped.is_empty(), "{skipped:?}");
    let ids: Vec<&str> = d.services.iter().map(|s| s.id.0.as_str()).collect();
    assert_eq!(ids, ["shop/api:8080@kubernetes", "shop/web:80@kubernetes"]);
    let web = &d.services[1];
    let addrs: Vec<String> = web.backends.iter().map(|b| b.addr.to_string()).collect();
    assert_eq!(
        addrs,
        ["10.0.0.1:8080", "10.0.0.3:8080", "[fd00::4]:8080"],
        "ready endpoints of both slices; not the terminating one"
    );
    let api = &d.services[0];
    assert!(
        api.upstream_tls.as_ref().is_some_and(|t| t.verify),
        "lariat.io/backend-protocol: https"
    );
    assert!(d.services[1].upstream_tls.is_none());
    assert_eq!(
        api.backends[0].addr.to_string(),
        "10.0.1.1:3000",
        "the named port resolves to the slice port of that name"
    );
    let routes: Vec<(String, String, bool, String)> = d
        .http_routes
        .iter()
        .map(|r| (r.host.to_string(), r.path_prefix.clone(), r.exact, r.service.0.clone()))
        .collect();
    assert!(routes.contains(&("shop.example.com".into(), "/".into(), false, "shop/web:80@kubernetes".into())));
    assert!(routes.contains(&("shop.example.com".into(), "/api".into(), true, "shop/api:8080@kubernetes".into())));
    assert!(routes.contains(&("shop.example.com".into(), "/api/".into(), false, "shop/api:8080@kubernetes".into())));
    assert!(routes.contains(&("shop.example.com".into(), "/healthz".into(), true, "shop/web:80@kubernetes".into())));
    assert!(routes.contains(&("*.shop.example.com".into(), "/".into(), false, "shop/web:80@kubernetes".into())));
    assert!(
        routes.contains(&("*".into(), "/".into(), false, "shop/web:80@kubernetes".into())),
        "defaultBackend"
    );
}

#[test]
fn annotations_configure_the_service() {
    let (d, _) = desired(&objects(), &cfg(), &[]);
    let web = &d.services[1];
    let c = web.health_check.as_ref().unwrap();
    assert!(matches!(&c.kind, CheckKind::Http { path, version, .. } if path == "/healthz" && version == "HTTP/1.1"));
    assert_eq!((c.interval, c.healthy_threshold), (std::time::Duration::from_secs(1), 3));
    assert_eq!(web.strategy, Strategy::RecreateOnQuorum(2));
    assert_eq!(web.balance, Balance::LeastConn);
    assert!(web.breaker.expression.is_some());
}

#[test]
fn class_filtering() {
    let mut o = objects();
    let spec = json!({"rules": [{"host": "other.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]});
    o.ingresses = vec![
        ingress(
            "shop",
            "by-annotation",
            spec.clone(),
            json!({"kubernetes.io/ingress.class": "lariat"}),
        ),
        ingress("shop", "nginx", spec.clone(), json!({"kubernetes.io/ingress.class": "nginx"})),
        ingress("shop", "unclassed", spec, json!({})),
    ];
    let (d, _) = desired(&o, &cfg(), &[]);
    assert_eq!(d.http_routes.len(), 1, "only the lariat-class ingress");
}

#[test]
fn tcp_exposure_and_problems() {
    let mut o = objects();
    o.services.push(service(
        "db",
        "pg",
        json!([{"name": "pg", "port": 5432}]),
        json!({"lariat.io/tcp-entrypoint": "pg"}),
    ));
    o.services.push(service(
        "db",
        "two",
        json!([{"port": 1}, {"port": 2}]),
        json!({"lariat.io/tcp-entrypoint": "pg"}),
    ));
    o.services.push(service(
        "db",
        "pick",
        json!([{"name": "a", "port": 1}, {"name": "b", "port": 2}]),
        json!({"lariat.io/tcp-entrypoint": "pg", "lariat.io/tcp-port": "b"}),
    ));
    o.services.push(service(
        "db",
        "nowhere",
        json!([{"port": 1}]),
        json!({"lariat.io/tcp-entrypoint": "web"}),
    ));
    o.slices.push(slice(
        "db",
        "pg",
        "pg-a",
        json!([{"name": "pg", "port": 5432}]),
        json!([{"addresses": ["10.0.2.1"]}]),
    ));
    let (d, skipped) = desired(&o, &cfg(), &["pg".to_string()]);
    let tcp: Vec<&str> = d.tcp_routes.iter().map(|r| r.service.0.as_str()).collect();
    assert_eq!(tcp, ["db/pg:5432@kubernetes", "db/pick:2@kubernetes"]);
    let reasons: Vec<&str> = skipped.iter().map(|s| s.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("several ports")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("not a tcp entrypoint")), "{reasons:?}");
}

#[test]
fn missing_services_and_bad_annotations_are_skipped_with_reasons() {
    let mut o = objects();
    o.services.retain(|s| s.metadata.name.as_deref() != Some("api"));
    o.services[0] = service(
        "shop",
        "web",
        json!([{"name": "http", "port": 80}]),
        json!({"lariat.io/balance": "fastest"}),
    );
    let (d, skipped) = desired(&o, &cfg(), &[]);
    assert!(d.services.is_empty());
    assert!(
        skipped.iter().any(|s| s.reason.contains("service shop/api does not exist")),
        "{skipped:?}"
    );
    assert!(skipped.iter().any(|s| s.reason.contains("lariat.io/balance")), "{skipped:?}");
}

/// What a slice event publishes (the members of the Service's ports, found by the service id)
/// is what mapping the whole state gives those services.
#[test]
fn members_of_one_service_match_the_whole_mapping() {
    let o = objects();
    let (d, _) = desired(&o, &cfg(), &[]);
    assert!(d.services.iter().any(|s| !s.backends.is_empty()));
    for spec in &d.services {
        let (ns, rest) = spec.id.0.split_once('/').unwrap();
        let name = rest.split_once(':').unwrap().0;
        let svc = o
            .services
            .iter()
            .find(|s| s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(name))
            .unwrap();
        let slices: Vec<Arc<EndpointSlice>> = o
            .slices
            .iter()
            .filter(|s| slice_owner(s) == Some((ns.to_string(), name.to_string())))
            .cloned()
            .collect();
        let port = port_of_id(svc, &spec.id).unwrap();
        assert_eq!(members(&slices, port), spec.backends, "{}", spec.id);
    }
    // An id whose port the Service no longer has.
    let svc = &o.services[0];
    let gone = ServiceId(format!("shop/{}:9@kubernetes", svc.metadata.name.as_deref().unwrap()));
    assert!(port_of_id(svc, &gone).is_none());
}
