//! Fault suite 5: a reply is lost after the server committed; the retry creates exactly one
//! version (publish is idempotent on its version, uploads on (file id, version, checksum)).

use dfs_proto::simple::SimpleClient;
use dfs_proto::{Checksum, DfsPath};
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
        let client = SimpleClient::connect(&proxy.url, "writer").await.unwrap();
        let direct = SimpleClient::connect(&cluster.nameserver, "reader")
            .await
            .unwrap();
        let path = DfsPath::parse("/report.txt").unwrap();
        let bytes = b"the only content".repeat(1000);
        let lease = client
            .locks()
            .acquire(&dfs_proto::locks::AcquireRequest {
                paths: vec![path.clone()],
                client: "writer".into(),
                ttl_ms: None,
            })
            .await
            .unwrap();

        let first = client.write_under_lease(&path, &bytes, lease.token).await;
        assert!(
            first.is_err(),
            "the proxy should have lost the first publish reply"
        );
        assert_eq!(proxy.dropped(), 1);
        // The publish was committed even though its reply was lost.
        let committed = direct.names().stat(&path).await.unwrap();
        assert_eq!(committed.checksum, Checksum::of(&bytes));

        let retried = client
            .write_under_lease(&path, &bytes, lease.token)
            .await
            .unwrap();
        assert_eq!(
            retried.version, committed.version,
            "the retry made a new version"
        );
        let again = client
            .write_under_lease(&path, &bytes, lease.token)
            .await
            .unwrap();
        assert_eq!(again.version, committed.version);

        let (entry, read) = direct.read_file(&path).await.unwrap();
        assert_eq!(read, bytes);
        for server in &cluster.fileservers {
            let blobs = client.files().list(server).await.unwrap().blobs;
            let mine: Vec<_> = blobs.iter().filter(|b| b.file_id == entry.id).collect();
            assert!(
                mine.len() <= 1,
                "more than one version stored on {server}: {mine:?}"
            );
            assert!(mine.iter().all(|b| b.version == entry.version));
        }
    });
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

        let client = SimpleClient::connect(&cluster.nameserver, "writer")
            .await
            .unwrap();
        let path = DfsPath::parse("/data.bin").unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let lease = client
            .locks()
            .acquire(&dfs_proto::locks::AcquireRequest {
                paths: vec![path.clone()],
                client: "writer".into(),
                ttl_ms: None,
            })
            .await
            .unwrap();
        let first = client.write_under_lease(&path, &bytes, lease.token).await;
        assert!(
            first.is_err(),
            "the proxy should have lost the upload reply"
        );
        assert_eq!(proxy.dropped(), 1);

        let entry = client
            .write_under_lease(&path, &bytes, lease.token)
            .await
            .unwrap();
        let blobs = client.files().list(&real_url).await.unwrap().blobs;
        let mine: Vec<_> = blobs.iter().filter(|b| b.file_id == entry.id).collect();
        assert_eq!(mine.len(), 1, "exactly one blob expected: {mine:?}");
        assert_eq!(mine[0].version, entry.version);
        assert_eq!(mine[0].checksum, Checksum::of(&bytes));
        let (_, read) = client.read_file(&path).await.unwrap();
        assert_eq!(read, bytes);
    });
}
