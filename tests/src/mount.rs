//! A real FUSE mount of a test cluster: `target/debug/dfs-fuse URL DIR -f --cache-dir ...`.
//!
//! [`Mount::start`] returns once the mount point appears in `/proc/self/mountinfo`; dropping
//! the mount unmounts it with `fusermount3 -u` and stops the process. When FUSE is unusable
//! (no `/dev/fuse`, or the mount fails) tests FAIL with a clear message, unless
//! `DFS_SKIP_FUSE=1`, in which case [`Mount::try_start`] returns `None` and the test skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `dfs-fuse` in the foreground, with its own mount point and cache directory.
pub struct Mount {
    /// The mount point (inside a temp dir owned by this value).
    pub dir: PathBuf,
    /// The mount's cache directory (dirty files of failed uploads are under `dirty/`).
    pub cache_dir: PathBuf,
    /// The nameserver it mounts.
    pub nameserver: String,
    child: Option<Child>,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Whether FUSE tests should skip instead of failing (`DFS_SKIP_FUSE=1`).
pub fn skip_fuse() -> bool {
    std::env::var("DFS_SKIP_FUSE").is_ok_and(|v| v == "1")
}

/// Why FUSE cannot be used here, if it cannot.
pub fn fuse_unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (load the fuse module or run the container with --device /dev/fuse)".into());
    }
    if Command::new("fusermount3").arg("-V").output().is_err() {
        return Some("fusermount3 is not installed (apt-get install fuse3)".into());
    }
    None
}

impl Mount {
    /// Mounts `nameserver` with extra `dfs-fuse` arguments; panics with a clear message when
    /// FUSE is unusable and `DFS_SKIP_FUSE` is not set.
    pub fn start(nameserver: &str, extra: &[&str]) -> Mount {
        match Mount::try_start(nameserver, extra) {
            Some(m) => m,
            None => panic!("FUSE unavailable and DFS_SKIP_FUSE=1: call try_start to skip"),
        }
    }

    /// Like [`Mount::start`], but returns `None` (the caller skips) when FUSE is unusable
    /// and `DFS_SKIP_FUSE=1`.
    pub fn try_start(nameserver: &str, extra: &[&str]) -> Option<Mount> {
        Mount::try_start_with_cache(nameserver, None, extra)
    }

    /// Like [`Mount::start`], with the cache in `cache_dir` (see [`Mount::try_start_with_cache`]).
    pub fn start_with_cache(nameserver: &str, cache_dir: &Path, extra: &[&str]) -> Mount {
        match Mount::try_start_with_cache(nameserver, Some(cache_dir), extra) {
            Some(m) => m,
            None => panic!("FUSE unavailable and DFS_SKIP_FUSE=1: call try_start to skip"),
        }
    }

    /// Like [`Mount::try_start`], with the cache in `cache_dir` (a mount started again on the
    /// cache of one that was killed) instead of a fresh one.
    pub fn try_start_with_cache(
        nameserver: &str,
        cache_dir: Option<&Path>,
        extra: &[&str],
    ) -> Option<Mount> {
        if let Some(why) = fuse_unavailable() {
            if skip_fuse() {
                eprintln!("skipping: {why}");
                return None;
            }
            panic!("FUSE is unusable: {why}. Set DFS_SKIP_FUSE=1 to skip mount tests.");
        }
        let tmp = tempfile::Builder::new()
            .prefix("dfs-mount-")
            .tempdir()
            .expect("a temp dir for the mount");
        let dir = tmp.path().join("mnt");
        let cache_dir = cache_dir.map_or_else(|| tmp.path().join("cache"), Path::to_path_buf);
        std::fs::create_dir_all(&dir).expect("create the mount point");
        let log = tmp.path().join("dfs-fuse.log");
        let log_file = std::fs::File::create(&log).expect("create the mount log");
        let mut cmd = Command::new(crate::bin_path("dfs-fuse"));
        cmd.arg(nameserver)
            .arg(&dir)
            .arg("-f")
            .arg("--cache-dir")
            .arg(&cache_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn,dfs_fuse=debug");
        }
        // The test cluster's key, unless the test chose one.
        let chose_key = extra.iter().any(|a| *a == "--key" || a.contains("key="));
        if let Some(key) = crate::keys::key_file_for(nameserver).filter(|_| !chose_key) {
            cmd.arg("--key").arg(key);
        }
        let child = cmd.spawn().expect("start dfs-fuse");
        let mut mount = Mount {
            dir,
            cache_dir,
            nameserver: nameserver.to_owned(),
            child: Some(child),
            log,
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if is_mounted(&mount.dir) {
                return Some(mount);
            }
            if let Some(child) = mount.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = mount.log();
                    mount.child = None;
                    if skip_fuse() {
                        eprintln!("skipping: dfs-fuse could not mount ({status}):\n{log}");
                        return None;
                    }
                    panic!("dfs-fuse exited before mounting ({status}); set DFS_SKIP_FUSE=1 to skip mount tests. Log:\n{log}");
                }
            }
            if Instant::now() > deadline {
                panic!("dfs-fuse did not mount within 30 s. Log:\n{}", mount.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel.trim_start_matches('/'))
    }

    /// What the mount logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the kernel granted FUSE passthrough to this mount (started with
    /// `-o passthrough`), from its log line `FUSE passthrough granted=...`; `None` when the
    /// mount did not log it within 10 s (the kernel sends INIT on the first request).
    pub fn passthrough_granted(&self) -> Option<bool> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = strip_ansi(&self.log());
            if log.contains("granted=true") {
                return Some(true);
            }
            if log.contains("granted=false") {
                return Some(false);
            }
            if Instant::now() > deadline {
                return None;
            }
            let _ = std::fs::metadata(&self.dir);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of `dfs-fuse` (for kill -9 / SIGSTOP tests).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Unmounts with `fusermount3 -u` and waits for the process to exit; returns its exit
    /// code (None when killed by a signal or already gone).
    pub fn unmount(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while is_mounted(&self.dir) && Instant::now() < deadline {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status();
            if is_mounted(&self.dir) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Kills the mount process with SIGKILL (a crashed client) and detaches the mount.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.unmount();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- dfs-fuse log ({}) ---\n{}",
                self.dir.display(),
                self.log()
            );
        }
    }
}

pub use dfs_proto::mountinfo::is_mounted;

/// `text` without terminal color codes (`ESC [ ... m`), as the mount's log has them.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs a shell command (`sh -c`), panicking with its output when it fails.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell command and returns (success, stdout + stderr), for expected failures.
pub fn sh_status(script: &str) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The file system type `/proc/self/mountinfo` shows for the mount on `dir` (the last one
/// when mounts are stacked), e.g. `fuse.dfs`; `None` when `dir` is not a mount point.
/// `dir` must be absolute and free of spaces (mountinfo escapes them).
pub fn fs_type(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dir = dir.to_string_lossy();
    info.lines().rev().find_map(|line| {
        let (fields, rest) = line.split_once(" - ")?;
        let mountpoint = fields.split_whitespace().nth(4)?;
        (mountpoint == dir).then(|| rest.split_whitespace().next().map(str::to_owned))?
    })
}
