//! A publish gets as many copies as its targets asked for when one target fails: the
//! client asks the nameserver again (open-write, same token, the failed server excluded) and
//! uploads to the replacement.
//!
//! Needs the nameserver's support for `exclude` in open-write (placement without the
//! excluded servers); a nameserver that ignores it offers the same targets, the client stops
//! after one round, and the publish carries fewer copies.

use dfs_servers::fileserver;
use dfs_tests::cluster::Cluster;
use dfs_tests::proxy::{DropRule, LossyProxy};
use std::io::Write;
use std::time::{Duration, Instant};

/// Starts a fileserver on the cluster's runtime (when `lossy`, behind a proxy that loses
/// every blob reply, so uploads to it fail), and waits until the nameserver counts `alive` live fileservers.
fn add_fileserver(cluster: &Cluster, name: &str, lossy: bool, alive: usize) -> String {
    let data = cluster.data_dir().join(name);
    let nameserver = cluster.nameserver.clone();
    let url = cluster.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real_url = format!("http://{}", listener.local_addr().unwrap());
        let advertised = if lossy {
            let proxy = LossyProxy::start(
                &real_url,
                DropRule {
                    path_prefix: "/v1/blobs/".into(),
                    count: usize::MAX,
                },
            )
            .await;
            let url = proxy.url.clone();
            // The proxy lives as long as the test process.
            std::mem::forget(proxy);
            url
        } else {
            real_url
        };
        let config = fileserver::Config {
            data,
            nameserver,
            advertise: Some(advertised.clone()),
            cluster_key: Some(cluster.keys.cluster_file.clone()),
            ..Default::default()
        };
        tokio::spawn(fileserver::run(listener, config, std::future::pending()));
        advertised
    });
    let names = cluster.names();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = cluster
            .block_on(names.cluster())
            .map(|info| info.fileservers.iter().filter(|f| f.alive).count())
            .unwrap_or(0);
        if live >= alive {
            return url;
        }
        assert!(
            Instant::now() < deadline,
            "fileserver {name} never registered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_failed_target_is_replaced_so_the_publish_has_every_copy() {
    let cluster = Cluster::start_with(1, |ns| ns.replication = 2);
    let lossy = add_fileserver(&cluster, "lossy", true, 2);
    let client = cluster.blocking_client();

    // Open while only the good and the lossy server live: those two are the targets.
    let mut file = client.create("/f").unwrap();
    file.write_all(&vec![7u8; 100_000]).unwrap();
    add_fileserver(&cluster, "spare", false, 3);
    file.close().unwrap();

    let info = cluster.block_on(cluster.names().cluster()).unwrap();
    let lossy_id = info
        .fileservers
        .iter()
        .find(|f| f.url == lossy)
        .map(|f| f.id.clone())
        .unwrap();
    let entry = client.metadata("/f").unwrap();
    let holders = &entry.entry().servers;
    assert_eq!(
        holders.len(),
        2,
        "every copy the targets asked for: {holders:?}"
    );
    assert!(
        !holders.contains(&lossy_id),
        "the failed server holds nothing: {holders:?}"
    );
    assert_eq!(client.read("/f").unwrap(), vec![7u8; 100_000]);
}
