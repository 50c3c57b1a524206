//! How the last mount of a cache directory ended, so its clean copies can be trusted without
//! an fsync per download.
//!
//! Downloads land in the page cache and are renamed into `clean/` without an fsync (the
//! fsync made a cold open wait for the whole file to reach the disk). That is safe as long
//! as the kernel that wrote them is still running: a killed mount loses nothing that was
//! written. Only a power loss or kernel crash can leave a renamed file torn. So the cache
//! records, durably, the boot it runs under (`running <boot id>`) before serving, and
//! `clean <boot id>` after a `syncfs` at unmount. At the next start the clean copies are
//! trusted when the last mount ended cleanly or ran under the current boot; otherwise (a
//! crash of the machine while mounted, or no record at all) they are deleted and fetched
//! again when opened.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// The record's file name in the cache directory.
pub const STATE_FILE: &str = "STATE";

/// The kernel's id of this boot: changes exactly when the machine restarted.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Whether the clean copies left by the previous mount of `root` are intact.
pub fn previous_is_trusted(root: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(root.join(STATE_FILE)) else {
        return false;
    };
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("clean"), Some(_), None) => true,
        (Some("running"), Some(boot), None) => boot_id().is_some_and(|now| now == boot),
        _ => false,
    }
}

/// Records, durably, that a mount now runs on `root` under this boot. Call after the
/// untrusted clean copies (if any) are gone and before the first download.
pub fn mark_running(root: &Path) -> io::Result<()> {
    record(root, "running")
}

/// At unmount: flushes everything this mount wrote to the cache's filesystem, then records
/// a clean end. Skipped (the record stays `running`) when the flush fails.
pub fn mark_clean(root: &Path) -> io::Result<()> {
    let dir = File::open(root)?;
    // SAFETY: syncfs on a descriptor we own has no memory-safety preconditions.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    record(root, "clean")
}

/// Writes `<state> <boot id>` as the record, durably: temp file, fsync, rename over the
/// record, fsync the directory.
fn record(root: &Path, state: &str) -> io::Result<()> {
    let boot = boot_id().unwrap_or_else(|| "unknown".into());
    let tmp = root.join(format!("{STATE_FILE}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(format!("{state} {boot}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, root.join(STATE_FILE))?;
    File::open(root)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_record_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!previous_is_trusted(dir.path()));
    }

    #[test]
    fn a_mount_killed_under_this_boot_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        mark_running(dir.path()).unwrap();
        assert!(previous_is_trusted(dir.path()));
    }

    #[test]
    fn a_mount_that_was_running_in_another_boot_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "running not-this-boot\n").unwrap();
        assert!(!previous_is_trusted(dir.path()));
    }

    #[test]
    fn a_clean_end_is_trusted_after_a_reboot() {
        let dir = tempfile::tempdir().unwrap();
        mark_clean(dir.path()).unwrap();
        assert!(previous_is_trusted(dir.path()));
        std::fs::write(dir.path().join(STATE_FILE), "clean not-this-boot\n").unwrap();
        assert!(previous_is_trusted(dir.path()));
    }

    #[test]
    fn a_torn_record_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        for torn in ["", "runn", "clean", "running a b", "\0\0\0\0"] {
            std::fs::write(dir.path().join(STATE_FILE), torn).unwrap();
            assert!(!previous_is_trusted(dir.path()), "{torn:?}");
        }
    }
}
