//! `dfs-fuse NAMESERVER_URL MOUNTPOINT [-o opts] [-f]`: mount a DFS cluster.
//!
//! Started as `mount.fuse.dfs` (a symlink mount(8) runs for `mount -t fuse.dfs`), it takes
//! mount(8)'s helper arguments instead. The work is all in [`dfs_fuse::daemon`], which `dfs
//! mount` shares.

use dfs_fuse::{daemon, options};
use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let rest = argv.get(1..).unwrap_or_default().to_vec();
    if argv
        .first()
        .is_some_and(|name| options::invoked_as_mount_helper(name))
    {
        return daemon::run_mount_helper(&rest, "dfs-fuse", &[]);
    }
    match daemon::parse_args::<options::Args>("dfs-fuse", &argv) {
        Ok(args) => daemon::run_mount(args, "dfs-fuse", rest),
        Err(code) => code,
    }
}
