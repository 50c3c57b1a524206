//! Daemonising: the parent re-executes itself in foreground mode with a readiness pipe and
//! exits only once the child reports the mount usable (0) or failed (non-zero, with the
//! child's message on stderr). No fork() after threads exist.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::process::{Command, ExitCode, Stdio};

/// What the child writes to the pipe once the mount answers requests.
const READY: &[u8] = b"ready\n";

/// Runs the current program again with `-f --ready-fd N` and waits for its verdict.
pub fn spawn_and_wait() -> ExitCode {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!(
            "dfs-fuse: cannot create a pipe: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::FAILURE;
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    // SAFETY: we own read_fd from here on.
    let mut reader = unsafe { File::from_raw_fd(read_fd) };
    // The write end must survive exec in the child; the parent is still single-threaded.
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(write_fd, libc::F_SETFD, 0) };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("dfs-fuse: cannot find my own executable: {err}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let child = Command::new(exe)
        .args(args)
        .arg("-f")
        .arg("--ready-fd")
        .arg(write_fd.to_string())
        .stdin(Stdio::null())
        .spawn();
    // SAFETY: closing our copy of the write end so EOF arrives when the child closes its own.
    unsafe { libc::close(write_fd) };
    let mut child = match child {
        Ok(c) => c,
        Err(err) => {
            eprintln!("dfs-fuse: cannot start the mount process: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got);
    if got.starts_with(READY) {
        return ExitCode::SUCCESS;
    }
    match child.wait() {
        Ok(status) if status.success() => {
            eprintln!("dfs-fuse: the mount process exited before the mount was ready");
            ExitCode::FAILURE
        }
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(_) => ExitCode::FAILURE,
    }
}

/// In the daemon child, before anything else: leave the terminal's session so a hangup does
/// not kill the mount.
pub fn detach_session() {
    // SAFETY: setsid has no memory-safety preconditions; failure (already a leader) is fine.
    unsafe { libc::setsid() };
}

/// Tells the waiting parent the mount is ready, then drops the terminal: stdin goes to
/// /dev/null and stdout/stderr (the logs) to `log` (or /dev/null), so whoever ran us is not
/// held by our pipes.
pub fn report_ready(fd: RawFd, log: &std::path::Path) {
    // SAFETY: the parent passed us this descriptor for exactly this purpose.
    let mut pipe = unsafe { File::from_raw_fd(fd) };
    let _ = pipe.write_all(READY);
    drop(pipe);
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log);
        let out = log.as_ref().map_or(null.as_raw_fd(), |l| l.as_raw_fd());
        // SAFETY: dup2 onto the standard descriptors; both sources stay open until after.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(out, 1);
            libc::dup2(out, 2);
        }
    }
    let _ = std::env::set_current_dir("/");
}
