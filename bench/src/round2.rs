//! Issue 14's workloads: W5p (8 writers in parallel), W9 (rename), W10 (`tar -x` of a
//! source-like tree), W1L (the disk's own limit for two replicas: two parallel
//! `dd conv=fsync`), and the `-o writeback` rows (W1wb, W5wb), each beside the peers.

use crate::cluster::{Counters, Fsyncs, Mount};
use crate::report::{Compare, Goal, Row};
use crate::util::{cp, mbps, median, run, time};
use crate::workloads::{create_files, per_sec, rate_row, versus, with_peers, Ctx, DFS_DIR};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writers of W5p.
pub const WRITERS: usize = 8;

/// The files of W5p's writer `w`: the small-file names, dealt round-robin.
fn writer_names(names: &[String], w: usize) -> Vec<String> {
    names
        .iter()
        .skip(w)
        .step_by(WRITERS)
        .map(|n| format!("p{n}"))
        .collect()
}

fn par_dir(base: &Path, run: usize) -> PathBuf {
    base.join(format!("par-{run}"))
}

/// Writer `w`'s own directory under `dir`.
fn writer_dir(dir: &Path, w: usize) -> PathBuf {
    dir.join(format!("w{w}"))
}

/// [`WRITERS`] threads create their share of the 4 KiB files at once, each in its own
/// directory: the kernel serializes creates in one directory (the parent's lock is held
/// through the whole FUSE create), which would measure that lock, not the servers.
fn create_parallel(dir: &Path, names: &[String], body: &[u8]) -> anyhow::Result<()> {
    for w in 0..WRITERS {
        std::fs::create_dir_all(writer_dir(dir, w))?;
    }
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let mine = writer_names(names, w);
                let dir = writer_dir(dir, w);
                s.spawn(move || create_files(&dir, &mine, body))
            })
            .collect();
        writers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
        })
    })
}

/// W5p: 8 writers creating the small files in parallel (each close publishes durably).
pub fn w5p(ctx: &Ctx, w5_rate: Option<f64>) -> anyhow::Result<Row> {
    let names = ctx.small_names();
    let body = vec![0x5au8; 4096];
    let (mut dfs, mut local) = (Vec::new(), Vec::new());
    let mut counters = Counters::default();
    let mut fsyncs = Fsyncs::default();
    for i in 0..ctx.runs {
        let (m, l) = (
            par_dir(&ctx.writer.path.join(DFS_DIR), i),
            par_dir(&ctx.local, i),
        );
        dfs.push(ctx.measured_fsyncs(&mut counters, &mut fsyncs, || {
            create_parallel(&m, &names, &body)
        })?);
        local.push(time(|| create_parallel(&l, &names, &body))?.0);
    }
    let peers = ctx.on_peers(
        false,
        |_| Ok(()),
        |base, i| create_parallel(&par_dir(base, i), &names, &body),
        per_sec(ctx.files),
    );
    let mut row = rate_row(
        "W5p",
        format!(
            "{} files of 4 KiB by {WRITERS} writers in parallel, one directory each",
            ctx.files
        ),
        ctx.files,
        dfs,
        local,
        0.0,
        counters,
    );
    row.target = "(issue 14: >= 4 x W5)".into();
    row.pass = None;
    let goal = w5_rate.map(|w5| Goal {
        against: "W5".into(),
        factor: 4.0,
        value: Some(w5),
    });
    with_peers(&mut row, peers, ">= 4 x W5", goal);
    row.fsyncs = Some(fsyncs.per_file_total((ctx.files * ctx.runs) as u64));
    Ok(row)
}

fn rename_all(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    for w in 0..WRITERS {
        let dir = writer_dir(dir, w);
        for name in writer_names(names, w) {
            std::fs::rename(dir.join(&name), dir.join(format!("r{name}")))
                .with_context(|| format!("rename {name}"))?;
        }
    }
    Ok(())
}

/// W9: rename of every file W5p made, one after another, each within its directory.
pub fn w9(ctx: &Ctx) -> anyhow::Result<Row> {
    let names = ctx.small_names();
    let (mut dfs, mut local) = (Vec::new(), Vec::new());
    let mut counters = Counters::default();
    for i in 0..ctx.runs {
        let (m, l) = (
            par_dir(&ctx.writer.path.join(DFS_DIR), i),
            par_dir(&ctx.local, i),
        );
        dfs.push(ctx.measured(&mut counters, || rename_all(&m, &names))?);
        local.push(time(|| rename_all(&l, &names))?.0);
    }
    let peers = ctx.on_peers(
        false,
        |_| Ok(()),
        |base, i| rename_all(&par_dir(base, i), &names),
        per_sec(ctx.files),
    );
    let mut row = rate_row(
        "W9",
        format!("rename of {} files, each within its directory", ctx.files),
        ctx.files,
        dfs,
        local,
        0.0,
        counters,
    );
    row.target = "(issue 14: >= 2 x JuiceFS)".into();
    row.pass = None;
    with_peers(&mut row, peers, ">= 2 x JuiceFS", versus("JuiceFS", 2.0));
    Ok(row)
}

