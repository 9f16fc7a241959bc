//! The HTTP layer's answers that are not content: one error type whose response logs the
//! internal cause and gives the client a clean sentence, and the small text answer every
//! route uses (always with `Content-Length`, which Guix's pipelining reads answers by).
//!
//! How lower layers' errors map:
//!
//! | cause                                             | status | client sees            |
//! |---------------------------------------------------|--------|------------------------|
//! | no positive decision, unknown file                | 404    | the reason, `max-age`  |
//! | malformed hash part, NAR name, query              | 400    | what is malformed      |
//! | database or rendering failure (`ResolveError`...) | 503    | "try again"; cause logged |
//! | NAR storage (the bucket) unreadable               | 503    | "try again"; cause logged |
//! | `Range` outside a stored NAR                      | 416    | `Content-Range: */size` |
//! | upstream advertised an unusable NAR URL           | 502    | a sentence; URL logged |
//! | NAR failed before its first byte was sent         | 502    | "try again"; cause logged |

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quorate_core::flavor::NarRouteError;

use crate::db::DbError;
use crate::delivery::DeliveryError;
use crate::limits::NEGATIVE_TTL;
use crate::resolve::ResolveError;

/// Everything a route can answer instead of content.
#[derive(Debug)]
pub enum HttpError {
    /// 404: nothing is served here; clients may remember that for `max_age`.
    NotFound {
        /// Why, in a sentence.
        message: String,
        /// `Cache-Control: max-age`, when clients may cache the answer.
        max_age: Option<Duration>,
    },
    /// 400: the request itself is malformed.
    BadRequest(String),
    /// 503: an internal failure; `cause` is logged, the client is told to retry.
    Unavailable {
        /// What the client reads.
        public: &'static str,
        /// What the log says.
        cause: String,
    },
    /// 416: the `Range` asked for selects none of a stored NAR's `size` bytes.
    RangeNotSatisfiable {
        /// The NAR's size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// 502: an upstream gave quorate something unusable; `cause` is logged.
    BadGateway {
        /// What the client reads.
        public: &'static str,
        /// What the log says.
        cause: String,
    },
}

impl HttpError {
    /// A 404 clients may remember for the negative lifetime.
    pub fn not_found(message: impl Into<String>) -> Self {
        HttpError::NotFound {
            message: message.into(),
            max_age: Some(NEGATIVE_TTL),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        match self {
            HttpError::NotFound { message, max_age } => {
                text(StatusCode::NOT_FOUND, &format!("{message}\n"), max_age)
            }
            HttpError::BadRequest(message) => {
                text(StatusCode::BAD_REQUEST, &format!("{message}\n"), None)
            }
            HttpError::Unavailable { public, cause } => {
                tracing::error!("{cause}");
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("{public}\n"),
                    None,
                )
            }
            HttpError::RangeNotSatisfiable { size } => {
                let mut resp = text(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range not satisfiable\n",
                    None,
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                resp
            }
            HttpError::BadGateway { public, cause } => {
                tracing::warn!("{cause}");
                text(StatusCode::BAD_GATEWAY, &format!("{public}\n"), None)
            }
        }
    }
}

impl From<Arc<ResolveError>> for HttpError {
    fn from(e: Arc<ResolveError>) -> Self {
        HttpError::Unavailable {
            public: "temporarily unable to decide, try again",
            cause: e.to_string(),
        }
    }
}

impl From<DeliveryError> for HttpError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::NotAccepted | DeliveryError::NoSource => HttpError::NotFound {
                message: e.to_string(),
                max_age: Some(NEGATIVE_TTL),
            },
            DeliveryError::BadNarUrl(cause) => HttpError::BadGateway {
                public: "the upstream offers this NAR at an unusable URL",
                cause: cause.to_string(),
            },
            DeliveryError::Database(cause) => HttpError::Unavailable {
                public: "temporarily unavailable, try again",
                cause: format!("database: {cause}"),
            },
            DeliveryError::Busy => HttpError::Unavailable {
                public: "another replica is still fetching this NAR, try again",
                cause: "a NAR owned by another replica took too long".into(),
            },
            DeliveryError::Storage(cause) => HttpError::Unavailable {
                public: "NAR storage temporarily unavailable, try again",
                cause: format!("NAR storage: {cause}"),
            },
            DeliveryError::RangeNotSatisfiable { size } => HttpError::RangeNotSatisfiable { size },
        }
    }
}

impl From<NarRouteError> for HttpError {
    fn from(e: NarRouteError) -> Self {
        match e {
            NarRouteError::NotFound(m) => HttpError::NotFound {
                message: m.to_owned(),
                max_age: None,
            },
            NarRouteError::Malformed(m) => HttpError::BadRequest(m.to_owned()),
        }
    }
}

impl From<DbError> for HttpError {
    fn from(e: DbError) -> Self {
        HttpError::Unavailable {
            public: "database unavailable, try again",
            cause: format!("database: {e}"),
        }
    }
}

/// A small text answer with an explicit length and optional `Cache-Control: max-age`.
pub fn text(status: StatusCode, body: &str, max_age: Option<Duration>) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(age) = max_age {
        if let Ok(v) = HeaderValue::from_str(&format!("max-age={}", age.as_secs())) {
            h.insert(header::CACHE_CONTROL, v);
        }
    }
    resp
}
