//! Prometheus metrics (prometheus-client), one registry per application instance: requests by route and
//! status, latency, tokens issued by grant, reuse detections, session revocations, rate-limit and
//! throttle rejections, the hashing queue, deny-list lookups and Redis errors, key-set changes, rows
//! purged by housekeeping.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    pub name: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Label `name`: the grant type.
    pub tokens_issued: Family<Labels, Counter>,
    pub reuse_detections: Counter,
    /// Label `name`: why the session ended.
    pub sessions_revoked: Family<Labels, Counter>,
    /// Label `name`: the limit (`rate_limit.login_per_ip`, …, `throttle`).
    pub rejections: Family<Labels, Counter>,
    pub hash_wait: Histogram,
    /// Hashes waiting for or holding a slot.
    pub hash_queue: Gauge,
    /// Label `name`: `allowed`, `denied` or `error`.
    pub deny_lookups: Family<Labels, Counter>,
    pub redis_errors: Counter,
    pub key_set_changes: Counter,
    /// Rows removed by this instance's housekeeping passes, by table.
    pub purged_rows: Family<TableLabels, Counter>,
    /// Label `name`: `sent`, `retried` (an attempt failed, another follows), `failed` (given up, or
    /// the queue was full) or `held` (not sent: the account's hourly budget was spent).
    pub mail: Family<Labels, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let m = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            tokens_issued: Family::default(),
            reuse_detections: Counter::default(),
            sessions_revoked: Family::default(),
            rejections: Family::default(),
            hash_wait: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            hash_queue: Gauge::default(),
            deny_lookups: Family::default(),
            redis_errors: Counter::default(),
            key_set_changes: Counter::default(),
            purged_rows: Family::default(),
            mail: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            m.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.latency.clone(),
        );
        registry.register(
            "tokens_issued",
            "Access tokens issued, by grant type",
            m.tokens_issued.clone(),
        );
        registry.register(
            "refresh_reuse_detections",
            "Spent refresh tokens presented again",
            m.reuse_detections.clone(),
        );
        registry.register(
            "sessions_revoked",
            "Sessions revoked, by reason",
            m.sessions_revoked.clone(),
        );
        registry.register(
            "login_rejections",
            "Requests refused by a rate limit or the failure throttle",
            m.rejections.clone(),
        );
        registry.register(
            "password_hash_wait_seconds",
            "Time waited for a password-hashing slot",
            m.hash_wait.clone(),
        );
        registry.register(
            "password_hash_queue",
            "Password hashes waiting for or holding a slot",
            m.hash_queue.clone(),
        );
        registry.register(
            "deny_list_lookups",
            "Deny-list lookups, by result",
            m.deny_lookups.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis calls that failed or timed out",
            m.redis_errors.clone(),
        );
        registry.register(
            "key_set_changes",
            "Changes of the published key set or the signing key",
            m.key_set_changes.clone(),
        );
        registry.register(
            "mail_messages",
            "Messages by outcome: sent, retried, failed, held",
            m.mail.clone(),
        );
        registry.register(
            "purged_rows",
            "Rows removed by housekeeping, by table",
            m.purged_rows.clone(),
        );
        Self { registry, ..m }
    }

    pub fn count(family: &Family<Labels, Counter>, name: &'static str) {
        family.get_or_create(&Labels { name }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
