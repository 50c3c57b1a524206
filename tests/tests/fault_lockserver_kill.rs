//! Fault suite 4: kill -9 the lockserver under load.
//!
//! Pass: fencing tokens are unique and strictly increase over the whole history (a grant that
//! was acknowledged before another was requested has the smaller token), and no two clients
//! ever hold one path at the same time.

use dfs_proto::client::LockClient;
use dfs_proto::locks::AcquireRequest;
use dfs_proto::DfsPath;
use dfs_tests::process::ServerProcess;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One acknowledged grant as its client saw it.
#[derive(Clone, Debug)]
struct Grant {
    client: usize,
    path: usize,
    token: u64,
    requested: Instant,
    acknowledged: Instant,
    /// End of the client's critical section: when it sent the release.
    held_until: Instant,
}

const TTL_MS: u64 = 2000;

#[test]
fn lockserver_kill9_keeps_tokens_growing_and_holders_exclusive() {
    let seed = dfs_tests::test_seed();
    let kills = if dfs_tests::long_tier() { 100 } else { 20 };
    let data = tempfile::tempdir().unwrap();
    let keys = dfs_tests::keys::TestKeys::make(data.path());
    let credential = keys.credential();
    let server = ServerProcess::start(
        "dfs-lockserver",
        &[
            "--data".into(),
            data.path().join("lock").to_string_lossy().into_owned(),
            "--ttl-ms".into(),
            TTL_MS.to_string(),
            "--cluster-key".into(),
            keys.cluster_file.to_string_lossy().into_owned(),
        ],
        &data.path().join("lockserver.log"),
    );
    let url = server.url.clone();
    let server = Arc::new(Mutex::new(server));
    let stop = Arc::new(AtomicBool::new(false));
    let grants: Arc<Mutex<Vec<Grant>>> = Arc::default();

    let clients: Vec<_> = (0..4)
        .map(|client| {
            let url = url.clone();
            let credential = credential.clone();
            let stop = Arc::clone(&stop);
            let grants = Arc::clone(&grants);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let locks = LockClient::new(&url).with_credential(credential.clone());
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(client as u64));
                let mut attempt = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    // A fresh session per attempt: an acquire whose reply was lost is then not
                    // answered later with its older token (idempotent re-acquire), so every
                    // token seen here was issued for the request that received it.
                    attempt += 1;
                    let session = format!("client-{client}-{attempt}");
                    let path = rng.random_range(0..3usize);
                    let requested = Instant::now();
                    let reply = runtime.block_on(locks.acquire(&AcquireRequest {
                        paths: vec![DfsPath::parse(&format!("/p{path}")).unwrap()],
                        client: session.clone(),
                        ttl_ms: Some(TTL_MS),
                    }));
                    let Ok(lease) = reply else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let acknowledged = Instant::now();
                    std::thread::sleep(Duration::from_millis(rng.random_range(0..5)));
                    let release_sent = Instant::now();
                    let released = runtime.block_on(locks.release(lease.token, &session));
                    // The critical section ends when the release is sent; if its reply was lost
                    // the server may or may not have freed the path, both are safe.
                    let held_until = release_sent;
                    grants.lock().unwrap().push(Grant {
                        client,
                        path,
                        token: lease.token,
                        requested,
                        acknowledged,
                        held_until,
                    });
                    if released.is_err() {
                        // Wait out our own lease so this client does not re-enter early.
                        std::thread::sleep(Duration::from_millis(TTL_MS));
                    }
                }
            })
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(seed ^ 0xdead);
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.random_range(20..150)));
        let ready_in = server.lock().unwrap().restart();
        assert!(
            ready_in < Duration::from_secs(2),
            "restart took {ready_in:?}"
        );
    }
    // On a loaded machine the clients may not have got far between the kills: keep them
    // going (no more kills) until the history is long enough to judge, for a bounded time.
    let enough_by = Instant::now() + Duration::from_secs(20);
    while grants.lock().unwrap().len() < 20 && Instant::now() < enough_by {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }

    let grants = grants.lock().unwrap().clone();
    assert!(
        grants.len() >= 20,
        "too few grants to judge the history: {}",
        grants.len()
    );
    for a in &grants {
        for b in &grants {
            // The same lease is returned again only to the same session for the same path
            // (an acquire whose reply was lost, then repeated).
            if a.token == b.token {
                assert!(
                    a.client == b.client && a.path == b.path,
                    "token {} given to two leases: {a:?} {b:?} (seed {seed})",
                    a.token
                );
                continue;
            }
            if a.acknowledged < b.requested {
                assert!(
                    a.token < b.token,
                    "token went back: {a:?} acknowledged before {b:?} was requested (seed {seed})"
                );
            }
            if a.client != b.client
                && a.path == b.path
                && b.acknowledged > a.acknowledged
                && b.acknowledged < a.held_until
            {
                panic!(
                    "two holders of /p{} at once: {a:?} and {b:?} (seed {seed})",
                    a.path
                );
            }
        }
    }
    eprintln!(
        "{} grants over {kills} lockserver kills; tokens unique and growing, holders exclusive",
        grants.len()
    );
}
