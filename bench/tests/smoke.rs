//! Smoke test of the harness: every workload on tiny sizes against a real mount.
//!
//! Asserts no timing, only what the counters prove (W2/W4/W7 download nothing; W1 uploads and
//! W3 downloads the whole file). Needs the `dfs-fuse` and `dfs-*server` binaries in the same
//! target directory (`cargo build -p dfs-servers -p dfs-fuse`, or `cargo test --workspace`).
//! When FUSE is unusable it fails, unless `DFS_SKIP_FUSE=1`, which turns that into a skip.

use dfs_bench::{run_bench, util::find_binary, Options};

fn fuse_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("cannot open /dev/fuse: {e}"))?;
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0
        && find_binary("fusermount3", Some("/usr/bin".as_ref())).is_err()
    {
        return Err("not root and no fusermount3".into());
    }
    Ok(())
}

#[test]
fn every_workload_runs_and_cached_reads_download_nothing() {
    if let Err(why) = fuse_usable() {
        if std::env::var("DFS_SKIP_FUSE").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED: FUSE is unusable here ({why}) and DFS_SKIP_FUSE=1");
            return;
        }
        panic!("FUSE is unusable here ({why}); set DFS_SKIP_FUSE=1 to skip this test");
    }
    for bin in [
        "dfs",
        "dfs-fuse",
        "dfs-nameserver",
        "dfs-lockserver",
        "dfs-fileserver",
    ] {
        if let Err(err) = find_binary(bin, None) {
            panic!("{err:#} (or run `cargo test --workspace`)");
        }
    }
    let size = 3 << 20;
    let files = 20;
    let opts = Options {
        dir: None,
        keep: false,
        size,
        memory_size: None,
        runs: 1,
        files,
        opens: 20,
        replication: 2,
        mount_opts: Vec::new(),
        drop_caches: false,
        fio: None,
        bin_dir: None,
        command: "smoke test".into(),
        only: Vec::new(),
        peers: false,
        tar_files: 40,
    };
    let report = run_bench(&opts).expect("the bench runs").report;
    eprintln!("{}", report.markdown());
    let row = |id: &str| {
        report
            .rows
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("row {id} missing"))
    };
    let counters = |id: &str| row(id).counters.expect("counters recorded");

    // The CLI's transfers ran against their curl references.
    for id in ["C1", "C2"] {
        assert_eq!(row(id).dfs_samples.len(), 1, "{id} ran once");
    }
    let w1 = counters("W1");
    assert!(
        w1.bytes_in >= size,
        "W1 uploaded only {} bytes",
        w1.bytes_in
    );
    for id in ["W2", "W2w", "W4", "W7"] {
        let c = counters(id);
        assert_eq!(c.downloads, 0, "{id} downloaded: {c:?}");
        assert_eq!(c.bytes_out, 0, "{id} downloaded bytes: {c:?}");
    }
    let w3 = counters("W3");
    assert!(
        w3.bytes_out >= size,
        "W3 downloaded only {} bytes",
        w3.bytes_out
    );
    let w5 = counters("W5");
    assert!(
        w5.uploads >= files as u64,
        "W5 uploaded only {} blobs",
        w5.uploads
    );
    // Issue 14's rows ran, and W5 counted the durable steps of every file at every server.
    for id in ["W1L", "W5p", "W9", "W10", "W1wb", "W5wb"] {
        row(id);
    }
    let fsyncs = row("W5").fsyncs.clone().expect("W5 counts fsyncs");
    assert_eq!(fsyncs.files, files as u64);
    assert!(fsyncs.nameserver >= 1.0, "{fsyncs:?}");
    // Leases live in memory: a grant costs the lockserver an fsync once per token block.
    assert!(fsyncs.lockserver < 0.5, "{fsyncs:?}");
    assert_eq!(fsyncs.fileservers.len(), 2);
    assert!(
        fsyncs.fileservers.iter().all(|f| *f >= 2.0),
        "data and directory per blob on each replica: {fsyncs:?}"
    );
    assert!(fsyncs.in_sequence() < fsyncs.total());
    let w10 = counters("W10");
    assert!(w10.uploads >= 40, "tar -x published every file: {w10:?}");
    assert_eq!(
        row("memory").dfs_samples.len(),
        6,
        "two mounts and four servers measured"
    );
    assert!(
        row("memory").dfs_samples.iter().all(|b| *b > 0.0),
        "every RSS known"
    );
}
