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
                Some(("header", name)) if valid_token(name) => Ok(HashKey::Header(name.to_ascii_lowercase())),
                Some(("cookie", name)) if valid_token(name) => Ok(HashKey::Cookie(name.to_string())),
                _ => Err(bad()),
            },
        }
    }
}

fn valid_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b))
}

/// One backend of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    /// Relative weight, 1..=1000.
    pub weight: u32,
}

/// How an active check probes a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Connect, and nothing more.
    Tcp,
    /// Send a request; 2xx and 3xx are healthy.
    Http {
        method: String,
        path: String,
        version: String,
        host: Option<String>,
    },
}

impl CheckKind {
    /// Parse a request line as Rancher writes it: `GET /healthz HTTP/1.0`, also with quoted parts
    /// (`GET "/healthz" "HTTP/1.1"`). An empty line means a TCP check.
    pub fn from_request_line(line: &str, host: Option<String>) -> Result<CheckKind, String> {
        let parts: Vec<&str> = line.split_whitespace().map(|p| p.trim_matches('"')).collect();
        let (method, path, version) = match parts.as_slice() {
            [] => return Ok(CheckKind::Tcp),
            [path] if path.starts_with('/') => ("GET", *path, "HTTP/1.0"),
            [m, path] => (*m, *path, "HTTP/1.0"),
            [m, path, v] => (*m, *path, *v),
            _ => return Err(format!("{line:?} is not a request line like \"GET /healthz HTTP/1.0\"")),
        };
        if !method.bytes().all(|b| b.is_ascii_uppercase()) || method.is_empty() {
            return Err(format!("{line:?}: {method:?} is not an HTTP method"));
        }
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control()) {
            return Err(format!("{line:?}: {path:?} is not a path"));
        }
        if version != "HTTP/1.0" && version != "HTTP/1.1" {
            return Err(format!("{line:?}: {version:?} is not HTTP/1.0 or HTTP/1.1"));
        }
        Ok(CheckKind::Http {
            method: method.into(),
            path: path.into(),
            version: version.into(),
            host,
        })
    }
}

/// An active health check, with Rancher's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub kind: CheckKind,
    /// Port to probe instead of the backend's.
    pub port: Option<u16>,
    /// Default 2 s.
    pub interval: Duration,
    /// Default 2 s.
    pub timeout: Duration,
    /// Passes in a row to become healthy. Default 2.
    pub healthy_threshold: u32,
    /// Failures in a row to become unhealthy. Default 3.
    pub unhealthy_threshold: u32,
    /// A new backend not healthy by then becomes unhealthy. Default 60 s.
    pub initializing_timeout: Duration,
}

impl HealthCheckSpec {
    pub fn new(kind: CheckKind) -> HealthCheckSpec {
        HealthCheckSpec {
            kind,
            port: None,
            interval: Duration::from_millis(2000),
            timeout: Duration::from_millis(2000),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            initializing_timeout: Duration::from_secs(60),
        }
    }
}

/// Which backends leave rotation, after Rancher's healthcheck strategies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Nothing leaves: states are observed and reported only.
    None,
    /// Initializing, unhealthy and ejected backends get no traffic.
    Recreate,
    /// As Recreate while at least this many backends are healthy (initializing counts), else
    /// every backend takes traffic (fail open).
    RecreateOnQuorum(u32),
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Recreate => "recreate",
            Strategy::RecreateOnQuorum(_) => "recreateOnQuorum",
        }
    }
}

