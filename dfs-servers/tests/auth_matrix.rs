//! The authorization matrix: every endpoint of the three servers, called as every kind of
//! caller, each answer's exact status asserted.
//!
//! Columns are callers (no credential, a key of another cluster, a revoked key, read-only,
//! read-write, admin, the servers' credential); rows are endpoints with the status each
//! column must get. A row's request is made per column (`{who}` in its path or body is the
//! column's name), so that a call that succeeds for one caller does not change what the next
//! one sees. Another column (another holder's lease) or capability rows are one more entry
//! in [`COLUMNS`] or [`rows`].

use dfs_proto::auth::{now_unix_ms, BlobOp, ClusterKey, Credential, Role, CAPABILITY_HEADER};
use dfs_proto::client::{FileClient, LockClient, NameClient};
use dfs_proto::files::FetchRequest;
use dfs_proto::locks::{AcquireRequest, Lease};
use dfs_proto::names::*;
use dfs_proto::{version_for, Checksum, DfsPath};
use dfs_servers::{fileserver, lockserver, nameserver};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;

/// Who calls: the columns of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Who {
    None,
    Bad,
    Revoked,
    ReadOnly,
    ReadWrite,
    Admin,
    Server,
}

const COLUMNS: [Who; 7] = [
    Who::None,
    Who::Bad,
    Who::Revoked,
    Who::ReadOnly,
    Who::ReadWrite,
    Who::Admin,
    Who::Server,
];

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::None => "none",
            Who::Bad => "bad",
            Who::Revoked => "revoked",
            Who::ReadOnly => "ro",
            Who::ReadWrite => "rw",
            Who::Admin => "admin",
            Who::Server => "server",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Srv {
    Name,
    Lock,
    File,
}

/// One endpoint and the status each column gets, in [`COLUMNS`] order.
struct Row {
    srv: Srv,
    method: &'static str,
    /// Path and query; `{who}` becomes the column's name, `{n}` its index.
    path: &'static str,
    /// JSON body for each column, or none.
    body: Option<fn(&Ctx, Who) -> Value>,
    /// Raw bytes sent instead of JSON (blob uploads).
    raw: Option<&'static [u8]>,
    /// A blob capability sent with the request.
    cap: Option<fn(&Ctx) -> String>,
    expect: [u16; 7],
}

/// Statuses by who may call: the common shapes of a row.
const OPEN: [u16; 7] = [200; 7];
const READ: [u16; 7] = [401, 401, 401, 200, 200, 200, 200];
const WRITE: [u16; 7] = [401, 401, 401, 403, 200, 200, 200];
const ADMIN: [u16; 7] = [401, 401, 401, 403, 403, 200, 403];
const SERVER: [u16; 7] = [401, 401, 401, 403, 403, 403, 200];
const OPERATOR: [u16; 7] = [401, 401, 401, 403, 403, 200, 200];
/// Blob transfers: servers without a capability, any key only with one.
const CAP_READ: [u16; 7] = [401, 401, 401, 200, 200, 200, 200];
const NO_CAP_READ: [u16; 7] = [401, 401, 401, 403, 403, 403, 200];
const CAP_WRITE: [u16; 7] = [401, 401, 401, 201, 201, 201, 201];
const NO_CAP_WRITE: [u16; 7] = [401, 401, 401, 403, 403, 403, 201];

/// The fencing token the write capabilities of the matrix are for.
const WRITE_TOKEN: u64 = 77;

/// What the rows refer to, set up before the matrix runs.
struct Ctx {
    fs_url: String,
    /// The cluster key, to sign the capabilities of the capability rows.
    key: ClusterKey,
    /// The file whose unpublished versions the blob rows use.
    holder: u64,
    /// Per column, a lease taken with the column's own key where it may take one (else an
    /// admin's), on `/held-{who}`, `/ow-{who}` and `/pub-{who}`: renew, release, open-write
    /// and publish present it.
    leases: HashMap<Who, Lease>,
    blob_checksum: Checksum,
}

