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
    /// The same workload on the local disk and the peers, as rates, for the peer table.
    pub compare: Option<Compare>,
    /// fsyncs per created file at each server during the timed DFS phase (W5, W5p).
    pub fsyncs: Option<FsyncsPerFile>,
}

/// One workload as rates (higher is better) on DFS, the local disk and each peer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Compare {
    /// Unit of every rate (`MB/s`, `files/s`).
    pub unit: String,
    /// DFS's rate (median run).
    pub dfs: f64,
    /// The local disk's rate, when measured.
    pub local: Option<f64>,
    /// Each peer's rate; `None` when its run failed (the reason is in `note`).
    pub peers: Vec<PeerRate>,
    /// Issue 14's target for this row, in words (`>= 1.0 x JuiceFS`).
    pub target: String,
    /// The target as a check: DFS / `against` must reach `factor`.
    pub goal: Option<Goal>,
}

/// A target written as a ratio to another number of the same run.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    /// A peer's name, or a label of a number given in `value`.
    pub against: String,
    /// DFS / that must be at least this.
    pub factor: f64,
    /// The number itself when it is not a peer's rate (W5 for W5p, the dd limit for W1).
    pub value: Option<f64>,
}

/// One peer's result for a workload.
#[derive(Clone, Debug, Serialize)]
pub struct PeerRate {
    /// Peer name.
    pub name: String,
    /// Its rate (median run), in the row's unit.
    pub rate: Option<f64>,
    /// Why there is no rate, or anything odd.
    pub note: String,
}

impl Compare {
    /// The rate of `name` (a peer), or the goal's own value.
    fn reference(&self, goal: &Goal) -> Option<f64> {
        goal.value.or_else(|| {
            self.peers
                .iter()
                .find(|p| p.name == goal.against)
                .and_then(|p| p.rate)
        })
    }

    /// DFS / the goal's reference, and whether it reaches the factor.
    pub fn verdict(&self) -> Option<(f64, bool)> {
        let goal = self.goal.as_ref()?;
        let reference = self.reference(goal)?;
        let ratio = self.dfs / reference;
        Some((ratio, ratio >= goal.factor))
    }
}

/// fsyncs per created file at each server, from their `GET /v1/stats` around the DFS phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FsyncsPerFile {
    /// Files created in the measured phase.
    pub files: u64,
    /// At the lockserver.
    pub lockserver: f64,
    /// At the nameserver.
    pub nameserver: f64,
    /// At each fileserver, in cluster order.
    pub fileservers: Vec<f64>,
    /// Nameserver changes per commit (above 1: changes shared a commit).
    pub changes_per_commit: f64,
}

impl FsyncsPerFile {
    /// fsyncs one file waits for one after another: the lockserver's and the nameserver's
    /// (each a step of the close path), plus the busiest fileserver's (the replicas' uploads
    /// run side by side, each server's own fsyncs for a blob one after another).
    pub fn in_sequence(&self) -> f64 {
        let fs = self.fileservers.iter().copied().fold(0.0, f64::max);
        self.lockserver + self.nameserver + fs
    }

