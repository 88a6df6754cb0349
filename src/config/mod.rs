//! The config file: loading `lariat.toml`, validating it into a typed `Config`, and the errors that
//! name the key path of every problem. Never panics on user input.

mod duration;
mod raw;
mod validate;

pub use duration::Dur;
pub use validate::parse_strategy;

use crate::desired::Desired;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub server: ServerSettings,
    pub admin: AdminSettings,
    /// Listeners, fixed for the life of the process.
    pub entrypoints: BTreeMap<String, Entrypoint>,
    /// Routes and services of the file provider (`@file`).
    pub desired: Desired,
    pub providers: Providers,
    pub tls: TlsSettings,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    /// Worker threads per entrypoint. Default: CPU count.
    pub threads: usize,
    /// Drain time on SIGTERM/SIGINT. Default 5 s.
    pub grace_period: Duration,
    /// Log filter, overridden by RUST_LOG. Default "info".
    pub log: String,
    /// One line per request and per TCP connection. Default true.
    pub access_log: bool,
    /// Unix socket where `--upgrade` receives the listeners. Default /tmp/lariat_upgrade.sock.
    pub upgrade_sock: String,
    /// Default /tmp/lariat.pid.
    pub pid_file: String,
    /// Request line and headers; over it: 431 and the connection closed. Default 65536.
    pub max_header_bytes: usize,
    /// A connection's first request head must arrive whole within this, else 408. Default 10 s.
    pub client_header_timeout: Duration,
    /// An idle client keep-alive connection is closed after this. Default 60 s.
    pub idle_timeout: Duration,
    /// Per request body, 0 = unlimited; over it: 413. Default 0.
    pub max_body_bytes: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AdminSettings {
    /// Default 127.0.0.1:9090.
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub insecure: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntrypointKind {
    Http,
    /// Terminates TLS, then routes like http.
    Https,
    Tcp,
}

impl EntrypointKind {
    pub fn name(self) -> &'static str {
        match self {
            EntrypointKind::Http => "http",
            EntrypointKind::Https => "https",
            EntrypointKind::Tcp => "tcp",
        }
    }

    /// Takes HTTP routes (http and https).
    pub fn is_http(self) -> bool {
        matches!(self, EntrypointKind::Http | EntrypointKind::Https)
    }
}

/// TLS versions lariat may negotiate from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    V12,
    V13,
}

/// A certificate chain and its key, as files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[tls]`: the certificates of every https entrypoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// Default 1.2.
    pub min_version: TlsVersion,
    /// Served when no certificate matches the SNI; none: such handshakes are refused.
    pub default_certificate: Option<CertFiles>,
    pub certificates: Vec<CertFiles>,
    pub acme: Option<AcmeSettings>,
}

