//! kill -9 of each server under a real mount (issue 3 and issue 4 item 1 "through the mount").
//!
//! 1. One server at a time (nameserver, lockserver, a fileserver) is killed while idle and
//!    while a file is being closed, then restarted: the same mount keeps working without a
//!    remount, every file closed with 0 is intact, and a close that failed returned EIO or
//!    ESTALE and left its content in the mount's `dirty/` cache.
//! 2. An upload loop through the mount (std::fs, retried on error) while a killer SIGKILLs
//!    random servers: every acknowledged file is checked by checksum, downloaded from the
//!    fileservers, after every restart and at the end. `DFS_LONG=1` runs the long tier.

use dfs_client::Client;
use dfs_proto::names::Entry;
use dfs_proto::{Checksum, DfsPath};
use dfs_tests::mount::Mount;
use dfs_tests::process::{ProcessCluster, ServerProcess};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// close(2) with its result (std's `File` drop ignores it).
fn close_checked(file: std::fs::File) -> std::io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just taken out of a `File`, so it is open and owned by nobody else.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Where a write through the mount failed, if it did.
#[derive(Debug)]
enum WriteError {
    /// open or write failed: nothing was handed to close.
    Before(std::io::Error),
    /// close (the upload and publish) failed.
    Close(std::io::Error),
}

impl WriteError {
    fn describe(&self) -> String {
        match self {
            WriteError::Before(err) => format!("open/write: {err}"),
            WriteError::Close(err) => format!("close: {err}"),
        }
    }
}

/// Writes `bytes` to `path` like `cp` does (create, truncate, write, close).
fn write_through(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(WriteError::Before)?;
    for chunk in bytes.chunks(1 << 20) {
        file.write_all(chunk).map_err(WriteError::Before)?;
    }
    close_checked(file).map_err(WriteError::Close)
}

/// Reads `path` through the mount, retrying while servers come back (up to 30 s).
fn read_through(path: &Path) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::read(path) {
            Ok(bytes) => return bytes,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(err) => panic!("{} unreadable through the mount: {err}", path.display()),
        }
    }
}

/// Writes through the mount until a close returns 0 (up to 60 s).
fn write_until_acked(path: &Path, bytes: &[u8]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failures = 0;
    loop {
        match write_through(path, bytes) {
            Ok(()) => return failures,
            Err(err) if Instant::now() < deadline => {
                failures += 1;
                tracing::debug!(err = err.describe(), "write retry");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(err) => panic!(
                "{} never acknowledged in 60 s: {}",
                path.display(),
                err.describe()
            ),
        }
    }
}

/// Data files of failed uploads in the mount's cache (`dirty/*.data`).
fn dirty_files(mount: &Mount) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(mount.cache_dir.join("dirty"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "data"))
                .collect()
        })
        .unwrap_or_default()
}

fn content(seed: u64, size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    StdRng::seed_from_u64(seed).fill(&mut bytes[..]);
    bytes
}

fn victim(cluster: &mut ProcessCluster, which: usize) -> &mut ServerProcess {
    match which {
        0 => &mut cluster.nameserver,
        1 => &mut cluster.lockserver,
        n => &mut cluster.fileservers[n - 2],
    }
}

const NAMES: [&str; 3] = ["nameserver", "lockserver", "fileserver"];

