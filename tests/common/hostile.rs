//! A hostile upstream: a raw HTTP/1.1 server on loopback that misbehaves on purpose, byte by
//! byte, where a well-behaved server library would not let it: it resets connections
//! mid-body, drips bytes, stalls with the connection open, lies in `Content-Length`, and
//! redirects anywhere. Each URL path answers by its [`Script`]; the other paths are served
//! honestly from a cache directory (a fixture builder's), so one server can be honest about
//! everything but the path under attack.
//!
//! It records every request (path, query, `Authorization`), so a story can tell what
//! quorate asked for and with which credentials. Every answer closes its connection
//! (`Connection: close`); stalled connections are released when the server is dropped.
//! Runs on the shared support runtime.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::runtime;

/// How one path is answered.
#[derive(Clone, Debug)]
pub enum Script {
    /// 200 with these bytes and a true `Content-Length`.
    Serve(Bytes),
    /// 200 with a true `Content-Length`, the first `after` bytes, then a TCP reset.
    ResetAfter {
        /// The whole body the head announces.
        body: Bytes,
        /// Bytes sent before the reset.
        after: usize,
    },
    /// 200 with a true `Content-Length`, then `chunk` bytes every `every`.
    Drip {
        /// The whole body.
        body: Bytes,
        /// Bytes per drop.
        chunk: usize,
        /// Pause before each drop.
        every: Duration,
    },
    /// 200 with a true `Content-Length`, the first `after` bytes, then silence with the
    /// connection held open (a stalled upstream).
    StallAfter {
        /// The whole body the head announces.
        body: Bytes,
        /// Bytes sent before the stall (0: only the head).
        after: usize,
    },
    /// Reads the request and never answers (the connection stays open).
    StallBeforeHead,
    /// 200 announcing `claimed` bytes, then sends `body` (shorter or longer) and closes.
    LyingLength {
        /// What is really sent.
        body: Bytes,
        /// The `Content-Length` announced.
        claimed: u64,
    },
    /// A redirect: `status` with `Location: location`.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// Where to.
        location: String,
    },
    /// This status with an empty body.
    Status(u16),
}

/// One request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The raw (percent-encoded) path.
    pub path: String,
    /// The raw query, if any.
    pub query: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

struct State {
    /// Unscripted paths are served from here; `None`: 404.
    root: Option<PathBuf>,
    /// The URL path `root` is served under (`""`, or e.g. `/cache`).
    prefix: String,
    /// Raw path → script. std Mutex: never held across an `.await`.
    scripts: Mutex<BTreeMap<String, Script>>,
    /// Every request, in arrival order.
    requests: Mutex<Vec<Request>>,
    /// Cancelled on drop: ends held connections.
    closed: CancellationToken,
}

/// A hostile upstream. Stops, and drops every held connection, when dropped.
pub struct HostileUpstream {
    url: String,
    state: Arc<State>,
}

impl HostileUpstream {
    /// Serves `root` honestly except for scripted paths.
    pub fn serve(root: impl AsRef<Path>) -> HostileUpstream {
        HostileUpstream::serve_under(root, "")
    }

    /// Serves `root` honestly under the URL path `prefix` (e.g. `/cache`: a cache that is
    /// not at the root of its host), except for scripted paths; 404 elsewhere.
    pub fn serve_under(root: impl AsRef<Path>, prefix: &str) -> HostileUpstream {
        let root = root.as_ref().to_path_buf();
        assert!(root.is_dir(), "no cache directory at {}", root.display());
        HostileUpstream::start(Some(root), prefix)
    }

    /// Answers 404 except for scripted paths.
    pub fn scripted() -> HostileUpstream {
        HostileUpstream::start(None, "")
    }

