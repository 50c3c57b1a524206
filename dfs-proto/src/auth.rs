//! Who may ask what: the cluster key, client keys, and every signature derived from them.
//!
//! One secret, the cluster key, is shared by the servers. Everything else is an HMAC-SHA256
//! under a key derived from it for one purpose, so the servers verify a client key, a blob
//! capability or a lease without a registry, and a signature made for one purpose never
//! passes as another.
//!
//! Text forms (all ASCII, one line):
//! - cluster key: `dfs-cluster-key-v1:<64 hex>`
//! - client key: `dfs-key-v1:<name>:<role>:<id>:<64 hex>`, sent as `Authorization: Bearer <key>`
//! - server credential: `dfs-server-v1:<64 hex>`, sent the same way
//! - capability: `cap1.<r|w>.<expires unix ms>.<64 hex>`, sent in [`CAPABILITY_HEADER`]
//! - lease signature: `<64 hex>` over the lease's token, holder, client, expiry and paths

use crate::error::{ApiError, ErrorCode};
use crate::{DfsPath, FileId, Version};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// Header that carries a blob capability on fileserver `GET`/`PUT` of a blob.
pub const CAPABILITY_HEADER: &str = "x-dfs-capability";

/// Environment variable naming a client key file, for the CLI, the mount and `dfs-client`.
pub const KEY_ENV: &str = "DFS_KEY";

const CLUSTER_PREFIX: &str = "dfs-cluster-key-v1:";
const CLIENT_PREFIX: &str = "dfs-key-v1:";
const SERVER_PREFIX: &str = "dfs-server-v1:";
const CAPABILITY_PREFIX: &str = "cap1";

/// Longest client name: enough for `user@host-mount`, short enough for logs and lease lists.
pub const MAX_NAME_LEN: usize = 64;

/// Milliseconds since the Unix epoch: capabilities and leases expire on the wall clock,
/// because they are checked by a server other than the one that signed them.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a key could not be read or made.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not a key of the expected kind.
    #[error("not a DFS {0}: expected a line starting with {1}")]
    WrongFormat(&'static str, &'static str),
    /// A client name with characters outside `[A-Za-z0-9._@-]`, empty, or too long.
    #[error("client name must be 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ @ -: {0:?}")]
    BadName(String),
    /// A role other than read-only, read-write or admin.
    #[error("unknown role {0:?}: expected read-only, read-write or admin")]
    BadRole(String),
    /// The key file could not be read.
    #[error("cannot read key file {0}: {1}")]
    Unreadable(String, String),
}

/// What a client key may do. Every key reads; the rest is by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads and lists; every change is refused with 403.
    ReadOnly,
    /// Reads and writes files and directories.
    ReadWrite,
    /// Everything a read-write key does, plus breaking locks, replication, the directory map
    /// and the root's mode.
    Admin,
}

