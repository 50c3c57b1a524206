//! Blob capabilities and signed leases against real servers (in this process, on
//! 127.0.0.1:0) and the real client library: the attacks of issue 12 items 3 and 4 fail for
//! the attacker, and honest clients carrying what the servers hand out keep working.

use dfs_client::Client;
use dfs_proto::auth::{ClientKey, ClusterKey, Role, CAPABILITY_HEADER};
use dfs_proto::client::{FileClient, LockClient, NameClient};
use dfs_proto::files::FetchRequest;
use dfs_proto::DfsPath;
use dfs_servers::{fileserver, lockserver, nameserver};
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;

fn p(path: &str) -> DfsPath {
    DfsPath::parse(path).unwrap()
}

/// A cluster with a key: lockserver, nameserver and one fileserver.
struct Cluster {
    _tmp: tempfile::TempDir,
    key: ClusterKey,
    ns: String,
    lock: String,
    fs: String,
    _stops: Vec<oneshot::Sender<()>>,
}

async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

fn stop(stops: &mut Vec<oneshot::Sender<()>>) -> impl std::future::Future<Output = ()> {
    let (tx, rx) = oneshot::channel::<()>();
    stops.push(tx);
    async move {
        let _ = rx.await;
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let key = ClusterKey::generate();
        let key_file = tmp.path().join("cluster.key");
        std::fs::write(&key_file, key.to_text()).unwrap();
        let root: &Path = tmp.path();
        let mut stops = Vec::new();
        let (l, lock) = bind().await;
        let config = lockserver::Config {
            data: root.join("lock"),
            cluster_key: Some(key_file.clone()),
            ..Default::default()
        };
        tokio::spawn(lockserver::run(l, config, stop(&mut stops)));
        let (l, ns) = bind().await;
        let config = nameserver::Config {
            data: root.join("ns"),
            lockserver: Some(lock.clone()),
            replication: 1,
            cluster_key: Some(key_file.clone()),
            ..Default::default()
        };
        tokio::spawn(nameserver::run(l, config, stop(&mut stops)));
        let (l, fs) = bind().await;
        let config = fileserver::Config {
            data: root.join("fs"),
            nameserver: ns.clone(),
            cluster_key: Some(key_file.clone()),
            ..Default::default()
        };
        tokio::spawn(fileserver::run(l, config, stop(&mut stops)));
        let cluster = Cluster {
            _tmp: tmp,
            key,
            ns,
            lock,
            fs,
            _stops: stops,
        };
        let admin = cluster.names(Role::Admin, "root");
        for _ in 0..500 {
            if admin
                .cluster()
                .await
                .is_ok_and(|c| c.fileservers.iter().any(|f| f.alive))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster
    }

    fn client_key(&self, role: Role, name: &str) -> ClientKey {
        self.key.issue_client(name, role).unwrap()
    }

    fn client(&self, role: Role, name: &str) -> Client {
        Client::with_key(&self.ns, self.client_key(role, name))
    }

    fn names(&self, role: Role, name: &str) -> NameClient {
        NameClient::new(&self.ns).with_credential(self.client_key(role, name).credential())
    }

    fn locks(&self, role: Role, name: &str) -> LockClient {
        LockClient::new(&self.lock).with_credential(self.client_key(role, name).credential())
    }

    fn files(&self, role: Role, name: &str) -> FileClient {
        FileClient::new().with_credential(self.client_key(role, name).credential())
    }
}

/// Issue 12: "read any file (stat gives id, version and locations; GET gives bytes)". A key
/// that may read gets the bytes only through the capability the nameserver hands out with
/// the entry, for that version only; the honest client carries it without being told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_is_read_only_with_the_capability_of_its_version() {
    let c = Cluster::start().await;
    let writer = c.client(Role::ReadWrite, "writer");
    writer.write("/secret", b"first").await.unwrap();
    let first = c
        .names(Role::ReadOnly, "reader")
        .stat(&p("/secret"))
        .await
        .unwrap();
    writer.write("/secret", b"second version").await.unwrap();
    assert_eq!(
        c.client(Role::ReadOnly, "reader")
            .read("/secret")
            .await
            .unwrap(),
        b"second version"
    );

    let entry = c
        .names(Role::ReadOnly, "reader")
        .stat(&p("/secret"))
        .await
        .unwrap();
    let cap = entry
        .capability
        .clone()
        .expect("a read capability with the entry");
    let url = &entry.locations[0];
    let files = c.files(Role::ReadWrite, "thief");
    // Without a capability, a key reads nothing.
    let err = files
        .download_bytes(url, entry.id, entry.version)
        .await
        .unwrap_err();
    assert_eq!(err.code, dfs_proto::ErrorCode::Forbidden, "{err}");
    // The capability of the old version does not open the new one, nor another file's.
    let old_cap = first.capability.clone().unwrap();
    let err = files
        .with_capability(Some(&old_cap))
        .download_bytes(url, entry.id, entry.version)
        .await
        .unwrap_err();
    assert_eq!(err.code, dfs_proto::ErrorCode::Forbidden, "{err}");
    // A read capability uploads nothing.
    let err = files
        .with_capability(Some(&cap))
        .upload_bytes(url, entry.id, entry.version + 1, b"forged".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code, dfs_proto::ErrorCode::Forbidden, "{err}");
    // With it, exactly that version.
    let got = files
        .with_capability(Some(&cap))
        .download_bytes(url, entry.id, entry.version)
        .await
        .unwrap();
    assert_eq!(got, b"second version");
    // Raw HTTP without the header: a JSON 403, never a 500.
    let reply = reqwest::Client::new()
        .get(format!("{url}/v1/blobs/{}/{}", entry.id, entry.version))
        .header(
            "authorization",
            c.client_key(Role::Admin, "root")
                .credential()
                .header_value(),
        )
        .header(CAPABILITY_HEADER, "cap1.r.1.zz")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 403);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["code"], "forbidden");
}

