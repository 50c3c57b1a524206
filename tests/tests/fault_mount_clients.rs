//! Fault suite 2 and 3: a stale writer is fenced, and a crashed client's lock frees itself.
//!
//! Both drive real mounts: the writer's syscalls go through FUSE to `dfs-fuse` processes that
//! the test freezes (SIGSTOP) or kills (SIGKILL).

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::Mount;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::time::{Duration, Instant};

const TTL_MS: u64 = 2000;
const LOCK_DELAY_MS: u64 = 300;

fn short_lease_cluster() -> Cluster {
    Cluster::start_tuned(
        2,
        |_| {},
        |locks| {
            locks.ttl_ms = TTL_MS;
            locks.lock_delay_ms = LOCK_DELAY_MS;
            locks.restart_grace_ms = Some(TTL_MS);
        },
    )
}

/// close(2) with its result, which `File`'s drop throws away.
fn close_checked(file: std::fs::File) -> std::io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just taken out of a `File`, so it is open and owned by nobody else.
    let rc = unsafe { libc::close(fd) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Opens `path` for writing, retrying while another client holds the lease (EBUSY).
fn open_for_write_when_free(path: &std::path::Path, within: Duration) -> std::fs::File {
    let deadline = Instant::now() + within;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
        {
            Ok(file) => return file,
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(err) => panic!("open {} for writing: {err}", path.display()),
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

#[test]
fn stale_writer_is_fenced_in_every_trial() {
    let cluster = short_lease_cluster();
    let Some(a) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let Some(b) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    for trial in 0..3 {
        let name = format!("fenced-{trial}.txt");
        std::fs::write(b.path(&name), b"original\n").unwrap();

        // A opens for writing and writes, then its mount freezes past the lease.
        let mut stale = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(a.path(&name))
            .unwrap();
        stale.write_all(b"stale write from A\n").unwrap();
        let a_pid = a.pid().expect("mount A runs");
        signal(a_pid, libc::SIGSTOP);

        // B waits for the lease to run out, then writes and closes.
        let mut fresh = open_for_write_when_free(
            &b.path(&name),
            Duration::from_millis(TTL_MS * 3 + LOCK_DELAY_MS + 5000),
        );
        fresh.write_all(b"fresh write from B\n").unwrap();
        close_checked(fresh).expect("B's close publishes");

        // A wakes up and closes: it must fail, and B's content must stay.
        signal(a_pid, libc::SIGCONT);
        let result = close_checked(stale);
        assert!(
            result.is_err(),
            "trial {trial}: the stale writer's close succeeded; mount A log:\n{}",
            a.log()
        );
        let seen_b = std::fs::read(b.path(&name)).unwrap();
        assert_eq!(seen_b, b"fresh write from B\n", "trial {trial}");
        let seen_a = std::fs::read(a.path(&name)).unwrap();
        assert_eq!(seen_a, b"fresh write from B\n", "trial {trial}: mount A");
        eprintln!(
            "trial {trial}: stale close failed with {:?}",
            result.unwrap_err()
        );
    }
}

#[test]
fn crashed_clients_lock_frees_after_ttl_and_not_before() {
    let cluster = short_lease_cluster();
    let Some(mut a) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    let Some(b) = Mount::try_start(&cluster.nameserver, &[]) else {
        return;
    };
    std::fs::write(b.path("held.txt"), b"v1\n").unwrap();
    let mut held = std::fs::OpenOptions::new()
        .write(true)
        .open(a.path("held.txt"))
        .unwrap();
    held.write_all(b"never published").unwrap();
    // Let at least one renewal happen, so the lease's deadline is fresh at the kill.
    std::thread::sleep(Duration::from_millis(TTL_MS / 2));
    let killed_at = Instant::now();
    a.kill9();
    drop(held);

    let freed_at = {
        let deadline = killed_at + Duration::from_millis(TTL_MS + LOCK_DELAY_MS + 10_000);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .open(b.path("held.txt"))
            {
                Ok(file) => {
                    let at = Instant::now();
                    close_checked(file).unwrap();
                    break at;
                }
                Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                    assert!(Instant::now() < deadline, "the lock never freed");
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(err) => panic!("open for write on B: {err}"),
            }
        }
    };
    let waited = freed_at - killed_at;
    eprintln!("lock freed {waited:?} after the kill (ttl {TTL_MS} ms, delay {LOCK_DELAY_MS} ms)");
    // The holder renews every ttl/3, so at the kill at least 2/3 of the TTL was left.
    assert!(
        waited >= Duration::from_millis(TTL_MS * 2 / 3),
        "another client got the lock {waited:?} after the kill, before the TTL"
    );
    assert!(
        waited <= Duration::from_millis(TTL_MS + LOCK_DELAY_MS + 1000),
        "the lock took {waited:?} to free (ttl + lock-delay + 1 s allowed)"
    );
    assert_eq!(std::fs::read(b.path("held.txt")).unwrap(), b"v1\n");
}