impl Role {
    /// The role's name in key text and in docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::ReadWrite => "read-write",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name as [`Role::as_str`] writes it.
    pub fn parse(text: &str) -> Result<Role, KeyError> {
        match text {
            "read-only" => Ok(Role::ReadOnly),
            "read-write" => Ok(Role::ReadWrite),
            "admin" => Ok(Role::Admin),
            other => Err(KeyError::BadRole(other.to_owned())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The secret every server of one cluster shares. Never sent on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey {
    secret: [u8; 32],
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<secret>)")
    }
}

impl ClusterKey {
    /// A new random key, for `dfs keygen cluster` and `dfs up`.
    pub fn generate() -> ClusterKey {
        ClusterKey {
            secret: rand::random(),
        }
    }

    /// Reads the text form, ignoring surrounding whitespace and `#` comment lines.
    pub fn parse(text: &str) -> Result<ClusterKey, KeyError> {
        let wrong = KeyError::WrongFormat("cluster key", CLUSTER_PREFIX);
        let line = key_line(text).ok_or(wrong.clone())?;
        let hex_part = line.strip_prefix(CLUSTER_PREFIX).ok_or(wrong.clone())?;
        let bytes = hex::decode(hex_part).map_err(|_| wrong.clone())?;
        let secret: [u8; 32] = bytes.try_into().map_err(|_| wrong)?;
        Ok(ClusterKey { secret })
    }

    /// Reads a key file written by `dfs keygen cluster`.
    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        ClusterKey::parse(&read_key_file(path)?)
    }

    /// The text form, one line, for a key file.
    pub fn to_text(&self) -> String {
        format!("{CLUSTER_PREFIX}{}", hex::encode(self.secret))
    }

    fn mac(&self, purpose: &str, message: &[u8]) -> HmacSha256 {
        let mut derived = HmacSha256::new_from_slice(&self.secret).expect("any key length");
        derived.update(purpose.as_bytes());
        let subkey = derived.finalize().into_bytes();
        let mut mac = HmacSha256::new_from_slice(&subkey).expect("any key length");
        mac.update(message);
        mac
    }

    fn sign(&self, purpose: &str, message: &[u8]) -> String {
        hex::encode(self.mac(purpose, message).finalize().into_bytes())
    }

    fn verify(&self, purpose: &str, message: &[u8], signature_hex: &str) -> bool {
        match hex::decode(signature_hex) {
            Ok(sig) => self.mac(purpose, message).verify_slice(&sig).is_ok(),
            Err(_) => false,
        }
    }

    /// Makes a client key: verifiable by any server holding this cluster key.
    pub fn issue_client(&self, name: &str, role: Role) -> Result<ClientKey, KeyError> {
        check_name(name)?;
        let id = hex::encode(rand::random::<[u8; 8]>());
        let signature = self.sign("client-key", client_message(name, role, &id).as_bytes());
        Ok(ClientKey {
            name: name.to_owned(),
            role,
            id,
            signature,
        })
    }

    /// The credential servers present to each other.
    pub fn server_credential(&self) -> Credential {
        Credential(format!(
            "{SERVER_PREFIX}{}",
            self.sign("server", b"dfs server")
        ))
    }

    /// A capability to read one blob, or to write the blobs of one file a writer holding
    /// one fencing token may publish, until `expires_unix_ms`. `subject` is the version for
    /// [`BlobOp::Read`] and the token for [`BlobOp::Write`] (the writer chooses the version's
    /// low bits itself, see [`crate::version_for`]).
    pub fn capability(&self, id: FileId, subject: u64, op: BlobOp, expires_unix_ms: u64) -> String {
        let message = capability_message(id, subject, op, expires_unix_ms);
        format!(
            "{CAPABILITY_PREFIX}.{}.{expires_unix_ms}.{}",
            op.letter(),
            self.sign("capability", message.as_bytes())
        )
    }

    /// Checks that `capability` allows `op` on exactly this blob at `now_unix_ms`.
    pub fn check_capability(
        &self,
        capability: &str,
        id: FileId,
        version: Version,
        op: BlobOp,
        now_unix_ms: u64,
    ) -> Result<(), ApiError> {
        let mut parts = capability.split('.');
        let (Some(CAPABILITY_PREFIX), Some(letter), Some(expires), Some(sig), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "malformed blob capability",
            ));
        };
        let expires: u64 = expires
            .parse()
            .map_err(|_| ApiError::new(ErrorCode::Forbidden, "malformed blob capability"))?;
        if letter != op.letter() {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("the capability is not for {}", op.as_str()),
            ));
        }
        let subject = match op {
            BlobOp::Read => version,
            BlobOp::Write => crate::token_of(version),
        };
        let message = capability_message(id, subject, op, expires);
        if !self.verify("capability", message.as_bytes(), sig) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("the capability is not for blob {id}/{version}"),
            ));
        }
        if expires <= now_unix_ms {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "the capability has expired; ask the nameserver again",
            ));
        }
        Ok(())
    }

    /// Signs a lease as the lockserver grants or renews it.
    pub fn sign_lease(&self, lease: &LeaseClaim<'_>) -> String {
        self.sign("lease", lease.message().as_bytes())
    }

    /// Whether `signature` was made by [`ClusterKey::sign_lease`] for exactly this lease.
    pub fn lease_signature_valid(&self, lease: &LeaseClaim<'_>, signature: &str) -> bool {
        self.verify("lease", lease.message().as_bytes(), signature)
    }

    /// A fileserver's proof of its id: derived from the cluster key and the id, so only a
    /// holder of the cluster key can make it, and it names one fileserver.
    pub fn fileserver_proof(&self, server_id: &str, secret: &str) -> String {
        self.sign("fileserver-id", format!("{server_id}\n{secret}").as_bytes())
    }
}

/// The digest of a fileserver's identity secret, as the nameserver stores it: a copy of the
/// registry leaks no secret that would let its reader take over the id.
pub fn secret_digest(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random fileserver identity secret (64 hex characters).
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The fields of a lease that its signature covers.
#[derive(Clone, Copy, Debug)]
pub struct LeaseClaim<'a> {
    /// The fencing token.
    pub token: u64,
    /// The name of the client key that holds the lease.
    pub holder: &'a str,
    /// The session (mount or program) inside that key.
    pub client: &'a str,
    /// Wall-clock end of the lease, Unix milliseconds.
    pub expires_unix_ms: u64,
    /// The paths it covers.
    pub paths: &'a [DfsPath],
}