/// A parsed breaker expression; equal when the text is equal.
#[derive(Clone, Debug)]
pub struct Expression {
    pub source: String,
    pub expr: crate::breaker::expr::Expr,
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Expression {}

impl Expression {
    pub fn parse(source: &str) -> Result<Expression, crate::breaker::expr::ParseError> {
        Ok(Expression {
            source: source.to_string(),
            expr: crate::breaker::expr::parse(source)?,
        })
    }
}

/// Passive per-backend ejection and the optional whole-service expression breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerSpec {
    /// Failures in a row that eject a backend; 0 = never. Default 5.
    pub consecutive_failures: u32,
    /// Count 5xx responses as failures. Default false.
    pub count_5xx: bool,
    /// Default 10 s, doubling at each repeat.
    pub base_ejection: Duration,
    /// Default 5 m.
    pub max_ejection: Duration,
    pub expression: Option<Expression>,
    /// Default 10 s.
    pub fallback_duration: Duration,
    /// Default 10 s.
    pub recovery_duration: Duration,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            consecutive_failures: 5,
            count_5xx: false,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            expression: None,
            fallback_duration: Duration::from_secs(10),
            recovery_duration: Duration::from_secs(10),
        }
    }
}

/// The PROXY protocol version sent to tcp backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// TLS to the backends of an http service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Verify the backend's certificate (against the system roots, or `ca_file`). Default true.
    pub verify: bool,
    /// PEM roots to verify against instead of the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// The name to send and verify. Default: the request's host.
    pub sni: Option<String>,
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
    pub health_check: Option<HealthCheckSpec>,
    /// Default Recreate.
    pub strategy: Strategy,
    pub breaker: BreakerSpec,
    /// `scheme = "https"`: TLS to the backends (http services).
    pub upstream_tls: Option<UpstreamTls>,
    /// Send a PROXY header first (tcp services).
    pub send_proxy: Option<ProxyVersion>,
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
            health_check: None,
            strategy: Strategy::Recreate,
            breaker: BreakerSpec::default(),
            upstream_tls: None,
            send_proxy: None,
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
                && h.split('.')
                    .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
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
        Err(format!("{text:?} is not a host name, \"*.parent\" wildcard or \"*\""))
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
    /// The path must equal `path_prefix` (Kubernetes `pathType: Exact`).
    pub exact: bool,
    /// On plain http entrypoints, answer 308 to https instead (Kubernetes `lariat.io/ssl-redirect`,
    /// Rancher `lariat.redirect_https`).
    pub redirect_https: bool,
    pub service: ServiceId,
}

/// A TCP route: everything arriving on a tcp entrypoint goes to one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRoute {
    pub entrypoint: String,
    /// TLS passthrough: the ClientHello server names this route takes. Empty: the entrypoint's
    /// default (non-TLS connections and unmatched names).
    pub sni: Vec<HostMatch>,
    pub service: ServiceId,
}

/// The complete state one provider wants: it replaces whatever that provider published before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub http_routes: Vec<HttpRoute>,
    pub tcp_routes: Vec<TcpRoute>,
    pub services: Vec<ServiceSpec>,
    /// Host names this provider asks ACME certificates for (Rancher's `lariat.tls.acme`).
    pub acme_names: Vec<String>,
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
        assert_eq!(HashKey::parse("header:X-User").unwrap(), HashKey::Header("x-user".into()));
        assert_eq!(HashKey::parse("cookie:sid").unwrap(), HashKey::Cookie("sid".into()));
        assert!(HashKey::parse("header:").is_err());
        assert!(HashKey::parse("ip").is_err());
    }

    #[test]
    fn request_lines() {
        let k = CheckKind::from_request_line("GET \"/healthz\" \"HTTP/1.1\"", None).unwrap();
        assert_eq!(
            k,
            CheckKind::Http {
                method: "GET".into(),
                path: "/healthz".into(),
                version: "HTTP/1.1".into(),
                host: None
            }
        );
        assert_eq!(CheckKind::from_request_line("", None).unwrap(), CheckKind::Tcp);
        assert!(matches!(
            CheckKind::from_request_line("/ping", None).unwrap(),
            CheckKind::Http { .. }
        ));
        for bad in ["get / HTTP/1.0", "GET healthz", "GET / HTTP/2", "GET / HTTP/1.0 extra"] {
            assert!(CheckKind::from_request_line(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_ids() {
        assert_eq!(ServiceId::from_file_ref("app").0, "app@file");
        assert_eq!(ServiceId::from_file_ref("web.shop@rancher").provider(), "rancher");
    }
}
