//! dfs-bench: measures a DFS mount against the local disk and raw `curl` in the same run
//! (issue 5), so every number is a ratio to a reference taken on the same machine, same minute.
//!
//! The servers run as separate processes (the `dfs-*server` binaries) so each one's memory can
//! be measured; the mounts are `dfs-fuse` children. See docs/benchmarks.md.

pub mod cli;
pub mod cluster;
pub mod fio;
pub mod peers;
pub mod report;
pub mod round2;
pub mod util;
pub mod workloads;

use anyhow::Context;
use cluster::{Cluster, Mount};
use report::{Report, Row};
use std::path::PathBuf;
use workloads::Ctx;

/// Everything a run can vary; `main` fills it from flags, the smoke test by hand.
#[derive(Clone, Debug)]
pub struct Options {
    /// Scratch directory (servers' data, caches, mounts, local references); a temp dir if unset.
    pub dir: Option<PathBuf>,
    /// Keep the scratch directory afterwards.
    pub keep: bool,
    /// Size of the large-file workloads.
    pub size: u64,
    /// Size of the memory workload's file (`--full`: 4 GiB); none = informational row.
    pub memory_size: Option<u64>,
    /// Runs per workload.
    pub runs: usize,
    /// Small files per small-file workload.
    pub files: usize,
    /// Opens per W4 run.
    pub opens: usize,
    /// Replication factor (2 fileservers either way).
    pub replication: u32,
    /// Extra `dfs-fuse` arguments, e.g. `-o passthrough`.
    pub mount_opts: Vec<String>,
    /// Drop the page cache before cold phases (needs root).
    pub drop_caches: bool,
    /// Run the fio jobs from this directory too.
    pub fio: Option<PathBuf>,
    /// Where the `dfs-*` binaries are (default: next to this executable).
    pub bin_dir: Option<PathBuf>,
    /// The command line, for the report.
    pub command: String,
    /// Workloads to run (`W1`..`W10`, `W1L`, `W5p`, `W1wb`, `W5wb`, `C1`, `C2`, `memory`); empty
    /// runs all. What a selected workload needs (W1 for W1L, W2-W4 and W1wb, W5 for W6-W8 and
    /// W5wb, W5p for W9, C1 for C2) runs too.
    pub only: Vec<String>,
    /// Also run the workloads on JuiceFS and an rclone mount, when installed (issue 14).
    pub peers: bool,
    /// Files in W10's `tar -x` tree.
    pub tar_files: usize,
}

impl Options {
    /// Whether the workload `name` runs: selected, needed by a selected one, or no selection.
    fn runs_workload(&self, name: &str) -> bool {
        let picked = |w: &str| self.only.iter().any(|o| o.eq_ignore_ascii_case(w));
        let needed_by: &[&str] = match name {
            "W1" => &["W1L", "W2", "W2w", "W3", "W4", "W1wb", "W5wb"],
            "C1" => &["C2"],
            "W5" => &["W6", "W7", "W8", "W1wb", "W5wb"],
            "W5p" => &["W9"],
            "W1wb" => &["W5wb"],
            "W5wb" => &["W1wb"],
            _ => &[],
        };
        self.only.is_empty() || picked(name) || needed_by.iter().any(|w| picked(w))
    }
}

/// Results plus the handles a caller (the smoke test) may want to inspect.
pub struct Outcome {
    /// The report.
    pub report: Report,
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|k| k.parse::<u64>().ok())
                })
        })
        .unwrap_or(0);
    format!("{cores} cores, {:.0} GiB RAM", mem as f64 / 1048576.0)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Starts everything, runs every workload, stops everything; returns the report.
pub fn run_bench(opts: &Options) -> anyhow::Result<Outcome> {
    let scratch = match &opts.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::Builder::new()
                .prefix("dfs-bench-")
                .tempdir_in(dir)?
        }
        None => tempfile::Builder::new().prefix("dfs-bench-").tempdir()?,
    };
    let root = scratch.path().canonicalize()?;
    eprintln!("dfs-bench: scratch directory {}", root.display());
    let result = run_in(opts, &root);
    if opts.keep {
        let _ = scratch.keep();
        eprintln!("dfs-bench: kept {}", root.display());
    }
    result
}

