//! Metrics: every family declared once here with its help text, the counters the data path
//! updates, and the Prometheus text rendering for `GET /metrics`. Labels never carry a raw Host,
//! path or client address: only entrypoint, service, backend (a configured or discovered
//! address), status code, state, provider and result.

mod counters;
mod render;

pub use counters::{EntrypointCounters, HttpCounters, OpenGuard, PerEntrypoint, TcpCounters, DURATION_BUCKETS};
pub use render::render;

/// (name, type, help) of every metric lariat exports.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    (
        REQUESTS,
        "counter",
        "HTTP requests answered, by entrypoint, service and status code.",
    ),
    (
        REQUEST_DURATION,
        "histogram",
        "Time from request head to the end of the response, by entrypoint and service.",
    ),
    (OPEN_CONNECTIONS, "gauge", "Open client connections, by entrypoint and protocol."),
    (TCP_CONNECTIONS, "counter", "TCP connections forwarded, by entrypoint and service."),
    (
        TCP_BYTES,
        "counter",
        "Bytes forwarded on TCP entrypoints, by direction: rx from clients, tx to clients.",
    ),
    (
        BACKEND_UP,
        "gauge",
        "1 when the backend may take traffic under its service's strategy, else 0.",
    ),
    (BACKEND_STATE, "gauge", "1 on the backend's current state."),
    (
        BACKEND_EJECTIONS,
        "counter",
        "Times the passive circuit breaker ejected the backend.",
    ),
    (HEALTH_CHECKS, "counter", "Active health-check probes, by service and result."),
    (RETRIES, "counter", "Requests and connections retried on another backend."),
    (
        SERVICE_FAIL_OPEN,
        "gauge",
        "1 while a recreateOnQuorum service is below quorum and routes to every backend.",
    ),
    (
        SERVICE_BREAKER_OPEN,
        "gauge",
        "1 while the service's expression breaker is open (fallback answers).",
    ),
    (PROVIDER_UPDATES, "counter", "States applied from each provider."),
    (
        PROVIDER_ERRORS,
        "counter",
        "Failed reads of each provider's source; the last good state stays.",
    ),
    (PROVIDER_LAST_SUCCESS, "gauge", "Unix time of each provider's last applied state."),
    (CONFIG_RELOADS, "counter", "Config file reloads, by result."),
    (TLS_HANDSHAKES, "counter", "TLS handshakes on https entrypoints, by result."),
    (TLS_NOT_AFTER, "gauge", "Expiry (Unix time) of each certificate served."),
    (ACME_ORDERS, "counter", "ACME certificate orders, by result."),
    (
        REJECTED_CONNECTIONS,
        "counter",
        "Client connections closed at once, by entrypoint and reason.",
    ),
    (
        BAD_REQUESTS,
        "counter",
        "Requests refused before routing, by entrypoint and reason.",
    ),
];

pub const REQUESTS: &str = "lariat_requests_total";
pub const REQUEST_DURATION: &str = "lariat_request_duration_seconds";
pub const OPEN_CONNECTIONS: &str = "lariat_open_connections";
pub const TCP_CONNECTIONS: &str = "lariat_tcp_connections_total";
pub const TCP_BYTES: &str = "lariat_tcp_bytes_total";
pub const BACKEND_UP: &str = "lariat_backend_up";
pub const BACKEND_STATE: &str = "lariat_backend_state";
pub const BACKEND_EJECTIONS: &str = "lariat_backend_ejections_total";
pub const HEALTH_CHECKS: &str = "lariat_health_checks_total";
pub const RETRIES: &str = "lariat_retries_total";
pub const SERVICE_FAIL_OPEN: &str = "lariat_service_fail_open";
pub const SERVICE_BREAKER_OPEN: &str = "lariat_service_breaker_open";
pub const PROVIDER_UPDATES: &str = "lariat_provider_updates_total";
pub const PROVIDER_ERRORS: &str = "lariat_provider_errors_total";
pub const PROVIDER_LAST_SUCCESS: &str = "lariat_provider_last_success_timestamp_seconds";
pub const CONFIG_RELOADS: &str = "lariat_config_reloads_total";
pub const TLS_HANDSHAKES: &str = "lariat_tls_handshakes_total";
pub const TLS_NOT_AFTER: &str = "lariat_tls_certificate_not_after_timestamp_seconds";
pub const ACME_ORDERS: &str = "lariat_acme_orders_total";
pub const REJECTED_CONNECTIONS: &str = "lariat_rejected_connections_total";
pub const BAD_REQUESTS: &str = "lariat_bad_requests_total";
