//! HTTP handlers: exactly the routes `dfs_proto::client::FileClient` calls.

use super::capability;
use super::ingest::ingest;
use super::range::{parse_range, RangeRequest};
use super::stats::Stats;
use super::store::BlobStore;
use crate::common::limits::{limit_body, BodyLimits};
use crate::common::needs;
use crate::common::policy::Need::{Operator, Read, Server};
use crate::common::{ApiQuery, Caller};
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use dfs_proto::auth::BlobOp;
use dfs_proto::client::FileClient;
use dfs_proto::files::{
    BlobCheck, BlobCursor, BlobInfo, BlobList, BlobListQuery, FetchRequest, FileserverStats,
};
use dfs_proto::{ApiError, Checksum, ErrorCode, FileId, Version, CHECKSUM_HEADER};
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Chunk size of downloads: big enough that per-chunk costs vanish (4 KiB caps near 190 MB/s).
pub const READ_CHUNK: usize = 1 << 20;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The blobs.
    pub store: Arc<BlobStore>,
    /// Transfer counters.
    pub stats: Arc<Stats>,
    /// Largest body accepted.
    pub max_body_bytes: u64,
    /// Body deadline and upload rate.
    pub limits: Limits,
    /// Client used by `fetch` to read from other fileservers.
    pub files: FileClient,
    /// Verifications allowed at once: each reads a whole blob, so a burst of them must not
    /// take the disk from uploads and downloads.
    pub verifying: Arc<tokio::sync::Semaphore>,
    /// Checks credentials and blob capabilities.
    pub verifier: Arc<dfs_proto::auth::Verifier>,
    /// The registered fileservers a repair copy may come from (asked of the nameserver).
    pub sources: Arc<capability::Sources>,
}

/// Largest JSON request body (a fetch request is a URL and a checksum).
pub const MAX_JSON_BODY: usize = 64 << 10;

/// Limits a hostile client must not get around (from [`super::Config`]).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Deadline of a whole JSON request body.
    pub body_deadline_ms: u64,
    /// An upload is never cut off for its rate before this long.
    pub upload_grace_ms: u64,
    /// After the grace, an upload (or a repair copy) averaging less than this is cut off.
    pub upload_min_bytes_per_sec: u64,
}

/// Blob verifications run at once per fileserver; more wait their turn.
pub const MAX_VERIFYING: usize = 2;

/// The fileserver's routes, with JSON fallbacks and a request counter.
pub fn router(state: AppState) -> Router {
    let blob = "/v1/blobs/{file_id}/{version}";
    // Small JSON bodies: refused up front when too big, cut off when too slow.
    let json = Router::new()
        .route("/healthz", get(healthz))
        // Counters only: any key may read them (benchmarks and tests do).
        .route("/v1/stats", needs(Read, get(stats)))
        .route("/v1/blobs", needs(Operator, get(list)))
        .route(
            "/v1/blobs/{file_id}/{version}/fetch",
            needs(Server, post(fetch_blob)),
        )
        .route(
            "/v1/blobs/{file_id}/{version}/verify",
            needs(Server, post(verify_blob)),
        )
        .layer(axum::middleware::from_fn_with_state(
            BodyLimits::new(MAX_JSON_BODY, state.limits.body_deadline_ms),
            limit_body,
        ));
    // Blob bodies: `max_body_bytes` and a minimum average rate (see `ingest`).
    let blobs = Router::new().route(
        blob,
        needs(Read, get(get_blob).head(head_blob).put(put_blob))
            .merge(needs(Server, delete(delete_blob))),
    );
    let router = json
        .merge(blobs)
        .layer(axum::middleware::from_fn_with_state(
            state.stats.clone(),
            count_request,
        ))
        .with_state(state.clone());
    crate::common::authenticated(crate::common::api_fallbacks(router), state.verifier)
}

async fn count_request(State(stats): State<Arc<Stats>>, req: Request, next: Next) -> Response {
    Stats::add(&stats.requests, 1);
    next.run(req).await
}

