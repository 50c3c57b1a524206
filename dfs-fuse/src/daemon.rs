//! The mount as a command, callable from any binary: [`run_mount`] is all of `dfs-fuse URL
//! DIR`, so `dfs-fuse`, `dfs mount` and the `mount.fuse.dfs` helper ([`run_mount_helper`])
//! are one implementation, and `dfs` needs no separately built `dfs-fuse` beside it.
//!
//! Daemonising: the parent re-executes itself in foreground mode with a readiness pipe and
//! exits only once the child reports the mount usable (0) or failed (non-zero, with the
//! child's message on stderr). No fork() after threads exist.

use crate::options::{parse_mount_helper, Args};
use crate::session;
use clap::Parser;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

/// Runs the mount `args` describes, as the `dfs-fuse` command does: daemonises unless `-f`,
/// and returns the process's exit code (0 mounted and later unmounted cleanly, or the daemon
/// reported ready; 1 failure; 2 bad arguments).
///
/// `program` names the command in messages (`dfs-fuse: ...`, `dfs: ...`) and is the
/// `argv[0]` of the re-executed daemon; `reexec` are the arguments that make the current
/// executable run this same mount again (e.g. `["mount", URL, DIR, ...]` for `dfs`), to which
/// `-f --ready-fd N` is appended.
pub fn run_mount(args: Args, program: &str, reexec: Vec<OsString>) -> ExitCode {
    let mut cfg = match args.into_config() {
        Ok(cfg) => cfg,
        Err(msg) => {
            eprintln!("{program}: {msg}");
            return ExitCode::from(2);
        }
    };
    if !cfg.foreground && cfg.ready_fd.is_none() {
        return spawn_and_wait(program, reexec);
    }
    if cfg.ready_fd.is_some() {
        detach_session();
    }
    // Absolute paths: a daemon moves to / once ready.
    cfg.mountpoint = std::path::absolute(&cfg.mountpoint).unwrap_or(cfg.mountpoint);
    cfg.cache_dir = std::path::absolute(&cfg.cache_dir).unwrap_or(cfg.cache_dir);
    cfg.ca = cfg.ca.map(|ca| std::path::absolute(&ca).unwrap_or(ca));
    if cfg.ready_fd.is_some() {
        // A daemon: stderr becomes its log file once the mount is ready.
        init_logging_with(DEFAULT_LOG_FILTER, false);
    } else {
        init_logging(DEFAULT_LOG_FILTER);
    }
    let ready_fd = cfg.ready_fd;
    let log = cfg.cache_dir.join("dfs-fuse.log");
    let result = session::run(cfg, move || {
        if let Some(fd) = ready_fd {
            report_ready(fd, &log);
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{program}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs as mount(8)'s helper `mount.fuse.dfs SOURCE DIR [-sfnv] [-o OPTS]` (`argv` without
/// `argv[0]`): the same mount as [`run_mount`], daemonised, so mount(8) returns once it is
/// usable. `prefix` is what the current executable needs before `SOURCE DIR` to mount
/// (`["mount"]` for `dfs`, nothing for `dfs-fuse`); `program` is its name for messages and
/// the daemon's `argv[0]`.
pub fn run_mount_helper(argv: &[OsString], program: &str, prefix: &[&str]) -> ExitCode {
    let helper = crate::options::MOUNT_HELPER;
    let call = match parse_mount_helper(argv) {
        Ok(call) => call,
        Err(msg) => {
            eprintln!("{helper}: {msg}");
            return ExitCode::from(2);
        }
    };
    let args = match Args::try_parse_from(
        std::iter::once(OsString::from(helper)).chain(call.args.clone()),
    ) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("{helper}: {}", first_line(&err.to_string()));
            return ExitCode::from(2);
        }
    };
    if call.fake {
        return match args.into_config() {
            Ok(_) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("{helper}: {msg}");
                ExitCode::from(2)
            }
        };
    }
    let reexec = prefix.iter().map(OsString::from).chain(call.args).collect();
    run_mount(args, program, reexec)
}

/// Parses a command line with clap, keeping our error shape: `--help` and `--version` print
/// and give `Err(0)`; a usage error prints one line `program: reason (see program --help)`
/// and gives `Err(2)`.
pub fn parse_args<P: Parser>(program: &str, argv: &[OsString]) -> Result<P, ExitCode> {
    match P::try_parse_from(argv) {
        Ok(parsed) => Ok(parsed),
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            Err(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!(
                "{program}: {} (see {program} --help)",
                first_line(&err.to_string())
            );
            Err(ExitCode::from(2))
        }
    }
}

/// The mount's default log filter: its own progress and everyone's warnings.
pub const DEFAULT_LOG_FILTER: &str = "warn,dfs_fuse=info";

/// Logs go to stderr (a daemon's to its log file), filtered by `RUST_LOG` or else `default`,
/// in colour only on a terminal (a log file gets no escape codes). Does nothing when the
/// program already set up logging.
pub fn init_logging(default: &str) {
    use std::io::IsTerminal;
    init_logging_with(default, std::io::stderr().is_terminal());
}

/// [`init_logging`] with colour chosen by the caller: a daemon logs to a file later.
fn init_logging_with(default: &str, ansi: bool) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .try_init();
}

/// The first line of a clap error, without its `error: ` prefix: our errors are one line.
fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line)
}

/// What the child writes to the pipe once the mount answers requests.
const READY: &[u8] = b"ready\n";

/// Runs the current executable again as `program reexec... -f --ready-fd N` and waits for its
/// verdict. `argv[0]` is set to `program`, so a copy installed as `mount.fuse.dfs` re-executes
/// as the plain mount command and not as the helper again.
pub fn spawn_and_wait(program: &str, reexec: Vec<OsString>) -> ExitCode {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!(
            "{program}: cannot create a pipe: {}",
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
            eprintln!("{program}: cannot find my own executable: {err}");
            return ExitCode::FAILURE;
        }
    };
    let child = Command::new(exe)
        .arg0(program)
        .args(reexec)
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
            eprintln!("{program}: cannot start the mount process: {err}");
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
            eprintln!("{program}: the mount process exited before the mount was ready");
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
