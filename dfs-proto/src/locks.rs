//! Lockserver wire types: exclusive write leases with fencing tokens.

use crate::DfsPath;
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/locks/acquire`: all the paths or none.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// Paths to lock exclusively, all at once.
    pub paths: Vec<DfsPath>,
    /// The caller's session name; acquiring again with the same session returns the same lease.
    pub client: String,
    /// Lease length; default and cap come from the lockserver's config.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

/// A granted lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The fencing token: unique, from one counter that only grows. Also names the lease.
    pub token: u64,
    /// The session holding it.
    pub client: String,
    /// The paths it covers.
    pub paths: Vec<DfsPath>,
    /// Its length; renew well before it runs out.
    pub ttl_ms: u64,
    /// Time left at the moment of the reply.
    pub expires_in_ms: u64,
}

/// Body of `POST /v1/locks/renew` and `POST /v1/locks/release`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The lease's token.
    pub token: u64,
    /// The session that holds it; a mismatch is refused and changes nothing.
    pub client: String,
}

/// Reply of `GET /v1/locks`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseList {
    /// Every lease not yet expired.
    pub leases: Vec<Lease>,
    /// The next token the counter will give.
    pub next_token: u64,
}