/// Issue 12: "make a fileserver fetch any http URL through /v1/blobs/.../fetch". Even with
/// the servers' own credential, a copy comes only from a registered fileserver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_fetched_only_from_a_registered_fileserver() {
    let c = Cluster::start().await;
    let (listener, bait) = bind().await;
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = asked.clone();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = listener.accept().await {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let servers = FileClient::new().with_credential(c.key.server_credential());
    for source in [
        bait.clone(),
        format!("{bait}/"),
        "http://169.254.169.254".into(),
    ] {
        let err = servers
            .fetch(
                &c.fs,
                7,
                1,
                &FetchRequest {
                    source: source.clone(),
                    checksum: dfs_proto::Checksum::of(b""),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, dfs_proto::ErrorCode::Forbidden, "{source}: {err}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !asked.load(std::sync::atomic::Ordering::SeqCst),
        "the fileserver connected to an unregistered URL"
    );
}

/// A publish request for `path` (file `id`, from `base`) claiming `token`, with `lease`.
fn publish_req(
    path: &str,
    id: u64,
    base: u64,
    token: u64,
    lease: Option<dfs_proto::locks::LeaseProof>,
) -> dfs_proto::names::PublishRequest {
    dfs_proto::names::PublishRequest {
        lease,
        path: p(path),
        file_id: id,
        base_version: base,
        version: dfs_proto::version_for(token.min(1 << 40), 1),
        token,
        size: 0,
        checksum: dfs_proto::Checksum::of(b""),
        servers: vec![],
        mtime_ns: None,
    }
}

fn open_req(
    path: &str,
    token: u64,
    lease: Option<dfs_proto::locks::LeaseProof>,
) -> dfs_proto::names::OpenWriteRequest {
    dfs_proto::names::OpenWriteRequest {
        lease,
        path: p(path),
        token,
        create: None,
        exclusive: false,
        exclude: vec![],
        owner: None,
    }
}

/// Issue 12: "publish without a lease by presenting any token at open-write and publish; a
/// token of 2^64-1 then fenced the file for every honest writer, for ever". A bare token, a
/// huge one, a lease of another key, or one for another path opens and publishes nothing,
/// and the honest writer afterwards is not fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_borrowed_leases_neither_publish_nor_fence() {
    let c = Cluster::start().await;
    let honest = c.client(Role::ReadWrite, "honest");
    honest.write("/doc", b"original").await.unwrap();
    let entry = c.names(Role::ReadOnly, "r").stat(&p("/doc")).await.unwrap();
    let attacker = c.names(Role::ReadWrite, "mallory");
    let victim_locks = c.locks(Role::ReadWrite, "victim");
    // A real lease of another key (the victim's), e.g. read from `GET /v1/locks`.
    let victims = victim_locks
        .acquire(&dfs_proto::locks::AcquireRequest {
            paths: vec![p("/doc")],
            client: "victim-session".into(),
            ttl_ms: Some(60_000),
        })
        .await
        .unwrap();
    let borrowed = victims.proof().expect("a keyed lockserver signs leases");
    // A lease of the attacker's own key, on another path.
    let own = c
        .locks(Role::ReadWrite, "mallory")
        .acquire(&dfs_proto::locks::AcquireRequest {
            paths: vec![p("/other")],
            client: "m".into(),
            ttl_ms: Some(60_000),
        })
        .await
        .unwrap();
    let mut forged = own.proof().unwrap();
    forged.paths = vec![p("/doc")];
    let attempts = [
        ("bare token", u64::MAX, None),
        ("borrowed lease", victims.token, Some(borrowed.clone())),
        (
            "borrowed lease, huge token",
            u64::MAX,
            Some(borrowed.clone()),
        ),
        ("own lease of another path", own.token, own.proof()),
        ("altered path list", own.token, Some(forged.clone())),
        ("own lease, huge token", u64::MAX, own.proof()),
    ];
    for (what, token, lease) in attempts {
        let err = attacker
            .open_write(&open_req("/doc", token, lease.clone()))
            .await
            .unwrap_err();
        assert_eq!(
            err.code,
            dfs_proto::ErrorCode::Forbidden,
            "open-write, {what}: {err}"
        );
        let err = attacker
            .publish(&publish_req("/doc", entry.id, entry.version, token, lease))
            .await
            .unwrap_err();
        assert_eq!(
            err.code,
            dfs_proto::ErrorCode::Forbidden,
            "publish, {what}: {err}"
        );
    }
    victim_locks
        .release(victims.token, "victim-session")
        .await
        .unwrap();
    // Nothing was lost and the honest writer is not fenced.
    assert_eq!(honest.read("/doc").await.unwrap(), b"original");
    honest.write("/doc", b"honest update").await.unwrap();
    assert_eq!(
        c.client(Role::ReadOnly, "r").read("/doc").await.unwrap(),
        b"honest update"
    );
}

/// Issue 12: "release or renew anyone's lease (the only check is the client name, which
/// GET /v1/locks publishes)". Another key gets 403 and the lease stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_cannot_renew_or_release_a_lease() {
    let c = Cluster::start().await;
    let owner = c.locks(Role::ReadWrite, "owner");
    let lease = owner
        .acquire(&dfs_proto::locks::AcquireRequest {
            paths: vec![p("/held")],
            client: "owner-session".into(),
            ttl_ms: Some(60_000),
        })
        .await
        .unwrap();
    for role in [Role::ReadWrite, Role::Admin] {
        let other = c.locks(role, "thief");
        let listed = other.list().await.unwrap();
        let seen = listed
            .leases
            .iter()
            .find(|l| l.token == lease.token)
            .unwrap();
        let err = other.renew(seen.token, &seen.client).await.unwrap_err();
        assert_eq!(err.code, dfs_proto::ErrorCode::Forbidden, "{err}");
        let err = other.release(seen.token, &seen.client).await.unwrap_err();
        assert_eq!(err.code, dfs_proto::ErrorCode::Forbidden, "{err}");
    }
    // Another key of the same name is another key.
    let twin = c.locks(Role::ReadWrite, "owner");
    let err = twin
        .release(lease.token, "owner-session")
        .await
        .unwrap_err();
    assert_eq!(err.code, dfs_proto::ErrorCode::Forbidden, "{err}");
    let renewed = owner.renew(lease.token, "owner-session").await.unwrap();
    assert_eq!(renewed.token, lease.token);
    owner.release(lease.token, "owner-session").await.unwrap();
}

