//! W1..W8 and the memory row of issue 5, each timed on the mount and on its reference.

use crate::cluster::{Cluster, Counters, Fsyncs, Mount};
use crate::peers::Peer;
use crate::report::{Compare, Goal, PeerRate, Row};
use crate::util::{cat, cp, drop_caches, make_file, mbps, median, run, time, vm_hwm};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Everything a workload needs: the cluster, both mounts, the local reference directory, sizes.
#[derive(Clone)]
pub struct Ctx<'a> {
    /// The servers (for counters, blob locations and curl targets).
    pub cluster: &'a Cluster,
    /// The mount that writes (and caches what it wrote).
    pub writer: &'a Mount,
    /// A second mount with its own empty cache: its first open of a file is a real download.
    pub reader: &'a Mount,
    /// Directory on the local disk (same filesystem as the cache) for the references.
    pub local: PathBuf,
    /// The large source file (on the local disk).
    pub src: PathBuf,
    /// Its size.
    pub size: u64,
    /// Runs per workload (median reported).
    pub runs: usize,
    /// Small files per small-file workload.
    pub files: usize,
    /// Opens per W4 run.
    pub opens: usize,
    /// Whether to drop the page cache before cold phases.
    pub drop_caches: bool,
    /// The peer file systems the same workloads also run on.
    pub peers: &'a [Peer],
    /// Files in the `tar -x` tree (W10).
    pub tar_files: usize,
}

/// Directory inside the DFS namespace the bench works in.
pub const DFS_DIR: &str = "bench";

