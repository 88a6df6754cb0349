//! Every parser of outside input returns a value or an error — never a panic — and errors say
//! where the input went wrong. Bounded case counts keep CI fast.

use lariat::config::RancherProvider;
use lariat::discovery::kubernetes::{desired as k8s_desired, Objects};
use lariat::discovery::rancher::{desired as rancher_desired, MetaService};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const VALID: &str = r#"
[entrypoints.web]
listen = "127.0.0.1:8080"
kind = "http"
[[routes]]
host = "*.example.com"
path_prefix = "/api"
service = "app"
[services.app]
backends = ["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 2 }]
balance = "consistent_hash"
hash_key = "header:X-User"
[services.app.health_check]
request_line = "GET /healthz HTTP/1.1"
interval = "2s"
[services.app.circuit_breaker]
expression = "NetworkErrorRatio() > 0.5"
"#;

/// JSON values of bounded depth, with the strings and numbers metadata and the API use.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-zA-Z0-9./:*_ -]{0,20}".prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "running",
            "healthy",
            "service",
            "active",
            "10.0.0.1",
            "lariat.enable",
            "true",
            "80",
            "Prefix",
            "Exact",
            "GET / HTTP/1.0"
        ])
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "name",
                    "stack_name",
                    "kind",
                    "state",
                    "labels",
                    "containers",
                    "primary_ip",
                    "health_check",
                    "ports",
                    "metadata",
                    "spec",
                    "rules",
                    "host",
                    "http",
                    "paths",
                    "path",
                    "pathType",
                    "backend",
                    "service",
                    "port",
                    "number",
                    "namespace",
                    "endpoints",
                    "addresses",
                    "conditions",
                    "ready",
                    "annotations",
                    "lariat.port",
                    "lariat.protocol",
                    "lariat.entrypoint",
                    "tls",
                ])
                .prop_map(str::to_string),
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn config_text_never_panics(text in "\\PC{0,400}") {
        let _ = lariat::Config::parse(&text);
    }

    #[test]
    fn mutated_configs_give_errors_with_key_paths(pos in 0usize..VALID.len(), byte in any::<u8>()) {
        let mut bytes = VALID.as_bytes().to_vec();
        bytes[pos] = byte;
        if let Ok(text) = String::from_utf8(bytes) {
            if let Err(e) = lariat::Config::parse(&text) {
                prop_assert!(!e.problems().is_empty());
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn breaker_expressions_never_panic(text in "[A-Za-z()0-9.,<>=!&| ]{0,60}") {
        if let Err(e) = lariat::breaker::expr::parse(&text) {
            prop_assert!(e.column <= text.len());
            let _ = e.to_string();
        }
    }

    #[test]
    fn rancher_answers_never_panic(v in json(), labels in prop::collection::btree_map("(lariat|traefik)\\.[a-z_.]{1,30}", "\\PC{0,30}", 0..8)) {
        let provider = RancherProvider {
            endpoint: "http://m/2016-07-29".into(), domain: "rancher.internal".into(), entrypoints: vec!["web".into()],
            exposed_by_default: true, health_filter: true, long_poll: std::time::Duration::from_secs(60),
        };
        if let Ok(mut services) = serde_json::from_value::<Vec<MetaService>>(v) {
            for s in services.iter_mut() {
                s.labels.extend(labels.clone());
            }
            let _ = rancher_desired(&services, &BTreeMap::new(), &provider, &["pg".to_string()]);
        }
        // Labels alone on an otherwise valid service.
        let s = MetaService { name: "a".into(), stack_name: "b".into(), kind: "service".into(), state: "active".into(), labels: labels.clone(), ..Default::default() };
        let _ = rancher_desired(&[s], &BTreeMap::new(), &provider, &["pg".to_string()]);
    }

    #[test]
    fn kubernetes_objects_never_panic(ing in json(), svc in json(), slice in json()) {
        let provider = lariat::config::KubernetesProvider { ingress_class: "lariat".into(), namespaces: vec![], entrypoints: vec!["web".into()], kubeconfig: None };
        let mut o = Objects::default();
        if let Ok(i) = serde_json::from_value(ing) { o.ingresses.push(Arc::new(i)); }
        if let Ok(s) = serde_json::from_value(svc) { o.services.push(Arc::new(s)); }
        if let Ok(s) = serde_json::from_value(slice) { o.slices.push(Arc::new(s)); }
        let _ = k8s_desired(&o, &provider, &["pg".to_string()]);
        let _ = lariat::discovery::kubernetes::mapping::certificates(&o, &provider);
    }

    #[test]
    fn proxy_headers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), prefix in prop::sample::select(vec![&b"PROXY "[..], b"\r\n\r\n\0\r\nQUIT\n", b""])) {
        let input = [prefix, &bytes[..]].concat();
        if let Ok(Some((n, _))) = lariat::proxy::pp::parse_header(&input) {
            prop_assert!(n <= input.len());
        }
    }

    #[test]
    fn client_hellos_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), tls in any::<bool>()) {
        let mut input = bytes;
        if tls && !input.is_empty() {
            input[0] = 0x16;
        }
        let _ = lariat::proxy::sni::parse(&input);
    }

    #[test]
    fn hosts_and_durations_never_panic(text in "\\PC{0,40}") {
        let _ = lariat::desired::HostMatch::parse(&text);
        let _ = lariat::config::Dur::parse(&text);
        let _ = lariat::desired::HashKey::parse(&text);
        let _ = lariat::desired::CheckKind::from_request_line(&text, None);
        let _ = lariat::net::Cidr::parse(&text);
    }
}
