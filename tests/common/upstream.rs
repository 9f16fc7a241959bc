//! Upstream binary caches for tests: real HTTP servers (axum on 127.0.0.1:0) serving the files
//! of a real Nix-made cache directory, or a fixed map of URL paths to bytes as a
//! guix-publish-style server answers them, 404 for what is not there. Knobs let a test make
//! one slow or silent, and counters tell what quorate asked for and what it was answered.
//!
//! The servers run on the shared support runtime, whatever runtime (if any) starts them.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;

use super::runtime;

/// How an upstream answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Answers at once.
    Normal,
    /// Waits this long before answering any request.
    Delay(Duration),
    /// Accepts the connection and the request, then never answers (a dead upstream that
    /// still holds its port).
    Hang,
}

/// What happened to the requests for one URL path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Requests received (any method).
    pub requests: u64,
    /// Requests answered (the response head was handed to the connection).
    pub answered: u64,
    /// Requests answered 200.
    pub ok: u64,
    /// Requests received but not answered yet (delayed or hanging).
    pub pending: u64,
}

/// What a server serves.
enum Files {
    /// The files of a cache directory, answered as a Nix binary cache host does.
    Dir(PathBuf),
    /// URL path → bytes, answered as `guix publish` does (its content types, its 404 text).
    Memory(BTreeMap<String, Bytes>),
}

struct ServerState {
    files: Files,
    /// Read at each request, so a test can change it while the server runs.
    behavior: Mutex<Behavior>,
    /// Per URL path (no query). std Mutex: never held across an `.await`.
    stats: Mutex<BTreeMap<String, PathStats>>,
}

/// An HTTP server serving one cache. Stops accepting connections when dropped.
pub struct UpstreamServer {
    url: String,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl UpstreamServer {
    /// Serves `root` with no delay.
    pub fn serve(root: impl AsRef<Path>) -> UpstreamServer {
        UpstreamServer::serve_with(root, Behavior::Normal)
    }

    /// Serves `root`, answering as `behavior` says.
    pub fn serve_with(root: impl AsRef<Path>, behavior: Behavior) -> UpstreamServer {
        let root = root.as_ref().to_path_buf();
        assert!(root.is_dir(), "no cache directory at {}", root.display());
        UpstreamServer::start(Files::Dir(root), behavior)
    }

    /// Serves `files` (URL path → bytes) as a guix-publish-style server, with no delay.
    pub fn serve_files(files: BTreeMap<String, Bytes>) -> UpstreamServer {
        UpstreamServer::start(Files::Memory(files), Behavior::Normal)
    }

    fn start(files: Files, behavior: Behavior) -> UpstreamServer {
        let state = Arc::new(ServerState {
            files,
            behavior: Mutex::new(behavior),
            stats: Mutex::new(BTreeMap::new()),
        });
        // Bound here, handed to the support runtime there: no runtime is needed on this
        // thread, and connections wait in the backlog until the server task runs.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .expect("binding an upstream test server");
        let addr = listener.local_addr().expect("upstream server address");
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&state));
        let task = runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)
                .expect("registering an upstream test server");
            let _ = axum::serve(listener, app).await;
        });
        UpstreamServer {
            url: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// Base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory served (a server of in-memory files has none).
    pub fn root(&self) -> &Path {
        match &self.state.files {
            Files::Dir(root) => root,
            Files::Memory(_) => panic!("{} serves files from memory, not a directory", self.url),
        }
    }

    /// Changes how later requests are answered.
    pub fn set_behavior(&self, behavior: Behavior) {
        *lock(&self.state.behavior) = behavior;
    }

    /// What happened to requests for `path` (e.g. `/<hash>.narinfo`).
    pub fn stats(&self, path: &str) -> PathStats {
        lock(&self.state.stats)
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Requests received for `path`.
    pub fn requests(&self, path: &str) -> u64 {
        self.stats(path).requests
    }

    /// Every path requested so far, with its counters.
    pub fn all_stats(&self) -> BTreeMap<String, PathStats> {
        lock(&self.state.stats).clone()
    }

    /// Requests received for NAR files (`/nar/...`), all paths together.
    pub fn nar_requests(&self) -> u64 {
        lock(&self.state.stats)
            .iter()
            .filter(|(p, _)| p.starts_with("/nar/"))
            .map(|(_, s)| s.requests)
            .sum()
    }
}

impl Drop for UpstreamServer {
    fn drop(&mut self) {
        // Stops the accept loop; connections already open end with their requests.
        self.task.abort();
    }
}

/// Counts a request as pending until it is answered or abandoned.
struct Pending {
    state: Arc<ServerState>,
    path: String,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(s) = lock(&self.state.stats).get_mut(&self.path) {
            s.pending -= 1;
        }
    }
}

async fn answer(State(state): State<Arc<ServerState>>, method: Method, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    {
        let mut stats = lock(&state.stats);
        let s = stats.entry(path.clone()).or_default();
        s.requests += 1;
        s.pending += 1;
    }
    let pending = Pending {
        state: Arc::clone(&state),
        path: path.clone(),
    };
    let behavior = *lock(&state.behavior);
    match behavior {
        Behavior::Normal => {}
        Behavior::Delay(d) => tokio::time::sleep(d).await,
        Behavior::Hang => std::future::pending::<()>().await,
    }
    let head = method == Method::HEAD;
    let response = match &state.files {
        Files::Dir(root) => file_response(root, &path, head).await,
        Files::Memory(files) => memory_response(files, &path, head),
    };
    {
        let mut stats = lock(&state.stats);
        let s = stats.entry(path).or_default();
        s.answered += 1;
        if response.status() == StatusCode::OK {
            s.ok += 1;
        }
    }
    drop(pending);
    response
}

async fn file_response(root: &Path, url_path: &str, head: bool) -> Response {
    let rel = Path::new(url_path.trim_start_matches('/'));
    let safe = rel.components().all(|c| matches!(c, Component::Normal(_)));
    let file = root.join(rel);
    let meta = match tokio::fs::metadata(&file).await {
        Ok(m) if safe && m.is_file() => m,
        _ => return plain(StatusCode::NOT_FOUND, "404 not found\n"),
    };
    let content_type = if url_path.ends_with(".narinfo") {
        "text/x-nix-narinfo"
    } else if url_path.ends_with("nix-cache-info") {
        "text/x-nix-cache-info"
    } else {
        "application/octet-stream"
    };
    let body = if head {
        Body::empty()
    } else {
        match tokio::fs::File::open(&file).await {
            // 256 KiB reads: the default 4 KiB would make this server, not quorate, the
            // bottleneck of the 100 MiB transfers the stories compare.
            Ok(f) => Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 256 << 10)),
            Err(_) => return plain(StatusCode::NOT_FOUND, "404 not found\n"),
        }
    };
    ok(content_type, meta.len(), body)
}

fn memory_response(files: &BTreeMap<String, Bytes>, path: &str, head: bool) -> Response {
    let Some(bytes) = files.get(path) else {
        return plain(StatusCode::NOT_FOUND, "Resource not found\n");
    };
    let content_type = if path.ends_with(".narinfo") {
        "application/x-nix-narinfo"
    } else if path.starts_with("/nar/") {
        "application/octet-stream"
    } else {
        "text/plain"
    };
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes.clone())
    };
    ok(content_type, bytes.len() as u64, body)
}

/// A 200 of `len` bytes (the full length even when `body` is empty, as for HEAD).
fn ok(content_type: &str, len: u64, body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, len)
        .body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "response\n"))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r
}

/// Locks a std mutex, ignoring poisoning (a panicking test must not hide other failures).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
