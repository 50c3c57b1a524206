//! `GET /v1/stats` of every server counts the fsyncs it issued (issue 14): real servers on
//! 127.0.0.1:0, driven through the typed clients, each count checked against the durable
//! steps the operation must take.

mod common;

use common::{live_fileservers, p, Ns};
use dfs_proto::client::{FileClient, LockClient};
use dfs_proto::locks::AcquireRequest;
use dfs_proto::names::CreateRequest;
use dfs_servers::lockserver;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nameserver_counts_one_commit_and_its_fsyncs_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(dir.path(), |_| {}).await;
    let before = ns.client.stats().await.unwrap();
    for name in ["/a", "/b", "/c"] {
        ns.client
            .create(&CreateRequest {
                path: p(name),
                mode: None,
                exclusive: true,
                owner: None,
            })
            .await
            .unwrap();
    }
    let after = ns.client.stats().await.unwrap();
    assert_eq!(after.commits - before.commits, 3, "{before:?} -> {after:?}");
    assert_eq!(after.mutations - before.mutations, 3);
    assert!(
        after.fsyncs - before.fsyncs >= 3,
        "every durable commit fsyncs: {before:?} -> {after:?}"
    );
    // A refused change commits nothing and costs no fsync.
    let refused = ns
        .client
        .create(&CreateRequest {
            path: p("/a"),
            mode: None,
            exclusive: true,
            owner: None,
        })
        .await;
    assert!(refused.is_err());
    // Reads cost nothing either.
    ns.client.stat(&p("/a")).await.unwrap();
    assert_eq!(ns.client.stats().await.unwrap(), after);
    ns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_and_a_release_cost_the_lockserver_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = lockserver::Config {
        data: dir.path().to_owned(),
        insecure: true,
        ..lockserver::Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(lockserver::run(listener, config, async move {
        let _ = stopped.await;
    }));
    let client = LockClient::new(&url);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.healthz().await.is_err() {
        assert!(Instant::now() < deadline, "lockserver did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = client.stats().await.unwrap();
    let lease = client
        .acquire(&AcquireRequest {
            paths: vec![p("/x")],
            client: "stats-test".into(),
            ttl_ms: None,
        })
        .await
        .unwrap();
    client.release(lease.token, "stats-test").await.unwrap();
    let after = client.stats().await.unwrap();
    // Leases live in memory; the start of the run reserved the first token block.
    assert!(before.commits >= 1, "{before:?}");
    assert_eq!(after.commits, before.commits, "{before:?} -> {after:?}");
    assert_eq!(after.fsyncs, before.fsyncs, "{before:?} -> {after:?}");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fileserver_counts_the_data_and_directory_fsyncs_of_an_upload() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::start(&dir.path().join("ns"), |_| {}).await;
    let servers = live_fileservers(&ns, dir.path(), 1).await;
    let url = ns.client.cluster().await.unwrap().fileservers[0]
        .url
        .clone();
    let files = FileClient::new();
    // The first upload also makes the blob's fan-out directory; the second one reuses it.
    files
        .upload_bytes(&url, 7, 1, b"one".to_vec())
        .await
        .unwrap();
    let before = files.stats(&url).await.unwrap();
    files
        .upload_bytes(&url, 7, 2, b"two".to_vec())
        .await
        .unwrap();
    let after = files.stats(&url).await.unwrap();
    let spent = after.fsyncs - before.fsyncs;
    // The data, then the directory holding its name: both must reach the disk.
    assert!(
        spent >= 2,
        "an upload is durable only after 2 fsyncs, saw {spent}"
    );
    files.stats(&url).await.unwrap();
    assert_eq!(
        files.stats(&url).await.unwrap().fsyncs,
        after.fsyncs,
        "reading stats fsyncs nothing"
    );
    for (_, stop, task) in servers {
        let _ = stop.send(());
        let _ = task.await;
    }
    ns.stop().await;
}
