//! The lease journal: every lease change appended to a file without fsync, so that a lockserver
//! killed while its machine stays up restarts with exactly the leases it had.
//!
//! A write that returned is in the kernel's page cache, which a killed process cannot take with
//! it; only a power loss or a reboot can. So the journal is trusted only when the machine has
//! not booted since its run started: the store records the boot id and the run's id durably
//! when the run begins ([`super::store::Store::begin_run`]), and the journal names its run in
//! its first line. Anything else (another boot, another run, no journal) is treated as a power
//! loss, and the table recovers as the module docs of `table` describe.
//!
//! One JSON object per line; a change is applied in memory only once its line is written. A
//! line that is not whole JSON (cut short by the kill, or by a failed write, after which the
//! next line starts on a new line) is a change that was never answered, so it is skipped.

use super::store::StoredLease;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Name of the journal file inside the data directory.
pub const JOURNAL_FILE: &str = "leases.journal";
/// Once the journal is this long it is rewritten with only the live leases.
const COMPACT_BYTES: u64 = 4 << 20;

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    /// First line: the run this journal belongs to.
    Run { run: u64 },
    /// A lease granted, renewed or re-established, as it is now.
    Put { token: u64, lease: StoredLease },
    /// A lease released, broken or swept.
    Del { token: u64 },
}

/// The open journal of the current run.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    run: u64,
    bytes: u64,
    /// A write failed part-way: the next line must start on a line of its own.
    torn: bool,
}

/// This boot's identity (the kernel's random boot id, FNV-1a hashed to fit the store's
/// counters); `None` where the kernel does not say, and then a journal is never trusted.
pub fn boot_id() -> Option<u64> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let hash = id.trim().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // 0 stands for "no boot recorded" in the store.
    Some(hash.max(1))
}

/// The leases journal `dir` holds for `run`, or `None` when it holds none for that run.
///
/// A lease whose deadline is before the journal's last write ran out while the server was up:
/// it comes back marked expired, so the restart does not give it the grace meant for holders
/// who could not renew while the server was down.
pub fn replay(dir: &Path, run: u64) -> Option<BTreeMap<u64, StoredLease>> {
    let path = dir.join(JOURNAL_FILE);
    let last_write_unix_ms = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    let file = File::open(&path).ok()?;
    let mut lines = BufReader::new(file).split(b'\n');
    let first: Line = serde_json::from_slice(&lines.next()?.ok()?).ok()?;
    if !matches!(first, Line::Run { run: r } if r == run) {
        return None;
    }
    let mut leases = BTreeMap::new();
    for line in lines {
        let Ok(bytes) = line else { break };
        let Ok(line) = serde_json::from_slice::<Line>(&bytes) else {
            continue;
        };
        match line {
            Line::Put { token, lease } => {
                leases.insert(token, lease);
            }
            Line::Del { token } => {
                leases.remove(&token);
            }
            Line::Run { .. } => break,
        }
    }
    for lease in leases.values_mut() {
        lease.expired |= lease.deadline_unix_ms <= last_write_unix_ms;
    }
    Some(leases)
}

impl Journal {
    /// Starts the journal of `run` in `dir` with `leases` (what the table holds at start),
    /// replacing any older journal.
    pub fn create(
        dir: &Path,
        run: u64,
        leases: &BTreeMap<u64, StoredLease>,
    ) -> std::io::Result<Journal> {
        Journal::write_fresh(&dir.join(JOURNAL_FILE), run, leases)
    }

