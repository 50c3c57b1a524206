//! The result of a run: one row per workload, printed as a markdown table and saved as JSON.

use crate::cluster::Counters;
use serde::Serialize;

/// One workload's outcome: the DFS number, its reference from the same run, and the verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Short name (`W1` ... `W8`, `memory`).
    pub id: String,
    /// What was measured, in words.
    pub what: String,
    /// The DFS result as shown (median).
    pub dfs: String,
    /// The reference result as shown (median).
    pub reference: String,
    /// DFS relative to the reference, in the direction the target is written.
    pub ratio: String,
    /// The target from the issue.
    pub target: String,
    /// Whether the target holds; `None` for informational rows.
    pub pass: Option<bool>,
    /// Fileserver counters during the timed DFS phase (the "nothing downloaded" proof).
    pub counters: Option<Counters>,
    /// Raw samples (seconds, or bytes for memory) of the DFS side, one per run.
    pub dfs_samples: Vec<f64>,
    /// Raw samples of the reference side.
    pub reference_samples: Vec<f64>,
    /// Anything else worth knowing about this row.
    pub note: String,
}

/// A whole run, as written by `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// `uname -r`.
    pub kernel: String,
    /// Cores and memory.
    pub machine: String,
    /// File size of the large-file workloads.
    pub size_bytes: u64,
    /// Runs per workload.
    pub runs: usize,
    /// Extra dfs-fuse options.
    pub mount_opts: Vec<String>,
    /// Replication factor.
    pub replication: u32,
    /// Whether the page cache was dropped before cold phases.
    pub dropped_caches: bool,
    /// The workload rows.
    pub rows: Vec<Row>,
    /// The fio rows, when `--fio` was given.
    pub fio: Vec<FioRow>,
}

/// One fio job on the mount and on the local disk.
#[derive(Clone, Debug, Serialize)]
pub struct FioRow {
    /// Job file name.
    pub job: String,
    /// What the job reports (e.g. `write MB/s`).
    pub metric: String,
    /// Result on the mount.
    pub dfs: f64,
    /// Result on the local disk.
    pub local: f64,
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "pass",
        Some(false) => "**FAIL**",
        None => "info",
    }
}

impl Report {
    /// The markdown the issue asks for: the table, then the counters, then fio.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "`{}`\n\nkernel {}, {}, file size {} MiB, {} run(s) per workload (median), replication {}, mount options {:?}, page cache {}\n\n",
            self.command,
            self.kernel,
            self.machine,
            self.size_bytes >> 20,
            self.runs,
            self.replication,
            self.mount_opts,
            if self.dropped_caches { "dropped before cold phases" } else { "NOT dropped" },
        ));
        out.push_str("| workload | DFS | reference | ratio | target | result |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for r in &self.rows {
            out.push_str(&format!(
                "| {} {} | {} | {} | {} | {} | {} |\n",
                r.id,
                r.what,
                r.dfs,
                r.reference,
                r.ratio,
                r.target,
                verdict(r.pass)
            ));
        }
        out.push_str("\nFileserver counters (sum over fileservers) during the timed DFS phase of each workload (the bench's own `GET /v1/stats` calls not counted):\n\n");
        out.push_str("| workload | requests | uploads | downloads | bytes in | bytes out |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for r in &self.rows {
            if let Some(c) = r.counters {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    r.id, c.requests, c.uploads, c.downloads, c.bytes_in, c.bytes_out
                ));
            }
        }
        let notes: Vec<_> = self.rows.iter().filter(|r| !r.note.is_empty()).collect();
        if !notes.is_empty() {
            out.push('\n');
            for r in notes {
                out.push_str(&format!("- {}: {}\n", r.id, r.note));
            }
        }
        if !self.fio.is_empty() {
            out.push_str(
                "\n| fio job | metric | DFS | local disk | ratio |\n|---|---|---|---|---|\n",
            );
            for f in &self.fio {
                out.push_str(&format!(
                    "| {} | {} | {:.1} | {:.1} | {:.2} |\n",
                    f.job,
                    f.metric,
                    f.dfs,
                    f.local,
                    f.dfs / f.local
                ));
            }
        }
        out
    }
}
