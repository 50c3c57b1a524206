//! Who may call which route: every route of the three servers declares the right it needs.
//!
//! The `authenticated` layer has already told who sent the request (or answered 401); the
//! gate here only decides whether that principal has the right (or answers 403). Keeping the
//! right next to each route in the router, and the rule for each right here, makes the whole
//! policy readable in two places instead of scattered over handlers. The one rule that
//! depends on a request's body (setattr of `/` needs an admin key) is checked in its handler.

use super::auth::Caller;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use dfs_proto::auth::Principal;
use dfs_proto::ApiError;

/// The right a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Any valid credential: reads, listings, the cluster map.
    Read,
    /// A read-write or admin key (or a server): changes to files, directories and leases.
    Write,
    /// An admin key: replication, the directory map, the root's mode.
    Admin,
    /// The cluster's own servers: registration, heartbeats, deletes, copies, checks.
    Server,
    /// Servers and admin keys: a fileserver's blob listing, which GC needs and which
    /// `dfs fileservers` shows an operator as blob counts.
    Operator,
}

impl Need {
    /// `Ok` when `who` has this right, else the 403 to answer.
    pub fn check(self, who: &Principal) -> Result<(), ApiError> {
        match self {
            Need::Read => Ok(()),
            Need::Write => who.require_write(),
            Need::Admin => who.require_admin(),
            Need::Server => who.require_server(),
            Need::Operator if who.is_server() => Ok(()),
            Need::Operator => who.require_admin(),
        }
    }
}

/// `route` reachable only by callers with `need`: the declaration every route carries.
pub fn needs<S>(need: Need, route: MethodRouter<S>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    route.route_layer(axum::middleware::from_fn_with_state(need, enforce))
}

async fn enforce(
    State(need): State<Need>,
    Caller(who): Caller,
    req: Request,
    next: Next,
) -> Response {
    match need.check(&who) {
        Ok(()) => next.run(req).await,
        Err(err) => {
            tracing::debug!(caller = who.name(), ?need, path = %req.uri().path(), "refused");
            err.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_proto::auth::Role;
    use dfs_proto::ErrorCode;

    fn client(role: Role) -> Principal {
        Principal::Client {
            name: "k".into(),
            role,
            id: "00".into(),
        }
    }

    /// The whole policy as a table: principal x right -> allowed.
    #[test]
    fn each_principal_has_exactly_its_rights() {
        let principals = [
            (
                "read-only",
                client(Role::ReadOnly),
                [true, false, false, false, false],
            ),
            (
                "read-write",
                client(Role::ReadWrite),
                [true, true, false, false, false],
            ),
            (
                "admin",
                client(Role::Admin),
                [true, true, true, false, true],
            ),
            ("server", Principal::Server, [true, true, false, true, true]),
            (
                "insecure",
                Principal::Insecure,
                [true, true, true, true, true],
            ),
        ];
        let needs = [
            Need::Read,
            Need::Write,
            Need::Admin,
            Need::Server,
            Need::Operator,
        ];
        for (label, who, allowed) in principals {
            for (need, allow) in needs.iter().zip(allowed) {
                match need.check(&who) {
                    Ok(()) => assert!(allow, "{label} must not have {need:?}"),
                    Err(err) => {
                        assert!(!allow, "{label} must have {need:?}");
                        assert_eq!(err.code, ErrorCode::Forbidden);
                    }
                }
            }
        }
    }
}
