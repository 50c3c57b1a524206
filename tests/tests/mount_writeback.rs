//! `-o writeback` on real mounts: close returns once the content is durable in the mount's
//! cache, the publish follows in the background, unmount waits for it, a killed mount's next
//! start publishes what it had closed, and a file someone else changed meanwhile is kept, not
//! published over their version.

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::Mount;
use dfs_tests::process::ProcessCluster;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn content(seed: u64, size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    rand::rngs::StdRng::seed_from_u64(seed).fill(&mut bytes[..]);
    bytes
}

/// Reads `path` until it holds `want` (another mount sees a publish within its attribute
/// timeout once it happened), for up to `within`.
fn eventually_reads(path: &Path, want: &[u8], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = std::fs::read(path).ok();
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never read back what was written ({} bytes read)",
            path.display(),
            got.map_or(0, |g| g.len())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Records in the cache's `dirty/` directory (sidecars of kept files).
fn dirty_records(cache: &Path) -> Vec<serde_json::Value> {
    std::fs::read_dir(cache.join("dirty"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

fn dirty_data_files(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("dirty"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "data"))
        .count()
}

#[test]
fn closes_return_before_the_publish_and_unmount_publishes_everything() {
    let cluster = Cluster::start(2);
    let Some(mut a) = Mount::try_start(&cluster.nameserver, &["-o", "writeback"]) else {
        return;
    };
    let b = Mount::start(&cluster.nameserver, &[]);
    let seed = dfs_tests::test_seed();
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("f{i:02}"), content(seed ^ i, 4096 + i as usize)))
        .collect();
    for (name, bytes) in &files {
        std::fs::write(a.path(name), bytes).unwrap();
        // This mount reads what it closed at once, published or not.
        assert_eq!(&std::fs::read(a.path(name)).unwrap(), bytes, "{name} on A");
    }
    // A rewrite of a file closed a moment ago goes after its first publish, in order.
    let last = content(seed ^ 99, 5000);
    std::fs::write(a.path("f00"), &last).unwrap();

    assert_eq!(a.unmount(), Some(0), "unmount failed:\n{}", a.log());
    assert_eq!(
        dirty_data_files(&a.cache_dir),
        0,
        "nothing left unpublished"
    );
    for (name, bytes) in files.iter().skip(1) {
        eventually_reads(&b.path(name), bytes, Duration::from_secs(5));
    }
    eventually_reads(&b.path("f00"), &last, Duration::from_secs(5));
}

/// Real server processes (so fileservers can be frozen) and a writeback mount on them.
fn writeback_on_processes() -> Option<(ProcessCluster, Mount)> {
    let cluster = ProcessCluster::start(2);
    cluster.wait_for_fileservers(2);
    let a = Mount::try_start(&cluster.nameserver.url, &["-o", "writeback"])?;
    Some((cluster, a))
}

/// Closes `file` while no fileserver can take an upload (the close returns anyway: the
/// content is staged), then kills mount `a` before it could publish.
fn close_unpublished_and_kill(cluster: &ProcessCluster, a: &mut Mount, file: std::fs::File) {
    for fs in &cluster.fileservers {
        fs.freeze();
    }
    let closing = Instant::now();
    drop(file);
    assert!(
        closing.elapsed() < Duration::from_secs(5),
        "a writeback close waited for the upload"
    );
    a.kill9();
    for fs in &cluster.fileservers {
        fs.thaw();
    }
}

#[test]
fn a_killed_mount_publishes_what_it_closed_at_its_next_start() {
    let Some((cluster, mut a)) = writeback_on_processes() else {
        return;
    };
    let ns = cluster.nameserver.url.clone();
    let cache = a.cache_dir.clone();
    let bytes = content(dfs_tests::test_seed(), 300_000);
    let mut file = std::fs::File::create(a.path("kept")).unwrap();
    file.write_all(&bytes).unwrap();
    close_unpublished_and_kill(&cluster, &mut a, file);
    assert_eq!(
        dirty_data_files(&cache),
        1,
        "the closed file is staged in the cache"
    );

    let again = Mount::start_with_cache(&ns, &cache, &[]);
    let b = Mount::start(&ns, &[]);
    eventually_reads(&b.path("kept"), &bytes, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(10);
    while dirty_data_files(&cache) > 0 {
        assert!(
            Instant::now() < deadline,
            "the published file stayed in dirty/"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(again);
}

#[test]
fn a_file_changed_elsewhere_meanwhile_is_kept_not_published_over() {
    let Some((cluster, mut a)) = writeback_on_processes() else {
        return;
    };
    let ns = cluster.nameserver.url.clone();
    let cache = a.cache_dir.clone();
    std::fs::write(a.path("shared"), b"first").unwrap();
    let b = Mount::start(&ns, &["-o", "lock_wait=60"]);
    eventually_reads(&b.path("shared"), b"first", Duration::from_secs(10));

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(a.path("shared"))
        .unwrap();
    file.write_all(b"from the killed mount").unwrap();
    close_unpublished_and_kill(&cluster, &mut a, file);
    // The killed mount's lease runs out; then another writer publishes a new version.
    std::fs::write(b.path("shared"), b"from the other mount").unwrap();

    let again = Mount::start_with_cache(&ns, &cache, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let kept = dirty_records(&cache)
            .into_iter()
            .find(|r| r.get("last_error").is_some_and(|e| !e.is_null()));
        if let Some(record) = kept {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "the conflict was never recorded:\n{}",
            again.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        record.get("pending").is_none(),
        "no longer pending: {record}"
    );
    assert_eq!(record["path"], "/shared");
    assert!(
        again.log().contains("cannot be published"),
        "{}",
        again.log()
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        std::fs::read(b.path("shared")).unwrap(),
        b"from the other mount"
    );
    assert_eq!(dirty_data_files(&cache), 1, "the changes are kept");
}