#[test]
fn each_server_killed_under_a_mount_loses_nothing_acknowledged() {
    let seed = dfs_tests::test_seed();
    let mut cluster = ProcessCluster::start(3);
    let Some(mount) = Mount::try_start(&cluster.nameserver.url, &[]) else {
        return;
    };
    // Acknowledged content per file name; checked after every step.
    let mut acked: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..3 {
        let bytes = content(seed ^ i, 300_000 + i as usize * 1000);
        let name = format!("base{i}");
        assert_eq!(write_until_acked(&mount.path(&name), &bytes), 0);
        acked.insert(name, bytes);
    }
    let check = |acked: &BTreeMap<String, Vec<u8>>| {
        for (name, bytes) in acked {
            let got = read_through(&mount.path(name));
            assert!(got == *bytes, "{name} lost or corrupt (seed {seed})");
        }
    };
    let (mut failed_closes, mut kills) = (0, 0);
    for (round, which) in [0usize, 1, 2].into_iter().enumerate() {
        let name = NAMES[which];
        // (a) Killed while idle, restarted: the same mount works on.
        victim(&mut cluster, which).restart();
        kills += 1;
        check(&acked);
        let file = format!("after-idle-kill-{name}");
        let bytes = content(seed ^ (100 + round as u64), 1 << 20);
        write_until_acked(&mount.path(&file), &bytes);
        acked.insert(file, bytes);

        // (b) Dead while a close uploads and publishes: open and write with everything up,
        // kill, then close.
        let file = format!("close-while-dead-{name}");
        let old = content(seed ^ (200 + round as u64), 200_000);
        write_until_acked(&mount.path(&file), &old);
        acked.insert(file.clone(), old.clone());
        let new = content(seed ^ (300 + round as u64), 2 << 20);
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(mount.path(&file))
            .expect("open for writing with every server up");
        handle.write_all(&new).expect("write to the local copy");
        victim(&mut cluster, which).kill9();
        let closed = close_checked(handle);
        match &closed {
            Ok(()) => {
                eprintln!("{name} dead: close returned 0");
                acked.insert(file.clone(), new.clone());
            }
            Err(err) => {
                failed_closes += 1;
                let errno = err.raw_os_error();
                eprintln!("{name} dead: close failed with {err}");
                assert!(
                    errno == Some(libc::EIO) || errno == Some(libc::ESTALE),
                    "a failed close must say EIO or ESTALE, not {err} (seed {seed})"
                );
                // The release that keeps the copy runs just after close; give it a moment.
                let deadline = Instant::now() + Duration::from_secs(10);
                let kept = loop {
                    let kept = dirty_files(&mount)
                        .into_iter()
                        .any(|p| std::fs::read(&p).is_ok_and(|b| b == new));
                    if kept || Instant::now() > deadline {
                        break kept;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                };
                assert!(
                    kept,
                    "the content of a failed close is not in {}/dirty (seed {seed})",
                    mount.cache_dir.display()
                );
            }
        }
        // The nameserver has to be up again before anything can be checked.
        victim(&mut cluster, which).restart();
        kills += 1;
        if which >= 2 {
            cluster.wait_for_fileservers(3);
        }
        let now = read_through(&mount.path(&file));
        if closed.is_err() {
            // Unknown outcome (the reply may have been lost after the commit), never a mix.
            assert!(
                now == old || now == new,
                "{file} is neither the old nor the new content (seed {seed})"
            );
            acked.insert(file.clone(), now);
        }
        check(&acked);

        // (c) Killed and restarted in the middle of a cp: either outcome, never a mix.
        let file = format!("cp-during-kill-{name}");
        let bytes = content(seed ^ (400 + round as u64), 6 << 20);
        let src = cluster.data.path().join(format!("src-{round}"));
        std::fs::write(&src, &bytes).unwrap();
        let dst = mount.path(&file);
        let cp = std::thread::spawn(move || {
            std::process::Command::new("cp")
                .arg(&src)
                .arg(&dst)
                .status()
                .expect("run cp")
        });
        std::thread::sleep(Duration::from_millis(
            StdRng::seed_from_u64(seed ^ round as u64).random_range(0..300),
        ));
        victim(&mut cluster, which).restart();
        kills += 1;
        let status = cp.join().unwrap();
        if status.success() {
            acked.insert(file.clone(), bytes.clone());
        } else {
            failed_closes += 1;
            // Retry like a user would: the mount must accept it without a remount.
            write_until_acked(&mount.path(&file), &bytes);
            acked.insert(file.clone(), bytes);
        }
        if which >= 2 {
            cluster.wait_for_fileservers(3);
        }
        check(&acked);
    }
    // A second mount sees the same acknowledged state: it is on the servers, not only in the
    // first mount's cache.
    let other = Mount::start(&cluster.nameserver.url, &[]);
    for (name, bytes) in &acked {
        let got = read_through(&other.path(name));
        assert!(
            got == *bytes,
            "{name} differs on a fresh mount (seed {seed})"
        );
    }
    eprintln!(
        "server kills under a mount: {kills} kills, {} files acknowledged and intact, \
         {failed_closes} failed closes (seed {seed})",
        acked.len()
    );
}

/// What the writer knows about each file.
#[derive(Clone, Debug)]
struct Attempt {
    checksum: Checksum,
    size: u64,
    acknowledged: bool,
}

#[test]
fn mount_upload_loop_while_servers_are_killed() {
    let seed = dfs_tests::test_seed();
    let (files, min_kills) = if dfs_tests::long_tier() {
        (500, 100)
    } else {
        (100, 20)
    };
    let cluster = ProcessCluster::start(3);
    let ns_url = cluster.nameserver.url.clone();
    let Some(mount) = Mount::try_start(&ns_url, &[]) else {
        return;
    };
    let history: Arc<Mutex<BTreeMap<String, Attempt>>> = Arc::default();
    let writer_done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let cluster = Arc::new(Mutex::new(cluster));

    let killer = {
        let cluster = Arc::clone(&cluster);
        let history = Arc::clone(&history);
        let writer_done = Arc::clone(&writer_done);
        let kills = Arc::clone(&kills);
        let ns_url = ns_url.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let mut rng = StdRng::seed_from_u64(seed ^ 0x6b11);
            let verifier = runtime.block_on(connect(&ns_url));
            let mut checks = 0;
            // Files already downloaded once after their acknowledgement: later checks compare
            // their size and checksum at the nameserver (the fileservers verify blobs against
            // it), so the long tier does not download everything after every kill.
            let mut downloaded = std::collections::BTreeSet::new();
            while !(writer_done.load(Ordering::SeqCst) && kills.load(Ordering::SeqCst) >= min_kills)
            {
                std::thread::sleep(Duration::from_millis(rng.random_range(20..300)));
                {
                    let mut cluster = cluster.lock().unwrap();
                    let which = rng.random_range(0..2 + cluster.fileservers.len());
                    victim(&mut cluster, which).restart();
                }
                kills.fetch_add(1, Ordering::SeqCst);
                let snapshot = history.lock().unwrap().clone();
                checks += runtime.block_on(check_acknowledged(
                    &verifier,
                    &snapshot,
                    &mut downloaded,
                    seed,
                ));
            }
            checks
        })
    };

    let mut rng = StdRng::seed_from_u64(seed);
    let mut failures = 0;
    // At least `files` files, and more while the killer has not reached its kills, so every
    // kill lands during uploads.
    let mut i = 0;
    while i < files || (kills.load(Ordering::SeqCst) < min_kills && i < files * 10) {
        let size = match rng.random_range(0..10) {
            0 => 0,
            1 | 2 => rng.random_range(1..8 << 20),
            _ => rng.random_range(1..256 << 10),
        };
        let bytes = content(rng.random(), size);
        let name = format!("f{i:04}");
        history.lock().unwrap().insert(
            format!("/{name}"),
            Attempt {
                checksum: Checksum::of(&bytes),
                size: size as u64,
                acknowledged: false,
            },
        );
        failures += write_until_acked(&mount.path(&name), &bytes);
        history
            .lock()
            .unwrap()
            .get_mut(&format!("/{name}"))
            .unwrap()
            .acknowledged = true;
        i += 1;
    }
    let files = i;
    writer_done.store(true, Ordering::SeqCst);
    let checks = killer.join().expect("killer");
    let kills = kills.load(Ordering::SeqCst);

    // Final check from a quiet cluster: every file downloaded from the fileservers, and read
    // back through the mount.
    let snapshot = history.lock().unwrap().clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let verifier = runtime.block_on(connect(&ns_url));
    let checked = runtime.block_on(check_acknowledged(
        &verifier,
        &snapshot,
        &mut Default::default(),
        seed,
    ));
    for (path, attempt) in &snapshot {
        let bytes = read_through(&mount.path(path));
        assert_eq!(
            (bytes.len() as u64, Checksum::of(&bytes)),
            (attempt.size, attempt.checksum),
            "{path} differs through the mount (seed {seed})"
        );
    }
    eprintln!(
        "mount upload loop: {files} files acknowledged ({failures} failed attempts retried), \
         {kills} kills, {checks} checks after restarts, {checked} at the end, 0 lost, 0 corrupt \
         (seed {seed})"
    );
    assert!(kills >= min_kills);
}