    fn start(root: Option<PathBuf>, prefix: &str) -> HostileUpstream {
        let state = Arc::new(State {
            root,
            prefix: prefix.trim_end_matches('/').to_owned(),
            scripts: Mutex::new(BTreeMap::new()),
            requests: Mutex::new(Vec::new()),
            closed: CancellationToken::new(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .expect("binding a hostile upstream");
        let addr = listener.local_addr().expect("hostile upstream address");
        let serving = Arc::clone(&state);
        runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)
                .expect("registering a hostile upstream");
            loop {
                let accepted = tokio::select! {
                    () = serving.closed.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                if let Ok((stream, _)) = accepted {
                    let state = Arc::clone(&serving);
                    tokio::spawn(async move {
                        let closed = state.closed.clone();
                        tokio::select! {
                            () = closed.cancelled() => {}
                            () = answer(state, stream) => {}
                        }
                    });
                }
            }
        });
        HostileUpstream {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// Base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `host:port`, as a `nar_hosts` entry names this server.
    pub fn host_port(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Answers requests for the raw path `path` (e.g. `/nar/x.nar`) by `script` from now on.
    pub fn script(&self, path: &str, script: Script) -> &Self {
        lock(&self.state.scripts).insert(path.to_owned(), script);
        self
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state.requests).clone()
    }

    /// Requests received for the raw path `path`.
    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for HostileUpstream {
    fn drop(&mut self) {
        self.state.closed.cancel();
    }
}

/// Reads one request head and answers it as scripted.
async fn answer(state: Arc<State>, mut stream: TcpStream) {
    let Some(request) = read_head(&mut stream).await else {
        return;
    };
    lock(&state.requests).push(request.clone());
    let script = lock(&state.scripts).get(&request.path).cloned();
    let script = match (script, &state.root) {
        (Some(script), _) => script,
        (None, Some(root)) => match request.path.strip_prefix(&state.prefix) {
            Some(rel) if rel.starts_with('/') => honest(root, rel),
            _ => Script::Status(404),
        },
        (None, None) => Script::Status(404),
    };
    let _ = perform(&state, &mut stream, script).await;
}

async fn perform(state: &State, stream: &mut TcpStream, script: Script) -> std::io::Result<()> {
    match script {
        Script::Serve(body) => {
            stream.write_all(&head(200, body.len() as u64, &[])).await?;
            stream.write_all(&body).await?;
        }
        Script::ResetAfter { body, after } => {
            stream.write_all(&head(200, body.len() as u64, &[])).await?;
            stream.write_all(&body[..after.min(body.len())]).await?;
            stream.flush().await?;
            // SO_LINGER 0: closing sends a RST, not a FIN. (Deprecated because a non-zero
            // linger blocks the thread on drop; a zero one resets at once.)
            #[allow(deprecated)]
            stream.set_linger(Some(Duration::ZERO))?;
        }
        Script::Drip { body, chunk, every } => {
            stream.write_all(&head(200, body.len() as u64, &[])).await?;
            for drop in body.chunks(chunk.max(1)) {
                tokio::time::sleep(every).await;
                stream.write_all(drop).await?;
                stream.flush().await?;
            }
        }
        Script::StallAfter { body, after } => {
            stream.write_all(&head(200, body.len() as u64, &[])).await?;
            stream.write_all(&body[..after.min(body.len())]).await?;
            stream.flush().await?;
            state.closed.cancelled().await;
        }
        Script::StallBeforeHead => state.closed.cancelled().await,
        Script::LyingLength { body, claimed } => {
            stream.write_all(&head(200, claimed, &[])).await?;
            stream.write_all(&body).await?;
        }
        Script::Redirect { status, location } => {
            stream
                .write_all(&head(status, 0, &[("Location", &location)]))
                .await?;
        }
        Script::Status(status) => stream.write_all(&head(status, 0, &[])).await?,
    }
    stream.flush().await?;
    stream.shutdown().await
}

/// What an honest cache host would answer for `path` from `root`.
fn honest(root: &Path, path: &str) -> Script {
    let rel = Path::new(path.trim_start_matches('/'));
    let safe = rel.components().all(|c| matches!(c, Component::Normal(_)));
    match std::fs::read(root.join(rel)) {
        Ok(bytes) if safe => Script::Serve(Bytes::from(bytes)),
        _ => Script::Status(404),
    }
}

fn head(status: u16, length: u64, extra: &[(&str, &str)]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        404 => "Not Found",
        _ => "Whatever",
    };
    let mut text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\nConnection: close\r\n"
    );
    for (name, value) in extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// The request line and `Authorization` of one request (at most 64 KiB of head).
async fn read_head(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 << 10 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_owned();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target, None),
    };
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    });
    Some(Request {
        path,
        query,
        authorization,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
