//! Serving until told to stop, then stopping cleanly; and keeping clients from exhausting the
//! process while serving.
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
//! At most `max_connections` are open at once, and never more than the open-file limit
//! leaves room for ([`connection_limit`]); [`raise_open_file_limit`] first lifts the soft limit
//! to the hard one. At the limit, the connection idle the longest (no request in progress for
//! [`IDLE_BEFORE_CLOSABLE`]) is closed to admit the new one, as nginx reuses keep-alive
//! connections: silent connections cannot lock clients out. If every connection is busy, the
//! new one is refused (closed at once). Both are counted in `/metrics` and logged at most
//! every [`CONNECTION_WARNING_INTERVAL`].
//!
//! On SIGTERM or SIGINT:
//! 1. stop accepting connections and let open ones finish, for at most
//!    [`SHUTDOWN_GRACE`];
//! 2. signal background work to wind down and wait, again at most [`SHUTDOWN_GRACE`], for
//!    NAR fetches to commit (or clean up) and late upstream answers to be recorded;
//! 3. record the last evictions and close the database.
//!
//! A second signal is not needed: the bounds guarantee the process exits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::app::App;
use crate::append;
use crate::changes;
use crate::evict;
use crate::limits::{
    CLIENT_WRITE_STALL_TIMEOUT, CONNECTION_WARNING_INTERVAL, DEFAULT_MAX_CONNECTIONS,
    FDS_PER_CONNECTION, FD_RESERVE, IDLE_BEFORE_CLOSABLE, REQUEST_HEAD_TIMEOUT, SHUTDOWN_GRACE,
};
use crate::metrics::Metrics;
use crate::peers;
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
    app.background.spawn(changes::follow_changes(app.clone()));
    app.background.spawn(evict::evict_objects(app.clone()));
    app.background.spawn(append::follow(app.clone()));
    app.background.spawn(peers::follow(app.clone()));
    let open_files = open_file_limit().ok().map(|l| l.soft);
    let limit = connection_limit(app.config.max_connections, open_files);
    match (app.config.max_connections, open_files) {
        (Some(wanted), Some(files)) if wanted > limit => tracing::warn!(
            "max_connections = {wanted}, but the open-file limit ({files}) leaves room for \
             {limit}: serving at most {limit} connections (raise LimitNOFILE / ulimit -n)"
        ),
        (_, Some(files)) => tracing::info!(
            "serving at most {limit} client connections at once (open-file limit {files})"
        ),
        (_, None) => tracing::info!("serving at most {limit} client connections at once"),
    }
    let connections = Arc::new(Connections::new(limit));
    let router = crate::http::router(app.clone());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(REQUEST_HEAD_TIMEOUT);
    // Graceful: each connection finishes its request in progress, then closes.
    let stopping = CancellationToken::new();
    // Abrupt: every connection closes now (the grace ran out). Each connection's own token
    // is a child of this one, cancelled alone to close an idle connection at the limit.
    let closing = CancellationToken::new();
    let tracker = TaskTracker::new();
    let accept_errors = Throttle::default();
    let mut stop = pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer),
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    if let Some(n) = accept_errors.note() {
                        tracing::error!("accepting client connections fails ({n} time(s) \
                                         since the last report): {e}");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Some(admitted) = connections.admit(&closing, &app.metrics) else {
            drop(stream); // refused: every connection is busy
            continue;
        };
        let service = ConnectionService {
            router: router.clone(),
            state: admitted.state.clone(),
            peer,
        };
        let conn = http.serve_connection(TokioIo::new(ClientStream::new(stream)), service);
        tracker.spawn(run_connection(conn, admitted, stopping.clone()));
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

/// Drives one connection until it ends, the process stops, or it is closed to make room.
async fn run_connection(
    conn: http1::Connection<TokioIo<ClientStream>, ConnectionService>,
    admitted: Admitted,
    stopping: CancellationToken,
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
            () = admitted.state.close.cancelled() => break,
        }
    }
    drop(admitted);
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