impl LeaseClaim<'_> {
    fn message(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n{}",
            self.token, self.holder, self.client, self.expires_unix_ms
        );
        for path in self.paths {
            text.push('\n');
            text.push_str(path.as_str());
        }
        text
    }
}

/// What a capability allows on one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOp {
    /// `GET` (whole or ranges) and `HEAD`.
    Read,
    /// `PUT` of a new blob.
    Write,
}

impl BlobOp {
    fn letter(self) -> &'static str {
        match self {
            BlobOp::Read => "r",
            BlobOp::Write => "w",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            BlobOp::Read => "reading",
            BlobOp::Write => "writing",
        }
    }
}

fn capability_message(id: FileId, subject: u64, op: BlobOp, expires: u64) -> String {
    format!("{id}\n{subject}\n{}\n{expires}", op.letter())
}

fn client_message(name: &str, role: Role, id: &str) -> String {
    format!("{name}\n{}\n{id}", role.as_str())
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadName(name.to_owned()))
    }
}

/// The holder a lease taken with client key `name`/`id` records (see [`Principal::holder`]).
pub fn holder_of(name: &str, id: &str) -> String {
    format!("{name}:{id}")
}

/// The first line that is not blank or a `#` comment.
fn key_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
}

fn read_key_file(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path)
        .map_err(|err| KeyError::Unreadable(path.display().to_string(), err.to_string()))
}

/// A client's key: its name, role and id, signed with the cluster key. The whole text is the
/// bearer credential, so a key file must be kept like a password.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey {
    /// Who holds it; shown in lease lists and logs.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Random id, the handle by which it is revoked.
    pub id: String,
    signature: String,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// Reads the text form (comment lines and whitespace ignored). Checks the shape only: the
    /// signature is checked by the servers, which hold the cluster key.
    pub fn parse(text: &str) -> Result<ClientKey, KeyError> {
        let wrong = KeyError::WrongFormat("client key", CLIENT_PREFIX);
        let line = key_line(text).ok_or(wrong.clone())?;
        let rest = line.strip_prefix(CLIENT_PREFIX).ok_or(wrong.clone())?;
        let parts: Vec<&str> = rest.split(':').collect();
        let [name, role, id, signature] = parts[..] else {
            return Err(wrong);
        };
        check_name(name)?;
        let role = Role::parse(role)?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) || signature.len() != 64 {
            return Err(wrong);
        }
        Ok(ClientKey {
            name: name.to_owned(),
            role,
            id: id.to_owned(),
            signature: signature.to_owned(),
        })
    }

    /// Reads a key file written by `dfs keygen client`.
    pub fn load(path: &Path) -> Result<ClientKey, KeyError> {
        ClientKey::parse(&read_key_file(path)?)
    }

    /// The text form, one line, for a key file.
    pub fn to_text(&self) -> String {
        format!(
            "{CLIENT_PREFIX}{}:{}:{}:{}",
            self.name, self.role, self.id, self.signature
        )
    }

    /// What the client sends with every request.
    pub fn credential(&self) -> Credential {
        Credential(self.to_text())
    }
}

/// A bearer credential as sent in `Authorization: Bearer ...`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(String);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<secret>)")
    }
}

impl Credential {
    /// The value of the `Authorization` header.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// Who a verified request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A client key that verified.
    Client {
        /// The key's name.
        name: String,
        /// The key's role.
        role: Role,
        /// The key's id.
        id: String,
    },
    /// Another server of the cluster.
    Server,
    /// Anyone: the server runs with `--insecure` and checks nothing.
    Insecure,
}

impl Principal {
    /// The name leases and logs record for this principal.
    pub fn name(&self) -> &str {
        match self {
            Principal::Client { name, .. } => name,
            Principal::Server => "dfs-server",
            Principal::Insecure => "anonymous",
        }
    }

    /// The holder a lease taken with this principal records, and that renew, release and
    /// the nameserver compare: one client key (`name:id`), the servers, or anyone (`""`,
    /// a cluster without keys, where nothing is compared).
    pub fn holder(&self) -> String {
        match self {
            Principal::Client { name, id, .. } => holder_of(name, id),
            Principal::Server => "dfs-server".to_owned(),
            Principal::Insecure => String::new(),
        }
    }

    /// Whether it may change files and directories.
    pub fn can_write(&self) -> bool {
        match self {
            Principal::Client { role, .. } => *role != Role::ReadOnly,
            Principal::Server | Principal::Insecure => true,
        }
    }

