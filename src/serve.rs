//! Serving until told to stop, then stopping cleanly.
//!
//! On SIGTERM or SIGINT:
//! 1. stop accepting connections and let open ones finish, for at most
//!    [`SHUTDOWN_GRACE`];
//! 2. signal background work to wind down and wait, again at most [`SHUTDOWN_GRACE`], for
//!    NAR fetches to commit (or clean up) and late upstream answers to be recorded;
//! 3. record the last evictions and close the database.
//!
//! A second signal is not needed: the bounds guarantee the process exits.

use std::future::{Future, IntoFuture};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::app::App;
use crate::limits::SHUTDOWN_GRACE;
use crate::record;

/// Serves `app` on `listener` until SIGINT/SIGTERM, then shuts down as described above.
pub async fn serve(app: Arc<App>, listener: TcpListener) -> std::io::Result<()> {
    serve_until(app, listener, shutdown_signal()).await
}

/// [`serve`], stopping when `stop` resolves instead of on a signal.
pub async fn serve_until(
    app: Arc<App>,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    app.background.spawn(record::follow_evictions(app.clone()));
    app.background.spawn(record::flush_outbox(app.clone()));
    let stopping = Arc::new(Notify::new());
    let server = {
        let stopping = stopping.clone();
        axum::serve(listener, crate::http::router(app.clone()))
            .with_graceful_shutdown(async move {
                stop.await;
                tracing::info!("shutting down: no new connections");
                stopping.notify_one();
            })
            .into_future()
    };
    let connections_closed = tokio::select! {
        result = server => { result?; true }
        () = async { stopping.notified().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => false,
    };
    if !connections_closed {
        tracing::warn!("client connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    let left = app.background.drain(SHUTDOWN_GRACE).await;
    if left > 0 {
        tracing::warn!(
            "{left} background task(s) still running after {SHUTDOWN_GRACE:?}; exiting anyway"
        );
    }
    record::evictions(&app).await;
    app.db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); stopping on SIGINT only");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
