//! Silence limits for blob transfers: a transfer fails when it stops making progress, never
//! because it is long.
//!
//! An upload's body is wrapped in [`Watched`], which notes each chunk the HTTP stack takes and
//! the end of the body; [`watch`] runs the request and fails it when no chunk was taken for
//! the stall limit, or when the reply does not come within its own limit after the last chunk.
//! Downloads bound each read with [`next_chunk`].

use crate::error::{ApiError, ErrorCode};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// What an upload's body has done so far, shared between the body and its watchdog.
#[derive(Debug)]
pub(crate) struct Progress {
    start: Instant,
    /// Milliseconds after `start` of the last chunk taken (or of the end of the body).
    last_ms: AtomicU64,
    done: AtomicBool,
}

impl Progress {
    pub(crate) fn new() -> Arc<Progress> {
        Arc::new(Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            done: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }
}

/// A body stream that reports each chunk taken, and its end, to a [`Progress`].
pub(crate) struct Watched<S> {
    inner: Pin<Box<S>>,
    progress: Arc<Progress>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, progress: Arc<Progress>) -> Watched<S> {
        Watched {
            inner: Box::pin(inner),
            progress,
        }
    }
}

impl<S, E> Stream for Watched<S>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(_)) => self.progress.touch(),
            Poll::Ready(None) => {
                self.progress.touch();
                self.progress.done.store(true, Ordering::Release);
            }
            Poll::Pending => {}
        }
        polled
    }
}

/// Runs `request` (an upload whose body reports to `progress`) until it finishes, or fails it
/// with `unavailable` when the body made no progress for `stall`, or no reply came within
/// `reply_after_body` after the whole body was taken.
pub(crate) async fn watch<T>(
    request: impl Future<Output = Result<T, ApiError>>,
    progress: &Progress,
    stall: Duration,
    reply_after_body: Duration,
) -> Result<T, ApiError> {
    tokio::pin!(request);
    loop {
        let done = progress.done.load(Ordering::Acquire);
        let limit = if done { reply_after_body } else { stall };
        let deadline = progress.last() + limit;
        match tokio::time::timeout_at(deadline, &mut request).await {
            Ok(result) => return result,
            Err(_) => {
                // Progress may have been made meanwhile: only a deadline that still stands
                // is a failure.
                let moved = progress.done.load(Ordering::Acquire) != done
                    || progress.last() + limit > Instant::now();
                if !moved {
                    let what = if done {
                        format!("no reply within {reply_after_body:?} after the upload's body")
                    } else {
                        format!("upload stalled: no progress for {stall:?}")
                    };
                    return Err(ApiError::new(ErrorCode::Unavailable, what));
                }
            }
        }
    }
}

/// The next chunk of a download, or `unavailable` when nothing arrived for `stall`.
pub(crate) async fn next_chunk<S>(body: &mut S, stall: Duration) -> Option<Result<Bytes, ApiError>>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
{
    match tokio::time::timeout(stall, body.next()).await {
        Ok(next) => next.map(|chunk| chunk.map_err(ApiError::from)),
        Err(_) => Some(Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("download stalled: nothing received for {stall:?}"),
        ))),
    }
}
