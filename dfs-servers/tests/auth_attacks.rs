//! The attacks of issue 12 that keys, roles and fileserver identity stop, each tried against
//! real servers and shown to fail for the attacker with nothing lost.

use dfs_proto::auth::{holder_of, now_unix_ms, BlobOp, ClientKey, ClusterKey, Role};
use dfs_proto::client::{FileClient, NameClient};
use dfs_proto::locks::Lease;
use dfs_proto::names::{HeartbeatRequest, RegisterRequest};
use dfs_proto::{DfsPath, ErrorCode};
use dfs_servers::{fileserver, nameserver};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;

fn p(path: &str) -> DfsPath {
    DfsPath::parse(path).unwrap()
}

/// A nameserver with a cluster key, and one real fileserver registered with it.
struct Setup {
    _tmp: tempfile::TempDir,
    key: ClusterKey,
    key_file: PathBuf,
    ns: String,
    admin: NameClient,
    fs_id: String,
    fs_url: String,
    fs_stop: Option<oneshot::Sender<()>>,
    fs_task: Option<tokio::task::JoinHandle<()>>,
    _ns_stop: oneshot::Sender<()>,
}

async fn start_fileserver(
    ns: &str,
    data: &Path,
    key_file: &Path,
) -> (
    String,
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = fileserver::Config {
        data: data.to_owned(),
        nameserver: ns.to_owned(),
        cluster_key: Some(key_file.to_owned()),
        ..Default::default()
    };
    let server = fileserver::Fileserver::start(listener, config)
        .await
        .unwrap();
    let (id, url) = (server.id().to_owned(), server.url().to_owned());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .serve(async move {
                let _ = rx.await;
            })
            .await;
    });
    (id, url, tx, task)
}

impl Setup {
    async fn start() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let key = ClusterKey::generate();
        let key_file = tmp.path().join("cluster.key");
        std::fs::write(&key_file, key.to_text()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ns = format!("http://{}", listener.local_addr().unwrap());
        let (ns_stop, rx) = oneshot::channel::<()>();
        let config = nameserver::Config {
            data: tmp.path().join("ns"),
            replication: 1,
            heartbeat_interval_ms: 50,
            heartbeat_timeout_ms: 60_000,
            cluster_key: Some(key_file.clone()),
            ..Default::default()
        };
        tokio::spawn(nameserver::run(listener, config, async move {
            let _ = rx.await;
        }));
        let admin_key = key.issue_client("root", Role::Admin).unwrap();
        let admin = NameClient::new(&ns).with_credential(admin_key.credential());
        let (fs_id, fs_url, fs_stop, fs_task) =
            start_fileserver(&ns, &tmp.path().join("fs"), &key_file).await;
        let setup = Setup {
            _tmp: tmp,
            key,
            key_file,
            ns,
            admin,
            fs_id,
            fs_url,
            fs_stop: Some(fs_stop),
            fs_task: Some(fs_task),
            _ns_stop: ns_stop,
        };
        setup.wait_registered(&setup.fs_url.clone()).await;
        setup
    }