// ---------------------------------------------------------------- the connection limit

/// How many client connections may be open at once: `configured` (`max_connections`) or
/// [`DEFAULT_MAX_CONNECTIONS`], and never more than `open_files` (the soft open-file limit,
/// if known) leaves room for after [`FD_RESERVE`], at [`FDS_PER_CONNECTION`] each.
pub fn connection_limit(configured: Option<usize>, open_files: Option<u64>) -> usize {
    let wanted = configured.unwrap_or(DEFAULT_MAX_CONNECTIONS).max(1);
    let by_files = open_files.map_or(usize::MAX, |n| {
        let room = n.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION;
        usize::try_from(room).unwrap_or(usize::MAX).max(1)
    });
    wanted.min(by_files)
}

/// The open client connections, and the limit on them.
struct Connections {
    limit: usize,
    /// The zero of every connection's idle clock.
    epoch: Instant,
    next_id: AtomicU64,
    /// Open connections by id. std Mutex: held only for a map operation (and, at the limit,
    /// one scan of the map), never across an `.await`.
    open: Mutex<HashMap<u64, Arc<ConnectionState>>>,
    /// Connections refused or closed at the limit, reported at most every
    /// [`CONNECTION_WARNING_INTERVAL`].
    at_limit: Mutex<LimitReport>,
}

/// What happened at the limit since the last warning.
#[derive(Default)]
struct LimitReport {
    last: Option<Instant>,
    closed_idle: u64,
    refused: u64,
}

/// One open connection, as the limit sees it.
struct ConnectionState {
    /// The zero of `idle_since_ms`.
    epoch: Instant,
    /// Requests whose answer is not finished. hyper serves an HTTP/1.1 connection's
    /// (pipelined) requests one at a time, so 0 or 1.
    requests_in_progress: AtomicUsize,
    /// When the last answer finished, or the connection was accepted: milliseconds after
    /// `epoch`.
    idle_since_ms: AtomicU64,
    /// Cancelled to close this connection at once.
    close: CancellationToken,
}

impl ConnectionState {
    /// A connection accepted at `now_ms` (after `epoch`), idle since then.
    fn new(epoch: Instant, now_ms: u64, close: CancellationToken) -> ConnectionState {
        ConnectionState {
            epoch,
            requests_in_progress: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now_ms),
            close,
        }
    }

    /// The idle clock's start if the connection has been idle long enough to be closed at
    /// the limit (at `now_ms`), else `None`.
    fn closable_since(&self, now_ms: u64) -> Option<u64> {
        if self.requests_in_progress.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.idle_since_ms.load(Ordering::Acquire);
        let idle = Duration::from_millis(now_ms.saturating_sub(since));
        (idle >= IDLE_BEFORE_CLOSABLE).then_some(since)
    }
}

/// A connection admitted under the limit; leaves the table when dropped.
struct Admitted {
    connections: Arc<Connections>,
    id: u64,
    state: Arc<ConnectionState>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        lock(&self.connections.open).remove(&self.id);
    }
}

impl Connections {
    fn new(limit: usize) -> Connections {
        Connections {
            limit,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            at_limit: Mutex::new(LimitReport::default()),
        }
    }

    /// Admits a new connection, closing the longest-idle one at the limit; `None` (refused)
    /// if the limit is reached and no connection is idle.
    fn admit(self: &Arc<Self>, closing: &CancellationToken, metrics: &Metrics) -> Option<Admitted> {
        self.admit_at(millis_since(self.epoch), closing, metrics)
    }

