//! `dfs-bench`: the issue-5 benchmark harness (see docs/benchmarks.md).

use anyhow::bail;
use clap::Parser;
use dfs_bench::{run_bench, Options};
use std::io::Write;
use std::path::PathBuf;

/// Benchmarks a DFS mount against the local disk and raw curl, in one run.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Scratch directory parent (servers' data, caches, mounts, references) [default: $TMPDIR].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the scratch directory afterwards (logs of every server and mount are in it).
    #[arg(long)]
    keep: bool,
    /// Size of the large-file workloads, in MiB.
    #[arg(long, default_value_t = 1024)]
    size: u64,
    /// Also push a 4 GiB file through for the memory row (needs ~20 GiB free).
    #[arg(long)]
    full: bool,
    /// Runs per workload (the median is reported; at least 3 for a real result).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Small files per small-file workload.
    #[arg(long, default_value_t = 1000)]
    files: usize,
    /// Opens per W4 run.
    #[arg(long, default_value_t = 1000)]
    opens: usize,
    /// Replication factor (1 or 2; two fileservers run either way).
    #[arg(long, default_value_t = 2)]
    replication: u32,
    /// Extra dfs-fuse arguments, split on whitespace; repeatable (e.g. --mount-opt "-o passthrough").
    #[arg(long = "mount-opt", allow_hyphen_values = true)]
    mount_opt: Vec<String>,
    /// Smoke run: 64 MiB, 100 files, 1 run (well under a minute). Not a result.
    #[arg(long)]
    quick: bool,
    /// Do not drop the page cache (when not root); cold numbers are then not cold.
    #[arg(long)]
    no_drop_caches: bool,
    /// Also run the fio job files (installs fio with apt-get when missing).
    #[arg(long)]
    fio: bool,
    /// Directory of the fio job files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fio"))]
    fio_dir: PathBuf,
    /// Where dfs-fuse and the dfs-*server binaries are [default: next to dfs-bench].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Do not run the peers (JuiceFS, rclone) even when they are installed.
    #[arg(long)]
    no_peers: bool,
    /// Files in W10's `tar -x` source tree.
    #[arg(long, default_value_t = 5000)]
    tar_files: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only these workloads, comma-separated (W1..W10, W1L, W2w, W5p, W1wb, W5wb, C1, C2,
    /// memory), plus what they need (W1 for W1L and W2-W4, W5 for W6-W8, W5p for W9). For
    /// iterating on one path; not a full result.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(1..=2).contains(&args.replication) {
        bail!("--replication must be 1 or 2");
    }
    let drop_caches = !args.no_drop_caches;
    // SAFETY: geteuid(2) has no preconditions.
    if drop_caches && unsafe { libc::geteuid() } != 0 {
        bail!("dfs-bench drops the page cache and mounts FUSE: run it as root (or pass --no-drop-caches)");
    }
    let (size, runs, files, opens, tar_files) = if args.quick {
        (64 << 20, 1, 100, 200, 300)
    } else {
        (
            args.size << 20,
            args.runs,
            args.files,
            args.opens,
            args.tar_files,
        )
    };
    let opts = Options {
        dir: args.dir,
        keep: args.keep,
        size,
        memory_size: args.full.then_some(4 << 30),
        runs,
        files,
        opens,
        replication: args.replication,
        mount_opts: args
            .mount_opt
            .iter()
            .flat_map(|o| o.split_whitespace().map(str::to_owned))
            .collect(),
        drop_caches,
        fio: args.fio.then_some(args.fio_dir),
        bin_dir: args.bin_dir,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        only: args.only,
        peers: !args.no_peers,
        tar_files,
    };
    let outcome = run_bench(&opts)?;
    let table = outcome.report.markdown();
    let mut out = std::io::stdout();
    out.write_all(table.as_bytes())?;
    out.flush()?;
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&outcome.report)?)?;
    }
    Ok(())
}
