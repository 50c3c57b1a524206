//! Fault suite 4: kill -9 the lockserver under load.
//!
//! Pass: fencing tokens are unique and strictly increase over the whole history (a grant that
//! was acknowledged before another was requested has the smaller token), and no two clients
//! ever hold one path at the same time. The lockserver keeps leases in memory and in a journal
//! written without fsync: a kill -9 in the same boot loses none of them; after a reboot (here:
//! the journal removed) it recovers, granting nothing for TTL + lock-delay while live holders
//! re-establish their leases.

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
const LOCK_DELAY_MS: u64 = 100;

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
            "--lock-delay-ms".into(),
            LOCK_DELAY_MS.to_string(),
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
    let observer = LockClient::new(&url).with_credential(credential.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..kills {
        // Kill while grants flow: after the recovery of the previous restart has ended.
        let recovered_by = Instant::now() + Duration::from_secs(10);
        while runtime
            .block_on(observer.list_page(&Default::default()))
            .map_or(true, |l| l.recovering_ms.is_some())
        {
            assert!(Instant::now() < recovered_by, "the recovery never ended");
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// A lockserver killed while the machine stays up restarts with its leases (from its journal):
/// the holder renews by token alone, others are refused its path and get new paths at once.
#[test]
fn a_kill9_in_the_same_boot_keeps_every_lease_without_a_recovery() {
    let data = tempfile::tempdir().unwrap();
    let keys = dfs_tests::keys::TestKeys::make(data.path());
    let mut server = lockserver_with_keys(data.path(), &keys);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let acquire =
        |locks: &LockClient, client: &str, path: &str| acquire_with(&runtime, locks, client, path);
    let locks = LockClient::new(&server.url).with_credential(keys.credential());
    let held = acquire(&locks, "holder", "/x").unwrap();
    let released = acquire(&locks, "gone", "/r").unwrap();
    runtime
        .block_on(locks.release(released.token, "gone"))
        .unwrap();
    server.restart();
    let locks = LockClient::new(&server.url).with_credential(keys.credential());

    let list = runtime.block_on(locks.list()).unwrap();
    assert_eq!(list.recovering_ms, None);
    let tokens: Vec<u64> = list.leases.iter().map(|l| l.token).collect();
    assert_eq!(tokens, vec![held.token]);
    assert!(list.next_token > released.token);
    runtime.block_on(locks.renew(held.token, "holder")).unwrap();
    assert_eq!(
        acquire(&locks, "other", "/x").unwrap_err().code,
        dfs_proto::ErrorCode::Busy
    );
    let r = acquire(&locks, "other", "/r").unwrap();
    assert!(r.token > released.token && r.token > held.token);
}

fn lockserver_with_keys(dir: &std::path::Path, keys: &dfs_tests::keys::TestKeys) -> ServerProcess {
    ServerProcess::start(
        "dfs-lockserver",
        &[
            "--data".into(),
            dir.join("lock").to_string_lossy().into_owned(),
            "--ttl-ms".into(),
            "3000".into(),
            "--lock-delay-ms".into(),
            "200".into(),
            "--cluster-key".into(),
            keys.cluster_file.to_string_lossy().into_owned(),
        ],
        &dir.join("lockserver.log"),
    )
}

/// After a power loss the leases are gone (here: the journal removed after the kill, which is
/// what a reboot makes of it). A holder that keeps renewing keeps its lease: the restarted
/// lockserver grants nothing during its recovery, takes the lease back from the holder's
/// signed copy (a copy altered in any field is refused), and afterwards the path is still the
/// holder's.
#[test]
fn a_renewing_holder_keeps_its_lease_across_a_power_loss_and_nothing_is_granted_meanwhile() {
    let data = tempfile::tempdir().unwrap();
    let keys = dfs_tests::keys::TestKeys::make(data.path());
    let locks_of = |url: &str| LockClient::new(url).with_credential(keys.credential());
    let mut server = lockserver_with_keys(data.path(), &keys);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let held = acquire_with(&runtime, &locks_of(&server.url), "holder", "/x").unwrap();
    server.kill9();
    std::fs::remove_file(data.path().join("lock").join("leases.journal")).unwrap();
    server.restart();
    // A new connection pool: the old one's connections died with the process.
    let locks = locks_of(&server.url);
    let acquire = |client: &str, path: &str| acquire_with(&runtime, &locks, client, path);

    let list = runtime.block_on(locks.list()).unwrap();
    assert!(list.recovering_ms.is_some() && list.leases.is_empty());
    assert!(list.next_token > held.token);
    for path in ["/x", "/y"] {
        let refused = acquire("other", path).unwrap_err();
        assert_eq!(
            refused.code,
            dfs_proto::ErrorCode::Unavailable,
            "{path}: {refused}"
        );
    }
    // The nameserver asks whether a lease is live: "cannot say" while recovering.
    assert!(runtime.block_on(locks.live(held.token)).is_err());
    let mut forged = held.clone();
    forged.paths.push(DfsPath::parse("/y").unwrap());
    let refused = runtime.block_on(locks.renew_lease(&forged)).unwrap_err();
    assert_eq!(refused.code, dfs_proto::ErrorCode::LeaseExpired);
    let back = runtime.block_on(locks.renew_lease(&held)).unwrap();
    assert_eq!((back.token, &back.paths), (held.token, &held.paths));

    // After the recovery: the holder still has /x, others get new paths with higher tokens.
    let deadline = Instant::now() + Duration::from_secs(10);
    let other = loop {
        runtime.block_on(locks.renew_lease(&back)).unwrap();
        match acquire("other", "/y") {
            Ok(lease) => break lease,
            Err(err) if err.code == dfs_proto::ErrorCode::Unavailable => {
                assert!(Instant::now() < deadline, "the recovery never ended");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(err) => panic!("{err}"),
        }
    };
    assert!(other.token > held.token);
    assert_eq!(
        acquire("other", "/x").unwrap_err().code,
        dfs_proto::ErrorCode::Busy
    );
    assert!(runtime.block_on(locks.live(held.token)).unwrap().is_some());
}

/// One acquire of `path` for session `client`, waited for on `runtime`.
fn acquire_with(
    runtime: &tokio::runtime::Runtime,
    locks: &LockClient,
    client: &str,
    path: &str,
) -> Result<dfs_proto::locks::Lease, dfs_proto::ApiError> {
    runtime.block_on(locks.acquire(&AcquireRequest {
        paths: vec![DfsPath::parse(path).unwrap()],
        client: client.into(),
        ttl_ms: None,
    }))
}
