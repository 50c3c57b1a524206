//! C1 and C2: `dfs put` and `dfs get` of the large file against raw `curl` doing the same
//! transfer in the same run (issue 11: at least 90 % of curl's rate).
//!
//! The same transfer means the same bytes to and from the same places: `dfs put` stores the
//! file on every replica, so its reference is one `curl` PUT per replica fileserver, in
//! parallel; `dfs get` reads one copy, so its reference is one `curl` GET of that blob.

use crate::report::Row;
use crate::util::{find_binary, mbps, median, run, time};
use crate::workloads::{curl_download, curl_upload, unused_blob, Ctx, DFS_DIR};
use std::path::Path;
use std::process::Command;

fn dfs(bin: &Path, cluster: &crate::cluster::Cluster) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--nameserver")
        .arg(&cluster.nameserver)
        .env("DFS_KEY", &cluster.key_file);
    cmd
}

fn row(id: &str, what: String, size: u64, dfs: Vec<f64>, curl: Vec<f64>, reference: &str) -> Row {
    let (d, c) = (median(&dfs), median(&curl));
    // Rate as a fraction of curl's: curl's time over ours.
    let share = c / d;
    Row {
        id: id.into(),
        what,
        dfs: format!("{:.0} MB/s ({d:.2} s)", mbps(size, d)),
        reference: format!("{reference} {:.0} MB/s ({c:.2} s)", mbps(size, c)),
        ratio: format!("{:.0} % of curl", share * 100.0),
        target: ">= 90 % of curl".into(),
        pass: Some(share >= 0.9),
        counters: None,
        dfs_samples: dfs,
        reference_samples: curl,
        note: String::new(),
        compare: None,
        fsyncs: None,
    }
}

/// C1: `dfs put` of the large file (published on every replica) against one `curl` PUT per
/// replica fileserver in parallel.
pub fn c1(ctx: &Ctx, bin_dir: Option<&Path>) -> anyhow::Result<Row> {
    let bin = find_binary("dfs", bin_dir)?;
    let sum = dfs_proto::Checksum::of_file(&ctx.src)?.to_string();
    let servers = ctx.cluster.fileservers.clone();
    let (mut dfs_t, mut curl_t) = (Vec::new(), Vec::new());
    for i in 0..ctx.runs {
        let remote = format!("/{DFS_DIR}/c1-{i}.bin");
        ctx.drop()?;
        dfs_t.push(time(|| run(dfs(&bin, ctx.cluster).arg("put").arg(&ctx.src).arg(&remote)))?.0);
        ctx.drop()?;
        let (id, version) = unused_blob(100 + i);
        let auth = ctx.cluster.auth_header();
        curl_t.push(
            time(|| {
                std::thread::scope(|s| {
                    let uploads: Vec<_> = servers
                        .iter()
                        .map(|server| {
                            s.spawn(|| curl_upload(server, &ctx.src, id, version, &sum, &auth))
                        })
                        .collect();
                    uploads.into_iter().try_for_each(|u| {
                        u.join()
                            .map_err(|_| anyhow::anyhow!("curl thread panicked"))?
                    })
                })
            })?
            .0,
        );
        for server in &servers {
            let _ = ctx
                .cluster
                .runtime
                .block_on(ctx.cluster.files().delete(server, id, version));
        }
    }
    let what = format!(
        "`dfs put` of a {} MiB file, {} replicas",
        ctx.size >> 20,
        servers.len()
    );
    Ok(row(
        "C1",
        what,
        ctx.size,
        dfs_t,
        curl_t,
        "curl PUT to each replica in parallel",
    ))
}

/// C2: `dfs get` of the file C1 put, against one `curl` GET of the same blob to a file.
pub fn c2(ctx: &Ctx, bin_dir: Option<&Path>) -> anyhow::Result<Row> {
    let bin = find_binary("dfs", bin_dir)?;
    let (mut dfs_t, mut curl_t) = (Vec::new(), Vec::new());
    let dest = ctx.local.join("c2.bin");
    for i in 0..ctx.runs {
        let remote = format!("/{DFS_DIR}/c1-{i}.bin");
        let _ = std::fs::remove_file(&dest);
        ctx.drop()?;
        dfs_t.push(time(|| run(dfs(&bin, ctx.cluster).arg("get").arg(&remote).arg(&dest)))?.0);
        let _ = std::fs::remove_file(&dest);
        let (id, version, servers) = ctx.cluster.locate(&remote)?;
        let server = servers
            .first()
            .ok_or_else(|| anyhow::anyhow!("no fileserver holds {remote}"))?
            .clone();
        ctx.drop()?;
        curl_t.push(
            time(|| curl_download(&server, id, version, &dest, &ctx.cluster.auth_header()))?.0,
        );
        let _ = std::fs::remove_file(&dest);
    }
    let what = format!("`dfs get` of a {} MiB file", ctx.size >> 20);
    Ok(row(
        "C2",
        what,
        ctx.size,
        dfs_t,
        curl_t,
        "curl GET to a file",
    ))
}
