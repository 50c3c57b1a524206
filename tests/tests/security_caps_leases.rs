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
    let _ = &c.lock;
    let _ = c.locks(Role::ReadWrite, "x");
}
