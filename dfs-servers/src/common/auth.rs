//! Authentication at the door of every server: who sent a request, before any handler runs.
//!
//! A layer verifies the `Authorization` header with the server's [`Verifier`] and stores the
//! [`Principal`] in the request's extensions; handlers take it with the [`Caller`] extractor
//! and decide what it may do. `/healthz` is the one route answered without a credential, so
//! load balancers and `dfs up` can probe a server they hold no key for.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use dfs_proto::auth::{ClusterKey, Principal, Verifier};
use dfs_proto::{ApiError, ErrorCode};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The route answered without authentication.
pub const OPEN_ROUTE: &str = "/healthz";

/// The authentication flags every server binary takes; each overrides its config key.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AuthArgs {
    /// Cluster key file (make one with `dfs keygen cluster`); config key `cluster_key`.
    #[arg(long, value_name = "FILE")]
    pub cluster_key: Option<PathBuf>,
    /// Accept every request without a credential (logged loudly); config key `insecure`.
    #[arg(long)]
    pub insecure: bool,
    /// Id of a client key to refuse from now on (repeatable; added to `revoked_keys`).
    #[arg(long = "revoked-key", value_name = "ID")]
    pub revoked_keys: Vec<String>,
}

impl AuthArgs {
    /// Lays the flags over a config's `cluster_key`, `insecure` and `revoked_keys`.
    pub fn apply(
        self,
        cluster_key: &mut Option<PathBuf>,
        insecure: &mut bool,
        revoked_keys: &mut Vec<String>,
    ) {
        if let Some(path) = self.cluster_key {
            *cluster_key = Some(path);
        }
        if self.insecure {
            *insecure = true;
        }
        for id in self.revoked_keys {
            if !revoked_keys.contains(&id) {
                revoked_keys.push(id);
            }
        }
    }
}

/// Builds a server's verifier from its settings: the cluster key file, or `--insecure`.
///
/// Without either the server refuses to start: running open to anyone on the network must be
/// a choice someone made, not a forgotten flag.
pub fn verifier(
    cluster_key: Option<&Path>,
    insecure: bool,
    revoked_keys: &[String],
    server: &str,
) -> anyhow::Result<Verifier> {
    match cluster_key {
        Some(path) => {
            let key = ClusterKey::load(path)?;
            Ok(Verifier::new(key, revoked_keys.iter().cloned()))
        }
        None if insecure => {
            tracing::warn!(
                "{server} runs with --insecure: EVERY REQUEST IS ACCEPTED WITHOUT A KEY; \
                 anyone who can reach it can read, change and delete every file"
            );
            Ok(Verifier::insecure())
        }
        None => anyhow::bail!(
            "{server}: no cluster key; pass --cluster-key FILE (make one with \
             `dfs keygen cluster`), or --insecure to accept every request without one"
        ),
    }
}

/// Puts `router` behind the verifier: every route but [`OPEN_ROUTE`] needs a credential.
pub fn authenticated(router: Router, verifier: Arc<Verifier>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(verifier, authenticate))
}

async fn authenticate(
    State(verifier): State<Arc<Verifier>>,
    mut req: Request,
    next: Next,
) -> Response {
    if req.uri().path() == OPEN_ROUTE {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match verifier.authenticate(header) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(err) => err.into_response(),
    }
}

/// The verified sender of a request, for handlers that decide what it may do.
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "the request was not authenticated",
                )
            })
    }
}