impl Ctx<'_> {
    fn on_writer(&self, name: &str) -> PathBuf {
        self.writer.path.join(DFS_DIR).join(name)
    }
    fn on_reader(&self, name: &str) -> PathBuf {
        self.reader.path.join(DFS_DIR).join(name)
    }
    fn on_local(&self, name: &str) -> PathBuf {
        self.local.join(name)
    }
    pub(crate) fn drop(&self) -> anyhow::Result<()> {
        drop_caches(self.drop_caches)
    }
    /// Times `work` on the mount and adds the fileserver counters it caused to `total`.
    pub(crate) fn measured(
        &self,
        total: &mut Counters,
        work: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<f64> {
        let before = self.cluster.counters()?;
        let (secs, ()) = time(work)?;
        let delta = self.cluster.counters()?.since(&before);
        // One of the counted requests per fileserver is the bench's own GET /v1/stats.
        let own = self.cluster.fileservers.len() as u64;
        total.requests += delta.requests.saturating_sub(own);
        total.uploads += delta.uploads;
        total.downloads += delta.downloads;
        total.bytes_in += delta.bytes_in;
        total.bytes_out += delta.bytes_out;
        Ok(secs)
    }
    /// Times `work` on the mount like [`Ctx::measured`] and adds every server's fsyncs during it
    /// to `fsyncs`.
    pub(crate) fn measured_fsyncs(
        &self,
        total: &mut Counters,
        fsyncs: &mut Fsyncs,
        work: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<f64> {
        let before = self.cluster.fsyncs()?;
        let secs = self.measured(total, work)?;
        fsyncs.add_since(&before, &self.cluster.fsyncs()?);
        Ok(secs)
    }

    /// Runs a workload on every peer: `prep(base)` once (untimed), then `op(base, run)` timed
    /// for each run (after a page-cache drop when `cold`), where `base` is the peer's bench
    /// directory; `to_rate` turns the median seconds into the row's rate. A failing peer gets
    /// no rate and the error as its note; the bench goes on.
    pub(crate) fn on_peers(
        &self,
        cold: bool,
        prep: impl Fn(&Path) -> anyhow::Result<()>,
        op: impl Fn(&Path, usize) -> anyhow::Result<()>,
        to_rate: impl Fn(f64) -> f64,
    ) -> Vec<PeerRate> {
        self.peers
            .iter()
            .map(|peer| {
                let base = peer.path.join(DFS_DIR);
                let result = (|| -> anyhow::Result<f64> {
                    prep(&base)?;
                    let mut samples = Vec::new();
                    for i in 0..self.runs {
                        if cold {
                            self.drop()?;
                        }
                        samples.push(time(|| op(&base, i))?.0);
                    }
                    Ok(to_rate(median(&samples)))
                })();
                match result {
                    Ok(rate) => PeerRate {
                        name: peer.name.clone(),
                        rate: Some(rate),
                        note: String::new(),
                    },
                    Err(err) => {
                        eprintln!("dfs-bench:   on {}: {err:#}", peer.name);
                        PeerRate {
                            name: peer.name.clone(),
                            rate: None,
                            note: format!("{err:#}"),
                        }
                    }
                }
            })
            .collect()
    }

    pub(crate) fn small_dir(&self, base: &Path, run: usize) -> PathBuf {
        base.join(format!("small-{run}"))
    }
    pub(crate) fn small_names(&self) -> Vec<String> {
        (0..self.files).map(|i| format!("f{i:05}")).collect()
    }
}

/// Makes the bench directory on the mount and on each peer, and the local reference directory.
pub fn prepare(ctx: &Ctx) -> anyhow::Result<()> {
    std::fs::create_dir_all(ctx.writer.path.join(DFS_DIR)).context("mkdir on the mount")?;
    for peer in ctx.peers {
        std::fs::create_dir_all(peer.path.join(DFS_DIR))
            .with_context(|| format!("mkdir on {}", peer.name))?;
    }
    std::fs::create_dir_all(&ctx.local)?;
    Ok(())
}

/// A target of issue 14 as a ratio to a peer.
pub(crate) fn versus(peer: &str, factor: f64) -> Option<Goal> {
    Some(Goal {
        against: peer.into(),
        factor,
        value: None,
    })
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// The fileserver blob id the raw-curl reference uploads to: far from any id the nameserver hands out.
pub(crate) fn unused_blob(run: usize) -> (u64, u64) {
    let id = 0x0BE7_0000_0000_0000u64 | (u64::from(std::process::id()) << 16) | run as u64;
    (id, 1)
}

/// `curl -T FILE` (streamed PUT) with the checksum header, until the fileserver says durable.
pub(crate) fn curl_upload(
    server: &str,
    file: &Path,
    id: u64,
    version: u64,
    sum: &str,
    auth: &str,
) -> anyhow::Result<()> {
    run(Command::new("curl")
        .args(["-sS", "-f", "-o", "/dev/null", "-H", "Expect:"])
        .arg("-H")
        .arg(format!("Authorization: {auth}"))
        .arg("-H")
        .arg(format!("{}: {sum}", dfs_proto::CHECKSUM_HEADER))
        .arg("-T")
        .arg(file)
        .arg(format!("{server}/v1/blobs/{id}/{version}")))
}

/// `curl -o FILE` of one blob.
pub(crate) fn curl_download(
    server: &str,
    id: u64,
    version: u64,
    dest: &Path,
    auth: &str,
) -> anyhow::Result<()> {
    run(Command::new("curl")
        .args(["-sS", "-f", "-H"])
        .arg(format!("Authorization: {auth}"))
        .arg("-o")
        .arg(dest)
        .arg(format!("{server}/v1/blobs/{id}/{version}")))
}

/// W1: `cp` of the large file into the mount, until cp returns (published, durable), against
/// local `cp` plus a raw `curl` upload of the same file to the same fileserver.
pub fn w1(ctx: &Ctx) -> anyhow::Result<Row> {
    let sum = dfs_proto::Checksum::of_file(&ctx.src)?.to_string();
    let server = ctx.cluster.fileservers[0].clone();
    let (mut dfs, mut local, mut curl) = (Vec::new(), Vec::new(), Vec::new());
    let mut counters = Counters::default();
    for i in 0..ctx.runs {
        let name = format!("w1-{i}.bin");
        ctx.drop()?;
        dfs.push(ctx.measured(&mut counters, || cp(&ctx.src, &ctx.on_writer(&name)))?);
        ctx.drop()?;
        local.push(time(|| cp(&ctx.src, &ctx.on_local(&name)))?.0);
        ctx.drop()?;
        let (id, version) = unused_blob(i);
        curl.push(
            time(|| {
                curl_upload(
                    &server,
                    &ctx.src,
                    id,
                    version,
                    &sum,
                    &ctx.cluster.auth_header(),
                )
            })?
            .0,
        );
        let _ = ctx
            .cluster
            .runtime
            .block_on(ctx.cluster.files().delete(&server, id, version));
    }
    let (d, l, c) = (median(&dfs), median(&local), median(&curl));
    let rate = mbps(ctx.size, d);
    let ratio = d / (l + c);
    let peers = ctx.on_peers(
        true,
        |_| Ok(()),
        |base, i| cp(&ctx.src, &base.join(format!("w1-{i}.bin"))),
        |secs| mbps(ctx.size, secs),
    );
    Ok(Row {
        id: "W1".into(),
        what: format!("`cp` {} into the mount (durable at return)", mib(ctx.size)),
        dfs: format!("{rate:.0} MB/s ({d:.2} s)"),
        reference: format!(
            "local cp {:.0} MB/s ({l:.2} s) + curl PUT {:.0} MB/s ({c:.2} s)",
            mbps(ctx.size, l),
            mbps(ctx.size, c)
        ),
        ratio: format!("{ratio:.2} x (cp+curl)"),
        target: ">= 300 MB/s and <= 1.25 x (cp+curl)".into(),
        pass: Some(rate >= 300.0 && ratio <= 1.25),
        counters: Some(counters),
        dfs_samples: dfs,
        reference_samples: local.iter().zip(&curl).map(|(a, b)| a + b).collect(),
        note: String::new(),
        compare: Some(Compare {
            unit: "MB/s".into(),
            dfs: rate,
            local: Some(mbps(ctx.size, l)),
            peers,
            target: "see W1L".into(),
            goal: None,
        }),
        fsyncs: None,
    })
}

/// W2: cold-page-cache `cat` of a file already in the mount's cache, against `cat` of the same
/// bytes on the local disk. Needs W1's `w1-0.bin`.
pub fn w2(ctx: &Ctx) -> anyhow::Result<Row> {
    let name = "w1-0.bin";
    cat(&ctx.on_writer(name))?; // make sure it is in the cache; not timed
    let (mut dfs, mut local) = (Vec::new(), Vec::new());
    let mut counters = Counters::default();
    for _ in 0..ctx.runs {
        ctx.drop()?;
        dfs.push(ctx.measured(&mut counters, || cat(&ctx.on_writer(name)))?);
        ctx.drop()?;
        local.push(time(|| cat(&ctx.on_local(name)))?.0);
    }
    let (d, l) = (median(&dfs), median(&local));
    let ratio = l / d;
    let peers = ctx.on_peers(
        true,
        |base| cat(&base.join(name)),
        |base, _| cat(&base.join(name)),
        |secs| mbps(ctx.size, secs),
    );
    Ok(Row {
        id: "W2".into(),
        what: format!(
            "`cat` of a cached, unchanged {} (page cache dropped)",
            mib(ctx.size)
        ),
        dfs: format!("{:.0} MB/s", mbps(ctx.size, d)),
        reference: format!("local disk {:.0} MB/s", mbps(ctx.size, l)),
        ratio: format!("{:.0} % of local", ratio * 100.0),
        target: ">= 90 % of local, 0 bytes downloaded".into(),
        pass: Some(ratio >= 0.9 && counters.bytes_out == 0),
        counters: Some(counters),
        dfs_samples: dfs,
        reference_samples: local,
        note: String::new(),
        compare: Some(Compare {
            unit: "MB/s".into(),
            dfs: mbps(ctx.size, d),
            local: Some(mbps(ctx.size, l)),
            peers,
            target: ">= 0.9 x local".into(),
            goal: Some(Goal {
                against: "local".into(),
                factor: 0.9,
                value: Some(mbps(ctx.size, l)),
            }),
        }),
        fsyncs: None,
    })
}

/// W2 warm (informational): the same `cat` with the page cache warm, to show the kernel cache is kept.
pub fn w2_warm(ctx: &Ctx) -> anyhow::Result<Row> {
    let name = "w1-0.bin";
    cat(&ctx.on_writer(name))?;
    cat(&ctx.on_local(name))?;
    let (mut dfs, mut local) = (Vec::new(), Vec::new());
    let mut counters = Counters::default();
    for _ in 0..ctx.runs {
        dfs.push(ctx.measured(&mut counters, || cat(&ctx.on_writer(name)))?);
        local.push(time(|| cat(&ctx.on_local(name)))?.0);
    }
    let (d, l) = (median(&dfs), median(&local));
    Ok(Row {
        id: "W2w".into(),
        what: format!("`cat` of the same {} again, page cache warm", mib(ctx.size)),
        dfs: format!("{:.0} MB/s", mbps(ctx.size, d)),
        reference: format!("local disk {:.0} MB/s", mbps(ctx.size, l)),
        ratio: format!("{:.0} % of local", l / d * 100.0),
        target: "(informational)".into(),
        pass: None,
        counters: Some(counters),
        dfs_samples: dfs,
        reference_samples: local,
        note: String::new(),
        compare: None,
        fsyncs: None,
    })
}

/// W3: first open + `cat` of a file the (second) mount has never seen, against a raw `curl`
/// download of the same blob to a file. Needs W1's files.
pub fn w3(ctx: &Ctx) -> anyhow::Result<Row> {
    let (mut dfs, mut curl) = (Vec::new(), Vec::new());
    let mut counters = Counters::default();
    for i in 0..ctx.runs {
        let name = format!("w1-{i}.bin");
        ctx.drop()?;
        dfs.push(ctx.measured(&mut counters, || cat(&ctx.on_reader(&name)))?);
        let (id, version, servers) = ctx.cluster.locate(&format!("/{DFS_DIR}/{name}"))?;
        let dest = ctx.on_local("download.bin");
        ctx.drop()?;
        let secs = time(|| {
            let mut last = None;
            for server in &servers {
                match curl_download(server, id, version, &dest, &ctx.cluster.auth_header()) {
                    Ok(()) => return Ok(()),
                    Err(err) => last = Some(err),
                }
            }
            Err(last.unwrap_or_else(|| anyhow::anyhow!("no fileserver holds {name}")))
        })?
        .0;
        curl.push(secs);
        let _ = std::fs::remove_file(&dest);
    }
    let (d, c) = (median(&dfs), median(&curl));
    let ratio = d / c;
    Ok(Row {
        id: "W3".into(),
        what: format!("first open + `cat` of an uncached {}", mib(ctx.size)),
        dfs: format!("{:.0} MB/s ({d:.2} s)", mbps(ctx.size, d)),
        reference: format!(
            "curl GET to a file {:.0} MB/s ({c:.2} s)",
            mbps(ctx.size, c)
        ),
        ratio: format!("{ratio:.2} x curl"),
        target: "<= 1.2 x curl".into(),
        pass: Some(ratio <= 1.2),
        counters: Some(counters),
        dfs_samples: dfs,
        reference_samples: curl,
        note: String::new(),
        compare: None,
        fsyncs: None,
    })
}

fn open_loop(path: &Path, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        drop(std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?);
    }
    Ok(())
}

/// W4: open + close of an unchanged cached file (the large one): time per open, and the
/// fileserver counters that show nothing was downloaded.
pub fn w4(ctx: &Ctx) -> anyhow::Result<Row> {
    let name = "w1-0.bin";
    let (mut dfs, mut local) = (Vec::new(), Vec::new());
    let mut counters = Counters::default();
    for _ in 0..ctx.runs {
        dfs.push(ctx.measured(&mut counters, || open_loop(&ctx.on_writer(name), ctx.opens))?);
        local.push(time(|| open_loop(&ctx.on_local(name), ctx.opens))?.0);
    }
    let per = |s: f64| s / ctx.opens as f64 * 1e3;
    let (d, l) = (per(median(&dfs)), per(median(&local)));
    Ok(Row {
        id: "W4".into(),
        what: format!(
            "open + close of a cached, unchanged {} file (x{})",
            mib(ctx.size),
            ctx.opens
        ),
        dfs: format!("{d:.3} ms/open, {} bytes downloaded", counters.bytes_out),
        reference: format!("local {l:.4} ms/open"),
        ratio: format!("{:.0} x local", d / l),
        target: "0 bytes downloaded, <= 1 ms/open".into(),
        pass: Some(counters.bytes_out == 0 && counters.downloads == 0 && d <= 1.0),
        counters: Some(counters),
        dfs_samples: dfs,
        reference_samples: local,
        note: String::new(),
        compare: None,
        fsyncs: None,
    })
}

pub(crate) fn rate_row(
    id: &str,
    what: String,
    files: usize,
    dfs: Vec<f64>,
    local: Vec<f64>,
    min_rate: f64,
    counters: Counters,
) -> Row {
    let (d, l) = (files as f64 / median(&dfs), files as f64 / median(&local));
    Row {
        id: id.into(),
        what,
        dfs: format!("{d:.0} files/s"),
        reference: format!("local {l:.0} files/s"),
        ratio: format!("{:.3} x local", d / l),
        target: format!(">= {min_rate:.0}/s"),
        pass: Some(d >= min_rate),
        counters: Some(counters),
        dfs_samples: dfs,
        reference_samples: local,
        note: String::new(),
        compare: Some(Compare {
            unit: "files/s".into(),
            dfs: d,
            local: Some(l),
            ..Compare::default()
        }),
        fsyncs: None,
    }
}

/// Adds the peers' rates and issue 14's target to a row made by [`rate_row`].
pub(crate) fn with_peers(row: &mut Row, peers: Vec<PeerRate>, target: &str, goal: Option<Goal>) {
    if let Some(c) = row.compare.as_mut() {
        c.peers = peers;
        c.target = target.into();
        c.goal = goal;
    }
}

/// Files per second from the median seconds of `files` operations.
pub(crate) fn per_sec(files: usize) -> impl Fn(f64) -> f64 {
    move |secs| files as f64 / secs
}

/// Runs `op` on every one of `names` in `dir` in turn (the small-file workloads), naming the
/// file and what was done to it in the error.
fn each_file<T>(
    dir: &Path,
    names: &[String],
    what: &str,
    op: impl Fn(&Path) -> std::io::Result<T>,
) -> anyhow::Result<()> {
    for name in names {
        op(&dir.join(name)).with_context(|| format!("{what} {name}"))?;
    }
    Ok(())
}

pub(crate) fn create_files(dir: &Path, names: &[String], body: &[u8]) -> anyhow::Result<()> {
    each_file(dir, names, "write", |p| std::fs::write(p, body))
}

/// W5: create, write 4 KiB, close, for each small file (each close publishes on the mount).
pub fn w5(ctx: &Ctx) -> anyhow::Result<Row> {
    let names = ctx.small_names();
    let body = vec![0x5au8; 4096];
    let (mut dfs, mut local) = (Vec::new(), Vec::new());
    let mut counters = Counters::default();
    let mut fsyncs = Fsyncs::default();
    for i in 0..ctx.runs {
        let (m, l) = (
            ctx.small_dir(&ctx.writer.path.join(DFS_DIR), i),
            ctx.small_dir(&ctx.local, i),
        );
        std::fs::create_dir_all(&m)?;
        std::fs::create_dir_all(&l)?;
        dfs.push(ctx.measured_fsyncs(&mut counters, &mut fsyncs, || {
            create_files(&m, &names, &body)
        })?);
        local.push(time(|| create_files(&l, &names, &body))?.0);
    }
    let peers = ctx.on_peers(
        false,
        |_| Ok(()),
        |base, i| {
            let dir = ctx.small_dir(base, i);
            std::fs::create_dir_all(&dir)?;
            create_files(&dir, &names, &body)
        },
        per_sec(ctx.files),
    );
    let mut row = rate_row(
        "W5",
        format!("{} files of 4 KiB: create, write, close", ctx.files),
        ctx.files,
        dfs,
        local,
        1000.0,
        counters,
    );
    row.target.push_str(" (aim 2,500)");
    row.note = "local reference does not fsync; the mount publishes durably at every close".into();
    with_peers(
        &mut row,
        peers,
        ">= 1.0 x JuiceFS (aim 1.5), <= 3 fsyncs in sequence",
        versus("JuiceFS", 1.0),
    );
    row.fsyncs = Some(fsyncs.per_file_total((ctx.files * ctx.runs) as u64));
    Ok(row)
}

fn stat_files(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    each_file(dir, names, "stat", |p| std::fs::metadata(p))
}

/// W6: `stat` of every small file, warm (one untimed pass first). Needs W5's files.
pub fn w6(ctx: &Ctx) -> anyhow::Result<Row> {
    let names = ctx.small_names();
    let (m, l) = (
        ctx.small_dir(&ctx.writer.path.join(DFS_DIR), 0),
        ctx.small_dir(&ctx.local, 0),
    );
    stat_files(&m, &names)?;
    stat_files(&l, &names)?;
    let (mut dfs, mut local) = (Vec::new(), Vec::new());
    let mut counters = Counters::default();
    for _ in 0..ctx.runs {
        dfs.push(ctx.measured(&mut counters, || stat_files(&m, &names))?);
        local.push(time(|| stat_files(&l, &names))?.0);
    }
    let peers = ctx.on_peers(
        false,
        |base| stat_files(&ctx.small_dir(base, 0), &names),
        |base, _| stat_files(&ctx.small_dir(base, 0), &names),
        per_sec(ctx.files),
    );
    let mut row = rate_row(
        "W6",
        format!("`stat` of {} files, warm", ctx.files),
        ctx.files,
        dfs,
        local,
        20_000.0,
        counters,
    );
    with_peers(&mut row, peers, "", None);
    Ok(row)
}

fn read_files(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    each_file(dir, names, "read", |p| std::fs::read(p))
}

/// W7: open, read, close of every small file the mount wrote (so all are cached): must not
/// download anything. Needs W5's files.
pub fn w7(ctx: &Ctx) -> anyhow::Result<Row> {
    let names = ctx.small_names();
    let (m, l) = (
        ctx.small_dir(&ctx.writer.path.join(DFS_DIR), 0),
        ctx.small_dir(&ctx.local, 0),
    );
    let (mut dfs, mut local) = (Vec::new(), Vec::new());
    let mut counters = Counters::default();
    for _ in 0..ctx.runs {
        dfs.push(ctx.measured(&mut counters, || read_files(&m, &names))?);
        local.push(time(|| read_files(&l, &names))?.0);
    }
    let zero = counters.downloads == 0 && counters.bytes_out == 0;
    let peers = ctx.on_peers(
        false,
        |base| read_files(&ctx.small_dir(base, 0), &names),
        |base, _| read_files(&ctx.small_dir(base, 0), &names),
        per_sec(ctx.files),
    );
    let mut row = rate_row(
        "W7",
        format!("open, read, close of {} cached 4 KiB files", ctx.files),
        ctx.files,
        dfs,
        local,
        5_000.0,
        counters,
    );
    row.target.push_str(", 0 downloads");
    row.pass = row.pass.map(|fast| fast && zero);
    with_peers(
        &mut row,
        peers,
        ">= 2 x JuiceFS and >= 5,000/s",
        versus("JuiceFS", 2.0),
    );
    Ok(row)
}

fn unlink_files(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    each_file(dir, names, "unlink", |p| std::fs::remove_file(p))
}

/// W8: unlink of every small file, one set per run. Needs W5's files.
pub fn w8(ctx: &Ctx) -> anyhow::Result<Row> {
    let names = ctx.small_names();
    let (mut dfs, mut local) = (Vec::new(), Vec::new());
    let mut counters = Counters::default();
    for i in 0..ctx.runs {
        let (m, l) = (
            ctx.small_dir(&ctx.writer.path.join(DFS_DIR), i),
            ctx.small_dir(&ctx.local, i),
        );
        dfs.push(ctx.measured(&mut counters, || unlink_files(&m, &names))?);
        local.push(time(|| unlink_files(&l, &names))?.0);
    }
    let peers = ctx.on_peers(
        false,
        |_| Ok(()),
        |base, i| unlink_files(&ctx.small_dir(base, i), &names),
        per_sec(ctx.files),
    );
    let mut row = rate_row(
        "W8",
        format!("unlink of {} files", ctx.files),
        ctx.files,
        dfs,
        local,
        2_000.0,
        counters,
    );
    with_peers(&mut row, peers, ">= 2 x JuiceFS", versus("JuiceFS", 2.0));
    Ok(row)
}

/// Memory: peak RSS (VmHWM) of both mounts and every server after everything above; with
/// `big` (the `--full` 4 GiB file) that file is first copied in through one mount and read
/// back cold through the other.
pub fn memory(ctx: &Ctx, big: Option<u64>) -> anyhow::Result<Row> {
    let mut note = String::new();
    let mut largest = ctx.size;
    if let Some(size) = big {
        let src = ctx.on_local("mem-src.bin");
        make_file(&src, size, 0x4d454d)?;
        ctx.drop()?;
        cp(&src, &ctx.on_writer("mem.bin"))?;
        ctx.drop()?;
        cat(&ctx.on_reader("mem.bin"))?;
        std::fs::remove_file(&src)?;
        largest = size;
    }
    let mut peaks: Vec<(String, Option<u64>)> = vec![
        ("mount (writer)".into(), vm_hwm(ctx.writer.pid())),
        ("mount (reader)".into(), vm_hwm(ctx.reader.pid())),
    ];
    peaks.extend(ctx.cluster.peak_rss());
    let limit = 100u64 << 20;
    let max = peaks.iter().filter_map(|(_, p)| *p).max().unwrap_or(0);
    let all_known = peaks.iter().all(|(_, p)| p.is_some());
    let breakdown: Vec<String> = peaks
        .iter()
        .map(|(n, p)| match p {
            Some(b) => format!("{n} {:.1} MiB", *b as f64 / 1048576.0),
            None => format!("{n} unknown"),
        })
        .collect();
    note.push_str(&format!("peak RSS (VmHWM): {}", breakdown.join(", ")));
    if big.is_none() {
        note.push_str("; largest file was the --size file, run with --full for the 4 GiB claim");
    }
    Ok(Row {
        id: "memory".into(),
        what: format!(
            "peak RSS of each mount and server, largest file {}",
            mib(largest)
        ),
        dfs: format!("max {:.1} MiB", max as f64 / 1048576.0),
        reference: "-".into(),
        ratio: "-".into(),
        target: "each < 100 MiB while a 4 GiB file goes through".into(),
        // Below 4 GiB the row is informational: the claim is about a 4 GiB file.
        pass: big
            .filter(|b| *b >= 4 << 30)
            .map(|_| all_known && max < limit),
        counters: None,
        dfs_samples: peaks.iter().map(|(_, p)| p.unwrap_or(0) as f64).collect(),
        reference_samples: Vec::new(),
        note,
        compare: None,
        fsyncs: None,
    })
}