/// `[tls.acme]`: certificates from an ACME (RFC 8555) CA, HTTP-01 answered on http entrypoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeSettings {
    pub email: String,
    /// The directory URL.
    pub directory: String,
    /// An extra root to trust for the directory (a private or test CA).
    pub ca_file: Option<PathBuf>,
    /// Account key and issued certificates (files mode 0600). Default /var/lib/lariat/acme.
    pub storage: PathBuf,
    /// A certificate for each exact host routed on an https entrypoint that no other certificate
    /// covers. Default true.
    pub on_host_rule: bool,
    pub domains: Vec<String>,
    /// Renew this long before expiry. Default 30 days.
    pub renew_before: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entrypoint {
    pub name: String,
    pub listen: SocketAddr,
    pub kind: EntrypointKind,
    /// HTTP/2 without TLS (prior knowledge) besides HTTP/1.x. Default true on http entrypoints.
    pub h2c: bool,
    /// http entrypoints: answer 308 to https on this https entrypoint.
    pub redirect_https: Option<String>,
    /// Accept a PROXY protocol header from these sources (None: never).
    pub proxy_protocol: Option<Vec<crate::net::Cidr>>,
    /// Open client connections, 0 = unlimited; a new connection over it is closed at once.
    pub max_connections: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Providers {
    pub file: FileProvider,
    pub rancher: Option<RancherProvider>,
    pub kubernetes: Option<KubernetesProvider>,
}

/// `[providers.kubernetes]`: Ingresses, Services and EndpointSlices from the Kubernetes API.
#[derive(Clone, Debug, PartialEq)]
pub struct KubernetesProvider {
    /// Ingresses of this class (spec.ingressClassName or the kubernetes.io/ingress.class
    /// annotation). Default "lariat".
    pub ingress_class: String,
    /// Namespaces to watch; empty: all.
    pub namespaces: Vec<String>,
    /// HTTP entrypoints its routes use. Default: every http entrypoint.
    pub entrypoints: Vec<String>,
    /// A kubeconfig file to use instead of the in-cluster service account or $KUBECONFIG.
    pub kubeconfig: Option<String>,
}

/// `[providers.rancher]`: services from rancher-metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct RancherProvider {
    /// Default `http://rancher-metadata/2016-07-29`.
    pub endpoint: String,
    /// Default host `<service>.<stack>.<domain>`. Default `rancher.internal`.
    pub domain: String,
    /// HTTP entrypoints its routes use. Default: every http entrypoint.
    pub entrypoints: Vec<String>,
    /// Expose services without an enable label. Default false.
    pub exposed_by_default: bool,
    /// Also drop containers whose health_state is not healthy. Default false.
    pub health_filter: bool,
    /// maxWait of the version long-poll. Default 60 s.
    pub long_poll: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FileProvider {
    /// Reload when the file changes. Default true.
    pub watch: bool,
    /// How often the file is checked for a change. Default 1 s.
    pub poll_interval: Duration,
}

/// One problem in a config, with the key path it concerns (`services.app.backends[1]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Io { .. } => vec![Problem {
                key: String::new(),
                message: self.to_string(),
            }],
            ConfigError::Invalid { problems } => problems.clone(),
        }
    }
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Validate config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw = raw_from_str(text).map_err(|p| ConfigError::Invalid { problems: vec![p] })?;
        validate::validate(raw).map_err(|problems| ConfigError::Invalid { problems })
    }

    /// The names of the entrypoints of one kind.
    pub fn entrypoints_of(&self, kind: EntrypointKind) -> Vec<String> {
        self.entrypoints
            .values()
            .filter(|e| e.kind == kind)
            .map(|e| e.name.clone())
            .collect()
    }

    /// A human summary of what this config serves, for `lariat check`.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "admin: http://{}/", self.admin.listen);
        for ep in self.entrypoints.values() {
            let _ = writeln!(out, "entrypoint {} ({}) on {}", ep.name, ep.kind.name(), ep.listen);
        }
        for r in &self.desired.http_routes {
            let _ = writeln!(
                out,
                "route {}{} on [{}] -> {}",
                r.host,
                r.path_prefix,
                r.entrypoints.join(", "),
                r.service
            );
        }
        for r in &self.desired.tcp_routes {
            let sni: Vec<String> = r.sni.iter().map(|h| h.to_string()).collect();
            let by = if sni.is_empty() {
                String::new()
            } else {
                format!(" sni [{}]", sni.join(", "))
            };
            let _ = writeln!(out, "route tcp on [{}]{by} -> {}", r.entrypoint, r.service);
        }
        for s in &self.desired.services {
            let backends: Vec<String> = s.backends.iter().map(|b| format!("{} (weight {})", b.addr, b.weight)).collect();
            let _ = writeln!(out, "service {} ({}): {}", s.id, s.balance.name(), backends.join(", "));
        }
        out
    }
}

fn raw_from_str(text: &str) -> Result<raw::RawConfig, Problem> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = inner.message().trim().to_string();
        let message = match line {
            Some(l) => format!("{msg} (line {l})"),
            None => msg,
        };
        Problem {
            key: if key == "." { String::new() } else { key },
            message,
        }
    })
}

#[cfg(test)]
mod tests;