    /// [`Connections::admit`] at `now_ms` (after `epoch`).
    fn admit_at(
        self: &Arc<Self>,
        now_ms: u64,
        closing: &CancellationToken,
        metrics: &Metrics,
    ) -> Option<Admitted> {
        let mut open = lock(&self.open);
        let mut closed_idle = false;
        if open.len() >= self.limit {
            let idlest = open
                .iter()
                .filter_map(|(id, c)| c.closable_since(now_ms).map(|since| (since, *id)))
                .min();
            match idlest.and_then(|(_, id)| open.remove(&id)) {
                Some(idle) => {
                    idle.close.cancel();
                    closed_idle = true;
                }
                None => {
                    drop(open);
                    metrics.connection_refused();
                    self.report(false);
                    return None;
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnectionState::new(
            self.epoch,
            now_ms,
            closing.child_token(),
        ));
        open.insert(id, state.clone());
        drop(open);
        if closed_idle {
            metrics.idle_connection_closed();
            self.report(true);
        }
        Some(Admitted {
            connections: self.clone(),
            id,
            state,
        })
    }

    /// Counts a connection closed (`closed_idle`) or refused at the limit; warns when the
    /// last warning is old enough.
    fn report(&self, closed_idle: bool) {
        let mut r = lock(&self.at_limit);
        if closed_idle {
            r.closed_idle += 1;
        } else {
            r.refused += 1;
        }
        let due = r
            .last
            .is_none_or(|t| t.elapsed() >= CONNECTION_WARNING_INTERVAL);
        if !due {
            return;
        }
        let (closed_idle, refused) = (r.closed_idle, r.refused);
        *r = LimitReport {
            last: Some(Instant::now()),
            ..LimitReport::default()
        };
        drop(r);
        tracing::warn!(
            "at the connection limit ({}): closed {closed_idle} idle connection(s) to admit new \
             ones and refused {refused} while every connection was busy, since the last report; \
             raise the open-file limit (LimitNOFILE) or max_connections if clients need more",
            self.limit
        );
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Locks a std mutex; a panic elsewhere while it was held leaves a map that is still sound.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A report at most every [`CONNECTION_WARNING_INTERVAL`] of a recurring failure.
#[derive(Default)]
struct Throttle(Mutex<(Option<Instant>, u64)>);

impl Throttle {
    /// Counts one failure; `Some(count since the last report)` when a report is due.
    fn note(&self) -> Option<u64> {
        let mut g = lock(&self.0);
        g.1 += 1;
        if g.0
            .is_some_and(|t| t.elapsed() < CONNECTION_WARNING_INTERVAL)
        {
            return None;
        }
        let n = g.1;
        *g = (Some(Instant::now()), 0);
        Some(n)
    }
}

// ---------------------------------------------------------------- one connection

/// The router, seen by hyper for one connection: marks the connection busy from a request's
/// head until its answer's body is finished (or dropped).
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    state: Arc<ConnectionState>,
    /// The client's address, put on each request (`ConnectInfo`) for the routes that count
    /// per client (pushed attestations' rate limit, their `push:<address>` mark).
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let busy = Busy::new(self.state.clone());
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let answer = self.router.clone().oneshot(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| TrackedBody { body, _busy: busy }))
        })
    }
}

/// A request in progress on its connection.
struct Busy(Arc<ConnectionState>);

impl Busy {
    fn new(state: Arc<ConnectionState>) -> Busy {
        state.requests_in_progress.fetch_add(1, Ordering::AcqRel);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let s = &self.0;
        s.idle_since_ms
            .store(millis_since(s.epoch), Ordering::Release);
        s.requests_in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body, holding its connection busy until it is finished or dropped.
pub struct TrackedBody {
    body: Body,
    _busy: Busy,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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

// ---------------------------------------------------------------- the open-file limit

/// The process's open-file limit (`RLIMIT_NOFILE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The limit in force.
    pub soft: u64,
    /// How far the process may raise it.
    pub hard: u64,
}

/// The current open-file limit.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux and macOS, i64 on some BSDs
pub fn open_file_limit() -> io::Result<OpenFileLimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live, owned value.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFileLimit {
        soft: rl.rlim_cur as u64,
        hard: rl.rlim_max as u64,
    })
}