/// xorshift64, for a tree that is the same in every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Writes a source-like tree of `files` files under `root`: nested directories of ~20 files,
/// mostly 0.5-16 KiB of text-like bytes, every 50th file 64-256 KiB (generated code, assets).
pub fn make_tree(root: &Path, files: usize) -> anyhow::Result<u64> {
    let mut state = 0x7a5eed_u64;
    let mut bytes = 0u64;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz_(){};= \n\tABCDEFGH0123456789";
    for i in 0..files {
        let (module, sub) = (i / 400, (i / 20) % 20);
        let dir = root.join(format!("src/mod{module:02}/sub{sub:02}"));
        if i % 20 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        let size = if i % 50 == 49 {
            65_536 + next(&mut state) % 196_608
        } else {
            512 + next(&mut state) % 15_872
        };
        let body: Vec<u8> = (0..size)
            .map(|_| alphabet[(next(&mut state) % alphabet.len() as u64) as usize])
            .collect();
        let ext = ["rs", "c", "h", "py", "md"][i % 5];
        std::fs::write(dir.join(format!("file{i:05}.{ext}")), &body)?;
        bytes += size;
    }
    Ok(bytes)
}

fn untar(tarball: &Path, dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(tarball)
        .arg("-C")
        .arg(dest))
}

/// W10: `tar -x` of a generated source-like tree of `ctx.tar_files` files (one run: it is the
/// longest workload, a minute or more on a slow create path).
pub fn w10(ctx: &Ctx) -> anyhow::Result<Row> {
    let tree = ctx.local.join("tree-src");
    let bytes = make_tree(&tree, ctx.tar_files)?;
    let tarball = ctx.local.join("tree.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&tree)
        .arg("."))?;
    std::fs::remove_dir_all(&tree)?;
    let mut counters = Counters::default();
    let dfs = vec![ctx.measured(&mut counters, || {
        untar(&tarball, &ctx.writer.path.join(DFS_DIR).join("tar-0"))
    })?];
    let local = vec![time(|| untar(&tarball, &ctx.local.join("tar-0")))?.0];
    let one_run = Ctx {
        runs: 1,
        ..ctx.clone()
    };
    let peers = one_run.on_peers(
        false,
        |_| Ok(()),
        |base, i| untar(&tarball, &base.join(format!("tar-{i}"))),
        per_sec(ctx.tar_files),
    );
    let mut row = rate_row(
        "W10",
        format!(
            "`tar -x` of a source tree: {} files, {:.0} MB, one run",
            ctx.tar_files,
            bytes as f64 / 1e6
        ),
        ctx.tar_files,
        dfs,
        local,
        0.0,
        counters,
    );
    row.target = "(issue 14: >= 1.0 x JuiceFS)".into();
    row.pass = None;
    row.note = "tar -x closes every file it writes: each close publishes durably on DFS".into();
    with_peers(&mut row, peers, ">= 1.0 x JuiceFS", versus("JuiceFS", 1.0));
    let _ = std::fs::remove_file(&tarball);
    Ok(row)
}

/// W1L: the disk's own limit for two replicas (two `dd conv=fsync` of the W1 file side by
/// side, to the local disk), against W1's median rate.
pub fn w1_limit(ctx: &Ctx, w1_rate: Option<f64>) -> anyhow::Result<Row> {
    let mut samples = Vec::new();
    for _ in 0..ctx.runs {
        ctx.drop()?;
        let outs = [ctx.local.join("dd-0.bin"), ctx.local.join("dd-1.bin")];
        samples.push(
            time(|| {
                std::thread::scope(|s| {
                    let jobs: Vec<_> = outs
                        .iter()
                        .map(|out| {
                            s.spawn(move || {
                                run(Command::new("dd")
                                    .arg(format!("if={}", ctx.src.display()))
                                    .arg(format!("of={}", out.display()))
                                    .args(["bs=1M", "conv=fsync", "status=none"]))
                            })
                        })
                        .collect();
                    jobs.into_iter().try_for_each(|j| {
                        j.join()
                            .map_err(|_| anyhow::anyhow!("dd thread panicked"))?
                    })
                })
            })?
            .0,
        );
        for out in &outs {
            let _ = std::fs::remove_file(out);
        }
    }
    let limit = mbps(ctx.size, median(&samples));
    let (dfs, ratio) = match w1_rate {
        Some(rate) => (
            format!("W1 {rate:.0} MB/s"),
            format!("{:.2} x limit", rate / limit),
        ),
        None => ("W1 not run".into(), "-".into()),
    };
    Ok(Row {
        id: "W1L".into(),
        what: format!(
            "W1 against the disk's limit: two parallel `dd conv=fsync` of the {} MiB file",
            ctx.size >> 20
        ),
        dfs,
        reference: format!("two dd side by side: {limit:.0} MB/s each"),
        ratio,
        target: ">= 0.8 x the limit".into(),
        pass: w1_rate.map(|rate| rate >= 0.8 * limit),
        counters: None,
        dfs_samples: Vec::new(),
        reference_samples: samples,
        note: String::new(),
        compare: w1_rate.map(|rate| Compare {
            unit: "MB/s".into(),
            dfs: rate,
            local: Some(limit),
            peers: Vec::new(),
            target: ">= 0.8 x two parallel dd".into(),
            goal: Some(Goal {
                against: "dd limit".into(),
                factor: 0.8,
                value: Some(limit),
            }),
        }),
        fsyncs: None,
    })
}