    /// All fsyncs per file, over every server.
    pub fn total(&self) -> f64 {
        self.lockserver + self.nameserver + self.fileservers.iter().sum::<f64>()
    }
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
    /// The peers that ran, with their versions and setup.
    pub peers: Vec<String>,
    /// The peers that did not run, and why.
    pub skipped: Vec<crate::peers::Skipped>,
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

fn rate(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
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
        out.push_str(&self.peer_table());
        out.push_str(&self.fsync_table());
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

impl Report {
    /// Issue 14's table: every workload as a rate on DFS, the local disk and each peer, DFS's
    /// ratio to each peer, and the target with its verdict.
    fn peer_table(&self) -> String {
        let rows: Vec<_> = self
            .rows
            .iter()
            .filter_map(|r| r.compare.as_ref().map(|c| (r, c)))
            .collect();
        if rows.is_empty() {
            return String::new();
        }
        let mut names: Vec<String> = Vec::new();
        for (_, c) in &rows {
            for p in &c.peers {
                if !names.contains(&p.name) {
                    names.push(p.name.clone());
                }
            }
        }
        let mut out =
            String::from("\nThe same workloads on the peers (rates, higher is better):\n\n");
        out.push_str("| workload | unit | DFS | local disk |");
        for n in &names {
            out.push_str(&format!(" {n} |"));
        }
        for n in &names {
            out.push_str(&format!(" DFS / {n} |"));
        }
        out.push_str(" target | result |\n|---|---|---|---|");
        for _ in 0..names.len() * 2 {
            out.push_str("---|");
        }
        out.push_str("---|---|\n");
        for (r, c) in rows {
            let local = c.local.map(rate).unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "| {} | {} | {} | {local} |",
                r.id,
                c.unit,
                rate(c.dfs)
            ));
            let find = |n: &String| c.peers.iter().find(|p| &p.name == n);
            for n in &names {
                let cell = match find(n) {
                    Some(PeerRate { rate: Some(v), .. }) => rate(*v),
                    Some(_) => "failed".into(),
                    None => "-".into(),
                };
                out.push_str(&format!(" {cell} |"));
            }
            for n in &names {
                let cell = match find(n) {
                    Some(PeerRate { rate: Some(v), .. }) if *v > 0.0 => {
                        format!("{:.2}", c.dfs / v)
                    }
                    _ => "-".into(),
                };
                out.push_str(&format!(" {cell} |"));
            }
            let result = match c.verdict() {
                Some((ratio, pass)) => format!(
                    "{} ({ratio:.2} x {})",
                    verdict(Some(pass)),
                    c.goal.as_ref().map_or("", |g| g.against.as_str())
                ),
                None if c.goal.is_none() => "info".into(),
                None => "no reference".into(),
            };
            out.push_str(&format!(" {} | {result} |\n", c.target));
        }
        let failed: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| r.compare.as_ref().map(|c| (r, c)))
            .flat_map(|(r, c)| {
                c.peers
                    .iter()
                    .filter(|p| !p.note.is_empty())
                    .map(move |p| format!("- {} on {}: {}\n", r.id, p.name, p.note))
            })
            .collect();
        if !self.peers.is_empty() {
            out.push_str("\nPeers: ");
            out.push_str(&self.peers.join("; "));
            out.push('\n');
        }
        for s in &self.skipped {
            out.push_str(&format!("\nPeer {} skipped: {}\n", s.name, s.reason));
        }
        for f in failed {
            out.push_str(&f);
        }
        out
    }

    /// fsyncs per created file at each server, and how many of them one file waits for in turn.
    fn fsync_table(&self) -> String {
        let rows: Vec<_> = self
            .rows
            .iter()
            .filter_map(|r| r.fsyncs.as_ref().map(|f| (r, f)))
            .collect();
        if rows.is_empty() {
            return String::new();
        }
        let servers = rows
            .iter()
            .map(|(_, f)| f.fileservers.len())
            .max()
            .unwrap_or(0);
        let mut out = String::from(
            "\nfsyncs per created file (servers' `GET /v1/stats` around the timed DFS phase; \
             \"in sequence\" = lockserver + nameserver + the busiest fileserver, since the \
             replicas' uploads run side by side and every other step waits for the one before):\n\n\
             | workload | files | lockserver | nameserver |",
        );
        for i in 0..servers {
            out.push_str(&format!(" fileserver{i} |"));
        }
        out.push_str(
            " all servers | in sequence | nameserver changes per commit |\n|---|---|---|---|",
        );
        for _ in 0..servers {
            out.push_str("---|");
        }
        out.push_str("---|---|---|\n");
        for (r, f) in rows {
            out.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} |",
                r.id, f.files, f.lockserver, f.nameserver
            ));
            for i in 0..servers {
                let cell = f
                    .fileservers
                    .get(i)
                    .map_or("-".to_owned(), |v| format!("{v:.2}"));
                out.push_str(&format!(" {cell} |"));
            }
            out.push_str(&format!(
                " {:.2} | {:.2} | {:.2} |\n",
                f.total(),
                f.in_sequence(),
                f.changes_per_commit
            ));
        }
        out
    }
}
