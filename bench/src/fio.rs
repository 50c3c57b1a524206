//! The fio job files in `bench/fio/`, run on the mount and on the local disk.

use crate::report::FioRow;
use crate::util::drop_caches;
use anyhow::{bail, Context};
use std::path::Path;
use std::process::{Command, Stdio};

/// Installs fio with apt-get when it is missing (the benchmark does this, not CI).
pub fn ensure_fio() -> anyhow::Result<()> {
    if Command::new("fio").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("dfs-bench: fio not found, running apt-get install -y fio");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "fio"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!("fio is missing and apt-get install -y fio failed");
    }
    Ok(())
}

/// Runs one job file with `DFS_FIO_DIR=dir` and returns (metric, value) per job.
fn run_job(job: &Path, dir: &Path, size: u64, files: usize) -> anyhow::Result<Vec<(String, f64)>> {
    std::fs::create_dir_all(dir)?;
    let out = Command::new("fio")
        .arg("--output-format=json")
        .arg(job)
        .env("DFS_FIO_DIR", dir)
        .env("DFS_FIO_SIZE", size.to_string())
        .env("DFS_FIO_NRFILES", files.to_string())
        .env("DFS_FIO_SMALL_SIZE", (files as u64 * 4096).to_string())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run fio {}", job.display()))?;
    if !out.status.success() {
        bail!(
            "fio {} failed: {}",
            job.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // fio may print warnings before the JSON document.
    let start = text.find('{').context("no JSON in fio output")?;
    let doc: serde_json::Value = serde_json::from_str(&text[start..])?;
    let mut metrics = Vec::new();
    for j in doc["jobs"].as_array().into_iter().flatten() {
        for dir in ["read", "write"] {
            let bw = j[dir]["bw_bytes"].as_f64().unwrap_or(0.0);
            if bw > 0.0 {
                metrics.push((format!("{dir} MB/s"), bw / 1e6));
                metrics.push((
                    format!("{dir} IOPS"),
                    j[dir]["iops"].as_f64().unwrap_or(0.0),
                ));
            }
        }
    }
    Ok(metrics)
}

/// Every `*.fio` in `jobs` (sorted by name), on `mount_dir` and then on `local_dir`.
pub fn run_all(
    jobs: &Path,
    mount_dir: &Path,
    local_dir: &Path,
    size: u64,
    files: usize,
    drop: bool,
) -> anyhow::Result<Vec<FioRow>> {
    let mut paths: Vec<_> = std::fs::read_dir(jobs)
        .with_context(|| format!("cannot read fio job dir {}", jobs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "fio"))
        .collect();
    paths.sort();
    let mut rows = Vec::new();
    for job in paths {
        let name = job
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        eprintln!("dfs-bench: fio {name}");
        drop_caches(drop)?;
        let dfs = run_job(&job, mount_dir, size, files)?;
        drop_caches(drop)?;
        let local = run_job(&job, local_dir, size, files)?;
        for ((metric, d), (_, l)) in dfs.into_iter().zip(local) {
            rows.push(FioRow {
                job: name.clone(),
                metric,
                dfs: d,
                local: l,
            });
        }
    }
    Ok(rows)
}