fn step(
    opts: &Options,
    name: &str,
    f: impl FnOnce() -> anyhow::Result<Row>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let id = name.split_whitespace().next().unwrap_or(name);
    if !opts.runs_workload(id) {
        return Ok(());
    }
    eprintln!("dfs-bench: {name}");
    let row = f().with_context(|| format!("workload {name}"))?;
    eprintln!(
        "dfs-bench:   {} | {} | {}",
        row.dfs, row.reference, row.ratio
    );
    rows.push(row);
    Ok(())
}

/// DFS's median rate of an earlier row (W1's MB/s, W5's files/s), for targets written as
/// ratios to it.
fn rate_of(rows: &[Row], id: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r.id == id)
        .and_then(|r| r.compare.as_ref())
        .map(|c| c.dfs)
}

/// Gives row `to` the peers' rates of row `from` (the same workload without writeback, or
/// W1 beside its disk limit).
fn copy_peers(rows: &mut [Row], from: &str, to: &str) {
    let peers = rows
        .iter()
        .find(|r| r.id == from)
        .and_then(|r| r.compare.as_ref())
        .map(|c| c.peers.clone());
    if let (Some(peers), Some(c)) = (
        peers,
        rows.iter_mut()
            .find(|r| r.id == to)
            .and_then(|r| r.compare.as_mut()),
    ) {
        c.peers = peers;
    }
}

fn run_in(opts: &Options, root: &std::path::Path) -> anyhow::Result<Outcome> {
    let bin_dir = opts.bin_dir.as_deref();
    let (peers, skipped) = if opts.peers {
        peers::Peer::start_all(root)
    } else {
        (
            Vec::new(),
            vec![peers::Skipped {
                name: "all".into(),
                reason: "--no-peers".into(),
            }],
        )
    };
    let cluster = Cluster::start(&root.join("servers"), 2, opts.replication, bin_dir)?;
    let logs = root.join("servers/logs");
    let mut mount_opts = opts.mount_opts.clone();
    mount_opts.extend(["--key".to_owned(), cluster.key_file.display().to_string()]);
    let writer = Mount::start(
        &cluster.nameserver,
        &root.join("mnt-writer"),
        &root.join("cache-writer"),
        &mount_opts,
        &logs.join("mount-writer.log"),
        bin_dir,
    )?;
    let reader = Mount::start(
        &cluster.nameserver,
        &root.join("mnt-reader"),
        &root.join("cache-reader"),
        &mount_opts,
        &logs.join("mount-reader.log"),
        bin_dir,
    )?;
    let ctx = Ctx {
        cluster: &cluster,
        writer: &writer,
        reader: &reader,
        local: root.join("local"),
        src: root.join("source.bin"),
        size: opts.size,
        runs: opts.runs.max(1),
        files: opts.files,
        opens: opts.opens,
        drop_caches: opts.drop_caches,
        peers: &peers,
        tar_files: opts.tar_files,
    };
    workloads::prepare(&ctx)?;
    if opts.runs_workload("W1") || opts.runs_workload("C1") {
        util::make_file(&ctx.src, ctx.size, 0x5eed)?;
    }
    let mut rows = Vec::new();
    step(
        opts,
        "W1 cp into the mount",
        || workloads::w1(&ctx),
        &mut rows,
    )?;
    step(
        opts,
        "W1L the disk's limit: two parallel dd conv=fsync",
        {
            let (w1, ctx) = (rate_of(&rows, "W1"), &ctx);
            move || round2::w1_limit(ctx, w1)
        },
        &mut rows,
    )?;
    copy_peers(&mut rows, "W1", "W1L");
    step(
        opts,
        "W2 cat of a cached file",
        || workloads::w2(&ctx),
        &mut rows,
    )?;
    step(
        opts,
        "W2w cat, page cache warm",
        || workloads::w2_warm(&ctx),
        &mut rows,
    )?;
    step(
        opts,
        "W3 first open + cat",
        || workloads::w3(&ctx),
        &mut rows,
    )?;
    step(
        opts,
        "W4 open + close of a cached file",
        || workloads::w4(&ctx),
        &mut rows,
    )?;
    step(opts, "C1 dfs put", || cli::c1(&ctx, bin_dir), &mut rows)?;
    step(opts, "C2 dfs get", || cli::c2(&ctx, bin_dir), &mut rows)?;
    step(
        opts,
        "W5 create small files",
        || workloads::w5(&ctx),
        &mut rows,
    )?;
    step(
        opts,
        "W5p create small files, 8 writers",
        {
            let (w5, ctx) = (rate_of(&rows, "W5"), &ctx);
            move || round2::w5p(ctx, w5)
        },
        &mut rows,
    )?;
    step(
        opts,
        "W9 rename small files",
        || round2::w9(&ctx),
        &mut rows,
    )?;
    step(
        opts,
        "W6 stat small files",
        || workloads::w6(&ctx),
        &mut rows,
    )?;
    step(
        opts,
        "W7 read cached small files",
        || workloads::w7(&ctx),
        &mut rows,
    )?;
    step(
        opts,
        "W8 unlink small files",
        || workloads::w8(&ctx),
        &mut rows,
    )?;
    step(
        opts,
        "W10 tar -x of a source tree",
        || round2::w10(&ctx),
        &mut rows,
    )?;
    if opts.runs_workload("W1wb") || opts.runs_workload("W5wb") {
        eprintln!("dfs-bench: W1wb, W5wb with -o writeback");
        let mut wb_opts = mount_opts.clone();
        wb_opts.extend(["-o".to_owned(), "writeback".to_owned()]);
        let wb = round2::writeback_rows(&ctx, || {
            Mount::start(
                &cluster.nameserver,
                &root.join("mnt-writeback"),
                &root.join("cache-writeback"),
                &wb_opts,
                &logs.join("mount-writeback.log"),
                bin_dir,
            )
        })?;
        rows.extend(wb);
        copy_peers(&mut rows, "W1", "W1wb");
        copy_peers(&mut rows, "W5", "W5wb");
    }
    let fio = match &opts.fio {
        Some(jobs) => {
            fio::ensure_fio()?;
            fio::run_all(
                jobs,
                &writer.path.join(workloads::DFS_DIR).join("fio"),
                &ctx.local.join("fio"),
                opts.size,
                opts.files,
                opts.drop_caches,
            )?
        }
        None => Vec::new(),
    };
    step(
        opts,
        "memory",
        || workloads::memory(&ctx, opts.memory_size),
        &mut rows,
    )?;
    let report = Report {
        command: opts.command.clone(),
        kernel: kernel(),
        machine: machine(),
        size_bytes: opts.size,
        runs: ctx.runs,
        mount_opts: opts.mount_opts.clone(),
        replication: opts.replication,
        dropped_caches: opts.drop_caches,
        rows,
        fio,
        peers: peers
            .iter()
            .map(|p| format!("{} ({})", p.name, p.setup))
            .collect(),
        skipped,
    };
    drop(peers);
    drop(reader);
    drop(writer);
    drop(cluster);
    Ok(Outcome { report })
}

