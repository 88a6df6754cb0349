//! The serde mirror of `lariat.toml`: field names exactly as users write them, every table
//! `deny_unknown_fields`. Nothing here is validated; `config::validate` turns it into `Config`.

use super::duration::Dur;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub entrypoints: BTreeMap<String, RawEntrypoint>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub services: BTreeMap<String, RawService>,
    #[serde(default)]
    pub providers: RawProviders,
    #[serde(default)]
    pub tls: RawTls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub min_version: Option<String>,
    pub default_certificate: Option<RawCertFiles>,
    #[serde(default)]
    pub certificates: Vec<RawCertFiles>,
    pub acme: Option<RawAcme>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub email: String,
    pub directory: String,
    pub ca_file: Option<String>,
    pub storage: Option<String>,
    pub on_host_rule: Option<bool>,
    #[serde(default)]
    pub domains: Vec<String>,
    pub renew_before: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertFiles {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<usize>,
    pub grace_period: Option<Dur>,
    pub log: Option<String>,
    pub access_log: Option<bool>,
    pub upgrade_sock: Option<String>,
    pub pid_file: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub client_header_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub insecure: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntrypoint {
    pub listen: String,
    pub kind: String,
    pub h2c: Option<bool>,
    pub redirect_https: Option<String>,
    pub proxy_protocol: Option<RawProxyProtocol>,
    pub max_connections: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub entrypoints: Option<Vec<String>>,
    pub sni: Option<Vec<String>>,
    pub service: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    pub balance: Option<String>,
    pub hash_key: Option<String>,
    pub retries: Option<u32>,
    pub max_connections: Option<u32>,
    pub max_requests: Option<u32>,
    pub connect_timeout: Option<Dur>,
    pub read_timeout: Option<Dur>,
    pub health_check: Option<RawHealthCheck>,
    pub circuit_breaker: Option<RawBreaker>,
    pub scheme: Option<String>,
    pub tls_verify: Option<bool>,
    pub ca_file: Option<String>,
    pub sni: Option<String>,
    pub proxy_protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyProtocol {
    #[serde(default)]
    pub trusted: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub kind: Option<String>,
    pub request_line: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub initializing_timeout: Option<Dur>,
    pub strategy: Option<String>,
    pub quorum: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub consecutive_failures: Option<u32>,
    pub count_5xx: Option<bool>,
    pub base_ejection: Option<Dur>,
    pub max_ejection: Option<Dur>,
    pub expression: Option<String>,
    pub fallback_duration: Option<Dur>,
    pub recovery_duration: Option<Dur>,
}

/// A backend: `"10.0.0.1:80"` or `{ addr = "10.0.0.1:80", weight = 2 }`.
#[derive(Debug)]
pub struct RawBackend {
    pub addr: String,
    pub weight: Option<i64>,
}

impl<'de> Deserialize<'de> for RawBackend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBackend;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#""host:port" or { addr = "host:port", weight = N }"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawBackend, E> {
                Ok(RawBackend {
                    addr: v.to_string(),
                    weight: None,
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RawBackend, M::Error> {
                let mut addr = None;
                let mut weight = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "addr" => addr = Some(map.next_value::<String>()?),
                        "weight" => weight = Some(map.next_value::<i64>()?),
                        other => return Err(de::Error::unknown_field(other, &["addr", "weight"])),
                    }
                }
                let addr = addr.ok_or_else(|| de::Error::missing_field("addr"))?;
                Ok(RawBackend { addr, weight })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviders {
    #[serde(default)]
    pub file: RawFileProvider,
    pub rancher: Option<RawRancher>,
    pub kubernetes: Option<RawKubernetes>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    pub ingress_class: Option<String>,
    pub namespaces: Option<Vec<String>>,
    pub entrypoints: Option<Vec<String>>,
    pub kubeconfig: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRancher {
    pub endpoint: Option<String>,
    pub domain: Option<String>,
    pub entrypoints: Option<Vec<String>>,
    pub exposed_by_default: Option<bool>,
    pub health_filter: Option<bool>,
    pub long_poll: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileProvider {
    pub watch: Option<bool>,
    pub poll_interval: Option<Dur>,
}