/// `(file_id, version)` from the URL: decimal integers only, or a 400 JSON error.
#[derive(Clone, Copy, Debug)]
pub struct BlobKey {
    /// The file.
    pub file_id: FileId,
    /// The version.
    pub version: Version,
}

fn parse_id(text: &str, what: &str) -> Result<u64, ApiError> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!(
            "{what} must be a decimal integer"
        )));
    }
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("{what} does not fit in 64 bits")))
}

impl<S: Send + Sync> FromRequestParts<S> for BlobKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((file_id, version)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        Ok(BlobKey {
            file_id: parse_id(&file_id, "file id")?,
            version: parse_id(&version, "version")?,
        })
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn stats(State(st): State<AppState>) -> Json<FileserverStats> {
    Json(st.stats.snapshot())
}

/// Default and largest page of `GET /v1/blobs` (a blob's entry is under 100 bytes of JSON).
pub const MAX_LIST_PAGE: u32 = 10_000;

async fn list(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<BlobListQuery>,
) -> Result<Json<BlobList>, ApiError> {
    let after = match (q.after_file_id, q.after_version) {
        (Some(f), Some(v)) => Some((f, v)),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "after_file_id and after_version go together",
            ))
        }
    };
    let limit = q.limit.unwrap_or(MAX_LIST_PAGE).clamp(1, MAX_LIST_PAGE) as usize;
    let (blobs, more) = st.store.list_page(after, limit);
    let next_after = blobs.last().filter(|_| more).map(|b| BlobCursor {
        file_id: b.file_id,
        version: b.version,
    });
    Ok(Json(BlobList { blobs, next_after }))
}

