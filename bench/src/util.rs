//! Small helpers every workload needs: timing, medians, page-cache drops, test files, RSS.

use anyhow::{bail, Context};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Wall-clock seconds `work` takes; the unit every workload reports in.
pub fn time<T>(work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let start = Instant::now();
    let out = work()?;
    Ok((start.elapsed().as_secs_f64(), out))
}

/// The median of a set of runs; the issue asks for medians so one slow run cannot decide.
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches` so a cold phase really reads from disk (or network).
pub fn drop_caches(enabled: bool) -> anyhow::Result<()> {
    if !enabled {
        return Ok(());
    }
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", b"3")
        .context("cannot drop the page cache (run as root, or pass --no-drop-caches)")
}

/// Runs a command to completion; a failure is an error, because a failed tool has no timing.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// `cp SRC DST`, the real tool a user would run.
pub fn cp(src: &Path, dst: &Path) -> anyhow::Result<()> {
    run(Command::new("cp").arg(src).arg(dst))
}

/// `cat FILE > /dev/null`, the real tool a user would run.
pub fn cat(file: &Path) -> anyhow::Result<()> {
    let null = std::fs::File::create("/dev/null")?;
    run(Command::new("cat").arg(file).stdout(null))
}

/// Writes `size` bytes of pseudo-random (incompressible, cheap to make) content.
pub fn make_file(path: &Path, size: u64, seed: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
    );
    let mut state = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            // xorshift64: fast, and different for every block.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(())
}

/// Peak resident set size (VmHWM) of a process in bytes: the memory target is about the peak.
pub fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub use dfs_proto::mountinfo::is_mounted;

/// Where a workspace binary (`dfs-fuse`, `dfs-nameserver`, ...) lives: `--bin-dir`, else next
/// to this executable (also from `target/*/deps` for tests).
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = bin_dir {
        dirs.push(dir.to_path_buf());
    }
    if let Some(dir) = std::env::current_exe()?.parent() {
        dirs.push(dir.to_path_buf());
        if dir.ends_with("deps") {
            if let Some(up) = dir.parent() {
                dirs.push(up.to_path_buf());
            }
        }
    }
    for dir in &dirs {
        let path = dir.join(name);
        if path.exists() {
            return Ok(path);
        }
    }
    bail!(
        "{name} not found in {dirs:?}; build it first: cargo build --release -p dfs-servers -p dfs-fuse"
    )
}

/// Formats bytes per second the way the targets are written (MB = 10^6 bytes).
pub fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}