/// W1wb and W5wb: W1 and W5 on a mount with `-o writeback`, or "n/a" rows saying why not
/// (the mount refused the option).
pub fn writeback_rows(
    ctx: &Ctx,
    start: impl FnOnce() -> anyhow::Result<Mount>,
) -> anyhow::Result<Vec<Row>> {
    let mount = match start() {
        Ok(mount) => mount,
        Err(err) => {
            let why = format!("{err:#}");
            let why = why.lines().last().unwrap_or("").trim().to_owned();
            eprintln!("dfs-bench: -o writeback: n/a ({why})");
            return Ok(["W1wb", "W5wb"]
                .into_iter()
                .map(|id| Row {
                    id: id.into(),
                    what: format!("{} with `-o writeback`", &id[..2]),
                    dfs: "n/a".into(),
                    reference: "-".into(),
                    ratio: "-".into(),
                    target: if id == "W1wb" {
                        ">= JuiceFS".into()
                    } else {
                        ">= rclone".into()
                    },
                    pass: None,
                    counters: None,
                    dfs_samples: Vec::new(),
                    reference_samples: Vec::new(),
                    note: format!("n/a: the mount did not start with -o writeback ({why})"),
                    compare: None,
                    fsyncs: None,
                })
                .collect());
        }
    };
    let wb = Ctx {
        writer: &mount,
        ..ctx.clone()
    };
    let mut rows = Vec::new();
    let mut samples = Vec::new();
    for i in 0..ctx.runs {
        ctx.drop()?;
        samples.push(
            time(|| {
                cp(
                    &ctx.src,
                    &wb.writer.path.join(DFS_DIR).join(format!("wb-{i}.bin")),
                )
            })?
            .0,
        );
    }
    let rate = mbps(ctx.size, median(&samples));
    rows.push(Row {
        id: "W1wb".into(),
        what: "W1 with `-o writeback`".into(),
        dfs: format!("{rate:.0} MB/s"),
        reference: "-".into(),
        ratio: "-".into(),
        target: ">= JuiceFS".into(),
        pass: None,
        counters: None,
        dfs_samples: samples,
        reference_samples: Vec::new(),
        note: String::new(),
        compare: Some(Compare {
            unit: "MB/s".into(),
            dfs: rate,
            local: None,
            peers: Vec::new(),
            target: ">= 1.0 x JuiceFS".into(),
            goal: versus("JuiceFS", 1.0),
        }),
        fsyncs: None,
    });
    let names = ctx.small_names();
    let body = vec![0x5au8; 4096];
    let mut samples = Vec::new();
    for i in 0..ctx.runs {
        let dir = wb.writer.path.join(DFS_DIR).join(format!("wb-small-{i}"));
        std::fs::create_dir_all(&dir)?;
        samples.push(time(|| create_files(&dir, &names, &body))?.0);
    }
    let rate = ctx.files as f64 / median(&samples);
    rows.push(Row {
        id: "W5wb".into(),
        what: "W5 with `-o writeback`".into(),
        dfs: format!("{rate:.0} files/s"),
        reference: "-".into(),
        ratio: "-".into(),
        target: ">= rclone".into(),
        pass: None,
        counters: None,
        dfs_samples: samples,
        reference_samples: Vec::new(),
        note: String::new(),
        compare: Some(Compare {
            unit: "files/s".into(),
            dfs: rate,
            local: None,
            peers: Vec::new(),
            target: ">= 1.0 x rclone".into(),
            goal: versus("rclone", 1.0),
        }),
        fsyncs: None,
    });
    Ok(rows)
}
