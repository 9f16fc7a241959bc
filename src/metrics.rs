//! What `/metrics` exports, in Prometheus conventions with labels, through the
//! `prometheus-client` crate (the Prometheus project's own Rust client): requests by route
//! and status, decisions by cache and outcome, conflicts, attestations by builder and
//! verdict, pushed narinfos by outcome, upstream latency histograms and errors by upstream, NAR requests (the hit ratio),
//! NAR bytes served and fetched, mismatches by upstream, and the health of recording.
//!
//! Label values come from the config (cache, builder and upstream names) or from small fixed
//! sets (route, outcome, verdict), so the series stay few whatever clients or upstreams send.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use quorate_core::attestation::SigStatus;
use quorate_core::quorum::Outcome;

/// `route`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    status: u16,
}

/// `cache`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: String,
}

/// `cache`, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    cache: String,
    outcome: &'static str,
}

/// `cache`, `builder` (empty for keys no builder holds), `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttestationLabels {
    cache: String,
    builder: String,
    status: &'static str,
}

/// `upstream`, `kind` (`narinfo` or `nar`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
    kind: &'static str,
}

/// `upstream`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamOnly {
    upstream: String,
}

/// `cache`, `source` (`store` or `upstream`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NarLabels {
    cache: String,
    source: &'static str,
}

/// `role`: what a replica of a set did about a cold NAR.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FleetLabels {
    role: &'static str,
}

/// What an upstream was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamKind {
    /// A `<hash>.narinfo`.
    Narinfo,
    /// A NAR (time to the response head).
    Nar,
}

impl UpstreamKind {
    fn label(self) -> &'static str {
        match self {
            UpstreamKind::Narinfo => "narinfo",
            UpstreamKind::Nar => "nar",
        }
    }
}

