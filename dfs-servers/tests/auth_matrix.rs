//! The authorization matrix: every endpoint of the three servers, called as every kind of
//! caller, each answer's exact status asserted.
//!
//! Columns are callers (no credential, a key of another cluster, a revoked key, read-only,
//! read-write, admin, the servers' credential); rows are endpoints with the status each
//! column must get. A row's request is made per column (`{who}` in its path or body is the
//! column's name), so that a call that succeeds for one caller does not change what the next
//! one sees. Another column (another holder's lease) or capability rows are one more entry
//! in [`COLUMNS`] or [`rows`].

use dfs_proto::auth::{ClusterKey, Credential, Role};
use dfs_proto::client::{FileClient, LockClient, NameClient};
use dfs_proto::files::FetchRequest;
use dfs_proto::locks::AcquireRequest;
use dfs_proto::names::*;
use dfs_proto::{Checksum, DfsPath};
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
    expect: [u16; 7],
}

/// Statuses by who may call: the common shapes of a row.
const OPEN: [u16; 7] = [200; 7];
const READ: [u16; 7] = [401, 401, 401, 200, 200, 200, 200];
const WRITE: [u16; 7] = [401, 401, 401, 403, 200, 200, 200];
const ADMIN: [u16; 7] = [401, 401, 401, 403, 403, 200, 403];
const SERVER: [u16; 7] = [401, 401, 401, 403, 403, 403, 200];
const OPERATOR: [u16; 7] = [401, 401, 401, 403, 403, 200, 200];

/// What the rows refer to, set up before the matrix runs.
struct Ctx {
    fs_url: String,
    /// Lease tokens per column, for renew and release.
    tokens: HashMap<Who, u64>,
    blob_checksum: Checksum,
}

/// Blobs the rows read and delete are unpublished versions of real files: GC keeps those for
/// `orphan_after_ms`, while a blob of no file at all may be collected during the run.
const FUTURE: u64 = 1 << 20;

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
        expect,
    };
    let with = |srv, method, path, body: fn(&Ctx, Who) -> Value, expect| Row {
        srv,
        method,
        path,
        body: Some(body),
        raw: None,
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
            |_, w| json!({"path": format!("/ow-{}", w.name()), "token": 1, "create": 0o644}),
            WRITE,
        ),
        // An unknown file id: whoever may publish gets 404, the rest never get that far.
        with(
            Srv::Name,
            "POST",
            "/v1/meta/publish",
            |_, w| {
                serde_json::to_value(PublishRequest {
                    path: p(&format!("/pub-{}", w.name())),
                    file_id: 999_999,
                    base_version: 0,
                    version: 1,
                    token: 1,
                    size: 0,
                    checksum: Checksum::of(b""),
                    servers: vec![],
                    mtime_ns: None,
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
            |c, w| json!({"token": c.tokens[&w], "client": format!("held-{}", w.name())}),
            WRITE,
        ),
        with(
            Srv::Lock,
            "POST",
            "/v1/locks/release",
            |c, w| json!({"token": c.tokens[&w], "client": format!("held-{}", w.name())}),
            WRITE,
        ),
        // Fileserver. Blob GET/HEAD/PUT need any valid credential here; capabilities
        // (issue 12 item 3) narrow them further.
        row(Srv::File, "GET", "/healthz", OPEN),
        row(Srv::File, "GET", "/v1/stats", READ),
        row(Srv::File, "GET", "/v1/blobs", OPERATOR),
        row(Srv::File, "GET", "/v1/blobs/{blob}", READ),
        row(Srv::File, "HEAD", "/v1/blobs/{blob}", READ),
        Row {
            srv: Srv::File,
            method: "PUT",
            path: "/v1/blobs/10{n}/1",
            body: None,
            raw: Some(b"new blob"),
            expect: [401, 401, 401, 201, 201, 201, 201],
        },
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
    let mut tokens = HashMap::new();
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
        let lease = locks
            .acquire(&AcquireRequest {
                paths: vec![p(&format!("/held-{w}"))],
                client: format!("held-{w}"),
                ttl_ms: Some(60_000),
            })
            .await
            .unwrap();
        tokens.insert(who, lease.token);
        let version = FUTURE + 1 + n(who) as u64;
        files
            .upload_bytes(&servers.fs, holder.id, version, b"doomed".to_vec())
            .await
            .unwrap();
        doomed.insert(who, format!("{}/{version}", holder.id));
    }
    let ctx = Ctx {
        fs_url: servers.fs.clone(),
        tokens,
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
                .replace("{doomed}", &doomed[who]);
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
