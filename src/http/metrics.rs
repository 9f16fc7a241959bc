//! `GET /metrics`: the counters in Prometheus' text format.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::error::text;
use crate::app::App;

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let m = &app.metrics;
    let mut out = String::new();
    let counters = [
        (
            "narinfo_requests_total",
            "narinfo requests received",
            m.narinfo_requests.get(),
        ),
        (
            "decisions_accepted_total",
            "resolutions that accepted a content",
            m.narinfo_accepted.get(),
        ),
        (
            "decisions_refused_total",
            "resolutions refused for a conflict",
            m.narinfo_refused.get(),
        ),
        (
            "decisions_insufficient_total",
            "resolutions without enough agreeing builders",
            m.narinfo_insufficient.get(),
        ),
        (
            "nar_local_total",
            "NAR requests served from the local store",
            m.nar_local.get(),
        ),
        (
            "nar_upstream_total",
            "NAR requests that started or joined an upstream fetch",
            m.nar_upstream.get(),
        ),
        (
            "nar_fetched_bytes_total",
            "NAR bytes verified and committed from upstreams",
            m.nar_bytes_fetched.get(),
        ),
        (
            "nar_mismatches_total",
            "upstream NARs rejected for wrong hash or size",
            m.nar_mismatches.get(),
        ),
        (
            "upstream_failures_total",
            "failed upstream requests",
            m.upstream_failures.get(),
        ),
        (
            "conflicts_total",
            "conflicts between trusted builders",
            m.conflicts.get(),
        ),
        (
            "record_failures_total",
            "records that could not be written to the database (each is logged)",
            m.record_failures.get(),
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP quorate_{name} {help}");
        let _ = writeln!(out, "# TYPE quorate_{name} counter");
        let _ = writeln!(out, "quorate_{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP quorate_nar_store_bytes bytes in the local NAR store"
    );
    let _ = writeln!(out, "# TYPE quorate_nar_store_bytes gauge");
    let _ = writeln!(
        out,
        "quorate_nar_store_bytes {}",
        app.fetcher.store().total_size()
    );
    text(StatusCode::OK, &out, None)
}