    /// Whether it may do what only admin keys do.
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Client { role, .. } => *role == Role::Admin,
            Principal::Server => false,
            Principal::Insecure => true,
        }
    }

    /// Whether it may use the endpoints only servers use (registration, deletes, copies).
    pub fn is_server(&self) -> bool {
        matches!(self, Principal::Server | Principal::Insecure)
    }

    /// `Ok` if it may write, else the 403 to answer.
    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.can_write() {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("key {:?} is read-only", self.name()),
            ))
        }
    }

    /// `Ok` if it is an admin, else the 403 to answer.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this needs an admin key; {:?} is not one", self.name()),
            ))
        }
    }

    /// `Ok` if it is a server, else the 403 to answer.
    pub fn require_server(&self) -> Result<(), ApiError> {
        if self.is_server() {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                "only servers of the cluster may do this",
            ))
        }
    }
}

/// A server's check of incoming credentials.
#[derive(Clone, Debug)]
pub struct Verifier {
    key: Option<ClusterKey>,
    revoked: HashSet<String>,
}

impl Verifier {
    /// Verifies against `key`, refusing client keys whose id is in `revoked`.
    pub fn new(key: ClusterKey, revoked: impl IntoIterator<Item = String>) -> Verifier {
        Verifier {
            key: Some(key),
            revoked: revoked.into_iter().collect(),
        }
    }

    /// Accepts every request as [`Principal::Insecure`] (`--insecure`).
    pub fn insecure() -> Verifier {
        Verifier {
            key: None,
            revoked: HashSet::new(),
        }
    }

    /// The cluster key, or `None` when insecure.
    pub fn cluster_key(&self) -> Option<&ClusterKey> {
        self.key.as_ref()
    }

