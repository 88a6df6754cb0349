//! The desired state every provider publishes: services with their backends and settings, and the
//! routes that lead to them. Plain data, compared by value so unchanged services can be reused.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A service id, `name@provider`: `app@file`, `web.shop@rancher`, `default/web:80@kubernetes`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub String);

impl ServiceId {
    /// The id of a service named in the config file: a bare name means `@file`.
    pub fn from_file_ref(name: &str) -> ServiceId {
        if name.contains('@') {
            ServiceId(name.to_string())
        } else {
            ServiceId(format!("{name}@file"))
        }
    }

    pub fn provider(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, p)| p).unwrap_or("file")
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Load-balancing algorithm of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
    LeastConn,
    ConsistentHash(HashKey),
}

impl Balance {
    pub fn name(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::Random => "random",
            Balance::LeastConn => "least_conn",
            Balance::ConsistentHash(_) => "consistent_hash",
        }
    }
}

/// What a consistent hash is computed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    /// Header name, lowercase.
    Header(String),
    Cookie(String),
    Path,
}

impl HashKey {
    pub fn parse(text: &str) -> Result<HashKey, String> {
        let bad = || format!("{text:?} is not one of client_ip, header:NAME, cookie:NAME, path");
        match text {
            "client_ip" => Ok(HashKey::ClientIp),
            "path" => Ok(HashKey::Path),
            _ => match text.split_once(':') {
                Some(("header", name)) if valid_token(name) => {
                    Ok(HashKey::Header(name.to_ascii_lowercase()))
                }
                Some(("cookie", name)) if valid_token(name) => {
                    Ok(HashKey::Cookie(name.to_string()))
                }
                _ => Err(bad()),
            },
        }
    }
}

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b))
}

/// One backend of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    /// Relative weight, 1..=1000.
    pub weight: u32,
}

/// Everything lariat needs to send traffic to one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub id: ServiceId,
    pub backends: Vec<BackendSpec>,
    pub balance: Balance,
    /// Further backends tried after a connect failure. Default 2.
    pub retries: u32,
    /// Per backend, 0 = unlimited. Default 1024.
    pub max_connections: u32,
    /// In flight per service, 0 = unlimited. Default 0.
    pub max_requests: u32,
    /// Default 2 s.
    pub connect_timeout: Duration,
    /// Default 60 s.
    pub read_timeout: Duration,
}

impl ServiceSpec {
    /// A service with SPEC's defaults and the given backends.
    pub fn new(id: ServiceId, backends: Vec<BackendSpec>) -> ServiceSpec {
        ServiceSpec {
            id,
            backends,
            balance: Balance::RoundRobin,
            retries: 2,
            max_connections: 1024,
            max_requests: 0,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// How an HTTP route matches the Host header.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostMatch {
    /// Lowercase host without port.
    Exact(String),
    /// `*.example.com` stored as `example.com`: one or more labels in front of it.
    Wildcard(String),
    Any,
}

impl HostMatch {
    pub fn parse(text: &str) -> Result<HostMatch, String> {
        let t = text.trim().to_ascii_lowercase();
        let check = |h: &str| {
            !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        if let Some(suffix) = t.strip_prefix("*.") {
            if check(suffix) {
                return Ok(HostMatch::Wildcard(suffix.to_string()));
            }
        } else if t == "*" {
            return Ok(HostMatch::Any);
        } else if check(&t) {
            return Ok(HostMatch::Exact(t));
        }
        Err(format!(
            "{text:?} is not a host name, \"*.parent\" wildcard or \"*\""
        ))
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(s) => write!(f, "*.{s}"),
            HostMatch::Any => f.write_str("*"),
        }
    }
}

/// An HTTP route: host and path prefix on some entrypoints, to a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    pub entrypoints: Vec<String>,
    pub host: HostMatch,
    pub path_prefix: String,
    pub service: ServiceId,
}

/// A TCP route: everything arriving on a tcp entrypoint goes to one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRoute {
    pub entrypoint: String,
    pub service: ServiceId,
}

/// The complete state one provider wants: it replaces whatever that provider published before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub http_routes: Vec<HttpRoute>,
    pub tcp_routes: Vec<TcpRoute>,
    pub services: Vec<ServiceSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_match_forms() {
        assert_eq!(
            HostMatch::parse("App.Example.com").unwrap(),
            HostMatch::Exact("app.example.com".into())
        );
        assert_eq!(
            HostMatch::parse("*.example.com").unwrap(),
            HostMatch::Wildcard("example.com".into())
        );
        assert_eq!(HostMatch::parse("*").unwrap(), HostMatch::Any);
        for bad in ["", "a..b", "*.", "a b", "**.x", "x.*", "a/b"] {
            assert!(HostMatch::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hash_keys() {
        assert_eq!(
            HashKey::parse("header:X-User").unwrap(),
            HashKey::Header("x-user".into())
        );
        assert_eq!(
            HashKey::parse("cookie:sid").unwrap(),
            HashKey::Cookie("sid".into())
        );
        assert!(HashKey::parse("header:").is_err());
        assert!(HashKey::parse("ip").is_err());
    }

    #[test]
    fn service_ids() {
        assert_eq!(ServiceId::from_file_ref("app").0, "app@file");
        assert_eq!(
            ServiceId::from_file_ref("web.shop@rancher").provider(),
            "rancher"
        );
    }
}