/// A client of the cluster once its nameserver answers.
async fn connect(ns_url: &str) -> Client {
    let client = Client::builder(ns_url)
        .key(dfs_tests::keys::client_key_for(ns_url))
        .session(format!("verifier-{}", rand::random::<u32>()))
        .build();
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

/// The current version of `path` and its content, downloaded (checksum-verified).
async fn read_file(client: &Client, path: &DfsPath) -> std::io::Result<(Entry, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut file = client.open(path.as_str()).await?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await?;
    Ok((file.entry().clone(), bytes))
}

/// Checks every acknowledged file: size and checksum at the nameserver, and the content
/// downloaded from the fileservers for each file not in `downloaded` yet (then added).
/// Returns how many files were checked. Transient errors (a server still restarting) are
/// retried for 30 s.
async fn check_acknowledged(
    client: &Client,
    history: &BTreeMap<String, Attempt>,
    downloaded: &mut std::collections::BTreeSet<String>,
    seed: u64,
) -> usize {
    let mut checked = 0;
    for (name, attempt) in history.iter().filter(|(_, a)| a.acknowledged) {
        let path = DfsPath::parse(name).unwrap();
        let download = !downloaded.contains(name);
        let deadline = Instant::now() + Duration::from_secs(30);
        let (entry, bytes) = loop {
            let found = if download {
                read_file(client, &path).await
            } else {
                client
                    .remote()
                    .names
                    .stat(&path)
                    .await
                    .map(|e| (e, Vec::new()))
                    .map_err(std::io::Error::from)
            };
            match found {
                Ok(found) => break found,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    panic!("acknowledged {path} is lost (seed {seed})")
                }
                Err(err) if Instant::now() < deadline => {
                    tracing::debug!(%err, "read retry");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("acknowledged {path} unreadable for 30 s: {err} (seed {seed})"),
            }
        };
        assert_eq!(
            (entry.size, entry.checksum),
            (attempt.size, attempt.checksum),
            "acknowledged {path} changed (seed {seed})"
        );
        if download {
            assert_eq!(
                Checksum::of(&bytes),
                attempt.checksum,
                "acknowledged {path} is corrupt (seed {seed})"
            );
            downloaded.insert(name.clone());
        }
        checked += 1;
    }
    checked
}