/// Blobs the rows read and delete are unpublished versions of real files: GC keeps those for
/// `orphan_after_ms`, while a blob of no file at all may be collected during the run.
const FUTURE: u64 = 1 << 20;

/// An expiry a minute away: the capability rows' valid capabilities.
fn later() -> u64 {
    now_unix_ms() + 60_000
}

fn p(path: &str) -> DfsPath {
    DfsPath::parse(path).unwrap()
}

fn n(who: Who) -> usize {
    COLUMNS.iter().position(|w| *w == who).unwrap()
}

fn rows() -> Vec<Row> {
    let row = |srv, method, path, expect| Row {
        srv,
        method,
        path,
        body: None,
        raw: None,
        cap: None,
        expect,
    };
    let with = |srv, method, path, body: fn(&Ctx, Who) -> Value, expect| Row {
        srv,
        method,
        path,
        body: Some(body),
        raw: None,
        cap: None,
        expect,
    };
    let capped = |method, path, cap: fn(&Ctx) -> String, expect| Row {
        srv: Srv::File,
        method,
        path,
        body: None,
        raw: (method == "PUT").then_some(b"capped blob".as_slice()),
        cap: Some(cap),
        expect,
    };
    vec![
        // Nameserver.
        row(Srv::Name, "GET", "/healthz", OPEN),
        row(Srv::Name, "GET", "/", READ),
        row(Srv::Name, "GET", "/v1/cluster", READ),
        row(Srv::Name, "GET", "/v1/stats", READ),
        row(Srv::Name, "GET", "/v1/meta/stat?path=/", READ),
        row(Srv::Name, "GET", "/v1/meta/list?path=/", READ),
        row(Srv::Name, "GET", "/v1/meta/stat-id?id=1", READ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/mkdir",
            |_, w| json!({"path": format!("/mk-{}", w.name())}),
            WRITE,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/rmdir",
            |_, w| json!({"path": format!("/rm-{}", w.name())}),
            WRITE,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/create",
            |_, w| json!({"path": format!("/cr-{}", w.name())}),
            WRITE,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/unlink",
            |_, w| json!({"path": format!("/ul-{}", w.name())}),
            WRITE,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/rename",
            |_, w| json!({"from": format!("/rn-{}", w.name()), "to": format!("/rn2-{}", w.name())}),
            WRITE,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/setattr",
            |_, w| json!({"path": format!("/sa-{}", w.name()), "mode": 0o600}),
            WRITE,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/symlink",
            |_, w| json!({"path": format!("/ln-{}", w.name()), "target": "sa"}),
            WRITE,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/link",
            |_, w| json!({"path": format!("/sa-{}", w.name()), "new_path": format!("/hl-{}", w.name())}),
            WRITE,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/mknod",
            |_, w| json!({"path": format!("/fifo-{}", w.name()), "kind": "fifo", "mode": 0o644}),
            WRITE,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/xattr/set",
            |_, w| json!({"path": format!("/sa-{}", w.name()), "name": "user.k", "value": "dg=="}),
            WRITE,
        ),
        row(Srv::Name, "GET", "/v1/meta/xattr?path=/blob-holder", READ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/xattr/remove",
            |_, w| json!({"path": format!("/sa-{}", w.name()), "name": "user.k"}),
            WRITE,
        ),
        // The root's mode decides who can do anything at all: admin keys only.
        with(
            Srv::Name,
            "POST",
            "/v1/meta/setattr",
            |_, _| json!({"path": "/", "mode": 0o755}),
            ADMIN,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/open-write",
            |c, w| {
                let lease = &c.leases[&w];
                json!({"path": format!("/ow-{}", w.name()), "token": lease.token,
                       "create": 0o644, "lease": lease})
            },
            WRITE,
        ),
        // Another key's lease (the admin's), borrowed: only its holder may write with it.
        with(
            Srv::Name,
            "POST",
            "/v1/meta/open-write",
            |c, _| {
                let lease = &c.leases[&Who::Admin];
                json!({"path": "/ow-admin", "token": lease.token, "create": 0o644, "lease": lease})
            },
            [401, 401, 401, 403, 403, 200, 403],
        ),
        // A token without its lease, or with a signature that does not match it.
        with(
            Srv::Name,
            "POST",
            "/v1/meta/open-write",
            |_, w| json!({"path": format!("/ow-{}", w.name()), "token": u64::MAX, "create": 0o644}),
            [401, 401, 401, 403, 403, 403, 403],
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/meta/open-write",
            |c, w| {
                let mut lease = c.leases[&w].clone();
                lease.token = u64::MAX;
                json!({"path": format!("/ow-{}", w.name()), "token": u64::MAX, "lease": lease})
            },
            [401, 401, 401, 403, 403, 403, 403],
        ),
        // An unknown file id: whoever may publish gets 404, the rest never get that far.
        with(
            Srv::Name,
            "POST",
            "/v1/meta/publish",
            |c, w| {
                let lease = c.leases[&w].clone();
                serde_json::to_value(PublishRequest {
                    path: p(&format!("/pub-{}", w.name())),
                    file_id: 999_999,
                    base_version: 0,
                    version: version_for(lease.token, 1),
                    token: lease.token,
                    size: 0,
                    checksum: Checksum::of(b""),
                    servers: vec![],
                    mtime_ns: None,
                    lease: Some(lease),
                })
                .unwrap()
            },
            [401, 401, 401, 403, 404, 404, 404],
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/fileservers/register",
            |_, w| {
                json!({"id": format!("fake-{}", w.name()), "url": "http://127.0.0.1:9",
                   "capacity_bytes": 1, "free_bytes": 1, "dirs": ["/secret"]})
            },
            SERVER,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/fileservers/heartbeat",
            |_, w| json!({"id": format!("unknown-{}", w.name()), "free_bytes": 1}),
            SERVER,
        ),
        with(
            Srv::Name,
            "POST",
            "/v1/dirs/replication",
            |_, w| json!({"dir": format!("/rep-{}", w.name()), "replication": 1}),
            ADMIN,
        ),
        // Lockserver.
        row(Srv::Lock, "GET", "/healthz", OPEN),
        row(Srv::Lock, "GET", "/v1/locks", READ),
        row(Srv::Lock, "GET", "/v1/stats", READ),
        with(
            Srv::Lock,
            "POST",
            "/v1/locks/acquire",
            |_, w| json!({"paths": [format!("/lk-{}", w.name())], "client": format!("c-{}", w.name())}),
            WRITE,
        ),
        with(
            Srv::Lock,
            "POST",
            "/v1/locks/renew",
            |c, w| json!({"token": c.leases[&w].token, "client": format!("held-{}", w.name())}),
            WRITE,
        ),
        // Another key's lease (the admin's): its session name is public, its key is not.
        with(
            Srv::Lock,
            "POST",
            "/v1/locks/renew",
            |c, _| json!({"token": c.leases[&Who::Admin].token, "client": "held-admin"}),
            [401, 401, 401, 403, 403, 200, 403],
        ),
        with(
            Srv::Lock,
            "POST",
            "/v1/locks/release",
            |c, _| json!({"token": c.leases[&Who::Admin].token, "client": "held-admin"}),
            // Columns run in order: once the admin gave it back, nobody holds it (410).
            [401, 401, 401, 403, 403, 200, 410],
        ),
        // The admin's own release above gave its lease back; each other column's is its own.
        with(
            Srv::Lock,
            "POST",
            "/v1/locks/release",
            |c, w| json!({"token": c.leases[&w].token, "client": format!("held-{}", w.name())}),
            [401, 401, 401, 403, 200, 410, 200],
        ),
        with(
            Srv::Lock,
            "POST",
            "/v1/locks/break",
            |_, w| json!({"path": format!("/brk-{}", w.name())}),
            ADMIN,
        ),
        // Fileserver. A key reads or writes a blob only with a capability the nameserver
        // signed for that blob (servers need none).
        row(Srv::File, "GET", "/healthz", OPEN),
        row(Srv::File, "GET", "/v1/stats", READ),
        row(Srv::File, "GET", "/v1/blobs", OPERATOR),
        row(Srv::File, "GET", "/v1/blobs/{blob}", NO_CAP_READ),
        row(Srv::File, "HEAD", "/v1/blobs/{blob}", NO_CAP_READ),
        Row {
            srv: Srv::File,
            method: "PUT",
            path: "/v1/blobs/10{n}/1",
            body: None,
            raw: Some(b"new blob"),
            cap: None,
            expect: NO_CAP_WRITE,
        },
        capped(
            "GET",
            "/v1/blobs/{blob}",
            |c| c.key.capability(c.holder, FUTURE, BlobOp::Read, later()),
            CAP_READ,
        ),
        capped(
            "HEAD",
            "/v1/blobs/{blob}",
            |c| c.key.capability(c.holder, FUTURE, BlobOp::Read, later()),
            CAP_READ,
        ),
        // A capability for another version, another file, or one that expired.
        capped(
            "GET",
            "/v1/blobs/{blob}",
            |c| {
                c.key
                    .capability(c.holder, FUTURE + 1, BlobOp::Read, later())
            },
            NO_CAP_READ,
        ),
        capped(
            "GET",
            "/v1/blobs/{blob}",
            |c| {
                c.key
                    .capability(c.holder + 1, FUTURE, BlobOp::Read, later())
            },
            NO_CAP_READ,
        ),
        capped(
            "GET",
            "/v1/blobs/{blob}",
            |c| {
                c.key
                    .capability(c.holder, FUTURE, BlobOp::Read, now_unix_ms() - 1)
            },
            NO_CAP_READ,
        ),
        // Writing: a write capability for this file and token; not a read capability, not
        // one for another token.
        capped(
            "PUT",
            "/v1/blobs/{holder}/{wv1}",
            |c| {
                c.key
                    .capability(c.holder, WRITE_TOKEN, BlobOp::Write, later())
            },
            CAP_WRITE,
        ),
        capped(
            "PUT",
            "/v1/blobs/{holder}/{wv2}",
            |c| {
                let version = version_for(WRITE_TOKEN, 0);
                c.key.capability(c.holder, version, BlobOp::Read, later())
            },
            NO_CAP_WRITE,
        ),
        capped(
            "PUT",
            "/v1/blobs/{holder}/{wv3}",
            |c| {
                c.key
                    .capability(c.holder, WRITE_TOKEN + 1, BlobOp::Write, later())
            },
            NO_CAP_WRITE,
        ),
        row(Srv::File, "DELETE", "/v1/blobs/{doomed}", SERVER),
        with(
            Srv::File,
            "POST",
            "/v1/blobs/{blob}/fetch",
            |c, _| {
                serde_json::to_value(FetchRequest {
                    source: c.fs_url.clone(),
                    checksum: c.blob_checksum,
                })
                .unwrap()
            },
            SERVER,
        ),
        row(Srv::File, "POST", "/v1/blobs/{blob}/verify", SERVER),
    ]
}

