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
    /// Who holds it: the client key's name and id (`name:id`), empty on a cluster without
    /// keys. Renew and release need this key.
    #[serde(default)]
    pub holder: String,
    /// When it runs out on the lockserver's wall clock, Unix milliseconds (what the
    /// signature covers, and what the nameserver checks).
    #[serde(default)]
    pub expires_unix_ms: u64,
    /// The lockserver's signature over token, holder, client, expiry and paths
    /// ([`crate::auth::ClusterKey::sign_lease`]); `None` on a cluster without keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl Lease {
    /// The fields its signature covers.
    pub fn claim(&self) -> crate::auth::LeaseClaim<'_> {
        crate::auth::LeaseClaim {
            token: self.token,
            holder: &self.holder,
            client: &self.client,
            expires_unix_ms: self.expires_unix_ms,
            paths: &self.paths,
        }
    }
}

/// Body of `POST /v1/locks/renew` and `POST /v1/locks/release`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The lease's token.
    pub token: u64,
    /// The session that holds it; a mismatch is refused and changes nothing.
    pub client: String,
    /// On renew: the signed lease as last answered. A lockserver that restarted after a crash
    /// keeps no leases, and during its recovery period takes this as the holder's proof to
    /// re-establish it (the signature, holder, session and expiry are checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

/// Body of `POST /v1/locks/break` (admin keys only): the lease to end, by its token or by one
/// of its paths (exactly one of the two).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakRequest {
    /// The lease's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// A path the lease covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<DfsPath>,
}

/// Query of `GET /v1/locks`: one bounded page, so no answer grows with the table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseListQuery {
    /// Leases with a token strictly greater than this (the previous page's `next_after`).
    #[serde(default)]
    pub after: Option<u64>,
    /// Page size; the server caps it (and also ends a page early at about 1 MiB of paths).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Reply of `GET /v1/locks`: one page of live leases, by token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseList {
    /// Leases not yet expired, in token order.
    pub leases: Vec<Lease>,
    /// The next token the counter will give.
    pub next_token: u64,
    /// Set when more leases follow: ask again with `after` set to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
    /// Set while the lockserver recovers from a crash (milliseconds left): holders are still
    /// re-establishing their leases, so a lease missing from the list may still be held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovering_ms: Option<u64>,
}

/// Reply of the lockserver's `GET /v1/stats`: durable work since start, so a benchmark can
/// count the fsyncs a lease costs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockserverStats {
    /// fsyncs the store issued (redb's `sync_data` calls on its file).
    pub fsyncs: u64,
    /// Durable store commits (grants, renewals, releases, sweeps that changed something).
    pub commits: u64,
}