    /// Waits until the real fileserver is alive at `url`.
    async fn wait_registered(&self, url: &str) {
        for _ in 0..500 {
            if let Ok(info) = self.admin.cluster().await {
                if info
                    .fileservers
                    .iter()
                    .any(|f| f.id == self.fs_id && f.alive && f.url == url)
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("fileserver {} never registered at {url}", self.fs_id);
    }

    async fn url_of(&self, id: &str) -> Option<String> {
        let info = self.admin.cluster().await.unwrap();
        info.fileservers
            .into_iter()
            .find(|f| f.id == id)
            .map(|f| f.url)
    }

    fn as_server(&self) -> NameClient {
        NameClient::new(&self.ns).with_credential(self.key.server_credential())
    }

    fn as_client(&self, role: Role) -> NameClient {
        let key = self.key.issue_client("someone", role).unwrap();
        NameClient::new(&self.ns).with_credential(key.credential())
    }
}

/// A lease on `path` for `key`, signed with the cluster key as the lockserver signs (these
/// tests run no lockserver).
fn signed_lease(cluster: &ClusterKey, key: &ClientKey, token: u64, path: &str) -> Lease {
    let mut lease = Lease {
        token,
        client: "attack-test".into(),
        paths: vec![p(path)],
        ttl_ms: 60_000,
        expires_in_ms: 60_000,
        holder: holder_of(&key.name, &key.id),
        expires_unix_ms: now_unix_ms() + 60_000,
        signature: None,
    };
    lease.signature = Some(cluster.sign_lease(&lease.claim()));
    lease
}

fn fake(id: &str, secret: Option<&str>) -> RegisterRequest {
    RegisterRequest {
        id: id.into(),
        url: "http://127.0.0.1:9".into(),
        capacity_bytes: 1 << 40,
        free_bytes: 1 << 40,
        dirs: vec![p("/secret")],
        secret: secret.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_fake_fileserver_without_the_cluster_key_is_refused() {
    let s = Setup::start().await;
    let anonymous = NameClient::new(&s.ns);
    let err = anonymous.register(&fake("evil", None)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    let other = ClusterKey::generate();
    let err = NameClient::new(&s.ns)
        .with_credential(other.server_credential())
        .register(&fake("evil", None))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    // Even an admin key is a client's, not a server's.
    for role in [Role::ReadWrite, Role::Admin] {
        let err = s
            .as_client(role)
            .register(&fake("evil", None))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden, "{role}");
    }
    let info = s.admin.cluster().await.unwrap();
    assert!(info.fileservers.iter().all(|f| f.id != "evil"));
    assert!(info.map.iter().all(|m| m.dir != p("/secret")));
}

#[tokio::test]
async fn an_id_cannot_be_moved_to_another_url_and_the_real_server_keeps_it() {
    let s = Setup::start().await;
    let server = s.as_server();
    // Even with the cluster key (a compromised host), without the id's secret.
    for secret in [None, Some("0123")] {
        let err = server
            .register(&RegisterRequest {
                dirs: vec![],
                ..fake(&s.fs_id, secret)
            })
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden, "secret {secret:?}");
        let err = server
            .heartbeat(&HeartbeatRequest {
                id: s.fs_id.clone(),
                free_bytes: 1,
                secret: secret.map(str::to_owned),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden);
    }
    assert_eq!(s.url_of(&s.fs_id).await.as_deref(), Some(s.fs_url.as_str()));

    // The real one keeps heartbeating, and a file written now still lands on it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = s.admin.cluster().await.unwrap();
    let me = info.fileservers.iter().find(|f| f.id == s.fs_id).unwrap();
    assert!(me.alive && me.last_seen_ms_ago < 1000, "{me:?}");
    let key = s.key.issue_client("w", Role::ReadWrite).unwrap();
    let writer = NameClient::new(&s.ns).with_credential(key.credential());
    let opened = writer
        .open_write(&dfs_proto::names::OpenWriteRequest {
            path: p("/f"),
            token: 1,
            create: Some(0o644),
            exclusive: false,
            exclude: vec![],
            owner: None,
            lease: Some(signed_lease(&s.key, &key, 1, "/f")),
        })
        .await
        .unwrap();
    assert_eq!(opened.targets.len(), 1);
    assert_eq!(opened.targets[0].url, s.fs_url);
}

#[tokio::test]
async fn a_restarted_fileserver_keeps_its_id_with_its_secret() {
    let mut s = Setup::start().await;
    s.fs_stop.take().unwrap().send(()).unwrap();
    s.fs_task.take().unwrap().await.unwrap();
    let data = s._tmp.path().join("fs");
    let (id, url, stop, _task) = start_fileserver(&s.ns, &data, &s.key_file).await;
    assert_eq!(id, s.fs_id, "same data directory, same id");
    s.wait_registered(&url).await;
    let _ = stop.send(());
}

#[tokio::test]
async fn a_record_from_before_identity_adopts_the_first_secret_it_sees() {
    let s = Setup::start().await;
    let server = s.as_server();
    // An older fileserver (or registry entry) without a secret.
    server.register(&fake("old", None)).await.unwrap();
    server.register(&fake("old", None)).await.unwrap();
    // The first secret binds it; another one, or none, is refused from then on.
    server.register(&fake("old", Some("first"))).await.unwrap();
    server.register(&fake("old", Some("first"))).await.unwrap();
    for other in [Some("second"), None] {
        let err = server.register(&fake("old", other)).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden, "{other:?}");
    }
}

#[tokio::test]
async fn read_write_keys_cannot_chmod_the_root_or_set_replication() {
    let s = Setup::start().await;
    let writer = s.as_client(Role::ReadWrite);
    let before = s.admin.stat(&p("/")).await.unwrap();
    let err = writer
        .setattr(&dfs_proto::names::SetAttrRequest {
            path: p("/"),
            mode: Some(0),
            mtime_ns: None,
            atime_ns: None,
            uid: None,
            gid: None,
            kill_suid: false,
            access: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
    assert_eq!(s.admin.stat(&p("/")).await.unwrap().mode, before.mode);
    for factor in [Some(1), Some(64)] {
        let err = writer
            .set_dir_replication(&p("/"), factor)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Forbidden);
    }
    let info = s.admin.cluster().await.unwrap();
    assert!(
        info.map.iter().all(|m| m.replication.is_none()),
        "{:?}",
        info.map
    );
    // A read-only key changes nothing at all.
    let reader = s.as_client(Role::ReadOnly);
    let err = reader.mkdir(&p("/x"), None).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
    // The admin may.
    s.admin.set_dir_replication(&p("/"), Some(1)).await.unwrap();
}

#[tokio::test]
async fn blobs_cannot_be_listed_or_deleted_without_the_server_credential() {
    let s = Setup::start().await;
    let servers = FileClient::new().with_credential(s.key.server_credential());
    servers
        .upload_bytes(&s.fs_url, 5, 1, b"published".to_vec())
        .await
        .unwrap();
    let writer = s.key.issue_client("w", Role::ReadWrite).unwrap();
    let as_writer = FileClient::new().with_credential(writer.credential());
    for (client, code) in [
        (FileClient::new(), ErrorCode::Unauthenticated),
        (as_writer, ErrorCode::Forbidden),
    ] {
        assert_eq!(client.delete(&s.fs_url, 5, 1).await.unwrap_err().code, code);
        assert_eq!(client.list(&s.fs_url).await.unwrap_err().code, code);
        assert_eq!(client.verify(&s.fs_url, 5, 1).await.unwrap_err().code, code);
    }
    assert_eq!(
        servers.download_bytes(&s.fs_url, 5, 1).await.unwrap(),
        b"published"
    );
}

#[tokio::test]
async fn a_server_without_a_key_refuses_to_start_unless_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = nameserver::Config {
        data: tmp.path().join("ns"),
        ..Default::default()
    };
    let err = nameserver::run(listener, config, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--insecure"), "{err:#}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = fileserver::Config {
        data: tmp.path().join("fs"),
        nameserver: String::new(),
        ..Default::default()
    };
    assert!(fileserver::Fileserver::start(listener, config)
        .await
        .is_err());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = nameserver::Config {
        data: tmp.path().join("ns2"),
        insecure: true,
        ..Default::default()
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(nameserver::run(listener, config, async move {
        let _ = rx.await;
    }));
    let open = NameClient::new(&url);
    let mut answered = false;
    for _ in 0..200 {
        if open.cluster().await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(answered, "--insecure answers without a key");
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// Publishes `bytes` as `path` the way a writer does, with the capabilities the nameserver
/// gives: create, open-write (write capability), upload, publish. Returns the new entry.
async fn publish_as_writer(s: &Setup, path: &str, bytes: &[u8]) -> dfs_proto::names::Entry {
    use dfs_proto::names::{CreateRequest, OpenWriteRequest, PublishRequest};
    let key = s.key.issue_client("w", Role::ReadWrite).unwrap();
    let writer = NameClient::new(&s.ns).with_credential(key.credential());
    writer
        .create(&CreateRequest {
            path: p(path),
            mode: None,
            exclusive: false,
            owner: None,
        })
        .await
        .unwrap();
    let token = 9;
    let lease = signed_lease(&s.key, &key, token, path);
    let opened = writer
        .open_write(&OpenWriteRequest {
            path: p(path),
            token,
            create: None,
            exclusive: false,
            exclude: Vec::new(),
            owner: None,
            lease: Some(lease.clone()),
        })
        .await
        .unwrap();
    let cap = opened
        .write_cap
        .clone()
        .expect("a keyed cluster gives a write capability");
    let key = s.key.issue_client("w", Role::ReadWrite).unwrap();
    let files = FileClient::new()
        .with_credential(key.credential())
        .with_capability(Some(cap));
    let version = dfs_proto::version_for(token, 1);
    let stored = files
        .upload_bytes(&s.fs_url, opened.entry.id, version, bytes.to_vec())
        .await
        .unwrap();
    writer
        .publish(&PublishRequest {
            path: p(path),
            file_id: opened.entry.id,
            base_version: opened.entry.version,
            version,
            token,
            size: stored.size,
            checksum: stored.checksum,
            servers: vec![s.fs_id.clone()],
            mtime_ns: None,
            lease: Some(lease),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_alone_reads_no_blob_and_forges_none_only_a_capability_does() {
    let s = Setup::start().await;
    let entry = publish_as_writer(&s, "/secret.txt", b"the secret").await;
    let reader = s.key.issue_client("r", Role::ReadOnly).unwrap();
    let as_reader = FileClient::new().with_credential(reader.credential());

    // The attack: stat gives id, version and locations; GET the bytes with a key alone.
    let err = as_reader
        .download_bytes(&s.fs_url, entry.id, entry.version)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
    // A capability for another blob (another file's, or an older version) does not open it.
    let other = s.key.capability(
        entry.id + 1,
        entry.version,
        BlobOp::Read,
        now_unix_ms() + 60_000,
    );
    let err = as_reader
        .with_capability(Some(other))
        .download_bytes(&s.fs_url, entry.id, entry.version)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
    // What the nameserver's stat hands out does.
    let stat = s
        .as_client(Role::ReadOnly)
        .stat(&p("/secret.txt"))
        .await
        .unwrap();
    assert_eq!(
        as_reader
            .with_capability(stat.read_cap.clone())
            .download_bytes(&s.fs_url, entry.id, entry.version)
            .await
            .unwrap(),
        b"the secret"
    );
    // The read capability does not let its holder overwrite or add a version.
    let err = as_reader
        .with_capability(stat.read_cap.clone())
        .upload_bytes(&s.fs_url, entry.id, entry.version + 1, b"forged".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
    // Nor does a writer's key without the write capability of an open-write.
    let writer = s.key.issue_client("w2", Role::ReadWrite).unwrap();
    let err = FileClient::new()
        .with_credential(writer.credential())
        .upload_bytes(&s.fs_url, entry.id, entry.version + 2, b"forged".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
    // Nothing changed.
    let servers = FileClient::new().with_credential(s.key.server_credential());
    let held: Vec<_> = servers
        .list(&s.fs_url)
        .await
        .unwrap()
        .blobs
        .into_iter()
        .filter(|b| b.file_id == entry.id)
        .map(|b| b.version)
        .collect();
    assert_eq!(held, vec![entry.version]);
}

#[tokio::test]
async fn a_fileserver_copies_only_from_a_registered_fileserver() {
    let s = Setup::start().await;
    // A web server of the attacker's (any URL answering GET); here: the nameserver itself.
    let servers = FileClient::new().with_credential(s.key.server_credential());
    let req = dfs_proto::files::FetchRequest {
        source: s.ns.clone(),
        checksum: dfs_proto::Checksum(0),
    };
    let err = servers.fetch(&s.fs_url, 40, 1, &req).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
    assert!(err.message.contains("not a registered fileserver"), "{err}");
    // A client key may not ask at all.
    let writer = s.key.issue_client("w", Role::ReadWrite).unwrap();
    let err = FileClient::new()
        .with_credential(writer.credential())
        .fetch(&s.fs_url, 40, 1, &req)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
    // From a registered fileserver (here: itself, which holds the blob already) it may.
    let stored = servers
        .upload_bytes(&s.fs_url, 41, 1, b"held".to_vec())
        .await
        .unwrap();
    let ok = dfs_proto::files::FetchRequest {
        source: s.fs_url.clone(),
        checksum: stored.checksum,
    };
    assert_eq!(servers.fetch(&s.fs_url, 41, 1, &ok).await.unwrap(), stored);

    // A fileserver that registers after the list was fetched is found: a URL missing from
    // the kept list refreshes it (at most once a second) before a copy is refused.
    let data = s._tmp.path().join("fs-late");
    let (_, late_url, late_stop, late_task) = start_fileserver(&s.ns, &data, &s.key_file).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !s
        .admin
        .cluster()
        .await
        .unwrap()
        .fileservers
        .iter()
        .any(|f| f.url == late_url)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "late fileserver never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(fileserver::capability::SOURCES_MIN_REFRESH).await;
    let copied = servers
        .upload_bytes(&late_url, 42, 1, b"from the late one".to_vec())
        .await
        .unwrap();
    let from_late = dfs_proto::files::FetchRequest {
        source: late_url.clone(),
        checksum: copied.checksum,
    };
    servers.fetch(&s.fs_url, 42, 1, &from_late).await.unwrap();
    assert_eq!(
        servers.download_bytes(&s.fs_url, 42, 1).await.unwrap(),
        b"from the late one"
    );
    // The attacker's URL is still refused after the refresh.
    let err = servers.fetch(&s.fs_url, 40, 1, &req).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden, "{err}");
    late_stop.send(()).unwrap();
    late_task.await.unwrap();
}
