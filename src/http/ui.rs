//! The status page at `/` (also `/ui/`): server-rendered HTML and SVG, no JavaScript and no
//! build step. Nix and Guix never request `/`, so it never collides with a cache mounted
//! there (whose routes are `/<file>`, `/nar/...`, `/log/...`).
//!
//! Per cache: its builders, with a builder-by-builder agreement matrix drawn as a heat map;
//! recent decisions; the paths builders disagree about; upstream health with a latency chart;
//! keys seen that no builder holds. Then process-wide figures: hit ratio, store size, the
//! outbox.
//!
//! Architecture Invariant: every string that came from outside (upstream URLs and key names,
//! store paths, builder names from the config) goes through [`esc`] before it reaches the
//! page.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::HttpError;
use crate::app::App;
use crate::db::{Agreement, BuilderRecord, DecisionRecord};
use crate::served_cache::ServedCache;

/// Rows shown in the recent-decisions and conflicts tables.
const RECENT: u32 = 20;

/// `GET /` and `GET /ui/`.
pub async fn status(State(app): State<Arc<App>>) -> Result<Response, HttpError> {
    let mut page = String::with_capacity(32 * 1024);
    page.push_str(HEAD);
    let _ = writeln!(page, "<h1>quorate</h1>");
    for cache in &app.caches {
        cache_section(&mut page, &app, cache).await?;
    }
    totals(&mut page, &app);
    page.push_str("</body></html>\n");
    let mut resp = (StatusCode::OK, page).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Nothing on this page needs scripts, frames or foreign content.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

const HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>quorate status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }
h1 { margin: 0 0 .5em } h2 { border-bottom: 1px solid #ccc; margin-top: 1.5em }
table { border-collapse: collapse; margin: .5em 0 } td, th { padding: .2em .6em; text-align: left }
th { background: #f0f0f0 } tr:nth-child(even) td { background: #fafafa }
code { font-size: 12px } .bad { color: #b00020; font-weight: bold } .ok { color: #1b5e20 }
.policy { color: #555 } section { margin-bottom: 2em }
</style></head><body>
"#;

async fn cache_section(page: &mut String, app: &App, cache: &ServedCache) -> Result<(), HttpError> {
    let name = cache.name();
    let records = app.db.builder_records(name).await?;
    let agreements = app.db.agreements(name).await?;
    let decisions = app.db.recent_decisions(name, RECENT).await?;
    let conflicts = app.db.conflicts(name, RECENT, 0).await?;
    let unknown = app.db.unknown_keys(name, RECENT).await?;
    let mount = if cache.config.mount.is_empty() {
        "/"
    } else {
        &cache.config.mount
    };
    let _ = writeln!(
        page,
        r#"<section class="cache" data-cache="{n}"><h2>Cache {n} <small>({f}, at <code>{m}</code>)</small></h2>
<p class="policy">quorum {q} of {b} builder(s){w}, on dissent: {d}{x}; clients trust <code>{k}</code></p>"#,
        n = esc(name),
        f = cache.config.flavor.as_str(),
        m = esc(mount),
        q = cache.policy.quorum,
        b = cache.config.builders.len(),
        w = if cache.config.builders.iter().all(|b| b.weight == 1) {
            String::new()
        } else {
            let total: u64 = cache
                .config
                .builders
                .iter()
                .map(|b| u64::from(b.weight))
                .sum();
            format!(" of summed weight {total}")
        },
        x = match cache.policy.blocked.len() {
            0 => String::new(),
            n => format!("; {n} path(s) or NAR(s) blocked"),
        },
        d = esc(&format!("{:?}", cache.policy.on_dissent).to_lowercase()),
        k = esc(cache.front.public_key_text().trim()),
    );
    builders(page, cache, &records);
    matrix(page, cache, &agreements);
    recent_decisions(page, &decisions);
    let _ = writeln!(page, r#"<h3>Conflicts</h3>"#);
    if conflicts.is_empty() {
        let _ = writeln!(
            page,
            r#"<p class="ok">No path with disagreeing builders.</p>"#
        );
    } else {
        let _ = writeln!(
            page,
            r#"<table class="conflicts"><tr><th>path</th><th>who attested what</th><th>last seen</th></tr>"#
        );
        for c in &conflicts {
            let claims = app.db.valid_attestations(name, &c.hash_part).await?;
            let mut lines = String::new();
            let mut store_path = String::new();
            for a in claims.iter().filter(|a| a.builder.is_some()) {
                store_path.clone_from(&a.content.store_path);
                let _ = write!(
                    lines,
                    "{} → <code>{}</code> via {}<br>",
                    esc(a.builder.as_deref().unwrap_or_default()),
                    esc(&a.content.nar_hash.to_string()),
                    esc(&a.upstream)
                );
            }
            let _ = writeln!(
                page,
                r#"<tr class="conflict" data-hash-part="{h}"><td><code>{p}</code></td><td>{lines}</td><td>{t}</td></tr>"#,
                h = esc(c.hash_part.as_str()),
                p = esc(&store_path),
                t = time(c.last_seen),
            );
        }
        let _ = writeln!(page, "</table>");
    }
    upstreams(page, app, cache);
    if !unknown.is_empty() {
        let _ = writeln!(
            page,
            r#"<h3>Keys no builder holds</h3><table class="unknown-keys"><tr><th>key</th><th>upstream</th><th>signatures</th></tr>"#
        );
        for k in &unknown {
            let _ = writeln!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&k.key_name),
                esc(&k.upstream),
                k.count
            );
        }
        let _ = writeln!(page, "</table>");
    }
    let _ = writeln!(page, "</section>");
    Ok(())
}

fn builders(page: &mut String, cache: &ServedCache, records: &[BuilderRecord]) {
    let _ = writeln!(
        page,
        r#"<h3>Builders</h3><table class="builders"><tr><th>builder</th><th>weight</th><th>keys</th><th>valid</th><th>invalid</th><th>paths</th></tr>"#
    );
    for b in &cache.config.builders {
        let r = records.iter().find(|r| r.builder == b.name);
        let revoked = match b.revoked.len() {
            0 => String::new(),
            n => format!(" ({n} revoked)"),
        };
        let _ = writeln!(
            page,
            r#"<tr class="builder" data-builder="{n}"><td>{n}</td><td>{w}</td><td>{k}{revoked}</td><td>{v}</td><td>{i}</td><td>{p}</td></tr>"#,
            n = esc(&b.name),
            w = b.weight,
            k = b.keys.len(),
            v = r.map_or(0, |r| r.valid),
            i = r.map_or(0, |r| r.invalid),
            p = r.map_or(0, |r| r.paths),
        );
    }
    let _ = writeln!(page, "</table>");
}

/// The agreement matrix as an SVG heat map: green where two builders always agreed, red
/// where they never did, grey where they share no path.
fn matrix(page: &mut String, cache: &ServedCache, agreements: &[Agreement]) {
    let names: Vec<&str> = cache
        .config
        .builders
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    // Row labels to the left, column labels on top.
    let (cell, left, top) = (56usize, 110usize, 24usize);
    let (width, height) = (left + cell * names.len(), top + cell * names.len());
    let _ = writeln!(
        page,
        r#"<h3>Agreement</h3><svg class="matrix" role="img" aria-label="builder agreement matrix" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-size="12">"#
    );
    for (i, n) in names.iter().enumerate() {
        let _ = writeln!(
            page,
            r#"<text x="{}" y="{}" text-anchor="end">{n}</text><text x="{}" y="{}" text-anchor="middle">{n}</text>"#,
            left - 6,
            top + i * cell + cell / 2 + 4,
            left + i * cell + cell / 2,
            top - 8,
            n = esc(&short(n)),
        );
    }
    for (i, a) in names.iter().enumerate() {
        for (j, b) in names.iter().enumerate() {
            let (x, y) = (left + j * cell, top + i * cell);
            let found = agreements
                .iter()
                .find(|g| g.builder == *a && g.other == *b && g.shared > 0);
            let (fill, text, title) = match (i == j, found) {
                (true, _) => ("#e0e0e0".to_string(), "—".to_string(), "itself".to_string()),
                (false, Some(g)) => {
                    let rate = g.agreed as f64 / g.shared as f64;
                    (
                        heat(rate),
                        format!("{:.0}%", rate * 100.0),
                        format!("agreed on {} of {} shared paths", g.agreed, g.shared),
                    )
                }
                (false, None) => ("#f5f5f5".into(), "·".into(), "no shared path".into()),
            };
            let _ = writeln!(
                page,
                r##"<g class="cell" data-row="{ra}" data-col="{cb}"><title>{ra} / {cb}: {title}</title><rect x="{x}" y="{y}" width="{w}" height="{w}" fill="{fill}" stroke="#fff"/><text x="{tx}" y="{ty}" text-anchor="middle">{text}</text></g>"##,
                ra = esc(a),
                cb = esc(b),
                title = esc(&title),
                w = cell,
                tx = x + cell / 2,
                ty = y + cell / 2 + 4,
            );
        }
    }
    let _ = writeln!(page, "</svg>");
}

/// Red (0) through amber to green (1).
fn heat(rate: f64) -> String {
    let rate = rate.clamp(0.0, 1.0);
    let r = (220.0 * (1.0 - rate) + 40.0 * rate) as u8;
    let g = (60.0 * (1.0 - rate) + 170.0 * rate) as u8;
    format!("rgb({r},{g},70)")
}

fn recent_decisions(page: &mut String, decisions: &[DecisionRecord]) {
    let _ = writeln!(
        page,
        r#"<h3>Recent decisions</h3><table class="decisions"><tr><th>when</th><th>path</th><th>outcome</th><th>agreeing</th><th>dissenting</th></tr>"#
    );
    for d in decisions {
        let path = d
            .store_path
            .clone()
            .unwrap_or_else(|| d.hash_part.to_string());
        let class = match d.outcome.as_str() {
            "accepted" => "ok",
            _ => "bad",
        };
        let _ = writeln!(
            page,
            r#"<tr><td>{}</td><td><code>{}</code></td><td class="{class}">{}</td><td>{}</td><td>{}</td></tr>"#,
            time(d.decided_at),
            esc(&path),
            d.outcome,
            esc(&d.agreeing.join(", ")),
            esc(&d.dissenters.join(", ")),
        );
    }
    let _ = writeln!(page, "</table>");
}

/// Upstream health: a bar per upstream for its smoothed narinfo latency, and its failures.
fn upstreams(page: &mut String, app: &App, cache: &ServedCache) {
    let health: Vec<_> = cache
        .config
        .upstreams
        .iter()
        .map(|u| (u, app.upstream.health(&u.url)))
        .collect();
    let max = health
        .iter()
        .map(|(_, h)| h.latency_ms)
        .fold(1.0_f64, f64::max);
    let (row, width, label) = (22usize, 260.0, 300usize);
    let height = row * health.len().max(1) + 4;
    let _ = writeln!(
        page,
        r#"<h3>Upstreams</h3><svg class="latency" role="img" aria-label="upstream latency" width="{}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-size="12">"#,
        label + width as usize + 200
    );
    for (i, (u, h)) in health.iter().enumerate() {
        let y = i * row + 2;
        let bar = (h.latency_ms / max * width).max(1.0);
        let fill = if h.consecutive_failures > 0 {
            "#b00020"
        } else {
            "#3a7bd5"
        };
        let _ = writeln!(
            page,
            r#"<g class="upstream"><text x="{lx}" y="{ty}" text-anchor="end">{url}</text><rect x="{label}" y="{y}" width="{bar:.0}" height="{h}" fill="{fill}"/><text x="{vx:.0}" y="{ty}">{ms:.1} ms, {f} failure(s)</text></g>"#,
            lx = label - 6,
            ty = y + 14,
            url = esc(&u.url),
            h = row - 6,
            vx = label as f64 + bar + 6.0,
            ms = h.latency_ms,
            f = h.consecutive_failures,
        );
    }
    let _ = writeln!(page, "</svg>");
}

fn totals(page: &mut String, app: &App) {
    let m = &app.metrics;
    let names = app.caches.iter().map(|c| c.name());
    let (local, upstream, conflicts) = names.fold((0, 0, 0), |(l, u, c), name| {
        (
            l + m.nar_requests(name, true),
            u + m.nar_requests(name, false),
            c + m.conflicts(name),
        )
    });
    let hit = if local + upstream > 0 {
        format!("{:.0}%", 100.0 * local as f64 / (local + upstream) as f64)
    } else {
        "n/a".into()
    };
    let _ = writeln!(
        page,
        r#"<section class="totals"><h2>This process</h2><table>
<tr><td>NAR hit ratio (served from the local store)</td><td class="hit-ratio">{hit} ({local} of {total})</td></tr>
<tr><td>NAR store</td><td>{store:.1} MiB</td></tr>
<tr><td>conflicts since start</td><td>{conflicts}</td></tr>
<tr><td>records waiting for the database</td><td>{outbox}</td></tr>
<tr><td>records that could not be written</td><td>{rf}</td></tr>
</table><p>More at <a href="/metrics">/metrics</a>.</p></section>"#,
        total = local + upstream,
        store = app.fetcher.storage().local_size() as f64 / 1048576.0,
        outbox = app.outbox.len(),
        rf = m.record_failures(),
    );
}

/// A builder name short enough for a matrix label.
fn short(name: &str) -> String {
    let mut s: String = name.chars().take(14).collect();
    if name.chars().count() > 14 {
        s.push('…');
    }
    s
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// HTML-escapes text for element content and attribute values alike.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_upstream_text_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn times_render_as_utc_dates() {
        assert_eq!(time(0), "1970-01-01 00:00:00");
        assert_eq!(time(1_795_957_168_580), "2026-11-29 12:59:28");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00");
    }
}