struct Servers {
    ns: String,
    lock: String,
    fs: String,
    stops: Vec<oneshot::Sender<()>>,
}

async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

fn stop_signal(stops: &mut Vec<oneshot::Sender<()>>) -> impl std::future::Future<Output = ()> {
    let (tx, rx) = oneshot::channel::<()>();
    stops.push(tx);
    async move {
        let _ = rx.await;
    }
}

async fn start(root: &Path, key_file: &Path, revoked: &str) -> Servers {
    let mut stops = Vec::new();
    let revoked_keys = vec![revoked.to_owned()];
    let (lock_listener, lock) = bind().await;
    let lock_config = lockserver::Config {
        data: root.join("lock"),
        cluster_key: Some(key_file.to_owned()),
        revoked_keys: revoked_keys.clone(),
        ..Default::default()
    };
    tokio::spawn(lockserver::run(
        lock_listener,
        lock_config,
        stop_signal(&mut stops),
    ));
    let (ns_listener, ns) = bind().await;
    let ns_config = nameserver::Config {
        data: root.join("ns"),
        lockserver: Some(lock.clone()),
        replication: 1,
        cluster_key: Some(key_file.to_owned()),
        revoked_keys: revoked_keys.clone(),
        ..Default::default()
    };
    tokio::spawn(nameserver::run(
        ns_listener,
        ns_config,
        stop_signal(&mut stops),
    ));
    let (fs_listener, fs) = bind().await;
    let fs_config = fileserver::Config {
        data: root.join("fs"),
        nameserver: ns.clone(),
        cluster_key: Some(key_file.to_owned()),
        revoked_keys,
        ..Default::default()
    };
    tokio::spawn(fileserver::run(
        fs_listener,
        fs_config,
        stop_signal(&mut stops),
    ));
    Servers {
        ns,
        lock,
        fs,
        stops,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_each_caller_with_the_exact_status() {
    let tmp = tempfile::tempdir().unwrap();
    let key = ClusterKey::generate();
    let key_file = tmp.path().join("cluster.key");
    std::fs::write(&key_file, key.to_text()).unwrap();
    let revoked = key.issue_client("gone", Role::ReadWrite).unwrap();
    let servers = start(tmp.path(), &key_file, &revoked.id).await;

    let credentials: HashMap<Who, Option<Credential>> = HashMap::from([
        (Who::None, None),
        (
            Who::Bad,
            Some(
                ClusterKey::generate()
                    .issue_client("intruder", Role::Admin)
                    .unwrap()
                    .credential(),
            ),
        ),
        (Who::Revoked, Some(revoked.credential())),
        (
            Who::ReadOnly,
            Some(
                key.issue_client("reader", Role::ReadOnly)
                    .unwrap()
                    .credential(),
            ),
        ),
        (
            Who::ReadWrite,
            Some(
                key.issue_client("writer", Role::ReadWrite)
                    .unwrap()
                    .credential(),
            ),
        ),
        (
            Who::Admin,
            Some(key.issue_client("root", Role::Admin).unwrap().credential()),
        ),
        (Who::Server, Some(key.server_credential())),
    ]);

    // Setup, as an admin and as the servers: what the rows act on, one per column.
    let admin = credentials[&Who::Admin].clone().unwrap();
    let names = NameClient::new(&servers.ns).with_credential(admin.clone());
    for _ in 0..500 {
        if names
            .cluster()
            .await
            .is_ok_and(|c| c.fileservers.iter().any(|f| f.alive))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let locks = LockClient::new(&servers.lock).with_credential(admin.clone());
    let files = FileClient::new().with_credential(key.server_credential());
    let holder = names
        .create(&CreateRequest {
            path: p("/blob-holder"),
            mode: None,
            exclusive: true,
            owner: None,
        })
        .await
        .unwrap();
    let blob_path = format!("{}/{FUTURE}", holder.id);
    let blob = files
        .upload_bytes(&servers.fs, holder.id, FUTURE, b"matrix".to_vec())
        .await
        .unwrap();
    let mut doomed = HashMap::new();
    let mut leases = HashMap::new();
    for who in COLUMNS {
        let w = who.name();
        names.mkdir(&p(&format!("/rm-{w}")), None).await.unwrap();
        for file in ["ul", "rn", "sa"] {
            names
                .create(&CreateRequest {
                    path: p(&format!("/{file}-{w}")),
                    mode: None,
                    exclusive: true,
                    owner: None,
                })
                .await
                .unwrap();
        }
        // Taken with the column's own key where that key may take leases.
        let own = match who {
            Who::ReadWrite | Who::Admin | Who::Server => credentials[&who].clone().unwrap(),
            _ => admin.clone(),
        };
        let lease = LockClient::new(&servers.lock)
            .with_credential(own)
            .acquire(&AcquireRequest {
                paths: ["held", "ow", "pub"]
                    .iter()
                    .map(|what| p(&format!("/{what}-{w}")))
                    .collect(),
                client: format!("held-{w}"),
                ttl_ms: Some(60_000),
            })
            .await
            .unwrap();
        leases.insert(who, lease);
        locks
            .acquire(&AcquireRequest {
                paths: vec![p(&format!("/brk-{w}"))],
                client: format!("brk-{w}"),
                ttl_ms: Some(60_000),
            })
            .await
            .unwrap();
        let version = FUTURE + 1 + n(who) as u64;
        files
            .upload_bytes(&servers.fs, holder.id, version, b"doomed".to_vec())
            .await
            .unwrap();
        doomed.insert(who, format!("{}/{version}", holder.id));
    }
    let ctx = Ctx {
        fs_url: servers.fs.clone(),
        key: key.clone(),
        holder: holder.id,
        leases,
        blob_checksum: blob.checksum,
    };

    let http = reqwest::Client::new();
    let mut cases = 0;
    let mut wrong = Vec::new();
    for row in rows() {
        let base = match row.srv {
            Srv::Name => &servers.ns,
            Srv::Lock => &servers.lock,
            Srv::File => &servers.fs,
        };
        for (who, expect) in COLUMNS.iter().zip(row.expect) {
            let path = row
                .path
                .replace("{who}", who.name())
                .replace("{n}", &n(*who).to_string())
                .replace("{blob}", &blob_path)
                .replace("{doomed}", &doomed[who])
                .replace("{holder}", &holder.id.to_string())
                .replace(
                    "{wv1}",
                    &version_for(WRITE_TOKEN, 10 + n(*who) as u64).to_string(),
                )
                .replace(
                    "{wv2}",
                    &version_for(WRITE_TOKEN, 20 + n(*who) as u64).to_string(),
                )
                .replace(
                    "{wv3}",
                    &version_for(WRITE_TOKEN, 30 + n(*who) as u64).to_string(),
                );
            let method = reqwest::Method::from_bytes(row.method.as_bytes()).unwrap();
            let mut req = http.request(method, format!("{base}{path}"));
            if let Some(cred) = &credentials[who] {
                req = req.header("authorization", cred.header_value());
            }
            if let Some(body) = row.body {
                req = req.json(&body(&ctx, *who));
            }
            if let Some(raw) = row.raw {
                req = req.body(raw.to_vec());
            }
            if let Some(cap) = row.cap {
                req = req.header(CAPABILITY_HEADER, cap(&ctx));
            }
            let reply = req.send().await.unwrap();
            let status = reply.status().as_u16();
            // Refusals are JSON errors with the code that names them.
            if (status == 401 || status == 403) && row.method != "HEAD" {
                let body: Value = reply.json().await.unwrap();
                let code = if status == 401 {
                    "unauthenticated"
                } else {
                    "forbidden"
                };
                assert_eq!(
                    body["code"],
                    code,
                    "{} {path} as {}",
                    row.method,
                    who.name()
                );
            }
            cases += 1;
            if status != expect {
                wrong.push(format!(
                    "{} {path} as {}: got {status}, want {expect}",
                    row.method,
                    who.name()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cases} cases wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(cases >= 60, "only {cases} cases");
    eprintln!("authorization matrix: {cases} cases, all as expected");

    // Nothing a refused caller sent took effect.
    let info = names.cluster().await.unwrap();
    let fake: Vec<_> = info
        .fileservers
        .iter()
        .filter(|f| f.id.starts_with("fake-"))
        .map(|f| f.id.as_str())
        .collect();
    assert_eq!(
        fake,
        ["fake-server"],
        "only the server credential registers"
    );
    assert!(info
        .map
        .iter()
        .all(|m| m.dir != p("/secret") || m.servers.iter().all(|s| s == "fake-server")));
    let root = names.stat(&p("/")).await.unwrap();
    assert_eq!(root.mode & 0o777, 0o755);
    for who in [Who::None, Who::Bad, Who::Revoked, Who::ReadOnly] {
        let w = who.name();
        assert!(
            names.stat(&p(&format!("/mk-{w}"))).await.is_err(),
            "{w} made a directory"
        );
        assert!(
            names.stat(&p(&format!("/ul-{w}"))).await.is_ok(),
            "{w} removed a file"
        );
    }
    for stop in servers.stops {
        let _ = stop.send(());
    }
}
