//! Fault suite 5: a reply is lost after the server committed; the retry creates exactly one
//! version (publish is idempotent on its version, uploads on (file id, version, checksum)).
//!
//! The protocol steps run through `dfs-client`'s protocol layer ([`Remote`]) with an explicit
//! lease, so a retry by the caller reuses the version; the file API's own publish retry is
//! checked too.

use dfs_client::remote::Remote;
use dfs_client::write::Content;
use dfs_proto::locks::{AcquireRequest, Lease};
use dfs_proto::names::{Entry, OpenWriteRequest, PublishRequest};
use dfs_proto::{version_for, ApiError, Checksum, DfsPath};
use dfs_servers::fileserver;
use dfs_tests::cluster::Cluster;
use dfs_tests::proxy::{DropRule, LossyProxy};

#[test]
fn lost_publish_reply_is_retried_into_exactly_one_version() {
    let cluster = Cluster::start(2);
    cluster.block_on(async {
        let proxy = LossyProxy::start(
            &cluster.nameserver,
            DropRule {
                path_prefix: "/v1/meta/publish".into(),
                count: 1,
            },
        )
        .await;
        let client = cluster.remote_at(&proxy.url);
        let direct = cluster.client_at(&cluster.nameserver);
        let path = DfsPath::parse("/report.txt").unwrap();
        let bytes = b"the only content".repeat(1000);
        let lease = client
            .locks()
            .await
            .unwrap()
            .acquire(&AcquireRequest {
                paths: vec![path.clone()],
                client: "writer".into(),
                ttl_ms: None,
            })
            .await
            .unwrap();

        let first = write_under_lease(&client, &path, &bytes, &lease).await;
        assert!(
            first.is_err(),
            "the proxy should have lost the first publish reply"
        );
        assert_eq!(proxy.dropped(), 1);
        // The publish was committed even though its reply was lost.
        let committed = direct.remote().names.stat(&path).await.unwrap();
        assert_eq!(committed.checksum, Checksum::of(&bytes));

        let retried = write_under_lease(&client, &path, &bytes, &lease)
            .await
            .unwrap();
        assert_eq!(
            retried.version, committed.version,
            "the retry made a new version"
        );
        let again = write_under_lease(&client, &path, &bytes, &lease)
            .await
            .unwrap();
        assert_eq!(again.version, committed.version);

        let read = direct.read("/report.txt").await.unwrap();
        let entry = direct.remote().names.stat(&path).await.unwrap();
        assert_eq!(read, bytes);
        for server in &cluster.fileservers {
            let blobs = cluster.files().list(server).await.unwrap().blobs;
            let mine: Vec<_> = blobs.iter().filter(|b| b.file_id == entry.id).collect();
            assert!(
                mine.len() <= 1,
                "more than one version stored on {server}: {mine:?}"
            );
            assert!(mine.iter().all(|b| b.version == entry.version));
        }

        // The file API retries a publish whose reply was lost by itself (same version):
        // its close succeeds and exactly one version is made.
        let proxy = LossyProxy::start(
            &cluster.nameserver,
            DropRule {
                path_prefix: "/v1/meta/publish".into(),
                count: 1,
            },
        )
        .await;
        let api = cluster.client_at(&proxy.url);
        api.write("/retried.txt", &bytes).await.unwrap();
        assert_eq!(proxy.dropped(), 1);
        assert_eq!(direct.read("/retried.txt").await.unwrap(), bytes);
        let entry = direct.metadata("/retried.txt").await.unwrap();
        for server in &cluster.fileservers {
            let blobs = cluster.files().list(server).await.unwrap().blobs;
            let mine: Vec<_> = blobs.iter().filter(|b| b.file_id == entry.id()).collect();
            assert!(
                mine.len() <= 1,
                "more than one version on {server}: {mine:?}"
            );
            assert!(mine.iter().all(|b| b.version == entry.version()));
        }
    });
}

/// The write protocol for a caller that holds `lease`: open-write (create),
/// upload to every target (dfs-client's [`Remote::upload_all`]), publish as the token's
/// first version. One attempt; a retry with the same token makes the same version.
async fn write_under_lease(
    remote: &Remote,
    path: &DfsPath,
    bytes: &[u8],
    lease: &Lease,
) -> Result<Entry, ApiError> {
    let token = lease.token;
    let opened = remote
        .names
        .open_write(&OpenWriteRequest {
            path: path.clone(),
            token,
            create: Some(0o644),
            exclusive: false,
            exclude: Vec::new(),
            owner: None,
            lease: Some(lease.clone()),
        })
        .await?;
    let base = opened.entry;
    let version = version_for(token, 1);
    let checksum = Checksum::of(bytes);
    let content = Content::Small(bytes.to_vec().into(), checksum);
    let stored = remote
        .upload_all(
            &opened.targets,
            base.id,
            version,
            &content,
            opened.write_cap.as_deref(),
        )
        .await?;
    remote
        .names
        .publish(&PublishRequest {
            path: path.clone(),
            file_id: base.id,
            base_version: base.version,
            version,
            token,
            size: stored.size,
            checksum: stored.checksum,
            servers: stored.servers,
            mtime_ns: None,
            lease: Some(lease.clone()),
        })
        .await
}

#[test]
fn lost_upload_reply_is_retried_into_exactly_one_blob() {
    let cluster = Cluster::start_with(0, |ns| ns.replication = 1);
    let data = cluster.data_dir().join("proxied-fileserver");
    cluster.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real_url = format!("http://{}", listener.local_addr().unwrap());
        let proxy = LossyProxy::start(
            &real_url,
            DropRule {
                path_prefix: "/v1/blobs/".into(),
                count: 1,
            },
        )
        .await;
        let config = fileserver::Config {
            data,
            nameserver: cluster.nameserver.clone(),
            advertise: Some(proxy.url.clone()),
            cluster_key: Some(cluster.keys.cluster_file.clone()),
            ..Default::default()
        };
        tokio::spawn(fileserver::run(listener, config, std::future::pending()));
        let names = cluster.names();
        for _ in 0..500 {
            let info = names.cluster().await.unwrap();
            if info.fileservers.iter().any(|f| f.alive) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        let client = cluster.remote_at(&cluster.nameserver);
        let path = DfsPath::parse("/data.bin").unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let lease = client
            .locks()
            .await
            .unwrap()
            .acquire(&AcquireRequest {
                paths: vec![path.clone()],
                client: "writer".into(),
                ttl_ms: None,
            })
            .await
            .unwrap();
        let first = write_under_lease(&client, &path, &bytes, &lease).await;
        assert!(
            first.is_err(),
            "the proxy should have lost the upload reply"
        );
        assert_eq!(proxy.dropped(), 1);

        let entry = write_under_lease(&client, &path, &bytes, &lease)
            .await
            .unwrap();
        let blobs = cluster.files().list(&real_url).await.unwrap().blobs;
        let mine: Vec<_> = blobs.iter().filter(|b| b.file_id == entry.id).collect();
        assert_eq!(mine.len(), 1, "exactly one blob expected: {mine:?}");
        assert_eq!(mine[0].version, entry.version);
        assert_eq!(mine[0].checksum, Checksum::of(&bytes));
        let read = cluster
            .client_at(&cluster.nameserver)
            .read("/data.bin")
            .await
            .unwrap();
        assert_eq!(read, bytes);
    });
}
