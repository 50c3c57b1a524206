//! HTTP routes of the lockserver: thin handlers that run one [`LockTable`] call each.

use super::store::StoreCounters;
use super::table::LockTable;
use super::table::MAX_PAGE;
use crate::common::limits::{limit_body, BodyLimits};
use crate::common::policy::Need::{Admin, Read, Write};
use crate::common::{api_fallbacks, needs, ApiJson, ApiQuery, Caller};
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use dfs_proto::auth::ClusterKey;
use dfs_proto::locks::{
    AcquireRequest, BreakRequest, Lease, LeaseList, LeaseListQuery, LeaseRequest,
};
use dfs_proto::ApiError;
use std::sync::{Arc, Mutex};

/// Largest request body accepted; 256 paths of the longest legal length fit, with room.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The table shared by all handlers and the sweeper.
pub type Shared = Arc<Mutex<LockTable>>;

/// Runs `op` on the table; a call may wait for an fsync (see [`crate::common::run_blocking`]).
pub async fn with_table<T: Send + 'static>(
    table: &Shared,
    op: impl FnOnce(&mut LockTable) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let table = table.clone();
    crate::common::run_blocking(move || {
        let mut guard = table.lock().unwrap_or_else(|p| p.into_inner());
        op(&mut guard)
    })
    .await
}

/// What the handlers share: the table, and the cluster key that signs leases (`None` on a
/// cluster run `--insecure`).
#[derive(Clone)]
pub struct LockState {
    /// The lease table.
    pub table: Shared,
    /// Signs every lease answered.
    pub key: Option<ClusterKey>,
    /// The store's fsync and commit counts, for `GET /v1/stats`.
    pub counters: StoreCounters,
}

impl LockState {
    /// Whether `lease` carries this cluster's lease signature; on a cluster run `--insecure`
    /// (no key) every lease does.
    fn signed_by_us(&self, lease: &Lease) -> bool {
        match &self.key {
            Some(key) => lease
                .signature
                .as_deref()
                .is_some_and(|sig| key.lease_signature_valid(&lease.claim(), sig)),
            None => true,
        }
    }

    /// `lease` with the lockserver's signature over what the nameserver checks.
    fn signed(&self, mut lease: Lease) -> Lease {
        lease.signature = self.key.as_ref().map(|k| k.sign_lease(&lease.claim()));
        lease
    }
}

/// Every lockserver endpoint, each with the right it needs (common::policy), with JSON
/// 404/405 answers, a body limit and a body deadline.
pub fn router(state: LockState, body_deadline_ms: u64) -> Router {
    // The counters are read without the table's lock, which a commit holds through its fsync.
    let counters = state.counters.clone();
    let stats = move || {
        let counters = counters.clone();
        async move { Json(counters.stats()) }
    };
    let router = Router::new()
        .route("/v1/locks/acquire", needs(Write, post(acquire)))
        .route("/v1/locks/renew", needs(Write, post(renew)))
        .route("/v1/locks/release", needs(Write, post(release)))
        .route("/v1/locks/break", needs(Admin, post(break_lease)))
        .route("/v1/locks", needs(Read, get(list)))
        .route("/v1/stats", needs(Read, get(stats)))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            BodyLimits::new(MAX_BODY_BYTES, body_deadline_ms),
            limit_body,
        ))
        .with_state(state);
    api_fallbacks(router)
}

async fn acquire(
    State(state): State<LockState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<AcquireRequest>,
) -> Result<Json<Lease>, ApiError> {
    let holder = who.holder();
    let lease = with_table(&state.table, move |t| t.acquire(&req, &holder)).await?;
    Ok(Json(state.signed(lease)))
}

async fn renew(
    State(state): State<LockState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> Result<Json<Lease>, ApiError> {
    let holder = who.holder();
    // Only a lease this lockserver signed may be re-established after a crash.
    let claim = req.lease.filter(|lease| state.signed_by_us(lease));
    let lease = with_table(&state.table, move |t| {
        t.renew(req.token, &req.client, &holder, claim.as_ref())
    })
    .await?;
    Ok(Json(state.signed(lease)))
}

async fn release(
    State(state): State<LockState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let holder = who.holder();
    with_table(&state.table, move |t| {
        t.release(req.token, &req.client, &holder)
    })
    .await?;
    Ok(Json(serde_json::json!({})))
}

async fn break_lease(
    State(state): State<LockState>,
    ApiJson(req): ApiJson<BreakRequest>,
) -> Result<Json<Lease>, ApiError> {
    let lease = with_table(&state.table, move |t| {
        t.break_lease(req.token, req.path.as_ref())
    })
    .await?;
    Ok(Json(lease))
}

async fn list(
    State(LockState { table, .. }): State<LockState>,
    ApiQuery(q): ApiQuery<LeaseListQuery>,
) -> Result<Json<LeaseList>, ApiError> {
    let limit = q
        .limit
        .map_or(MAX_PAGE, |l| (l as usize).clamp(1, MAX_PAGE));
    with_table(&table, move |t| Ok(t.list(q.after, limit)))
        .await
        .map(Json)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}
