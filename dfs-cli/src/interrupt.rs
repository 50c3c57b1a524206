//! Ctrl-C (SIGINT), SIGTERM and SIGHUP for the cluster subcommands: the process ends at
//! once with `_exit`, running no destructor, after the registered clean-ups ran.
//!
//! Why not the default action or a flag: `dfs_client`'s blocking `File` *publishes* a
//! changed file when it is dropped, so an interrupted `put` must never unwind through its
//! `Drop` (a partial file would be published). `_exit` skips it; the write lease is left to
//! expire by itself (its TTL plus the lock-delay). The clean-ups remove what an interrupted
//! transfer made: a `get`'s temporary file next to its target, and the empty entry a `put`
//! of a new file created at the nameserver when it opened it for writing.
//!
//! The signals are blocked in every thread (set before any other thread starts, so all
//! inherit it) and taken by one thread with `sigwait`, where any code may run safely.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A registered clean-up.
type Cleanup = Box<dyn FnOnce() + Send>;

/// Clean-ups to run on a signal, by id.
static CLEANUPS: Mutex<Vec<(u64, Cleanup)>> = Mutex::new(Vec::new());

/// The next clean-up id.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The signals that end a transfer.
fn signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks the signals in this thread (and so in every thread started later) and starts
/// the thread that waits for them. Call before any other thread exists (before a client).
pub fn install() {
    let set = signals();
    // SAFETY: `set` is an initialised signal set; a null old set is allowed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let spawned = std::thread::Builder::new()
        .name("dfs-signals".into())
        .spawn(move || {
            let mut signal: libc::c_int = 0;
            // SAFETY: `set` is initialised; `signal` is a valid out pointer.
            let rc = unsafe { libc::sigwait(&set, &mut signal) };
            if rc != 0 {
                return;
            }
            let cleanups = match CLEANUPS.lock() {
                Ok(mut list) => std::mem::take(&mut *list),
                Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
            };
            for (_, cleanup) in cleanups.into_iter().rev() {
                cleanup();
            }
            eprintln!("dfs: interrupted");
            // SAFETY: ends the process without running destructors, on purpose (see above).
            unsafe { libc::_exit(128 + signal) }
        });
    if let Err(err) = spawned {
        eprintln!("dfs: cannot watch for Ctrl-C: {err}");
    }
}

/// A registered clean-up; dropping the guard unregisters it (the work finished normally).
pub struct Guard(u64);

/// Runs `cleanup` if a signal ends the process while the returned guard lives.
pub fn on_interrupt(cleanup: impl FnOnce() + Send + 'static) -> Guard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut list) = CLEANUPS.lock() {
        list.push((id, Box::new(cleanup)));
    }
    Guard(id)
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut list) = CLEANUPS.lock() {
            list.retain(|(id, _)| *id != self.0);
        }
    }
}
