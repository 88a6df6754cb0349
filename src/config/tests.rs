use super::*;
use crate::desired::{Balance, HashKey, HostMatch};

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn minimal_config_has_defaults() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.server.grace_period, Duration::from_secs(5));
    assert!(c.providers.file.watch);
}

#[test]
fn full_service_parses() {
    let c = Config::parse(
        r#"
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
hash_key = "cookie:sid"
retries = 1
connect_timeout = "250ms"
"#,
    )
    .unwrap();
    let s = &c.desired.services[0];
    assert_eq!(s.id.0, "app@file");
    assert_eq!(s.backends[1].weight, 2);
    assert_eq!(s.balance, Balance::ConsistentHash(HashKey::Cookie("sid".into())));
    assert_eq!(s.connect_timeout, Duration::from_millis(250));
    let r = &c.desired.http_routes[0];
    assert_eq!(r.host, HostMatch::Wildcard("example.com".into()));
    assert_eq!(r.entrypoints, vec!["web".to_string()]);
}

#[test]
fn unknown_key_names_its_path() {
    let p = problems("[services.app]\nbackends = []\nbalanse = \"random\"\n");
    assert!(p[0].starts_with("services.app.balanse: unknown field `balanse`"), "{p:?}");
    assert!(p[0].contains("line 3"), "{p:?}");
}

#[test]
fn bad_backend_names_index() {
    let p = problems("[services.app]\nbackends = [\"127.0.0.1:1\", \"nope\"]\n");
    assert!(p[0].starts_with("services.app.backends[1]:"), "{p:?}");
}

#[test]
fn several_problems_reported_together() {
    let p = problems(
        r#"
[entrypoints.a]
listen = "127.0.0.1:1"
kind = "tcp"
[[routes]]
entrypoints = ["a"]
service = "x"
[[routes]]
entrypoints = ["a"]
service = "y"
[services.y]
balance = "fastest"
"#,
    );
    let all = p.join("\n");
    assert!(all.contains("routes[0].service: no service \"x\""), "{all}");
    assert!(
        all.contains("routes[1].entrypoints: tcp entrypoint \"a\" already forwards"),
        "{all}"
    );
    assert!(all.contains("services.y.balance"), "{all}");
}

#[test]
fn admin_outside_loopback_needs_token() {
    let p = problems("[admin]\nlisten = \"0.0.0.0:9090\"\n");
    assert!(p[0].starts_with("admin.listen:"), "{p:?}");
    Config::parse("[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"s3cret\"\n").unwrap();
    Config::parse("[admin]\nlisten = \"0.0.0.0:9090\"\ninsecure = true\n").unwrap();
}
