//! Serving until told to stop, then stopping cleanly; and keeping clients from holding
//! connections without making progress.
//!
//! Connections speak HTTP/1.1 only (hyper's `http1` server, no h2c): Nix and Guix speak
//! nothing else, and a second protocol would be one more parser facing the network, with
//! timeouts of its own to get right. For each connection:
//! - a client has [`REQUEST_HEAD_TIMEOUT`], from connecting or from the end of its previous
//!   answer, to send a whole request head. hyper (≥ 1.6) starts this one timer for both
//!   waits, so it is the header-read timeout and the keep-alive idle timeout at once;
//! - an answer that makes no progress for [`CLIENT_WRITE_STALL_TIMEOUT`] because the client
//!   stopped reading ends the connection ([`ClientStream`]): hyper has no write timeout.
//!
//! On SIGTERM or SIGINT:
//! 1. stop accepting connections and let open ones finish, for at most
//!    [`SHUTDOWN_GRACE`];
//! 2. signal background work to wind down and wait, again at most [`SHUTDOWN_GRACE`], for
//!    NAR fetches to commit (or clean up) and late upstream answers to be recorded;
//! 3. record the last evictions and close the database.
//!
//! A second signal is not needed: the bounds guarantee the process exits.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::app::App;
use crate::limits::{CLIENT_WRITE_STALL_TIMEOUT, REQUEST_HEAD_TIMEOUT, SHUTDOWN_GRACE};
use crate::record;

/// How long the accept loop pauses after an `accept` error other than a connection that
/// broke on its way in (e.g. out of file descriptors): the pending connections wait in the
/// backlog instead of the loop spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until SIGINT/SIGTERM, then shuts down as described above.
pub async fn serve(app: Arc<App>, listener: TcpListener) -> io::Result<()> {
    serve_until(app, listener, shutdown_signal()).await
}

/// [`serve`], stopping when `stop` resolves instead of on a signal.
pub async fn serve_until(
    app: Arc<App>,
    listener: TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    app.background.spawn(record::follow_evictions(app.clone()));
    app.background.spawn(record::flush_outbox(app.clone()));
    let router = crate::http::router(app.clone());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(REQUEST_HEAD_TIMEOUT);
    // Graceful: each connection finishes its request in progress, then closes.
    let stopping = CancellationToken::new();
    // Abrupt: every connection closes now (the grace ran out).
    let closing = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut stop = pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!("accepting a client connection failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let service = ConnectionService {
            router: router.clone(),
        };
        let conn = http.serve_connection(TokioIo::new(ClientStream::new(stream)), service);
        tracker.spawn(run_connection(conn, stopping.clone(), closing.clone()));
    }
    tracing::info!("shutting down: no new connections");
    drop(listener);
    stopping.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("client connections still open after {SHUTDOWN_GRACE:?}; closing them");
        closing.cancel();
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

/// Drives one connection until it ends or the process stops.
async fn run_connection(
    conn: http1::Connection<TokioIo<ClientStream>, ConnectionService>,
    stopping: CancellationToken,
    closing: CancellationToken,
) {
    let mut conn = pin!(conn);
    let mut winding_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    // Timeouts, resets and malformed requests: the client's business.
                    tracing::debug!("client connection ended: {e}");
                }
                break;
            }
            () = stopping.cancelled(), if !winding_down => {
                conn.as_mut().graceful_shutdown();
                winding_down = true;
            }
            () = closing.cancelled() => break,
        }
    }
}

/// Whether an `accept` error concerns only the connection being accepted (it broke on its
/// way in), so the next one can be accepted at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

// ---------------------------------------------------------------- one connection

/// The router, seen by hyper for one connection.
#[derive(Clone)]
struct ConnectionService {
    router: Router,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        Box::pin(self.router.clone().oneshot(request))
    }
}

/// A client's socket whose writes fail once they have made no progress for
/// [`CLIENT_WRITE_STALL_TIMEOUT`]: the client stopped reading (or vanished without a reset),
/// and its connection must not be held for ever.
struct ClientStream {
    tcp: TcpStream,
    /// Armed when a write is refused (the send buffer is full), disarmed by any progress.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: bool,
}

impl ClientStream {
    fn new(tcp: TcpStream) -> ClientStream {
        ClientStream {
            tcp,
            stall: None,
            stalled: false,
        }
    }

    /// A write made no progress: starts the stall clock if it is not running, and fails
    /// once it has run out. The clock's waker wakes the connection, which writes again.
    fn write_pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = tokio::time::Instant::now() + CLIENT_WRITE_STALL_TIMEOUT;
        let clock = match (&mut self.stall, self.stalled) {
            (Some(clock), true) => clock,
            (Some(clock), false) => {
                clock.as_mut().reset(deadline);
                clock
            }
            (slot @ None, _) => slot.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.stalled = true;
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {CLIENT_WRITE_STALL_TIMEOUT:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn wrote<T>(&mut self, done: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match done {
            Poll::Pending => self.write_pending(cx),
            done => {
                self.stalled = false;
                done
            }
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.wrote(done, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.wrote(done, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
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