    /// Who sent a request with this `Authorization` header value; 401 when it cannot be told.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let Some(key) = &self.key else {
            return Ok(Principal::Insecure);
        };
        let unauthenticated = |why: &str| ApiError::new(ErrorCode::Unauthenticated, why);
        let header = authorization.ok_or_else(|| {
            unauthenticated("no credential: send Authorization: Bearer <key> (see dfs keygen)")
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthenticated("the Authorization header is not a Bearer credential"))?
            .trim();
        if let Some(sig) = token.strip_prefix(SERVER_PREFIX) {
            return if key.verify("server", b"dfs server", sig) {
                Ok(Principal::Server)
            } else {
                Err(unauthenticated("the server credential does not verify"))
            };
        }
        let client = ClientKey::parse(token)
            .map_err(|_| unauthenticated("the credential is not a DFS key"))?;
        let message = client_message(&client.name, client.role, &client.id);
        if !key.verify("client-key", message.as_bytes(), &client.signature) {
            return Err(unauthenticated(
                "the key does not verify (made for another cluster, or altered)",
            ));
        }
        if self.revoked.contains(&client.id) {
            return Err(unauthenticated("the key has been revoked"));
        }
        Ok(Principal::Client {
            name: client.name,
            role: client.role,
            id: client.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> DfsPath {
        DfsPath::parse(p).unwrap()
    }

    #[test]
    fn cluster_key_round_trips_and_hides_its_secret() {
        let key = ClusterKey::generate();
        let text = format!("# made by dfs keygen\n{}\n", key.to_text());
        assert_eq!(ClusterKey::parse(&text).unwrap(), key);
        assert!(!format!("{key:?}").contains(&key.to_text()[20..]));
        assert!(ClusterKey::parse("dfs-cluster-key-v1:abcd").is_err());
        assert!(ClusterKey::parse("").is_err());
    }

    #[test]
    fn client_keys_verify_only_under_their_cluster_and_until_revoked() {
        let key = ClusterKey::generate();
        let alice = key.issue_client("alice", Role::ReadWrite).unwrap();
        let parsed = ClientKey::parse(&alice.to_text()).unwrap();
        assert_eq!(parsed, alice);
        let header = alice.credential().header_value();
        let verifier = Verifier::new(key.clone(), []);
        let who = verifier.authenticate(Some(&header)).unwrap();
        assert_eq!(who.name(), "alice");
        assert!(who.can_write() && !who.is_admin() && !who.is_server());

        let other = Verifier::new(ClusterKey::generate(), []);
        let err = other.authenticate(Some(&header)).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthenticated);

        let revoked = Verifier::new(key.clone(), [alice.id.clone()]);
        assert_eq!(
            revoked.authenticate(Some(&header)).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        assert!(verifier.authenticate(None).is_err());
        assert!(verifier.authenticate(Some("Basic abc")).is_err());
    }

    #[test]
    fn a_changed_role_or_name_does_not_verify() {
        let key = ClusterKey::generate();
        let bob = key.issue_client("bob", Role::ReadOnly).unwrap();
        let forged = bob.to_text().replace(":read-only:", ":admin:");
        let renamed = bob.to_text().replace(":bob:", ":root:");
        let verifier = Verifier::new(key, []);
        for text in [forged, renamed] {
            let header = format!("Bearer {text}");
            assert_eq!(
                verifier.authenticate(Some(&header)).unwrap_err().code,
                ErrorCode::Unauthenticated
            );
        }
    }

    #[test]
    fn server_credentials_verify_and_roles_gate() {
        let key = ClusterKey::generate();
        let verifier = Verifier::new(key.clone(), []);
        let server = verifier
            .authenticate(Some(&key.server_credential().header_value()))
            .unwrap();
        assert!(server.is_server() && server.require_admin().is_err());
        let reader = key.issue_client("r", Role::ReadOnly).unwrap();
        let reader = verifier
            .authenticate(Some(&reader.credential().header_value()))
            .unwrap();
        assert_eq!(
            reader.require_write().unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert!(Verifier::insecure().authenticate(None).unwrap().is_admin());
    }

    #[test]
    fn names_are_restricted() {
        let key = ClusterKey::generate();
        assert!(key.issue_client("a:b", Role::Admin).is_err());
        assert!(key.issue_client("", Role::Admin).is_err());
        assert!(key.issue_client(&"x".repeat(65), Role::Admin).is_err());
        assert!(key.issue_client("ci-runner@host.1", Role::Admin).is_ok());
    }

    #[test]
    fn capabilities_cover_one_blob_one_op_until_they_expire() {
        let key = ClusterKey::generate();
        let now = now_unix_ms();
        let cap = key.capability(7, 42, BlobOp::Read, now + 1000);
        key.check_capability(&cap, 7, 42, BlobOp::Read, now)
            .unwrap();
        for (id, v, op, at) in [
            (7, 43, BlobOp::Read, now),
            (8, 42, BlobOp::Read, now),
            (7, 42, BlobOp::Write, now),
            (7, 42, BlobOp::Read, now + 1000),
        ] {
            let err = key.check_capability(&cap, id, v, op, at).unwrap_err();
            assert_eq!(err.code, ErrorCode::Forbidden);
        }
        let other = ClusterKey::generate();
        assert!(other
            .check_capability(&cap, 7, 42, BlobOp::Read, now)
            .is_err());
        let stretched = cap.replacen(&(now + 1000).to_string(), &(now + 99_999).to_string(), 1);
        assert!(key
            .check_capability(&stretched, 7, 42, BlobOp::Read, now)
            .is_err());
        assert!(key
            .check_capability("garbage", 7, 42, BlobOp::Read, now)
            .is_err());
    }

    #[test]
    fn a_write_capability_covers_every_version_of_its_token_and_no_other() {
        let key = ClusterKey::generate();
        let now = now_unix_ms();
        let cap = key.capability(7, 5, BlobOp::Write, now + 1000);
        for seq in [0, 1, 0xF_FFFF] {
            key.check_capability(&cap, 7, crate::version_for(5, seq), BlobOp::Write, now)
                .unwrap();
        }
        for (id, v, op) in [
            (7, crate::version_for(6, 1), BlobOp::Write),
            (7, crate::version_for(4, 1), BlobOp::Write),
            (8, crate::version_for(5, 1), BlobOp::Write),
            (7, crate::version_for(5, 1), BlobOp::Read),
        ] {
            let err = key.check_capability(&cap, id, v, op, now).unwrap_err();
            assert_eq!(err.code, ErrorCode::Forbidden);
        }
    }

    #[test]
    fn lease_signatures_cover_every_field() {
        let key = ClusterKey::generate();
        let paths = [path("/a"), path("/b")];
        let claim = LeaseClaim {
            token: 9,
            holder: "alice",
            client: "mount-1",
            expires_unix_ms: 1234,
            paths: &paths,
        };
        let sig = key.sign_lease(&claim);
        assert!(key.lease_signature_valid(&claim, &sig));
        let other_paths = [path("/a")];
        for changed in [
            LeaseClaim { token: 10, ..claim },
            LeaseClaim {
                holder: "bob",
                ..claim
            },
            LeaseClaim {
                client: "mount-2",
                ..claim
            },
            LeaseClaim {
                expires_unix_ms: 99999,
                ..claim
            },
            LeaseClaim {
                paths: &other_paths,
                ..claim
            },
        ] {
            assert!(!key.lease_signature_valid(&changed, &sig));
        }
        assert!(!key.lease_signature_valid(&claim, "zz"));
    }
}