async fn put_blob(
    State(st): State<AppState>,
    Caller(who): Caller,
    key: BlobKey,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<BlobInfo>), ApiError> {
    capability::check(&st.verifier, &who, &headers, key, BlobOp::Write)?;
    // Optional: without it the server checksums what it received and answers with it, and
    // the uploader compares (a client that streams a large file sums it on the way out).
    let checksum = match headers.get(CHECKSUM_HEADER) {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(Checksum::parse).ok_or_else(|| {
            ApiError::bad_request(format!("header {CHECKSUM_HEADER} must be 8 hex digits"))
        })?),
    };
    let len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad_request("Content-Length is required"))?;
    if len > st.max_body_bytes {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "body of {len} bytes exceeds the limit of {}",
                st.max_body_bytes
            ),
        ));
    }
    let info = ingest(
        &st,
        key.file_id,
        key.version,
        checksum,
        Some(len),
        body.into_data_stream(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn fetch_blob(
    State(st): State<AppState>,
    key: BlobKey,
    crate::common::ApiJson(req): crate::common::ApiJson<FetchRequest>,
) -> Result<(StatusCode, Json<BlobInfo>), ApiError> {
    let url = reqwest::Url::parse(&req.source)
        .map_err(|err| ApiError::bad_request(format!("source is not a URL: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ApiError::bad_request("source must be an http(s) URL"));
    }
    st.sources.check(&st.verifier, &req.source).await?;
    if let Some(existing) = st.store.get(key.file_id, key.version) {
        if existing.checksum == req.checksum {
            return Ok((StatusCode::OK, Json(existing)));
        }
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("blob already stored with checksum {}", existing.checksum),
        ));
    }
    let reply = st
        .files
        .get(&req.source, key.file_id, key.version, None)
        .await
        .map_err(|err| {
            ApiError::new(err.code, format!("source {}: {}", req.source, err.message))
        })?;
    let len = reply.content_length();
    if len.is_some_and(|len| len > st.max_body_bytes) {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "source blob exceeds the body limit",
        ));
    }
    let info = ingest(
        &st,
        key.file_id,
        key.version,
        Some(req.checksum),
        len,
        reply.bytes_stream(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `POST /v1/blobs/{file_id}/{version}/verify`: re-reads the blob and checks it (see
/// [`BlobStore::verify`]); the nameserver asks before it stops counting this server as a
/// holder, so a stale listing never drops a good copy.
async fn verify_blob(
    State(st): State<AppState>,
    key: BlobKey,
) -> Result<Json<BlobCheck>, ApiError> {
    let _turn = st
        .verifying
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::unavailable("shutting down"))?;
    let store = st.store.clone();
    let info = tokio::task::spawn_blocking(move || store.verify(key.file_id, key.version))
        .await
        .map_err(|err| ApiError::internal(format!("verify task failed: {err}")))??;
    Ok(Json(info))
}

async fn delete_blob(State(st): State<AppState>, key: BlobKey) -> Result<Json<BlobInfo>, ApiError> {
    let store = st.store.clone();
    let info = tokio::task::spawn_blocking(move || store.delete(key.file_id, key.version))
        .await
        .map_err(|err| ApiError::internal(format!("delete task failed: {err}")))??;
    Ok(Json(info))
}

/// The status, headers and byte range of a (possibly partial) blob reply.
struct Plan {
    status: StatusCode,
    headers: HeaderMap,
    start: u64,
    len: u64,
}

fn plan(info: &BlobInfo, headers: &HeaderMap) -> Result<Plan, Box<Response>> {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let mut out = HeaderMap::new();
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(sum) = HeaderValue::from_str(&info.checksum.to_string()) {
        out.insert(CHECKSUM_HEADER, sum);
    }
    let (status, start, len) = match parse_range(range, info.size) {
        RangeRequest::Full => (StatusCode::OK, 0, info.size),
        RangeRequest::Part { start, end } => {
            let value = format!("bytes {start}-{end}/{}", info.size);
            if let Ok(value) = HeaderValue::from_str(&value) {
                out.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut reply = ApiError::bad_request(format!(
                "range {} not satisfiable for {} bytes",
                range.unwrap_or(""),
                info.size
            ))
            .into_response();
            *reply.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", info.size)) {
                reply.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Err(Box::new(reply));
        }
    };
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(Plan {
        status,
        headers: out,
        start,
        len,
    })
}

async fn open(st: &AppState, key: BlobKey) -> Result<(BlobInfo, std::fs::File), ApiError> {
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || store.open_blob(key.file_id, key.version))
        .await
        .map_err(|err| ApiError::internal(format!("open task failed: {err}")))?
}

async fn head_blob(
    State(st): State<AppState>,
    Caller(who): Caller,
    key: BlobKey,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    capability::check(&st.verifier, &who, &headers, key, BlobOp::Read)?;
    let info = st.store.get(key.file_id, key.version).ok_or_else(|| {
        ApiError::not_found(format!("no blob {}/{} here", key.file_id, key.version))
    })?;
    Ok(match plan(&info, &headers) {
        Ok(plan) => (plan.status, plan.headers).into_response(),
        Err(reply) => *reply,
    })
}

async fn get_blob(
    State(st): State<AppState>,
    Caller(who): Caller,
    key: BlobKey,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    capability::check(&st.verifier, &who, &headers, key, BlobOp::Read)?;
    let (info, file) = open(&st, key).await?;
    let plan = match plan(&info, &headers) {
        Ok(plan) => plan,
        Err(reply) => return Ok(*reply),
    };
    let mut file = tokio::fs::File::from_std(file);
    if plan.start > 0 {
        file.seek(std::io::SeekFrom::Start(plan.start)).await?;
    }
    Stats::add(&st.stats.downloads, 1);
    let stats = st.stats.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(plan.len), READ_CHUNK)
        .inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                Stats::add(&stats.bytes_out, bytes.len() as u64);
            }
        });
    let mut reply = Response::new(Body::from_stream(stream));
    *reply.status_mut() = plan.status;
    *reply.headers_mut() = plan.headers;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn ids_are_plain_decimal() {
        assert_eq!(parse_id("0", "x").ok(), Some(0));
        assert_eq!(parse_id("18446744073709551615", "x").ok(), Some(u64::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            "abc",
            "..",
            "1e3",
            "18446744073709551616",
            " 1",
            "0x10",
        ] {
            assert!(parse_id(bad, "x").is_err(), "{bad}");
        }
    }
}
