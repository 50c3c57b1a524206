//! Request-body limits that hold against a hostile client: a `Content-Length` over the limit
//! is answered `413` before a byte of the body is read, and a body that has not fully arrived
//! within its deadline is cut off with `408`, so a slow sender cannot hold a connection (and
//! the memory behind it) for ever.
//!
//! Applied as a middleware to the JSON routes of every server; the fileserver's blob upload
//! has its own size limit and a minimum average rate instead (see `fileserver::ingest`).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dfs_proto::{ApiError, ErrorCode};
use futures_util::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// Default deadline for a whole JSON request body (config key `body_deadline_ms`): a metadata
/// request is a few hundred bytes, so ten seconds is generous for any honest client.
pub const DEFAULT_BODY_DEADLINE_MS: u64 = 10_000;

/// The limits of one server's JSON routes.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest body accepted; a larger `Content-Length` is refused before reading.
    pub max_bytes: u64,
    /// Time from the request's headers to the end of its body.
    pub deadline: Duration,
}

impl BodyLimits {
    /// Limits of `max_bytes` and a deadline of `deadline_ms` (0 is taken as 1 ms, not "none").
    pub fn new(max_bytes: usize, deadline_ms: u64) -> BodyLimits {
        BodyLimits {
            max_bytes: max_bytes as u64,
            deadline: Duration::from_millis(deadline_ms.max(1)),
        }
    }
}

/// The `Content-Length` a request announces, if it announces a valid one.
pub fn content_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Middleware (use with `axum::middleware::from_fn_with_state`): refuses an announced body
/// over `max_bytes` with `413` at once, and answers `408` when the body was still arriving at
/// its deadline. Both answers close the connection, so the rest of the body is never read.
pub async fn limit_body(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    if let Some(len) = content_length(&req).filter(|len| *len > limits.max_bytes) {
        let err = ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "request body of {len} bytes exceeds the limit of {} bytes",
                limits.max_bytes
            ),
        );
        return closing(err.into_response());
    }
    let late = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::from_stream(Deadline {
        inner: body.into_data_stream(),
        sleep: Box::pin(tokio::time::sleep(limits.deadline)),
        late: late.clone(),
        ended: false,
    });
    let reply = next.run(Request::from_parts(parts, body)).await;
    if late.load(Ordering::Acquire) {
        tracing::info!(deadline = ?limits.deadline, "request body too slow; cut off");
        let err = ApiError::bad_request(format!(
            "request body not received within {} ms",
            limits.deadline.as_millis()
        ));
        let mut reply = err.into_response();
        *reply.status_mut() = StatusCode::REQUEST_TIMEOUT;
        return closing(reply);
    }
    reply
}

/// Asks the client to close: the unread rest of the body must not be taken as a next request.
fn closing(mut reply: Response) -> Response {
    reply.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    reply
}

/// The error a body stream ends with when its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("request body deadline passed")]
pub struct BodyDeadlinePassed;

/// A body stream that fails once its deadline passed, noting it in `late`.
struct Deadline<S> {
    inner: S,
    sleep: Pin<Box<Sleep>>,
    late: Arc<AtomicBool>,
    ended: bool,
}

impl<S> Stream for Deadline<S>
where
    S: Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin,
{
    type Item = Result<bytes::Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(next) = Pin::new(&mut self.inner).poll_next(cx) {
            self.ended = !matches!(next, Some(Ok(_)));
            return Poll::Ready(next);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.ended = true;
            self.late.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyDeadlinePassed))));
        }
        Poll::Pending
    }
}