#[cfg(test)]
mod tests {
    use super::Options;

    fn with_only(only: &[&str]) -> Options {
        Options {
            dir: None,
            keep: false,
            size: 1 << 20,
            memory_size: None,
            runs: 1,
            files: 1,
            opens: 1,
            replication: 2,
            mount_opts: Vec::new(),
            drop_caches: false,
            fio: None,
            bin_dir: None,
            command: String::new(),
            only: only.iter().map(|s| s.to_string()).collect(),
            peers: false,
            tar_files: 1,
        }
    }

    #[test]
    fn a_selection_runs_what_it_needs_and_nothing_else() {
        let opts = with_only(&["w7"]);
        assert!(opts.runs_workload("W7"));
        assert!(opts.runs_workload("W5"), "W7 reads W5's files");
        assert!(!opts.runs_workload("W1"));
        assert!(!opts.runs_workload("W8"));
        assert!(!opts.runs_workload("memory"));
        let opts = with_only(&["W3"]);
        assert!(opts.runs_workload("W1") && opts.runs_workload("W3"));
        assert!(!opts.runs_workload("W2"));
        let opts = with_only(&["W9", "W1L"]);
        assert!(opts.runs_workload("W5p"), "W9 renames W5p's files");
        assert!(opts.runs_workload("W1"), "W1L compares with W1");
        assert!(!opts.runs_workload("W5") && !opts.runs_workload("W10"));
    }

    #[test]
    fn no_selection_runs_everything() {
        let opts = with_only(&[]);
        for w in ["W1", "W2", "W2w", "W5", "W8", "memory"] {
            assert!(opts.runs_workload(w), "{w}");
        }
    }
}