type Latency = Family<UpstreamLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The registry and every metric in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    narinfo_requests: Family<CacheLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    conflicts: Family<CacheLabels, Counter>,
    attestations: Family<AttestationLabels, Counter>,
    pushed_narinfos: Family<DecisionLabels, Counter>,
    upstream_seconds: Latency,
    upstream_errors: Family<UpstreamLabels, Counter>,
    nar_requests: Family<NarLabels, Counter>,
    nar_served_bytes: Family<CacheLabels, Counter>,
    nar_fetched_bytes: Family<UpstreamOnly, Counter>,
    nar_mismatches: Family<UpstreamOnly, Counter>,
    record_failures: Counter,
    nar_store_bytes: Gauge,
    outbox_records: Gauge,
    connections_refused: Counter,
    idle_connections_closed: Counter,
    fleet_claims: Family<FleetLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered under the `quorate_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("quorate");
        let m = Metrics {
            http_requests: Family::default(),
            narinfo_requests: Family::default(),
            decisions: Family::default(),
            conflicts: Family::default(),
            attestations: Family::default(),
            pushed_narinfos: Family::default(),
            upstream_seconds: Family::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
            nar_requests: Family::default(),
            nar_served_bytes: Family::default(),
            nar_fetched_bytes: Family::default(),
            nar_mismatches: Family::default(),
            record_failures: Counter::default(),
            nar_store_bytes: Gauge::default(),
            outbox_records: Gauge::default(),
            connections_refused: Counter::default(),
            idle_connections_closed: Counter::default(),
            fleet_claims: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            m.http_requests.clone(),
        );
        r.register(
            "narinfo_requests",
            "narinfo requests received",
            m.narinfo_requests.clone(),
        );
        r.register(
            "decisions",
            "quorum decisions recorded, by outcome",
            m.decisions.clone(),
        );
        r.register(
            "conflicts",
            "conflicts between trusted builders",
            m.conflicts.clone(),
        );
        r.register(
            "attestations",
            "signatures observed, by builder (empty: a key no builder holds) and verdict",
            m.attestations.clone(),
        );
        r.register(
            "pushed_narinfos",
            "narinfos builders pushed, by outcome (accepted, rejected; or the whole push \
             refused: malformed, too_large, rate_limited)",
            m.pushed_narinfos.clone(),
        );
        r.register(
            "upstream_request_duration_seconds",
            "time until an upstream answered (narinfo: in full; NAR: the response head)",
            m.upstream_seconds.clone(),
        );
        r.register(
            "upstream_errors",
            "upstream requests that failed (unreachable, timed out, bad answer, broken download)",
            m.upstream_errors.clone(),
        );
        r.register(
            "nar_requests",
            "NAR requests, by where the bytes came from (store: a hit; upstream: fetched)",
            m.nar_requests.clone(),
        );
        r.register(
            "nar_served_bytes",
            "NAR bytes sent to clients",
            m.nar_served_bytes.clone(),
        );
        r.register(
            "nar_fetched_bytes",
            "NAR bytes fetched, verified and stored, by the upstream that delivered them",
            m.nar_fetched_bytes.clone(),
        );
        r.register(
            "fleet_claims",
            "cold NARs in a replica set, by what this replica did: owner (downloaded it), \
             relay (streamed the owner's bytes), stored (found it stored meanwhile), alone \
             (no database: fetched without a lease)",
            m.fleet_claims.clone(),
        );
        r.register(
            "nar_mismatches",
            "upstream NARs rejected for a wrong hash, size or encoding",
            m.nar_mismatches.clone(),
        );
        r.register(
            "record_failures",
            "records that could not be written to the database (each is logged)",
            m.record_failures.clone(),
        );
        r.register(
            "nar_store_bytes",
            "bytes in the local NAR store",
            m.nar_store_bytes.clone(),
        );
        r.register(
            "outbox_records",
            "records waiting for the database",
            m.outbox_records.clone(),
        );
        r.register(
            "connections_refused",
            "client connections refused at the connection limit, every open one busy",
            m.connections_refused.clone(),
        );
        r.register(
            "idle_connections_closed",
            "idle client connections closed at the connection limit to admit new ones",
            m.idle_connections_closed.clone(),
        );
        Metrics { registry, ..m }
    }

    /// An HTTP answer on `route` (a fixed name: `narinfo`, `nar`, `api`, ...).
    pub fn http_request(&self, route: &'static str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels { route, status })
            .inc();
    }

    /// A narinfo request for `cache`.
    pub fn narinfo_request(&self, cache: &str) {
        self.narinfo_requests
            .get_or_create(&cache_labels(cache))
            .inc();
    }

    /// A decision recorded in `cache`.
    pub fn decided(&self, cache: &str, outcome: Outcome) {
        let labels = DecisionLabels {
            cache: cache.to_owned(),
            outcome: outcome.as_str(),
        };
        self.decisions.get_or_create(&labels).inc();
    }

    /// A conflict recorded in `cache`.
    pub fn conflict(&self, cache: &str) {
        self.conflicts.get_or_create(&cache_labels(cache)).inc();
    }

    /// A signature observed in `cache`.
    pub fn attestation(&self, cache: &str, builder: Option<&str>, status: SigStatus) {
        let labels = AttestationLabels {
            cache: cache.to_owned(),
            builder: builder.unwrap_or_default().to_owned(),
            status: status.as_str(),
        };
        self.attestations.get_or_create(&labels).inc();
    }

    /// `n` pushed narinfos in `cache` met `outcome` (a fixed set: see the registration).
    pub fn pushed(&self, cache: &str, outcome: &'static str, n: usize) {
        let labels = DecisionLabels {
            cache: cache.to_owned(),
            outcome,
        };
        self.pushed_narinfos.get_or_create(&labels).inc_by(n as u64);
    }

    /// An upstream answered (or failed to) after `elapsed`.
    pub fn upstream_answer(&self, upstream: &str, kind: UpstreamKind, elapsed: Duration, ok: bool) {
        let labels = UpstreamLabels {
            upstream: upstream.to_owned(),
            kind: kind.label(),
        };
        self.upstream_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.upstream_errors.get_or_create(&labels).inc();
        }
    }

    /// An upstream request that failed after it had started to answer (a NAR download that
    /// broke off or stalled).
    pub fn upstream_error(&self, upstream: &str, kind: UpstreamKind) {
        let labels = UpstreamLabels {
            upstream: upstream.to_owned(),
            kind: kind.label(),
        };
        self.upstream_errors.get_or_create(&labels).inc();
    }

    /// A NAR request in `cache`, answered from the store or by a fetch (started or joined).
    pub fn nar_request(&self, cache: &str, from_store: bool) {
        let labels = NarLabels {
            cache: cache.to_owned(),
            source: if from_store { "store" } else { "upstream" },
        };
        self.nar_requests.get_or_create(&labels).inc();
    }

    /// A replica of a set decided what to do about a cold NAR (`owner`, `relay`, `stored`,
    /// `alone`).
    pub fn fleet_claim(&self, role: &'static str) {
        self.fleet_claims.get_or_create(&FleetLabels { role }).inc();
    }

    /// NAR requests so far in `cache`, from the store or by a fetch.
    pub fn nar_requests(&self, cache: &str, from_store: bool) -> u64 {
        let labels = NarLabels {
            cache: cache.to_owned(),
            source: if from_store { "store" } else { "upstream" },
        };
        self.nar_requests.get(&labels).map_or(0, |c| c.get())
    }

    /// NAR bytes sent to a client of `cache`.
    pub fn nar_served(&self, cache: &str, bytes: u64) {
        self.nar_served_bytes
            .get_or_create(&cache_labels(cache))
            .inc_by(bytes);
    }

    /// A NAR of `bytes` fetched from `upstream`, verified and stored.
    pub fn nar_fetched(&self, upstream: &str, bytes: u64) {
        self.nar_fetched_bytes
            .get_or_create(&upstream_only(upstream))
            .inc_by(bytes);
    }

    /// `upstream` delivered a wrong NAR.
    pub fn nar_mismatch(&self, upstream: &str) {
        self.nar_mismatches
            .get_or_create(&upstream_only(upstream))
            .inc();
    }

    /// A record the database could not take, for good.
    pub fn record_failure(&self) {
        self.record_failures.inc();
    }

    /// Records that could not be written, so far.
    pub fn record_failures(&self) -> u64 {
        self.record_failures.get()
    }

    /// A client connection refused at the connection limit (every open one was busy).
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Client connections refused at the limit so far.
    pub fn connections_refused(&self) -> u64 {
        self.connections_refused.get()
    }

    /// An idle client connection closed at the connection limit to admit a new one.
    pub fn idle_connection_closed(&self) {
        self.idle_connections_closed.inc();
    }

    /// Idle client connections closed at the limit so far.
    pub fn idle_connections_closed(&self) -> u64 {
        self.idle_connections_closed.get()
    }

    /// Conflicts recorded in `cache` so far.
    pub fn conflicts(&self, cache: &str) -> u64 {
        self.conflicts
            .get(&cache_labels(cache))
            .map_or(0, |c| c.get())
    }

    /// The text exposition, with the gauges read now.
    pub fn encode(&self, nar_store_bytes: u64, outbox_records: usize) -> String {
        self.nar_store_bytes
            .set(i64::try_from(nar_store_bytes).unwrap_or(i64::MAX));
        self.outbox_records
            .set(i64::try_from(outbox_records).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn cache_labels(cache: &str) -> CacheLabels {
    CacheLabels {
        cache: cache.to_owned(),
    }
}

fn upstream_only(upstream: &str) -> UpstreamOnly {
    UpstreamOnly {
        upstream: upstream.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_counters_are_exported_with_the_quorate_prefix() {
        let m = Metrics::new();
        m.http_request("narinfo", 200);
        m.http_request("narinfo", 200);
        m.decided("nixos", Outcome::Accepted);
        m.attestation("nixos", None, SigStatus::UnknownKey);
        m.upstream_answer(
            "http://up",
            UpstreamKind::Narinfo,
            Duration::from_millis(3),
            false,
        );
        let text = m.encode(1024, 2);
        for line in [
            "quorate_http_requests_total{route=\"narinfo\",status=\"200\"} 2",
            "quorate_decisions_total{cache=\"nixos\",outcome=\"accepted\"} 1",
            "quorate_attestations_total{cache=\"nixos\",builder=\"\",status=\"unknown_key\"} 1",
            "quorate_upstream_errors_total{upstream=\"http://up\",kind=\"narinfo\"} 1",
            "quorate_upstream_request_duration_seconds_count{upstream=\"http://up\",kind=\"narinfo\"} 1",
            "quorate_nar_store_bytes 1024",
            "quorate_outbox_records 2",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}
