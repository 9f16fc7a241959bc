//! Deadlines on upstream bodies: every read of an upstream's bytes has one.
//!
//! A body stream wrapped here ends in an error when no byte arrives for `idle` (a stalled
//! upstream), or when the whole body is not done by `total` (an upstream dripping bytes just
//! inside the idle timeout). Connecting and the response head are bounded by the client
//! (`UpstreamClient`), so together every network read is bounded.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::time::Instant;

use super::UpstreamError;

/// What a body stream is waiting on, and until when.
struct Deadlines {
    body: BoxStream<'static, Result<Bytes, UpstreamError>>,
    /// The longest wait for the next chunk.
    idle: Duration,
    /// When the whole body must be done.
    end: Instant,
    /// The whole body's allowance, for the error message.
    total: Duration,
    /// The URL, for the error message.
    url: String,
    /// Set after the last item (end or error).
    finished: bool,
}

/// `body`, ending in [`UpstreamError::Stalled`] after `idle` without a chunk, or in
/// [`UpstreamError::Timeout`] once `total` has passed since this call.
pub(super) fn bounded(
    body: BoxStream<'static, Result<Bytes, UpstreamError>>,
    idle: Duration,
    total: Duration,
    url: String,
) -> BoxStream<'static, Result<Bytes, UpstreamError>> {
    let state = Deadlines {
        body,
        idle,
        end: Instant::now() + total,
        total,
        url,
        finished: false,
    };
    stream::unfold(state, |mut state| async move {
        if state.finished {
            return None;
        }
        let left = state.end.saturating_duration_since(Instant::now());
        let wait = state.idle.min(left);
        let item = match tokio::time::timeout(wait, state.body.next()).await {
            Ok(None) => return None,
            Ok(Some(Ok(chunk))) => Ok(chunk),
            Ok(Some(Err(err))) => Err(err),
            Err(_) if wait < state.idle => Err(UpstreamError::Timeout {
                url: state.url.clone(),
                after: state.total,
            }),
            Err(_) => Err(UpstreamError::Stalled {
                url: state.url.clone(),
                after: state.idle,
            }),
        };
        state.finished = item.is_err();
        Some((item, state))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk() -> Result<Bytes, UpstreamError> {
        Ok(Bytes::from_static(b"x"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_sending_ends_in_a_stall_error() {
        let body = stream::iter([chunk()]).chain(stream::pending()).boxed();
        let mut bounded = bounded(
            body,
            Duration::from_secs(30),
            Duration::from_secs(3600),
            "u".into(),
        );
        assert!(bounded.next().await.is_some_and(|c| c.is_ok()));
        let end = bounded.next().await;
        assert!(
            matches!(end, Some(Err(UpstreamError::Stalled { after, .. })) if after.as_secs() == 30),
            "{end:?}"
        );
        assert!(bounded.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_dripping_inside_the_idle_timeout_still_meets_the_total_deadline() {
        let drip = stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(20)).await;
            Some((chunk(), ()))
        })
        .boxed();
        let mut bounded = bounded(
            drip,
            Duration::from_secs(30),
            Duration::from_secs(90),
            "u".into(),
        );
        let mut chunks = 0;
        let end = loop {
            match bounded.next().await {
                Some(Ok(_)) => chunks += 1,
                other => break other,
            }
        };
        assert_eq!(chunks, 4, "20 s apart within 90 s");
        assert!(
            matches!(end, Some(Err(UpstreamError::Timeout { .. }))),
            "{end:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_ends_in_time_is_passed_through_whole() {
        let body = stream::iter([chunk(), chunk()]).boxed();
        let all: Vec<_> = bounded(
            body,
            Duration::from_secs(1),
            Duration::from_secs(1),
            "u".into(),
        )
        .collect()
        .await;
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(Result::is_ok));
    }
}
