//! Fault suite 1: kill -9 random servers while a client publishes files of 0 B to 8 MiB.
//!
//! Pass: every acknowledged file is present with its exact checksum after every restart and at
//! the end; a file never acknowledged is absent, empty (created, never published) or complete;
//! every server is ready again within 2 s of its restart.

use dfs_client::Client;
use dfs_proto::names::Entry;
use dfs_proto::{Checksum, DfsPath};
use dfs_tests::process::ProcessCluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the writer knows about each path.
#[derive(Clone, Debug)]
struct Attempt {
    /// The checksum and size of the only content ever written to this path.
    checksum: Checksum,
    size: u64,
    acknowledged: bool,
}

#[test]
fn kill9_during_upload_loop_loses_nothing() {
    let seed = dfs_tests::test_seed();
    let (files, kills) = if dfs_tests::long_tier() {
        (2000, 400)
    } else {
        (300, 60)
    };
    let cluster = ProcessCluster::start_with(3, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ns_url = cluster.nameserver.url.clone();
    let history: Arc<Mutex<BTreeMap<String, Attempt>>> = Arc::default();
    let writer_done = Arc::new(AtomicBool::new(false));
    let cluster = Arc::new(Mutex::new(cluster));

    // The killer: SIGKILL a random server, restart it, check acknowledged files.
    let killer = {
        let cluster = Arc::clone(&cluster);
        let history = Arc::clone(&history);
        let writer_done = Arc::clone(&writer_done);
        let ns_url = ns_url.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
            let mut done = 0;
            let mut slowest = Duration::ZERO;
            let verifier = runtime.block_on(connect(&ns_url, None));
            while done < kills {
                std::thread::sleep(Duration::from_millis(rng.random_range(50..250)));
                let ready_in = {
                    let mut cluster = cluster.lock().unwrap();
                    let victim = rng.random_range(0..2 + cluster.fileservers.len());
                    let server = match victim {
                        0 => &mut cluster.nameserver,
                        1 => &mut cluster.lockserver,
                        n => &mut cluster.fileservers[n - 2],
                    };
                    server.restart()
                };
                slowest = slowest.max(ready_in);
                assert!(
                    ready_in < Duration::from_secs(2),
                    "a server took {ready_in:?} to be ready after kill -9 (seed {seed})"
                );
                done += 1;
                let snapshot = history.lock().unwrap().clone();
                runtime.block_on(check_metadata(&verifier, &snapshot, seed));
                if writer_done.load(Ordering::SeqCst) && done >= kills {
                    break;
                }
            }
            eprintln!("killer: {done} kills, slowest restart {slowest:?}");
            done
        })
    };

    // The writer: unique paths, sizes 0 B .. 8 MiB (mostly small), retried until acknowledged
    // or given up; every attempt of one path writes the same bytes.
    let mut rng = StdRng::seed_from_u64(seed);
    // The content of a failed attempt is kept in the spool directory (as the mount keeps it
    // in dirty/); this one goes away with the test.
    let spool = tempfile::tempdir().unwrap();
    let client = runtime.block_on(connect(&ns_url, Some(spool.path())));
    runtime.block_on(async {
        for i in 0..files {
            let size = match rng.random_range(0..10) {
                0 => 0,
                1 => rng.random_range(1..8 << 20),
                _ => rng.random_range(1..64 << 10),
            };
            let mut bytes = vec![0u8; size];
            rng.fill(&mut bytes[..]);
            let path = DfsPath::parse(&format!("/f{i:04}")).unwrap();
            history.lock().unwrap().insert(
                path.to_string(),
                Attempt {
                    checksum: Checksum::of(&bytes),
                    size: size as u64,
                    acknowledged: false,
                },
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match write_file(&client, &path, &bytes).await {
                    Ok(entry) => {
                        assert_eq!(entry.checksum, Checksum::of(&bytes));
                        history
                            .lock()
                            .unwrap()
                            .get_mut(path.as_str())
                            .unwrap()
                            .acknowledged = true;
                        break;
                    }
                    Err(err) if Instant::now() < deadline => {
                        tracing::debug!(%err, "retrying {path}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(err) => panic!("{path} never acknowledged in 60 s: {err} (seed {seed})"),
                }
            }
        }
    });
    writer_done.store(true, Ordering::SeqCst);
    let kills_done = killer.join().expect("killer thread");
    assert!(kills_done >= kills);

    // Final check: every file downloaded and compared, from a quiet cluster.
    let snapshot = history.lock().unwrap().clone();
    runtime.block_on(async {
        let verifier = connect(&ns_url, None).await;
        check_metadata(&verifier, &snapshot, seed).await;
        for (path, attempt) in &snapshot {
            let path = DfsPath::parse(path).unwrap();
            let (entry, bytes) = retry(|| read_file(&verifier, &path)).await;
            assert_eq!(
                (bytes.len() as u64, Checksum::of(&bytes)),
                (attempt.size, attempt.checksum),
                "{path} is corrupt (seed {seed})"
            );
            assert_eq!(entry.checksum, attempt.checksum);
        }
    });
    let acked = snapshot.values().filter(|a| a.acknowledged).count();
    eprintln!("{acked} files acknowledged, {kills_done} kills, 0 lost, 0 corrupt");
}

/// A client of the cluster once its nameserver answers; `spool` holds open files' copies.
async fn connect(ns_url: &str, spool: Option<&std::path::Path>) -> Client {
    let mut builder = Client::builder(ns_url)
        .key(dfs_tests::keys::client_key_for(ns_url))
        .session(format!("writer-{}", rand::random::<u32>()));
    if let Some(dir) = spool {
        builder = builder.spool_dir(dir);
    }
    let client = builder.build();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.remote().names.cluster().await {
            Ok(_) => return client,
            Err(err) if Instant::now() < deadline => {
                tracing::debug!(%err, "connect retry");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("cannot connect: {err}"),
        }
    }
}

/// Replaces (or creates) `path` with `bytes` through the client's file API: the lease,
/// upload and publish of `close`; returns the published entry.
async fn write_file(client: &Client, path: &DfsPath, bytes: &[u8]) -> std::io::Result<Entry> {
    let mut file = client.create(path.as_str()).await?;
    file.write_all(bytes).await?;
    file.sync_all().await?;
    // Nothing to publish (an empty new file): the created file is the acknowledged one.
    let entry = file.published().unwrap_or(file.entry()).clone();
    file.close().await?;
    Ok(entry)
}

/// The current version of `path` and its content, downloaded (checksum-verified).
async fn read_file(client: &Client, path: &DfsPath) -> std::io::Result<(Entry, Vec<u8>)> {
    let mut file = client.open(path.as_str()).await?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await?;
    Ok((file.entry().clone(), bytes))
}

/// Retries a read while servers come back.
async fn retry<T, E, F, Fut>(mut op: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match op().await {
            Ok(value) => return value,
            Err(err) if Instant::now() < deadline => {
                tracing::debug!(%err, "read retry");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("read kept failing: {err}"),
        }
    }
}

/// Every acknowledged file has its exact size and checksum; no file is partial.
async fn check_metadata(client: &Client, history: &BTreeMap<String, Attempt>, seed: u64) {
    for (path, attempt) in history {
        let path = DfsPath::parse(path).unwrap();
        let found = {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match client.remote().names.stat(&path).await {
                    Ok(entry) => break Some(entry),
                    Err(err) if err.code == dfs_proto::ErrorCode::NotFound => break None,
                    Err(err) if Instant::now() < deadline => {
                        tracing::debug!(%err, "stat retry");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(err) => panic!("stat {path} kept failing: {err}"),
                }
            }
        };
        match found {
            Some(entry) => {
                let complete = entry.size == attempt.size && entry.checksum == attempt.checksum;
                let empty = entry.size == 0 && entry.version == 0;
                if attempt.acknowledged {
                    assert!(
                        complete,
                        "acknowledged {path} changed: {entry:?} (seed {seed})"
                    );
                } else {
                    assert!(
                        complete || empty,
                        "{path} is partial: {entry:?} (seed {seed})"
                    );
                }
            }
            None => assert!(
                !attempt.acknowledged,
                "acknowledged {path} is lost (seed {seed})"
            ),
        }
    }
}
