//! What the cost examples share (`#[path = "support/mod.rs"] mod support;`): the database's
//! size and catching the transparency log up.

use quorate::app::App;
use quorate::served_cache::ServedCache;
use sqlx::Connection;

/// The database's size in bytes now (SQLite: pages in use after a WAL checkpoint;
/// PostgreSQL: `pg_database_size`).
pub async fn db_bytes(app: &App) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let url = &app.config.database_url;
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let (n,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
            .fetch_one(&mut conn)
            .await?;
        return Ok(n.max(0) as u64);
    }
    let _ = app.db.ping().await;
    let mut conn = sqlx::SqliteConnection::connect(url).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    let mut values = [0i64; 3];
    for (value, pragma) in values
        .iter_mut()
        .zip(["page_count", "freelist_count", "page_size"])
    {
        (*value,) = sqlx::query_as(&format!("PRAGMA {pragma}"))
            .fetch_one(&mut conn)
            .await?;
    }
    let [pages, free, page] = values;
    Ok(((pages - free) * page).max(0) as u64)
}

/// Runs the log appender until it has nothing left; returns the entries appended.
pub async fn catch_up_log(
    app: &App,
    cache: &ServedCache,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let mut entries = 0;
    loop {
        let n = quorate::append::append(app, cache).await?;
        if n == 0 {
            return Ok(entries);
        }
        entries += n;
    }
}
