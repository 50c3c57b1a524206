//! `dfs`: the one command that gives a working DFS on a fresh machine (`dfs up ./mnt`), and
//! `dfs mount URL DIR`, the same mount as `dfs-fuse` (both run the `dfs-fuse` library
//! in-process, so `dfs` needs no other binary beside it).
//!
//! Started as `mount.fuse.dfs` (a symlink mount(8) runs for `mount -t fuse.dfs`), it acts as
//! that helper. Errors are one line `dfs: ...`; exit code 1 on failure, 2 on a usage error.

mod up;

use clap::{Parser, Subcommand};
use dfs_fuse::{daemon, options};
use std::ffi::OsString;
use std::process::ExitCode;

/// Command-line interface of `dfs`.
#[derive(Parser, Debug)]
#[command(
    name = "dfs",
    version,
    about = "Run a local DFS cluster and mount it, or mount a running cluster"
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Start nameserver, lockserver and three fileservers on embedded defaults and mount the
    /// cluster; stays in the foreground until Ctrl-C, then unmounts and stops everything.
    Up(up::UpArgs),
    /// Mount a running cluster: the same command as `dfs-fuse URL DIR`, with the same
    /// options (see docs/mount.md). Daemonises unless -f; returns once the mount is usable.
    Mount(options::Args),
}

fn main() -> ExitCode {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    if argv
        .first()
        .is_some_and(|name| options::invoked_as_mount_helper(name))
    {
        let rest = argv.get(1..).unwrap_or_default();
        return daemon::run_mount_helper(rest, "dfs", &["mount"]);
    }
    // mount.fuse3 (type `fuse.dfs` without a mount.fuse.dfs helper installed) runs
    // `dfs SOURCE DIR -o OPTS`: a URL where a subcommand belongs means `dfs mount`.
    if argv.get(1).is_some_and(|a| is_url(&a.to_string_lossy())) {
        argv.insert(1, "mount".into());
    }
    let cli = match daemon::parse_args::<Cli>("dfs", &argv) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Up(args) => {
            // The servers' progress too: `dfs up` is a cluster as much as a mount.
            daemon::init_logging("info");
            match up::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("dfs: {err:#}");
                    if err.is::<up::UsageError>() {
                        ExitCode::from(2)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
        Command::Mount(args) => {
            let rest = argv.get(1..).unwrap_or_default().to_vec();
            daemon::run_mount(args, "dfs", rest)
        }
    }
}

/// Whether `arg` is a nameserver URL rather than a subcommand.
fn is_url(arg: &str) -> bool {
    arg.starts_with("http://") || arg.starts_with("https://")
}