/// Issue 12: "unlink/rename a file another client holds the write lease on". Another key
/// gets `busy` (EBUSY) for unlink, rename, setattr and xattr changes while the writer holds
/// the lease; the holder itself and an admin key may; once released, anyone may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_under_another_keys_lease_cannot_be_unlinked_or_renamed() {
    let c = Cluster::start().await;
    let writer = c.client(Role::ReadWrite, "writer");
    writer.write("/busy", b"being written").await.unwrap();
    writer.write("/other", b"x").await.unwrap();
    let mut file = writer.options().write(true).open("/busy").await.unwrap();
    let other = c.client(Role::ReadWrite, "other");
    let busy = std::io::ErrorKind::ResourceBusy;
    assert_eq!(other.remove_file("/busy").await.unwrap_err().kind(), busy);
    assert_eq!(
        other.rename("/busy", "/moved").await.unwrap_err().kind(),
        busy
    );
    assert_eq!(
        other.rename("/other", "/busy").await.unwrap_err().kind(),
        busy
    );
    assert_eq!(
        other.set_mode("/busy", 0o600).await.unwrap_err().kind(),
        busy
    );
    assert_eq!(
        other
            .set_xattr("/busy", "user.k", b"v", dfs_proto::xattr::SetMode::Any)
            .await
            .unwrap_err()
            .kind(),
        busy
    );
    // The raw answer is 423 with the JSON code.
    let reply = reqwest::Client::new()
        .post(format!("{}/v1/meta/unlink", c.ns))
        .header(
            "authorization",
            c.client_key(Role::ReadWrite, "other")
                .credential()
                .header_value(),
        )
        .json(&serde_json::json!({"path": "/busy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 423);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["code"], "busy");
    // The holder's own key may (a mount renaming its own open file).
    writer.set_mode("/busy", 0o640).await.unwrap();
    // An admin key may too.
    c.client(Role::Admin, "root")
        .set_xattr("/busy", "user.k", b"v", dfs_proto::xattr::SetMode::Any)
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    file.write_all(b" more").await.unwrap();
    file.close().await.unwrap();
    // Released: anyone may. (The write went at offset 0, over "being".)
    other.rename("/busy", "/moved").await.unwrap();
    assert_eq!(other.read("/moved").await.unwrap(), b" more written");
}

/// `POST /v1/locks/break`: an admin frees a stuck lease; the holder's writes then fail as
/// lost, and the next writer's higher token fences any late publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_breaks_a_lease_and_its_holder_loses_it() {
    let c = Cluster::start().await;
    let holder = c.locks(Role::ReadWrite, "stuck");
    let lease = holder
        .acquire(&dfs_proto::locks::AcquireRequest {
            paths: vec![p("/stuck")],
            client: "s".into(),
            ttl_ms: Some(60_000),
        })
        .await
        .unwrap();
    let req = dfs_proto::locks::BreakRequest {
        token: None,
        path: Some(p("/stuck")),
    };
    let err = c
        .locks(Role::ReadWrite, "stuck")
        .break_lease(&req)
        .await
        .unwrap_err();
    assert_eq!(err.code, dfs_proto::ErrorCode::Forbidden);
    let broken = c
        .locks(Role::Admin, "root")
        .break_lease(&req)
        .await
        .unwrap();
    assert_eq!(broken.token, lease.token);
    let err = holder.renew(lease.token, "s").await.unwrap_err();
    assert_eq!(err.code, dfs_proto::ErrorCode::LeaseExpired);
    let next = c
        .locks(Role::ReadWrite, "next")
        .acquire(&dfs_proto::locks::AcquireRequest {
            paths: vec![p("/stuck")],
            client: "n".into(),
            ttl_ms: None,
        })
        .await
        .unwrap();
    assert!(next.token > lease.token, "tokens only grow");
    let err = c
        .locks(Role::Admin, "root")
        .break_lease(&dfs_proto::locks::BreakRequest {
            token: Some(lease.token),
            path: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, dfs_proto::ErrorCode::NotFound);
}
