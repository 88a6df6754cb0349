//! The virtual-host table of one http entrypoint: exact host, then the longest `*.suffix`, then
//! any host; within a host, the longest path prefix. Lookup costs O(host length + routes of
//! that host).

use crate::desired::{HostMatch, HttpRoute, ServiceId};
use crate::upstream::ServiceCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Where a route leads: the service id, and the service itself when it exists.
#[derive(Clone)]
pub struct Target {
    pub id: ServiceId,
    pub service: Option<Arc<ServiceCell>>,
    /// The route as written, for logs and the admin API: "host/prefix".
    pub name: Arc<str>,
    /// Plain http requests on this route are redirected to https.
    pub redirect_https: bool,
}

#[derive(Default, Clone)]
struct PathTable {
    /// (path, exact, target): longest path first, an exact path before a prefix of its length.
    entries: Vec<(String, bool, Arc<Target>)>,
}

impl PathTable {
    fn insert(&mut self, path: &str, exact: bool, target: Target) {
        if self.entries.iter().any(|(p, e, _)| p == path && *e == exact) {
            return; // first route for a host and path wins
        }
        self.entries.push((path.to_string(), exact, Arc::new(target)));
        self.entries
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(b.1.cmp(&a.1)).then_with(|| a.0.cmp(&b.0)));
    }

    fn lookup(&self, path: &str) -> Option<&Arc<Target>> {
        self.entries
            .iter()
            .find(|(p, exact, _)| if *exact { path == p } else { path.starts_with(p.as_str()) })
            .map(|(_, _, t)| t)
    }
}

#[derive(Default, Clone)]
pub struct RouteTable {
    exact: HashMap<String, PathTable>,
    wildcard: HashMap<String, PathTable>,
    any: PathTable,
}

impl RouteTable {
    pub fn add(&mut self, route: &HttpRoute, service: Option<Arc<ServiceCell>>) {
        let target = Target {
            id: route.service.clone(),
            service,
            name: format!("{}{}{}", route.host, route.path_prefix, if route.exact { " (exact)" } else { "" }).into(),
            redirect_https: route.redirect_https,
        };
        match &route.host {
            HostMatch::Exact(h) => self
                .exact
                .entry(h.clone())
                .or_default()
                .insert(&route.path_prefix, route.exact, target),
            HostMatch::Wildcard(s) => self
                .wildcard
                .entry(s.clone())
                .or_default()
                .insert(&route.path_prefix, route.exact, target),
            HostMatch::Any => self.any.insert(&route.path_prefix, route.exact, target),
        }
    }

    /// `host` as the client sent it (any case, maybe with a port).
    /// A request takes the target's `Arc`, not a copy.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Target>> {
        let host = strip_port(host);
        let mut buf = [0u8; 256];
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) && host.len() <= buf.len() {
            let b = &mut buf[..host.len()];
            b.copy_from_slice(host.as_bytes());
            b.make_ascii_lowercase();
            std::str::from_utf8(b).unwrap_or(host)
        } else {
            host
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(t) = self.exact.get(host).and_then(|t| t.lookup(path)) {
            return Some(t);
        }
        if !self.wildcard.is_empty() {
            for (i, b) in host.bytes().enumerate() {
                if b == b'.' {
                    if let Some(t) = self.wildcard.get(&host[i + 1..]).and_then(|t| t.lookup(path)) {
                        return Some(t);
                    }
                }
            }
        }
        self.any.lookup(path)
    }
}

/// A Host header without its port (`[v6]` stays bracketed).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map(|(h, _)| &host[..h.len() + 1]).unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str, &str)]) -> RouteTable {
        let mut t = RouteTable::default();
        for (host, prefix, svc) in routes {
            let r = HttpRoute {
                entrypoints: vec!["web".into()],
                host: HostMatch::parse(host).unwrap(),
                path_prefix: prefix.to_string(),
                exact: false,
                redirect_https: false,
                service: ServiceId(svc.to_string()),
            };
            t.add(&r, None);
        }
        t
    }

    fn hit(t: &RouteTable, host: &str, path: &str) -> Option<String> {
        t.lookup(host, path).map(|t| t.id.0.clone())
    }

    #[test]
    fn precedence_exact_wildcard_any() {
        let t = table(&[
            ("*", "/", "any"),
            ("*.example.com", "/", "wild"),
            ("a.example.com", "/", "exact"),
            ("*.b.example.com", "/", "deep"),
        ]);
        assert_eq!(hit(&t, "a.example.com", "/x").as_deref(), Some("exact"));
        assert_eq!(hit(&t, "A.Example.COM:8080", "/x").as_deref(), Some("exact"));
        assert_eq!(hit(&t, "z.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(hit(&t, "x.y.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(hit(&t, "c.b.example.com", "/").as_deref(), Some("deep"));
        assert_eq!(hit(&t, "example.com", "/").as_deref(), Some("any"));
        assert_eq!(hit(&t, "other.org", "/").as_deref(), Some("any"));
    }

    #[test]
    fn longest_prefix_and_fallthrough() {
        let t = table(&[("a.com", "/api", "api"), ("a.com", "/api/v2", "v2"), ("*", "/", "any")]);
        assert_eq!(hit(&t, "a.com", "/api/v2/x").as_deref(), Some("v2"));
        assert_eq!(hit(&t, "a.com", "/api/v1").as_deref(), Some("api"));
        assert_eq!(hit(&t, "a.com", "/other").as_deref(), Some("any"));
        let t = table(&[("a.com", "/api", "api")]);
        assert_eq!(hit(&t, "a.com", "/"), None);
        assert_eq!(hit(&t, "b.com", "/api"), None);
    }

    #[test]
    fn exact_paths() {
        let mut t = table(&[("a.com", "/api/", "prefix")]);
        let r = HttpRoute {
            entrypoints: vec!["web".into()],
            host: HostMatch::parse("a.com").unwrap(),
            path_prefix: "/api".into(),
            exact: true,
            redirect_https: false,
            service: ServiceId("exact".into()),
        };
        t.add(&r, None);
        assert_eq!(hit(&t, "a.com", "/api").as_deref(), Some("exact"));
        assert_eq!(hit(&t, "a.com", "/api/x").as_deref(), Some("prefix"));
        assert_eq!(hit(&t, "a.com", "/apix"), None, "an exact path is not a prefix");
    }

    #[test]
    fn ports_and_ipv6() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("a.com"), "a.com");
    }
}