/// Raises the soft open-file limit to the hard one, as every connection costs a file
/// descriptor and systemd starts services at 1024 (soft) of 524288 (hard). Logs the outcome.
pub fn raise_open_file_limit() {
    let before = match open_file_limit() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit: {e}");
            return;
        }
    };
    if before.soft >= before.hard {
        tracing::info!("open-file limit: {} (the hard limit)", before.soft);
        return;
    }
    let rl = libc::rlimit {
        rlim_cur: before.hard as libc::rlim_t,
        rlim_max: before.hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads one `rlimit` through a pointer to a live, owned value.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
        tracing::warn!(
            "open-file limit stays {}: raising it to the hard limit {} failed: {}",
            before.soft,
            before.hard,
            io::Error::last_os_error()
        );
        return;
    }
    tracing::info!(
        "open-file limit raised from {} to {}",
        before.soft,
        before.hard
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_leaves_file_descriptors_for_the_rest() {
        // 256 files: (256 - 64) / 3.
        assert_eq!(connection_limit(None, Some(256)), 64);
        assert_eq!(connection_limit(Some(10), Some(256)), 10);
        assert_eq!(connection_limit(Some(1000), Some(256)), 64);
        // Plenty of files: the default, or what the operator asked for.
        assert_eq!(
            connection_limit(None, Some(524_288)),
            DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(connection_limit(Some(20_000), Some(524_288)), 20_000);
        assert_eq!(connection_limit(None, None), DEFAULT_MAX_CONNECTIONS);
        // Never zero, however few files.
        assert_eq!(connection_limit(None, Some(10)), 1);
    }

    fn table(limit: usize) -> Arc<Connections> {
        Arc::new(Connections::new(limit))
    }

    fn idle_since(c: &Admitted, ms: u64) {
        c.state.idle_since_ms.store(ms, Ordering::Release);
    }

    #[test]
    fn at_the_limit_the_longest_idle_connection_makes_room() {
        let (conns, closing, metrics) = (table(2), CancellationToken::new(), Metrics::default());
        let a = conns.admit_at(0, &closing, &metrics).expect("a");
        let b = conns.admit_at(0, &closing, &metrics).expect("b");
        idle_since(&a, 1_000);
        idle_since(&b, 5_000);
        let c = conns
            .admit_at(10_000, &closing, &metrics)
            .expect("c is admitted");
        assert!(a.state.close.is_cancelled(), "a, idle longest, is closed");
        assert!(!b.state.close.is_cancelled() && !c.state.close.is_cancelled());
        assert_eq!(metrics.idle_connections_closed(), 1);
        assert_eq!(lock(&conns.open).len(), 2);
        drop(a); // its task ends; the table is unchanged (a already left it)
        assert_eq!(lock(&conns.open).len(), 2);
    }

    #[test]
    fn at_the_limit_busy_and_fresh_connections_are_kept_and_the_new_one_refused() {
        let (conns, closing, metrics) = (table(2), CancellationToken::new(), Metrics::default());
        let busy = conns.admit_at(0, &closing, &metrics).expect("busy");
        let request = Busy::new(busy.state.clone());
        // Accepted half a second before the next one: not idle long enough to be closed.
        let fresh = conns.admit_at(9_500, &closing, &metrics).expect("fresh");
        assert!(conns.admit_at(10_000, &closing, &metrics).is_none());
        assert!(!busy.state.close.is_cancelled() && !fresh.state.close.is_cancelled());
        assert_eq!(metrics.connections_refused(), 1);
        // The answer finished long ago now: busy has become the idle one.
        drop(request);
        idle_since(&busy, 0);
        assert!(conns.admit_at(10_000, &closing, &metrics).is_some());
        assert!(busy.state.close.is_cancelled() && !fresh.state.close.is_cancelled());
    }

    #[test]
    fn closing_everything_reaches_every_connection() {
        let (conns, closing, metrics) = (table(4), CancellationToken::new(), Metrics::default());
        let a = conns.admit(&closing, &metrics).expect("a");
        let b = conns.admit(&closing, &metrics).expect("b");
        closing.cancel();
        assert!(a.state.close.is_cancelled() && b.state.close.is_cancelled());
    }
}