    /// Writes a new journal under a temporary name and renames it into place, so a kill in
    /// the middle leaves the old journal or the new one, whole.
    fn write_fresh(
        path: &Path,
        run: u64,
        leases: &BTreeMap<u64, StoredLease>,
    ) -> std::io::Result<Journal> {
        let tmp = path.with_extension("journal.new");
        let mut text = line(&Line::Run { run })?;
        for (token, lease) in leases {
            text.extend(line(&Line::Put {
                token: *token,
                lease: lease.clone(),
            })?);
        }
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, path)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Journal {
            path: path.to_owned(),
            file,
            run,
            bytes: text.len() as u64,
            torn: false,
        })
    }

    /// Appends that lease `token` is now `lease`.
    pub fn put(&mut self, token: u64, lease: &StoredLease) -> std::io::Result<()> {
        self.append(&Line::Put {
            token,
            lease: lease.clone(),
        })
    }

    /// Appends that lease `token` is gone.
    pub fn delete(&mut self, token: u64) -> std::io::Result<()> {
        self.append(&Line::Del { token })
    }

    fn append(&mut self, entry: &Line) -> std::io::Result<()> {
        let mut bytes = if self.torn { vec![b'\n'] } else { Vec::new() };
        bytes.extend(line(entry)?);
        // One write of the whole line: a kill leaves it whole or cut short, never interleaved.
        self.torn = true;
        self.file.write_all(&bytes)?;
        self.torn = false;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Rewrites the journal with only `leases` once it has grown past its bound.
    pub fn compact_if_long(
        &mut self,
        leases: impl FnOnce() -> BTreeMap<u64, StoredLease>,
    ) -> std::io::Result<()> {
        if self.bytes < COMPACT_BYTES {
            return Ok(());
        }
        *self = Journal::write_fresh(&self.path, self.run, &leases())?;
        Ok(())
    }
}

fn line(entry: &Line) -> std::io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_proto::DfsPath;

    fn lease(client: &str) -> StoredLease {
        StoredLease {
            client: client.into(),
            holder: String::new(),
            paths: vec![DfsPath::parse("/x").unwrap()],
            ttl_ms: 1000,
            deadline_unix_ms: 42,
            expired: false,
        }
    }

    #[test]
    fn replay_gives_the_leases_of_the_same_run_only() {
        let dir = tempfile::tempdir().unwrap();
        let start = BTreeMap::from([(1, lease("a"))]);
        let mut journal = Journal::create(dir.path(), 7, &start).unwrap();
        journal.put(2, &lease("b")).unwrap();
        journal.put(3, &lease("c")).unwrap();
        journal.delete(1).unwrap();
        let got = replay(dir.path(), 7).unwrap();
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert!(replay(dir.path(), 8).is_none());
    }

    #[test]
    fn a_line_cut_short_is_dropped_and_what_came_before_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 7, &BTreeMap::new()).unwrap();
        journal.put(2, &lease("b")).unwrap();
        drop(journal);
        let path = dir.path().join(JOURNAL_FILE);
        let mut text = std::fs::read(&path).unwrap();
        let whole = line(&Line::Put {
            token: 3,
            lease: lease("c"),
        })
        .unwrap();
        text.extend_from_slice(&whole[..whole.len() - 5]);
        std::fs::write(&path, text).unwrap();
        let got = replay(dir.path(), 7).unwrap();
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![2]);
        // A write that failed part-way: the next line still counts.
        let mut journal = Journal {
            file: std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap(),
            path,
            run: 7,
            bytes: 0,
            torn: true,
        };
        journal.put(4, &lease("d")).unwrap();
        let got = replay(dir.path(), 7).unwrap();
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![2, 4]);
    }

    #[test]
    fn compaction_keeps_only_the_live_leases() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 7, &BTreeMap::new()).unwrap();
        let mut i = 0;
        while journal.bytes < COMPACT_BYTES {
            i += 1;
            journal.put(i, &lease("a")).unwrap();
            journal.delete(i).unwrap();
        }
        journal.put(i + 1, &lease("b")).unwrap();
        let live = BTreeMap::from([(i + 1, lease("b"))]);
        journal.compact_if_long(|| live.clone()).unwrap();
        assert!(journal.bytes < 1000);
        journal.put(i + 2, &lease("c")).unwrap();
        let got = replay(dir.path(), 7).unwrap();
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![i + 1, i + 2]);
    }

    #[test]
    fn the_boot_id_is_stable_within_a_boot() {
        assert_eq!(boot_id(), boot_id());
    }
}
