//! Helpers shared by the end-to-end tests: start clusters, server processes and mounts.
//!
//! Servers run either in-process (fast, for most tests) or as the real binaries (for kill -9
//! and restart). Binaries are found next to the test executable, in `target/<profile>/`.

pub mod cluster;
pub mod keys;
pub mod mount;
pub mod posix;
pub mod process;
pub mod proxy;

use std::path::PathBuf;

/// Path of a workspace binary such as `dfs-nameserver` or `dfs-fuse`.
///
/// `cargo test --workspace` builds them, because `dfs-servers` and `dfs-fuse` have
/// integration tests of their own.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let mut dir = exe
        .parent()
        .expect("test binary lives in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "binary {} not found; run the tests with `cargo test --workspace` so it gets built",
        path.display()
    );
    path
}

/// Logs of the servers under test go to the test's stderr when `RUST_LOG` is set.
pub fn init_test_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A seed for randomized tests: `DFS_SEED` when set (to replay a failure), else random.
/// Always printed so a failing run can be repeated.
pub fn test_seed() -> u64 {
    let seed = std::env::var("DFS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("DFS_SEED={seed}");
    seed
}

/// Whether the long tiers of the fault suite and soak tests should run (`DFS_LONG=1`).
pub fn long_tier() -> bool {
    std::env::var("DFS_LONG").is_ok_and(|v| v == "1")
}
