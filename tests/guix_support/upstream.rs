//! A guix-publish-style upstream over real HTTP: an axum server on 127.0.0.1:0 serving a fixed
//! map of URL paths to bytes (with `Content-Length`), 404 for the rest, counting requests per
//! path so stories can tell which upstream quorate fetched a NAR from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;

use super::world::UpstreamFiles;

struct Served {
    /// URL path → bytes.
    files: BTreeMap<String, Bytes>,
    /// Requests per URL path. std Mutex: never held across an `.await`.
    requests: Mutex<BTreeMap<String, u64>>,
}

/// A running upstream; stops accepting connections when dropped.
pub struct Upstream {
    url: String,
    served: Arc<Served>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Serves `files` on the current tokio runtime.
    pub async fn serve(files: &UpstreamFiles) -> Upstream {
        let served = Arc::new(Served {
            files: files.files.clone(),
            requests: Mutex::new(BTreeMap::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding an upstream");
        let addr = listener.local_addr().expect("upstream address");
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&served));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream {
            url: format!("http://{addr}"),
            served,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests received for `path`.
    pub fn requests(&self, path: &str) -> u64 {
        let requests = self
            .served
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        requests.get(path).copied().unwrap_or(0)
    }

    /// Requests received for NARs (`/nar/...`), all together.
    pub fn nar_requests(&self) -> u64 {
        let requests = self
            .served
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        requests
            .iter()
            .filter(|(p, _)| p.starts_with("/nar/"))
            .map(|(_, n)| n)
            .sum()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(served): State<Arc<Served>>, method: Method, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    *served
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(path.clone())
        .or_default() += 1;
    let Some(bytes) = served.files.get(&path) else {
        let mut r = Response::new(Body::from("Resource not found\n"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let content_type = if path.ends_with(".narinfo") {
        "application/x-nix-narinfo"
    } else if path.starts_with("/nar/") {
        "application/octet-stream"
    } else {
        "text/plain"
    };
    let len = bytes.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes.clone())
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, len)
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
